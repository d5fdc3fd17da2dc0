"""params.yaml, validated: unknown keys and bad values are refused with the key's name.

Each top-level section is one model; stages track exactly the sections they read (dvc.yaml),
so a change to one method's section re-runs only that method's stages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lure.errors import LureError

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- data -------------------------------------------------------------------------------------


class ChunkedData(Strict):
    """How any source is cut into chunks."""

    chunk_size: Annotated[int, Field(ge=2)]  # images per chunk (train + validation)
    val_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1  # per-chunk validation split
    # Few-shot setting: keep only this many training images per class (seeded), then chunk.
    shots_per_class: Annotated[int, Field(ge=1)] | None = None
    # iid: every chunk a seeded sample of all classes; class_incremental: chunk k holds only the
    # k-th group of classes_per_chunk classes (seeded class order), at most chunk_size images.
    split: Literal["iid", "class_incremental"] = "iid"
    classes_per_chunk: Annotated[int, Field(ge=1)] = 2


class DigitsData(ChunkedData):
    """scikit-learn's bundled handwritten digits: 1797 real 8x8 images, no download."""

    source: Literal["digits"] = "digits"
    test_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2
    chunk_size: Annotated[int, Field(ge=2)] = 175


class TorchvisionData(ChunkedData):
    """MNIST, CIFAR-10 or CIFAR-100 in torchvision's layout under `root` (downloaded there when
    `download` is on and the machine is online), or as an ImageFolder tree (train/, test/) at `root`."""

    source: Literal["mnist", "cifar10", "cifar100"]
    root: Path = Path("data/raw")
    download: bool = True


class ImageFolderData(ChunkedData):
    """A folder with train/<class>/* and test/<class>/* images (a user's own data)."""

    source: Literal["imagefolder"]
    path: Path


DATA_SOURCES = (DigitsData, TorchvisionData, ImageFolderData)
DataParams = Annotated[Union[DATA_SOURCES], Field(discriminator="source")]


class ChunkStep(Strict):
    """A chunk after the first and the chunk whose model it starts from.

    DVC templates cannot compute k - 1, so params.yaml spells it out; it must be k - 1.
    """

    k: Annotated[int, Field(ge=2)]
    prev: int

    @model_validator(mode="after")
    def _prev_is_previous(self) -> ChunkStep:
        if self.prev != self.k - 1:
            raise ValueError(f"prev must be k - 1 = {self.k - 1}, got {self.prev}")
        return self


# --- model and training -----------------------------------------------------------------------


class ModelParams(Strict):
    # small_cnn: 3 conv-BN-ReLU blocks (digits, MNIST); resnet18: CIFAR stem (3x3 stride-1 conv,
    # no max-pool); resnet50: ImageNet stem, for large images. ResNets come from torchvision.
    arch: Literal["small_cnn", "resnet18", "resnet50"] = "small_cnn"
    width: Annotated[int, Field(ge=1)] = 32  # small_cnn only: channels of the first block


class TrainParams(Strict):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    epochs: Annotated[int, Field(ge=1)] = 30
    batch_size: Annotated[int, Field(ge=2)] = 32
    lr: Annotated[float, Field(gt=0.0)] = 0.05
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    weight_decay: Annotated[float, Field(ge=0.0)] = 5e-4
    lr_milestones: list[Annotated[int, Field(ge=1)]] = [15, 25]
    lr_gamma: Annotated[float, Field(gt=0.0)] = 0.1
    # "best_val": the checkpoint with the best validation accuracy ends the chunk (paper).
    select: Literal["best_val", "last"] = "best_val"
    # crop_flip: random crop with zero padding + horizontal flip, done on the device in batches.
    augment: Literal["none", "crop_flip"] = "none"
    crop_padding: Annotated[int, Field(ge=0)] = 4
    # auto: bf16 autocast and channels_last on CUDA, fp32 on the CPU.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    compile: bool = False  # torch.compile the model (CUDA; pays a compile per stage)


class ReplayParams(Strict):
    # full: all chunks so far; buffer: the new chunk plus a fixed-size seeded reservoir of
    # earlier samples; none: the new chunk alone.
    mode: Literal["full", "buffer", "none"] = "full"
    buffer_size: Annotated[int, Field(ge=1)] = 200
    buffer_val_size: Annotated[int, Field(ge=1)] = 20


# --- forgetting methods (one section each; `kind` defaults to the section's name) --------------


class Mitigations(Strict):
    """Stability-gap mitigations (Harun & Kanan 2023), options of any method."""

    soft_targets: bool = False  # SGM's dynamic soft targets instead of one-hot labels
    # A new SGD state at each chunk; by default the momentum is carried over, as the official
    # LURE code never rebuilds its optimizer.
    fresh_optimizer: bool = False
    warmup: Fraction = 0.0  # linear LR warm-up over this fraction of the chunk's updates
    # When the method resets the head: class_means sets row c to the mean of the L2-normalised
    # penultimate features of class c's training images (no augmentation), bias 0.
    head_init: Literal["random", "class_means"] = "random"


class MethodBase(Strict):
    mitigate: Mitigations = Mitigations()


class WarmParams(MethodBase):
    """Continue from the previous chunk's model."""

    kind: Literal["warm"] = "warm"


class ScratchParams(MethodBase):
    """Restart from the saved initial weights (the official code's `--use_randinit`)."""

    kind: Literal["scratch"] = "scratch"


class MaskParams(MethodBase):
    """Re-initialise the lowest-scoring `fraction` of the weights over one global threshold; the
    methods that share this differ in the score only (LURE: SNIP; magnitude: |theta|; random)."""

    # Lowest-scoring fraction of the scored parameters, over one global threshold.
    fraction: Fraction = 0.2
    # all: every parameter competes for the threshold, BN gamma/beta and biases included, but
    # only tensors named `weight` are reset (official LURE); weights: only `weight` tensors are scored.
    score_params: Literal["all", "weights"] = "all"
    # kaiming: fresh kaiming_uniform(a=sqrt(5)) draw, 1-D tensors as (n, 1), so BN gamma becomes
    # U(-1, 1) (official LURE); module: the value a freshly built model would have (BN gamma = 1).
    reinit: Literal["kaiming", "module"] = "kaiming"


class LureParams(MaskParams):
    """SNIP-scored re-initialisation. Defaults reproduce the official code (NeurAI-Lab/LURE)."""

    kind: Literal["lure"] = "lure"
    # replay: the first images of the replay set in stored order, i.e. chunk 1's under full
    # replay (official); chunk: the new chunk's training images (official `-snip_no_replay`).
    score_data: Literal["replay", "chunk"] = "replay"
    score_batches: Annotated[int, Field(ge=1)] = 1  # official: one batch
    score_batch_size: Annotated[int, Field(ge=1)] = 100  # official: 100 images
    # eval: BN uses running statistics while scoring (official); train: batch statistics
    # (running statistics are left untouched either way).
    score_mode: Literal["eval", "train"] = "eval"


class MagnitudeParams(MaskParams):
    """Ablation of LURE: the lowest |theta| instead of the lowest |g * theta|, data-free."""

    kind: Literal["magnitude"] = "magnitude"


class RandomMaskParams(MaskParams):
    """Ablation of LURE: the same fraction, chosen at random (tells "which" from "how many")."""

    kind: Literal["random_mask"] = "random_mask"


class ShrinkPerturbParams(MethodBase):
    """Shrink & perturb (Ash & Adams 2020): theta <- shrink * theta + perturb * fresh, every
    parameter. Defaults are the LURE code's (0.3, 0.001, kaiming); Ash & Adams' reference code
    uses shrink 0.4, perturb 0.1 with a freshly initialised model (noise: module)."""

    kind: Literal["shrink_perturb"] = "shrink_perturb"
    shrink: Fraction = 0.3
    perturb: Annotated[float, Field(ge=0.0)] = 0.001
    # kaiming: kaiming_uniform(a=sqrt(5)) draws, 1-D tensors as (n, 1) (LURE code);
    # module: a freshly built model's parameters (Ash & Adams).
    noise: Literal["kaiming", "module"] = "kaiming"


class LaterLayersParams(MethodBase):
    """Later-layer forgetting (Zhou et al. 2022): re-initialise every layer from `from_layer` on,
    the head included. Layer names are the architecture's (lure.models: `stem`, `layer1`, ...)."""

    kind: Literal["later_layers"] = "later_layers"
    from_layer: str = "layer3"  # official LURE code: all but conv1, layer1 and layer2 of a ResNet-18
    # kaiming: conv and linear weights drawn from kaiming_uniform(a=sqrt(5)), BN and biases kept
    # (official LURE code, which also keeps the shortcut convs by a name filter; here they are
    # reset with their layer); module: every parameter and BN statistic of those layers as a
    # freshly built model has them.
    reinit: Literal["kaiming", "module"] = "kaiming"


class HeadResetParams(MethodBase):
    """Classifier-head reset (RIFLE, Li et al. 2020): the final linear layer re-initialised."""

    kind: Literal["head_reset"] = "head_reset"
    # module: weight and bias as a freshly built head has them (RIFLE); kaiming: the weight alone
    # drawn from kaiming_uniform(a=sqrt(5)), what the official LURE code meant to do.
    reinit: Literal["kaiming", "module"] = "module"


class KnowledgeEvolutionParams(MethodBase):
    """Knowledge Evolution (Taha et al. 2021): every layer split once into a fit part, kept, and a
    reset part, re-initialised at every chunk; the split is fixed for a run (seed and method)."""

    kind: Literal["knowledge_evolution"] = "knowledge_evolution"
    # kels: the fit part is the first ceil(rate * C_out) filters over the first ceil(rate * C_in)
    # input channels (the image channels and the classes are not split); wels: a random mask
    # keeping each weight with probability `split_rate`.
    split: Literal["kels", "wels"] = "kels"
    split_rate: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    reinit: Literal["kaiming", "module"] = "module"  # KE: the reset part takes a fresh model's values


class RedoParams(MethodBase):
    """ReDo (Sokar et al. 2023): recycle dormant units when a chunk arrives. A unit's score is its
    mean |activation| on a seeded sample of the replay data over the mean of its layer; at or below
    `tau` it is dormant: its incoming weights are drawn afresh, its BN entries reset, its outgoing
    weights and their momentum zeroed."""

    kind: Literal["redo"] = "redo"
    tau: Annotated[float, Field(ge=0.0)] = 0.1  # published: 0.025 or 0.1
    score_batches: Annotated[int, Field(ge=1)] = 1  # the sample: score_batches x score_batch_size images
    score_batch_size: Annotated[int, Field(ge=1)] = 256


class ContinualBackpropParams(MethodBase):
    """Continual backprop (Dohare et al. 2024): while training, per hidden unit a utility
    u <- decay * u + (1 - decay) * |h| * mean |w_out|; units older than `maturity` updates are
    eligible, and `replacement_rate` of them per update (accumulated) with the lowest utility are
    replaced: incoming weights drawn afresh, outgoing weights zeroed. Nothing happens at the
    chunk boundary itself. The published settings suit long runs: a unit must live `maturity`
    updates, and a layer of n units replaces one every 1 / (replacement_rate * n) updates."""

    kind: Literal["continual_backprop"] = "continual_backprop"
    replacement_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 1e-5  # published (CIFAR-100): 1e-5
    maturity: Annotated[int, Field(ge=0)] = 1000  # published: 1000
    decay: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.99  # published: 0.99


# One params class per method kind (its function is in lure.forgetting.METHODS): add new ones here.
METHOD_PARAMS = (WarmParams, ScratchParams, LureParams, MagnitudeParams, RandomMaskParams, ShrinkPerturbParams,
                 LaterLayersParams, HeadResetParams, KnowledgeEvolutionParams, RedoParams, ContinualBackpropParams)
MethodParams = Annotated[Union[METHOD_PARAMS], Field(discriminator="kind")]


def _tags(cls: type[BaseModel], field: str) -> tuple[str, ...]:
    return get_args(cls.model_fields[field].annotation)


METHOD_KINDS = tuple(tag for cls in METHOD_PARAMS for tag in _tags(cls, "kind"))
UNION_TAGS = {*METHOD_KINDS, *(tag for cls in DATA_SOURCES for tag in _tags(cls, "source"))}


class EvaluateParams(Strict):
    ece_bins: Annotated[int, Field(ge=1)] = 15
    batch_size: Annotated[int, Field(ge=1)] = 1000


class StabilityParams(Strict):
    """Continual evaluation inside every relearn stage (the stability gap, De Lange et al. 2023)."""

    every: Annotated[int, Field(ge=0)] = 10  # evaluate before the first update and every k updates; 0: off
    samples: Annotated[int, Field(ge=1)] = 100  # held-out (validation) images per chunk, seeded subset


class RobustnessParams(Strict):
    """Corrupted copies of the test set (lure.corruptions), made once by the corrupt stage."""

    # standard: the 15 CIFAR-10-C corruptions; all: with the extras; none: no robustness metrics
    corruptions: Literal["standard", "all", "none"] = "all"
    severities: list[Annotated[int, Field(ge=1, le=5)]] = [1, 2, 3, 4, 5]
    # A seeded subset of the test set, or null for all of it: 75 corrupted copies take room.
    test_images: Annotated[int, Field(ge=1)] | None = None

    @field_validator("severities")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        if not value or len(set(value)) != len(value):
            raise ValueError("list distinct severities from 1 to 5")
        return sorted(value)


# --- the whole file -----------------------------------------------------------------------------


class Params(Strict):
    seed: Annotated[int, Field(ge=0)] = 0
    # Run seeds: every method runs once per seed (initial weights, batch order, forgetting
    # draws); `seed` above stays the data's (split, chunks, replay reservoir, held-out sets).
    seeds: list[Annotated[int, Field(ge=0)]] = [0]
    data: DataParams = DigitsData()
    chunks: list[ChunkStep]
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    replay: ReplayParams = ReplayParams()
    methods: dict[str, MethodParams]
    evaluate: EvaluateParams = EvaluateParams()
    robustness: RobustnessParams = RobustnessParams()
    stability: StabilityParams = StabilityParams()

    @field_validator("methods", mode="before")
    @classmethod
    def _kind_defaults_to_name(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        sections = {}
        for name, section in value.items():
            section = {} if section is None else section
            sections[name] = {"kind": name, **section} if isinstance(section, dict) else section
        return sections

    @field_validator("methods")
    @classmethod
    def _some_methods(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            raise ValueError(f"name at least one method ({', '.join(METHOD_KINDS)})")
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


def _format_location(loc: tuple[Any, ...]) -> str:
    """`methods.lure.fraction`, without the union tag pydantic inserts (methods.lure.lure...)."""
    parts = [str(p) for p in loc]
    tag_at = {"data": 1, "methods": 2}.get(parts[0]) if parts else None
    if tag_at is not None and len(parts) > tag_at + 1 and parts[tag_at] in UNION_TAGS:
        del parts[tag_at]
    return ".".join(parts)


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = _format_location(e["loc"]) or "(top level)"
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            message = "unknown key"
        elif e["type"] == "missing":
            message = "required key is missing"
        got = "" if e["type"] in ("extra_forbidden", "missing") else f" (got {e['input']!r})"
        lines.append(f"  {where}: {message}{got}")
    return "\n".join(lines)


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate a parsed params mapping; raise LureError naming every bad key."""
    if not isinstance(raw, dict):
        raise LureError(f"{source} must be a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise LureError(f"{source} is invalid:\n{_format_errors(err)}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise LureError(f"{path}: no such params file (run from the project root)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise LureError(f"{path} is not valid YAML: {err}") from None
    return parse_params(raw, str(path))
