"""Benchmark: FIRE's own training harness (isaac7778/FIRE, vision/train.py's `main`) on the setting of
presets/cifar10-fire-continual.yaml, for warm start, shrink & perturb, DASH and FIRE, 5 seeds each:
what the authors' loop gives beside what lure's pipeline gives under that preset.

It runs in the environment of bench/methods.py (FIRE's code imports einops; wandb is stubbed here),
given a checkout of the official repository (its root, or its vision/ folder):

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 /tmp/methods-bench/bin/python bench/fire_harness.py \\
        --fire PATH/TO/isaac7778/FIRE [--data ../shared/data/cifar10]

About 12 minutes on 2 cores (20 runs of about 35 s on one thread; FIRE's loop tests on all 10,000
test images after every epoch). Writes bench/results/fireharness-<arch>-<cores>cores.json, or --out.

What runs of FIRE's code (nothing of it is copied here; its modules are imported from --fire):
- vision/train.py's `main` itself, with three of the module's attributes replaced: `wandb` (a stub
  that records what `main` logs), `build_model` (lure's MLP built from FIRE's model classes) and
  `get_task` (FIRE's own get_task, called as it is, whose `TASKS["CIFAR10"]` builds the task below;
  then cfg.n_epochs = 30 where it set 100). So its optimiser (get_optimizer: Adam, lr 1e-3, a fresh
  one every chunk), LR warm-up rule, gradient clipping (0.5), batches (256, shuffled, the last
  smaller one kept), seeding (np.random.seed, torch.manual_seed of cfg.seed), order of the
  interventions, and its interventions vision/interventions/{shrink_and_perturb,dash,fire}.py run
  as they are, configured by FIRE's config.py CONFIG (as Config) with task CIFAR10, benchmark
  continual, log_every 1 and the method's keys: warm (none), `snp.coef=0.2`,
  `dash.alpha=0.3, dash.lambda=0.1`, `fire.enable=True, fire.iter_num=10`.
- vision/task.py's Task: its chunking (_init_dataset with mode 'sample', access 'full', test access
  'same', as get_task asks; a np.random.seed(cfg.seed) permutation of the training pool, chunk i
  its first i x chunk_size images), its loaders (set_level: IndexedDataset, batch 256, shuffle, no
  drop_last) and its test (Task.test: eval mode, the whole test set in batches of 64). Only
  `_get_dataset` and `shape` are ours (OfflineCIFAR10): the same CIFAR-10 from the offline
  ImageFolder copy (train/<class>/*.png, test/<class>/*.png, classes and files in sorted order, as
  lure reads it), where FIRE's CIFAR10 downloads torchvision's; n_chunks 4 (get_task's continual:
  10) and chunk_size 950 (get_task: 0, i.e. 50,000 / n_chunks).
- vision/models/base.py's Model, BaseBackbone and BaseHead: the MLP is written here on them (a
  backbone of flatten, Linear(3072, 100), ReLU, Linear(100, 100), ReLU; a head Linear(100, 10)
  marked `is_output_layer`, as FIRE's heads mark theirs), PyTorch's default initialisation.
Test accuracy after each chunk: what `main` logs (test/acc of Task.test, computed after every
epoch) at the last epoch of the chunk, captured by the wandb stub; the whole curve is kept too.

Setting (lure's preset): 4 cumulative chunks of 950 training images (lure: 1,000 with 5% held out),
30 epochs per chunk, Adam 1e-3, batch 256, clip 0.5, fresh optimiser, no augmentation, the MLP;
images in [0, 1] normalised per channel by the mean and (sample) std of chunk 1's training images,
as lure's set_input_stats does (FIRE's CIFAR10 task normalises by the fixed full-training-set
constants (0.4914, 0.4822, 0.4465) / (0.2470, 0.2435, 0.2616), vision/task.py:275).

Differences from lure's preset that remain (FIRE's harness run as it is):
- the images: FIRE's chunk i is the first 950 i images of np.random.seed(cfg.seed)'s permutation
  of the 50,000 (task.py:170), so every seed draws other images; lure's chunks are slices of one
  permutation of data seed 0 (lure/chunks.py:76), each split 950/50 (lure/chunks.py:94), the same
  images for every run seed. Same sizes and distribution, not the same images.
- the LR warm-up: FIRE's rule (train.py:214-221) sets the LR per epoch, lr x (epoch + 1) / 3 for
  the first 3 epochs of each chunk (10% of its 30), the first update at lr / 3; lure's (train.warmup
  0.1, lure/train.py:40-42) is linear per update over the first 10% of the chunk's updates, from 0.
- shrink & perturb: FIRE's (1 - c) theta + c theta_0 with the run's own initial weights
  (train.py:119, 168); lure's 0.8 theta + 0.2 theta' with a fresh draw theta' at every chunk
  (noise: module, lure/methods/shrink_perturb.py:28-32).
- DASH: FIRE's gathers its directions over a copy of the chunk's shuffled training loader, batches
  of 256 (train.py:186-187); lure's over the same images (chunks 1..k) in stored order, in batches
  of one chunk's training images, 950 (lure/methods/dash.py:36, 55). Both from an eval-mode copy
  (FIRE's model is in eval mode after Task.test), which changes nothing for the MLP.
- randomness: FIRE draws the batch order from torch's global RNG, which DASH's extra pass over
  the loader also advances, so DASH's batch orders differ from the other methods' of its seed
  after chunk 1 (FIRE's and shrink & perturb's interventions draw nothing, and every method's
  tests draw alike);
  lure draws it from a generator per (run seed, chunk) (lure/relearn.py:92), the same for every
  method. The initial weights are the same for the same seed number: torch.manual_seed(seed),
  then PyTorch's default draws of the same three layers in the same order, on both sides
  (train.py:107, 116; lure/learn.py:39, lure/streams.py:128; checked equal for seeds 0..4).
- normalisation: inside the model in lure (Normalize buffers), in the dataset here (FIRE's
  transform); the same numbers on chunk 1's statistics, each side's own chunk 1.
- FIRE tests after every epoch (train.py:296) and lure after every chunk; the chunk's figure is the
  same model (last epoch, lure's select: last), in eval mode, on all 10,000 test images.
- optimiser code: torch.optim.Adam here, lure's foreach rewrite of it (lure/optim.py), equal up to
  rounding; lure also measures validation and stability-gap accuracy while training, which changes
  nothing in the training.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import importlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # FIRE's progress bars (read when tqdm is imported)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import current_commit  # noqa: E402
from torch import nn  # noqa: E402

from lure.device import cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data" / "cifar10"
N_CHUNKS, CHUNK_TRAIN, EPOCHS = 4, 950, 30  # the preset: 4 chunks of 1,000 less 5% held out, 30 epochs
METHODS = {  # lure's name -> FIRE's cfg keys (FIRE's config.py CONFIG)
    "warm": {},
    "shrink_perturb": {"snp": {"coef": 0.2}},
    "dash": {"dash": {"alpha": 0.3, "lambda": 0.1}},
    "fire": {"fire": {"enable": True, "iter_num": 10}},
}
FIRE_FILES = ["train.py", "task.py", "config.py", "models/base.py", "interventions/shrink_and_perturb.py",
              "interventions/dash.py", "interventions/fire.py"]


# --- FIRE's code ------------------------------------------------------------------------------------


class Recorder(types.ModuleType):
    """A stand-in for wandb: keeps what `main` logs."""

    def __init__(self) -> None:
        super().__init__("wandb")
        self.logged: list[dict] = []

    def init(self, *args, **kwargs) -> None:
        self.logged = []

    def log(self, data: dict, step: int | None = None) -> None:
        self.logged.append(dict(data))

    def finish(self, *args, **kwargs) -> None:
        pass


def vision_folder(path: Path) -> Path:
    for folder in (path / "vision", path):
        if (folder / "train.py").is_file() and (folder / "task.py").is_file():
            return folder
    raise SystemExit(f"--fire: {path} holds neither vision/train.py nor train.py (a checkout of isaac7778/FIRE)")


def fire_commit(folder: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() or None


def load_fire(folder: Path, recorder: Recorder) -> types.SimpleNamespace:
    """FIRE's vision/ modules, imported from `folder` (first on sys.path: its `models`, `task`,
    `config` and `train` are top-level names), wandb stubbed."""
    sys.path.insert(0, str(folder))
    sys.modules["wandb"] = recorder
    modules = {name: importlib.import_module(name) for name in ("config", "task", "models.base", "train")}
    for name, module in modules.items():
        if not Path(module.__file__).resolve().is_relative_to(folder.resolve()):
            raise SystemExit(f"{name} was imported from {module.__file__}, not from {folder}")
    return types.SimpleNamespace(config=modules["config"], task=modules["task"], base=modules["models.base"],
                                 train=modules["train"])


# --- the data: CIFAR-10 from the offline ImageFolder copy -------------------------------------------


def decode_folder(folder: Path) -> tuple[torch.Tensor, list[int], list[str]]:
    """Every image of an ImageFolder tree as uint8 (N, 3, H, W), its labels and the classes (folders
    and files in sorted order: torchvision's ImageFolder listing, lure's order)."""
    from PIL import Image
    from torchvision import datasets

    def read(path: str) -> np.ndarray:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB")).transpose(2, 0, 1)

    listing = datasets.ImageFolder(str(folder), loader=lambda path: path)
    x = np.stack([read(path) for path, _ in listing.samples])
    return torch.from_numpy(x), [label for _, label in listing.samples], list(listing.classes)


class Images(torch.utils.data.Dataset):
    """Decoded images as FIRE's datasets give them: (ToTensor's x / 255, Normalize's (x - mean) / std,
    label), with `targets` and `classes` as torchvision's datasets have them. The statistics are set
    once the chunks are drawn (OfflineCIFAR10), and every image is normalised then, once (read-only
    afterwards: a deep copy, as train.py makes of DASH's loader, shares them)."""

    def __init__(self, x: torch.Tensor, targets: list[int], classes: list[str]) -> None:
        self.x, self.targets, self.classes = x, targets, classes
        self.inputs = None  # set by normalise

    def normalise(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.inputs = (self.x.float().div_(255) - mean[:, None, None]) / std[:, None, None]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.inputs[index], self.targets[index]

    def __deepcopy__(self, memo: dict) -> Images:
        return self


def chunk_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and sample std of uint8 images in [0, 1], in float64: lure's set_input_stats."""
    floats = x.double() / 255
    mean = floats.mean((0, 2, 3))
    std = floats.sub(mean[:, None, None]).square().sum((0, 2, 3)).div(x.shape[0] * x.shape[2] * x.shape[3] - 1).sqrt()
    return mean.float(), std.float().clamp_min(1e-3)


def offline_task_class(fire: types.SimpleNamespace, data: Path):
    """A subclass of FIRE's Task reading the offline copy; decoded once for all runs."""
    decoded = {}

    class OfflineCIFAR10(fire.task.Task):
        def _get_dataset(self):
            if not decoded:
                for part in ("train", "test"):
                    decoded[part] = decode_folder(data / part)
            return Images(*decoded["train"]), Images(*decoded["test"])

        @property
        def shape(self):
            return [3, 32, 32]

    def build(**kwargs):
        """What get_task asks for, on 4 chunks of 950 images; normalised by chunk 1's statistics."""
        asked = {key: kwargs[key] for key in ("mode", "access", "test_access")}
        if asked != {"mode": "sample", "access": "full", "test_access": "same"}:
            raise SystemExit(f"FIRE's get_task asks for {asked}, not the continual benchmark this was written for")
        task = OfflineCIFAR10(**{**kwargs, "n_chunks": N_CHUNKS, "chunk_size": CHUNK_TRAIN})
        first = task._train_datasets[0]
        mean, std = chunk_statistics(task._train_dataset.x[torch.as_tensor(np.asarray(first.indices))])
        for images in (task._train_dataset, task._test_dataset):
            images.normalise(mean, std)
        task.statistics = (mean.tolist(), std.tolist())
        return task

    return build


# --- the model: lure's MLP on FIRE's classes ----------------------------------------------------------


def mlp_model(fire: types.SimpleNamespace, width: int = 100, depth: int = 2, classes: int = 10) -> nn.Module:
    """lure's mlp (lure/models.py) as FIRE's Model(backbone, head)."""

    class MLPBackbone(fire.base.BaseBackbone):
        name = "mlp"

        def __init__(self, in_shape) -> None:
            super().__init__(in_shape)
            inputs = int(np.prod(in_shape))
            layers: list[nn.Module] = [nn.Flatten()]
            for i in range(depth):
                layers += [nn.Linear(inputs if i == 0 else width, width), nn.ReLU(inplace=True)]
            self.layers = nn.Sequential(*layers)

        def forward(self, x):
            return self.layers(x)

        @property
        def output_dim(self):
            return width

    class LinearHead(fire.base.BaseHead):
        name = "linear"

        def __init__(self, in_shape, output_size) -> None:
            super().__init__(in_shape, output_size)
            self.fc = nn.Sequential(nn.Linear(in_shape[0], output_size))
            self.fc[-1].is_output_layer = True

        def forward(self, x):
            return self.fc(x)

        def get_feature(self, x):
            return x

    backbone = MLPBackbone((3, 32, 32))
    return fire.base.Model(backbone=backbone, head=LinearHead((width,), classes))


# --- runs -------------------------------------------------------------------------------------------


def make_cfg(fire: types.SimpleNamespace, method: str, seed: int):
    config = copy.deepcopy(fire.config.CONFIG)
    config.update(task="CIFAR10", model="MLP", benchmark="continual", optimizer="adam", lr=1e-3,
                  clip_grad_norm=0.5, batch_size=256, log_every=1, seed=seed, disable_wandb=True)
    for section, values in METHODS[method].items():
        config[section].update(values)
    return fire.config.Config(config)


def run(fire: types.SimpleNamespace, recorder: Recorder, method: str, seed: int) -> dict:
    """FIRE's main for one method and seed; what it logged, per chunk."""
    cfg = make_cfg(fire, method, seed)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # cfg.print() and the device line
        fire.train.main(cfg)
    seconds = time.perf_counter() - start
    logged = recorder.logged
    if len(logged) != N_CHUNKS * EPOCHS or cfg.n_epochs != EPOCHS:
        raise SystemExit(f"{method} seed {seed}: main logged {len(logged)} epochs, not {N_CHUNKS} x {EPOCHS}")
    by_chunk = [[row for row in logged if row["level"] == i] for i in range(N_CHUNKS)]
    return {
        "seed": seed,
        "test_acc": [rows[-1]["test/acc"] for rows in by_chunk],
        "train_acc": [rows[-1]["train/acc"] for rows in by_chunk],  # on the last epoch's batches as trained
        "test_acc_by_epoch": [[round(row["test/acc"], 4) for row in rows] for rows in by_chunk],
        "chunk1_statistics": fire.train.last_task.statistics,
        "seconds": round(seconds, 2),
    }


def summary(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fire", type=Path, required=True, help="a checkout of isaac7778/FIRE (or its vision/)")
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="CIFAR-10 as an ImageFolder copy")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--out", type=Path, default=None,
                        help="default bench/results/fireharness-<arch>-<cores>cores.json")
    args = parser.parse_args()
    for part in ("train", "test"):
        if not (args.data / part).is_dir():
            raise SystemExit(f"--data: {args.data / part} is missing (an ImageFolder copy of CIFAR-10)")

    folder = vision_folder(args.fire)
    recorder = Recorder()
    fire = load_fire(folder, recorder)
    build_task, fire_get_task = offline_task_class(fire, args.data), fire.train.get_task

    def get_task(cfg):
        """FIRE's get_task as it is, on the offline task; then the preset's 30 epochs per chunk."""
        fire.train.TASKS = {"CIFAR10": build_task}
        task = fire_get_task(cfg)
        cfg.n_epochs = EPOCHS
        fire.train.last_task = task
        return task

    def build_model(cfg):
        assert cfg.task == "CIFAR10" and cfg.model == "MLP", (cfg.task, cfg.model)
        return mlp_model(fire)

    fire.train.get_task, fire.train.build_model, fire.train.wandb = get_task, build_model, recorder

    commit = current_commit()
    cores = os.cpu_count() or 1
    print(f"FIRE's main from {folder}; {cores} cores, {torch.get_num_threads()} torch threads", flush=True)
    start = time.perf_counter()
    results = {}
    for method in args.methods:
        runs = []
        for seed in args.seeds:
            runs.append(run(fire, recorder, method, seed))
            r = runs[-1]
            print(f"{method:>15} seed {seed}: test acc by chunk {' '.join(f'{a:.4f}' for a in r['test_acc'])} "
                  f"({r['seconds']:.0f} s)", flush=True)
        results[method] = {
            "cfg": METHODS[method],
            "final_test_acc": summary([r["test_acc"][-1] for r in runs]),
            "test_acc_by_chunk": {"mean": [statistics.fmean(r["test_acc"][i] for r in runs) for i in range(N_CHUNKS)],
                                  "sd": [statistics.stdev(r["test_acc"][i] for r in runs) if len(runs) > 1 else None
                                         for i in range(N_CHUNKS)]},
            "seconds": round(sum(r["seconds"] for r in runs), 1),
            "runs": runs,
        }
    seconds = time.perf_counter() - start

    import torchvision

    result = {
        "benchmark": "FIRE's vision/train.py main on presets/cifar10-fire-continual.yaml's setting",
        "lure_results": "results/fire-continual",  # lure's run of the preset, which `lure readme` sets beside
        "commit": commit,
        "fire": {"path": str(args.fire), "commit": fire_commit(folder),
                 "sha256": {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()[:16]
                            for name in FIRE_FILES}},
        "machine": {"cpu": cpu_name(), "cores": cores, "arch": platform.machine(),
                    "torch_threads": torch.get_num_threads()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
                     "torchvision": torchvision.__version__},
        "setting": {"data": "CIFAR-10, offline ImageFolder copy", "chunks": N_CHUNKS, "chunk_train_images": CHUNK_TRAIN,
                    "cumulative": True, "epochs_per_chunk": EPOCHS, "batch_size": 256, "optimizer": "adam",
                    "lr": 1e-3, "clip_grad_norm": 0.5, "fresh_optimizer": True, "augment": "none",
                    "normalise": "chunk 1's per-channel mean and sample std", "test_images": 10000,
                    "model": "mlp 3072-100-100-10 (ReLU), PyTorch default init",
                    "test_acc": "main's logged test/acc at the last epoch of each chunk"},
        "seeds": args.seeds,
        "seconds": round(seconds, 1),
        "methods": results,
    }
    out = args.out or ROOT / "bench" / "results" / f"fireharness-{platform.machine()}-{cores}cores.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{seconds:.0f} s; final test accuracy, mean ± sd over seeds {args.seeds}:")
    for method, r in results.items():
        f = r["final_test_acc"]
        print(f"  {method:>15}: {f['mean']:.4f} ± {f['sd'] or 0:.4f}; by chunk "
              f"{' '.join(f'{a:.4f}' for a in r['test_acc_by_chunk']['mean'])}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
