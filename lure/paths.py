"""Where the pipeline's outputs live; dvc.yaml declares the same paths.

Every run's outputs sit under its seed first (`seed_<s>/`), then the method: a method's name
(letters, digits, _) can never collide with a seed's shared files such as init.pt.
"""

from pathlib import Path

PREPARED = Path("data/prepared")
MODELS = Path("models")
METRICS = Path("metrics")

SUMMARY = METRICS / "summary.json"
ACCURACY_PLOT = METRICS / "accuracy.csv"
CORRUPTION_PLOT = METRICS / "corruption.csv"
STABILITY_PLOT = METRICS / "stability.csv"
RELIABILITY_PLOT = METRICS / "reliability.csv"  # pooled over the seeds, one line per method

CORRUPTED = Path("data/corrupted")  # corrupted copies of (a subset of) the test set


def corrupted_path(name: str) -> Path:
    return CORRUPTED / f"{name}.npz"


def _seed_dir(root: Path, seed: int) -> Path:
    return root / f"seed_{seed}"


def init_model_path(seed: int) -> Path:
    """Weights before chunk 1: what `scratch` returns to."""
    return _seed_dir(MODELS, seed) / "init.pt"


def first_model_path(seed: int) -> Path:
    """After chunk 1, shared by every method of the seed."""
    return _seed_dir(MODELS, seed) / "chunk_1.pt"


def learn_metrics_path(seed: int) -> Path:
    return METRICS / "learn" / f"seed_{seed}.json"


def model_path(method: str, seed: int, k: int) -> Path:
    return _seed_dir(MODELS, seed) / method / f"chunk_{k}.pt"


def relearn_metrics_path(method: str, seed: int, k: int) -> Path:
    return _seed_dir(METRICS / "relearn", seed) / method / f"chunk_{k}.json"


def stream_dir(method: str, seed: int, k: int) -> Path:
    """dvclive's log of the continual evaluation while chunk k is relearned."""
    return _seed_dir(METRICS / "stream", seed) / method / f"chunk_{k}"


def evaluate_metrics_path(method: str, seed: int) -> Path:
    return _seed_dir(METRICS / "evaluate", seed) / f"{method}.json"


def reliability_path(method: str, seed: int) -> Path:
    """The last model's reliability bins on the clean test set (pooled over seeds by the report)."""
    return _seed_dir(METRICS / "evaluate", seed) / f"{method}-reliability.csv"
