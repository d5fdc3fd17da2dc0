"""Every file the pipeline reads and writes, in one place. dvc.yaml has to spell the same paths out
(its templates cannot call Python); tests/test_layout.py renders dvc.yaml and checks each stage's
outputs and data dependencies against `stage_outputs` and `stage_inputs` here.

Every run's outputs sit under its seed first (`seed_<s>/`), then the method: a method's name
(letters, digits, _) can never collide with a seed's shared files such as init.pt.
"""

from __future__ import annotations

import re
from pathlib import Path

PREPARED = Path("data/prepared")  # the chunks and the test set, as uint8 arrays
CORRUPTED = Path("data/corrupted")  # corrupted copies of (a subset of) the test set
MODELS = Path("models")
METRICS = Path("metrics")

SUMMARY = METRICS / "summary.json"
# Wall times differ from run to run: neither git nor DVC tracks them (.gitignore, .dvcignore), so that
# the same seed gives the same dvc.lock
TIMING = METRICS / "timing.json"  # wall times per method, written by the report beside its outputs
STAGE_TIMING = "timing.json"  # a training stage's wall times, in its log folder
ACCURACY_PLOT = METRICS / "accuracy.csv"
CORRUPTION_PLOT = METRICS / "corruption.csv"
STABILITY_PLOT = METRICS / "stability.csv"
RELIABILITY_PLOT = METRICS / "reliability.csv"  # pooled over the seeds, one line per method
PLOTS = (ACCURACY_PLOT, CORRUPTION_PLOT, STABILITY_PLOT, RELIABILITY_PLOT)  # the report's plot data


# --- inside data/prepared and data/corrupted ---------------------------------------------------

META = "meta.json"  # what a model needs to know of the data, whatever the number of chunks
TEST = "test.npz"
SKIPPED = "skipped.json"  # the unreadable images left out (data.bad_images: skip), when there are any
SUBSET = "subset.npz"  # which test images were corrupted, and their clean copies


def chunk_file(k: int) -> str:
    return f"chunk_{k}.npz"


def seen_file(k: int) -> str:
    """The hashes of chunks 1..k: a stage that trains on them depends on this one file."""
    return f"seen_{k}.json"


def corrupted_file(name: str) -> str:
    return f"{name}.npz"


# --- a run's files ----------------------------------------------------------------------------


def _seed_dir(root: Path, seed: int) -> Path:
    return root / f"seed_{seed}"


def init_model(seed: int) -> Path:
    """Weights before chunk 1: what `scratch` returns to."""
    return _seed_dir(MODELS, seed) / "init.pt"


def first_model(seed: int) -> Path:
    """After chunk 1, shared by every method of the seed."""
    return _seed_dir(MODELS, seed) / "chunk_1.pt"


def learn_metrics(seed: int) -> Path:
    return METRICS / "learn" / f"seed_{seed}.json"


def learn_log(seed: int) -> Path:
    """dvclive's log of chunk 1's training, with its timing.json."""
    return METRICS / "learn" / f"seed_{seed}"


def method_models(method: str, seed: int) -> Path:
    return _seed_dir(MODELS, seed) / method


def model(method: str, seed: int, k: int) -> Path:
    return method_models(method, seed) / f"chunk_{k}.pt"


def method_relearn_metrics(method: str, seed: int) -> Path:
    return _seed_dir(METRICS / "relearn", seed) / method


def relearn_metrics(method: str, seed: int, k: int) -> Path:
    return method_relearn_metrics(method, seed) / f"chunk_{k}.json"


def curves_log(method: str, seed: int, k: int) -> Path:
    """dvclive's log of chunk k's relearning: the training and continual-evaluation curves, and
    timing.json. The folder keeps its first name, metrics/stream, which users' scripts know."""
    return _seed_dir(METRICS / "stream", seed) / method / f"chunk_{k}"


EVALUATIONS = METRICS / "evaluate"


def evaluation(method: str, seed: int, folder: Path = EVALUATIONS) -> Path:
    return _seed_dir(folder, seed) / f"{method}.json"


def reliability_bins(method: str, seed: int) -> Path:
    """The last model's reliability bins on the clean test set (pooled over seeds by the report)."""
    return _seed_dir(EVALUATIONS, seed) / f"{method}-reliability.csv"


def chunk_number(name: str) -> int | None:
    """k of a chunk's name as the pipeline writes it (chunk_<k>, chunk_<k>.pt, chunk_<k>.json)."""
    match = re.fullmatch(r"chunk_(\d+)(\.pt|\.json)?", name)
    return int(match.group(1)) if match else None


def chunks_beyond(method: str, seed: int, n_chunks: int) -> list[Path]:
    """What is left of chunks after the n-th in a run's folders: the outputs of relearn stages
    that no longer exist since a chunk was taken off params.yaml."""
    folders = [method_models(method, seed), method_relearn_metrics(method, seed), curves_log(method, seed, 1).parent]
    return sorted(path for folder in folders if folder.is_dir() for path in folder.iterdir()
                  if (chunk_number(path.name) or 0) > n_chunks)


# --- the stages' files, as dvc.yaml declares them ------------------------------------------------


def stage_outputs(stage: str, method: str = "", seed: int = 0, k: int = 0) -> list[Path]:
    """What a stage writes (dvc.yaml: outs and metrics)."""
    return {
        "prepare": lambda: [PREPARED],
        "learn": lambda: [init_model(seed), first_model(seed), learn_metrics(seed), learn_log(seed)],
        "branch": lambda: [model(method, seed, 1)],
        "relearn": lambda: [model(method, seed, k), curves_log(method, seed, k), relearn_metrics(method, seed, k)],
        "corrupt": lambda: [CORRUPTED],
        "evaluate": lambda: [evaluation(method, seed), reliability_bins(method, seed)],
        "report": lambda: [SUMMARY, *PLOTS],
    }[stage]()


def stage_inputs(stage: str, method: str = "", seed: int = 0, k: int = 0) -> list[Path]:
    """The files a stage reads that other stages (or the user) make (dvc.yaml: deps besides code).
    Raw data is the user's: prepare depends on data/raw, where sources are kept."""
    return {
        "prepare": lambda: [Path("data/raw")],
        "learn": lambda: [PREPARED / META, PREPARED / seen_file(1)],
        "branch": lambda: [first_model(seed)],
        "relearn": lambda: [PREPARED / META, PREPARED / seen_file(k), init_model(seed), model(method, seed, k - 1)],
        "corrupt": lambda: [PREPARED / TEST],
        "evaluate": lambda: [PREPARED, CORRUPTED, method_models(method, seed), learn_metrics(seed),
                             method_relearn_metrics(method, seed)],
        "report": lambda: [EVALUATIONS, METRICS / "stream", METRICS / "learn"],
    }[stage]()


def stage_count(methods: int, seeds: int, later_chunks: int) -> int:
    """The stages `dvc repro` lays out: prepare, corrupt and report once, learn per run seed, then
    per method and run seed a branch, a relearn per chunk after the first, and an evaluate."""
    return 3 + seeds + methods * seeds * (2 + later_chunks)
