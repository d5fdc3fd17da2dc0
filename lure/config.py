"""params.yaml, validated and described: unknown keys and bad values are refused with the key's name,
and every setting is described here once (`uv run lure params` prints the descriptions).

Each top-level section is one model; stages track exactly the sections they read (dvc.yaml), so a
change to one method's section re-runs only that method's stages. A method's own settings are
declared beside the method, in lure/methods/; here `methods` is checked for its shape only, so
that the stages which run no method (prepare, corrupt, learn, report) depend on no method's code.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from lure.errors import LureError

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Beta = Annotated[float, Field(ge=0.0, lt=1.0)]  # a decay rate
PARAMS_FILE = "params.yaml"  # where stages and `lure` read the settings, relative to the project root


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- data -------------------------------------------------------------------------------------


class LabelNoise(Strict):
    """Wrong labels in one chunk's training images, while that chunk is the one that arrives (Hare &
    Tortoise's warm start: 10% of the data with half its labels wrong, then all of it)."""

    chunk: int = Field(ge=1, description="the chunk whose training labels are noisy")
    fraction: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        description="share of its training images (seeded) whose label is replaced by one of the other classes, "
                    "drawn uniformly; its validation images and the test set keep theirs, and so does the chunk "
                    "when later chunks replay it (each task's own labels, as Hare & Tortoise's code has them)")


ChunkSize = Annotated[int, Field(ge=2)]


class ChunkedData(Strict):
    """How any source is cut into chunks."""

    chunk_size: ChunkSize | list[ChunkSize] = Field(
        description="images per chunk, training and validation together; or a list, one size per chunk in order "
                    "(iid only), e.g. [2500, 22500]: 10% of the data, then all of it under full replay")
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="share of each chunk held out for validation "
                                "(the paper: 90/10)")
    shots_per_class: Annotated[int, Field(ge=1)] | None = Field(
        None, description="few-shot setting: keep only this many training images per class (seeded) before "
                          "chunking; null keeps them all")
    split: Literal["iid", "class_incremental"] = Field(
        "iid", description="iid: every chunk a seeded sample of all classes; class_incremental: chunk k holds only "
                           "the k-th group of classes_per_chunk classes (in a seeded class order), at most "
                           "chunk_size images")
    classes_per_chunk: int = Field(2, ge=1, description="class_incremental only: classes per chunk")
    label_noise: LabelNoise | None = Field(None, description="noisy labels in one chunk's training images; null: "
                                           "none")

    @field_validator("split")
    @classmethod
    def _sizes_need_iid(cls, split: str, info):
        if isinstance(info.data.get("chunk_size"), list) and split != "iid":
            raise ValueError("a list of chunk sizes (data.chunk_size) needs split: iid (class-incremental chunks "
                             "hold a group of classes each)")
        return split


class DigitsData(ChunkedData):
    """scikit-learn's bundled handwritten digits: 1797 real 8x8 images, no download."""

    source: Literal["digits"] = Field("digits", description="this section's source")
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="stratified test split (360 images at 0.2)")
    chunk_size: ChunkSize | list[ChunkSize] = Field(
        175, description="images per chunk, training and validation together (the digits pool of 1437 holds 8 "
                         "chunks of 175); or a list, one size per chunk in order (iid only)")


class TorchvisionData(ChunkedData):
    """MNIST, CIFAR-10 or CIFAR-100 with their standard train/test splits."""

    source: Literal["mnist", "cifar10", "cifar100"] = Field(description="this section's source")
    root: Path = Field(Path("data/raw"), description="torchvision's layout under this folder (MNIST/raw/, "
                       "cifar-10-batches-py/, cifar-100-python/), or an ImageFolder copy (train/<class>/*, "
                       "test/<class>/*) at it; keep it under data/raw, which prepare depends on")
    download: bool = Field(True, description="download into root when absent and the machine is online")


class ImageFolderData(ChunkedData):
    """Your own images: any size and format Pillow reads, decoded once by prepare."""

    source: Literal["imagefolder"] = Field(description="this section's source")
    path: Path = Field(description="a folder with train/<class>/* and test/<class>/* images (or val/<class>/*, "
                                   "ImageNet's name for its test images)")
    image_size: Annotated[int, Field(ge=1)] | None = Field(
        None, description="resize each image's shorter side to this many pixels, then crop its centre square "
                          "(torchvision's Resize + CenterCrop, bilinear); null: every image must have one size")
    bad_images: Literal["stop", "skip"] = Field(
        "stop", description="an unreadable or truncated image: stop, naming it; skip: leave it out (its chunk "
                            "has one image fewer), count it in prepare's output and list it in "
                            "data/prepared/skipped.json")
    superclasses: Literal["restricted_imagenet", "restricted_imagenet_balanced"] | None = Field(
        None, description="group an ImageNet folder's 1000 classes (their sorted folder order) into superclasses "
                          "of class-index ranges, leaving the other classes out: restricted_imagenet, Tsipras et "
                          "al.'s 9; restricted_imagenet_balanced, the 14 of 5 classes each that the official LURE "
                          "code's R-ImageNet imports (lure/sources.py lists the ranges)")


DATA_SOURCES = (DigitsData, TorchvisionData, ImageFolderData)
DataSource = Annotated[Union[DATA_SOURCES], Field(discriminator="source")]


class ChunkStep(Strict):
    """A chunk after the first, with the chunk whose model it starts from (DVC templates cannot
    compute k - 1). When a new chunk arrives, append one."""

    k: int = Field(ge=2, description="the chunk's number")
    prev: int = Field(description="k - 1, spelled out")

    @model_validator(mode="after")
    def _prev_is_previous(self) -> ChunkStep:
        if self.prev != self.k - 1:
            raise ValueError(f"prev must be k - 1 = {self.k - 1}, got {self.prev}")
        return self


# --- model and training -----------------------------------------------------------------------


class ModelSettings(Strict):
    """The network. Every model normalises its input inside and ends in a linear `head`."""

    arch: Literal["small_cnn", "resnet18", "resnet50", "mlp"] = Field(
        "small_cnn", description="small_cnn: 3 conv-BN-ReLU blocks; resnet18: torchvision's with the CIFAR stem "
                                 "(3x3 stride-1 conv, no max-pool); resnet50: the ImageNet stem, for large images; "
                                 "mlp: the flattened image through `depth` fully connected ReLU layers of `width` "
                                 "units (no BatchNorm), as Ash & Adams' MLP")
    width: int = Field(32, ge=1, description="small_cnn: channels of the first block; mlp: units per hidden layer")
    depth: int = Field(2, ge=1, description="mlp only: hidden layers")


class TrainSettings(Strict):
    """The optimiser and its schedule, which restarts at every chunk, and where and how it computes."""

    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available, else the CPU")
    deterministic: bool = Field(True, description="CUDA: deterministic algorithms, cuDNN's included, so that the "
                                "same seed on the same GPU gives the same results; false: cuDNN's benchmark mode, "
                                "faster, with results that may vary in their last bits (recorded in provenance)")
    cpu_kernels: Literal["portable", "fast"] = Field(
        "portable", description="on the CPU, portable: the same results on any x86-64 CPU, whatever vector "
                                "instructions it has, and any thread count (ATen's baseline kernels, MKL's SSE2 "
                                "code path, no oneDNN, one thread), several times slower on larger networks; fast: "
                                "each CPU's fastest kernels on every core, with results that differ between CPU "
                                "kinds and thread counts in their last bits, and grow apart over a run (README: "
                                "\"What reproduces where\")")
    epochs: int = Field(30, ge=1, description="epochs per chunk (the most, with stop_at_train_acc)")
    stop_at_train_acc: Annotated[float, Field(gt=0.0, le=1.0)] | None = Field(
        None, description="end a chunk after the first epoch whose training accuracy (on its batches, as trained "
                          "on) reaches this, e.g. 0.99 as Ash & Adams train; the epochs run and that last epoch's "
                          "accuracy go to the metrics (epochs_run, epoch_train_acc); null: always `epochs`")
    batch_size: int = Field(32, ge=2, description="images per update")
    optimizer: Literal["sgd", "adam", "adamw"] = Field(
        "sgd", description="sgd: SGD with momentum; adam: Adam; adamw: Adam with decoupled weight decay; each "
                           "PyTorch's update rule. Its state (momentum, or Adam's moments and steps) carries over "
                           "from chunk to chunk, as in the official LURE code (see mitigate.fresh_optimizer)")
    lr: float = Field(0.05, gt=0.0, description="learning rate at the start of every chunk (after the warm-up)")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="sgd: momentum")
    betas: tuple[Beta, Beta] = Field(
        (0.9, 0.999), description="adam, adamw: the decay of the running mean of the gradient and of its square")
    eps: float = Field(1e-8, gt=0.0, description="adam, adamw: added to the root of the running squared gradient")
    weight_decay: float = Field(5e-4, ge=0.0, description="sgd, adam: an L2 penalty, added to the gradient as "
                                "torch.optim adds it; adamw: the decoupled decay, theta <- theta (1 - lr wd)")
    schedule: Literal["step", "cosine"] = Field(
        "step", description="the LR within a chunk, after the warm-up; step: lr, times lr_gamma at each of "
                            "lr_milestones; cosine: from lr down to 0 over the chunk's updates, cos-shaped")
    lr_milestones: list[Annotated[int, Field(ge=1)]] = Field(
        [15, 25], description="schedule step: epochs of the chunk at which the LR is multiplied by lr_gamma")
    lr_gamma: float = Field(0.1, gt=0.0, description="schedule step: the LR factor at each milestone")
    warmup: Fraction = Field(0.0, description="a linear LR warm-up from 0 over this fraction of the chunk's updates "
                             "(Hare & Tortoise's and FIRE's schedules), then the schedule")
    clip_grad_norm: Annotated[float, Field(gt=0.0)] | None = Field(
        None, description="rescale the gradient of every update whose norm over all parameters exceeds this "
                          "(torch.nn.utils.clip_grad_norm_); null: no clipping")
    select: Literal["best_val", "last"] = Field(
        "best_val", description="best_val: the epoch with the best validation accuracy ends the chunk (the paper); "
                                "last: the last epoch")
    augment: Literal["none", "crop_flip", "resized_crop_flip"] = Field(
        "none", description="crop_flip: random crop of the zero-padded image plus a horizontal flip (CIFAR's "
                            "recipe); resized_crop_flip: a random crop of 8-100% of the area and 3/4-4/3 aspect "
                            "ratio resized back to the image size, plus a flip (ImageNet's RandomResizedCrop "
                            "recipe, for large images; evaluation sees the stored centre crop); both in batches on "
                            "the device")
    crop_padding: int = Field(4, ge=0, description="crop_flip: padding in pixels")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast and channels_last on CUDA, fp32 on the CPU")
    compile: bool = Field(False, description="torch.compile the model (CUDA; pays a compile per stage)")
    placement: Literal["auto", "resident", "streamed"] = Field(
        "auto", description="where the images live while a stage runs: auto keeps each set on the device while "
                            "they fit in half its free memory (the host's on the CPU) and streams the rest from the "
                            "memory-mapped chunk files, a batch at a time; the same weights either way")
    processes: int = Field(1, ge=1, description="data-parallel processes per machine, one per GPU (on the CPU, "
                           "gloo): the training stages run themselves under torchrun (DDP); batch_size stays the "
                           "global batch, so the results are the single-process run's")
    nodes: int = Field(1, ge=1, description="machines that train together: each runs the same `dvc repro`, with "
                       "LURE_RENDEZVOUS=host:port naming node 0 (see the README)")

    @model_validator(mode="after")
    def _cosine_has_no_milestones(self) -> TrainSettings:
        if self.schedule == "cosine" and self.lr_milestones:
            raise ValueError("lr_milestones: the cosine schedule has none (set lr_milestones: [])")
        return self

    @model_validator(mode="after")
    def _batch_fills_ranks(self) -> TrainSettings:
        if self.batch_size < self.processes * self.nodes:
            raise ValueError(f"batch_size: {self.batch_size} is fewer images than the {self.processes * self.nodes} "
                             f"processes (processes x nodes) that share each batch")
        return self


class ReplaySettings(Strict):
    """What a new chunk trains (and selects its checkpoint) on."""

    mode: Literal["full", "buffer", "none"] = Field(
        "full", description="full: every chunk so far; buffer: the new chunk plus a seeded reservoir of earlier "
                            "images; none: the new chunk alone")
    buffer_size: int = Field(200, ge=1, description="buffer: training images kept from earlier chunks")
    buffer_val_size: int = Field(20, ge=1, description="buffer: validation images kept from earlier chunks")


# --- measurement ------------------------------------------------------------------------------


class EvaluateSettings(Strict):
    """The evaluation of every run on the test set."""

    ece_bins: int = Field(15, ge=1, description="equal-width confidence bins of the top-label ECE and MCE")
    batch_size: int = Field(1000, ge=1, description="images per forward pass")


class StabilitySettings(Strict):
    """Continual evaluation inside every relearn stage: the stability gap (De Lange et al. 2023)."""

    every: int = Field(10, ge=0, description="evaluate before the first update and every this many updates; "
                       "0: off")
    samples: int = Field(100, ge=1, description="held-out validation images per chunk (a seeded subset)")


class RobustnessSettings(Strict):
    """Corrupted copies of the test set (CIFAR-10-C's corruptions), made once by the corrupt stage."""

    corruptions: Literal["standard", "all", "none"] = Field(
        "all", description="standard: the 15 of CIFAR-10-C; all: also speckle noise, gaussian blur and saturate; "
                           "none: no robustness metrics")
    severities: list[Annotated[int, Field(ge=1, le=5)]] = Field([1, 2, 3, 4, 5], description="from 1 to 5")
    test_images: Annotated[int, Field(ge=1)] | None = Field(
        None, description="corrupt a seeded subset of this many test images, or null for all of them (all "
                          "18 corruptions x 5 severities of CIFAR-10's 10,000 take 2.8 GB)")

    @field_validator("severities")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        if not value or len(set(value)) != len(value):
            raise ValueError("list distinct severities from 1 to 5")
        return sorted(value)


# --- the whole file -----------------------------------------------------------------------------


class Params(Strict):
    """The whole params file."""

    seed: int = Field(0, ge=0, description="the data's seed, shared by every run: test split, chunk contents, "
                      "replay reservoir, held-out and corrupted sets")
    seeds: list[Annotated[int, Field(ge=0)]] = Field(
        [0], description="run seeds: every method runs once per seed (initial weights, batch order, forgetting "
                         "draws) and the report gives mean and std over them; adding one runs only its stages")
    data: DataSource = Field(DigitsData(), description="the source and how it is cut into chunks")
    chunks: list[ChunkStep] = Field(description="the chunks after the first, in order")
    model: ModelSettings = ModelSettings()
    train: TrainSettings = TrainSettings()
    replay: ReplaySettings = ReplaySettings()
    methods: dict[str, dict[str, Any]] = Field(
        description="one section per method that runs; its `kind` defaults to the section's name, so a variant "
                    "can run beside the original, e.g. lure_chunk: {kind: lure, score_data: chunk}")
    evaluate: EvaluateSettings = EvaluateSettings()
    robustness: RobustnessSettings = RobustnessSettings()
    stability: StabilitySettings = StabilitySettings()

    _source: str = PrivateAttr(PARAMS_FILE)  # the file it was read from, for messages

    @field_validator("methods", mode="before")
    @classmethod
    def _empty_section_is_defaults(cls, value: Any) -> Any:
        return {name: {} if section is None else section for name, section in value.items()} \
            if isinstance(value, dict) else value

    @field_validator("methods")
    @classmethod
    def _some_methods(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            raise ValueError("name at least one method, e.g. warm: {}")
        for name in value:
            if not name.replace("_", "").isalnum():
                raise ValueError(f"method name {name!r}: use letters, digits and _ only")
        return value

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("list at least one run seed, e.g. [0] or [0, 1, 2]")
        repeated = sorted({s for s in value if value.count(s) > 1})
        if repeated:
            raise ValueError(f"run seeds must be distinct; listed more than once: {repeated}")
        return value

    @field_validator("chunks")
    @classmethod
    def _chunks_in_order(cls, value: list[ChunkStep]) -> list[ChunkStep]:
        if not value:
            raise ValueError("at least 2 chunks are needed: list chunk 2 onwards, e.g. [{k: 2, prev: 1}]")
        expected = list(range(2, len(value) + 2))
        got = [step.k for step in value]
        if got != expected:
            raise ValueError(f"chunks must be k = {expected} in order, got {got}")
        return value

    @property
    def n_chunks(self) -> int:
        return len(self.chunks) + 1

    def kind_of(self, method: str) -> str:
        """The kind of method a section runs: its `kind`, or else its name."""
        return str(self.methods[method].get("kind", method))

    # A stage takes the method, the run seed and the chunk on its command line, as dvc.yaml
    # writes them; these refuse ones that the params file does not list.

    def check_method(self, method: str) -> str:
        if method not in self.methods:
            raise LureError(f"methods.{method}: no such method in {self._source} (have {', '.join(self.methods)})")
        return method

    def check_run_seed(self, seed: int) -> int:
        if seed not in self.seeds:
            listed = ", ".join(map(str, self.seeds))
            raise LureError(f"--seed {seed}: seeds in {self._source} lists only {listed}; add it there to run it")
        return seed

    def check_chunk(self, k: int) -> int:
        if not 2 <= k <= self.n_chunks:
            raise LureError(f"chunk {k}: {self._source} lists chunks 2..{self.n_chunks}")
        return k


# --- reading and messages ----------------------------------------------------------------------


def error_lines(err: ValidationError, prefix: str = "") -> str:
    """One line per error, naming the key (`methods.lure.fraction`), without the union tag that
    pydantic inserts (data.digits.chunk_size)."""
    owners = {tag: cls for cls in DATA_SOURCES for tag in typing.get_args(cls.model_fields["source"].annotation)}
    lines = []
    for e in err.errors():
        parts = [*filter(None, prefix.split(".")), *map(str, e["loc"])]
        source = parts.pop(1) if len(parts) > 2 and parts[0] == "data" and parts[1] in owners else None
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            message = "unknown key"
            others = [tag for tag, cls in owners.items() if parts[-1] in cls.model_fields and tag != source]
            if source and others and len(parts) == 2:  # a key of another data source, e.g. after switching
                message = f"a key of the {' and '.join(others)} source only, not of {source}"
        elif e["type"] == "missing":
            message = "required key is missing"
        # a whole section's check (model_validator) names its values itself: no dump of the section
        quiet = e["type"] in ("extra_forbidden", "missing") or isinstance(e["input"], dict)
        got = "" if quiet else f" (got {e['input']!r})"
        lines.append(f"  {'.'.join(parts) or '(top level)'}: {message}{got}")
    return "\n".join(lines)


def parse_params(raw: Any, source: str = PARAMS_FILE) -> Params:
    """Validate a parsed params mapping; raise LureError naming every bad key."""
    if raw is None:
        raise LureError(f"{source} is empty: start from the shipped params.yaml or a file of presets/ "
                        f"(`uv run lure params` describes every setting)")
    if not isinstance(raw, dict):
        kind = {list: "a list", str: "a single value", int: "a number", float: "a number"}.get(type(raw), "no mapping")
        raise LureError(f"{source} must be a mapping of sections (seed:, data:, ...), but it is {kind}")
    try:
        params = Params.model_validate(raw)
    except ValidationError as err:
        raise LureError(f"{source} is invalid:\n{error_lines(err)}") from None
    params._source = source
    return params


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    path = Path(path)
    if not path.is_file():
        raise LureError(f"{path}: no such params file (run from the project root)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise LureError(f"{path} is not valid YAML: {err}") from None
    return parse_params(raw, str(path))


# --- descriptions (`lure params`) --------------------------------------------------------------


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The section a field holds (or null), or holds a list of."""
    if typing.get_origin(annotation) is list:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (Union, types.UnionType):  # a section or null
        sections = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = sections[0] if len(sections) == 1 else None
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _values(annotation: Any, metadata: list = ()) -> str:
    """What a value of this annotation looks like, for a reader of params.yaml."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return _values(args[0], [*metadata, *args[1:]])
    if origin is Literal:
        text = " | ".join(map(str, args))
    elif origin in (Union, types.UnionType):
        text = " or ".join("null" if a is type(None) else _values(a) for a in args)
    elif origin is list:
        text = f"list of {_values(args[0])}"
    elif origin is tuple:
        text = f"[{', '.join(_values(a) for a in args)}]"
    elif origin is dict:
        text = "mapping"
    else:
        text = {"Path": "path"}.get(annotation.__name__, annotation.__name__) \
            if isinstance(annotation, type) else str(annotation)
    symbols = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    metadata = [inner for m in metadata for inner in getattr(m, "metadata", [m])]  # a Field's own constraints
    bounds = [f"{symbols[k]} {getattr(m, k)}" for m in metadata for k in symbols if getattr(m, k, None) is not None]
    return text + (f" ({', '.join(bounds)})" if bounds else "")


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return ""
    value = str(value) if isinstance(value, Path) else value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def describe(model: type[BaseModel], prefix: str = "", exclude: set[str] = frozenset()) \
        -> Iterator[tuple[str, str, str, str]]:
    """Every setting of a section and of the sections inside it: (key, values, default, description)."""
    for name, field in model.model_fields.items():
        if name in exclude:
            continue
        key, section = f"{prefix}{name}", _model_in(field.annotation)
        if field.discriminator:  # one of several sections, told apart by a key (data: its source)
            variants = [v for m in typing.get_args(field.annotation)
                        for v in typing.get_args(m.model_fields[field.discriminator].annotation)]
            yield key, f"section, by {field.discriminator}: {' | '.join(variants)}", "", field.description or ""
        elif section is None:
            yield key, _values(field.annotation, field.metadata), _default(field), field.description or ""
        elif typing.get_origin(field.annotation) is list:
            yield key, "list", _default(field), field.description or " ".join((section.__doc__ or "").split())
            yield from describe(section, f"{key}[].")
        else:
            optional = not field.is_required() and field.get_default() is None
            yield key, "section or null" if optional else "section", "null" if optional else "", \
                field.description or " ".join((section.__doc__ or "").split())
            yield from describe(section, f"{key}.")
