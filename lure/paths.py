"""Where the pipeline's outputs live; dvc.yaml declares the same paths."""

from pathlib import Path

PREPARED = Path("data/prepared")
MODELS = Path("models")
METRICS = Path("metrics")

INIT_MODEL = MODELS / "init.pt"  # weights before chunk 1: what `scratch` returns to
FIRST_MODEL = MODELS / "chunk_1.pt"  # after chunk 1, shared by every method
LEARN_METRICS = METRICS / "learn.json"
SUMMARY = METRICS / "summary.json"
ACCURACY_PLOT = METRICS / "accuracy.csv"


def model_path(method: str, k: int) -> Path:
    return MODELS / method / f"chunk_{k}.pt"


def relearn_metrics_path(method: str, k: int) -> Path:
    return METRICS / "relearn" / method / f"chunk_{k}.json"


def stream_dir(method: str, k: int) -> Path:
    """dvclive's log of the continual evaluation while chunk k is relearned."""
    return METRICS / "stream" / method / f"chunk_{k}"


def evaluate_metrics_path(method: str) -> Path:
    return METRICS / "evaluate" / f"{method}.json"


CORRUPTED = Path("data/corrupted")  # corrupted copies of (a subset of) the test set


def corrupted_path(name: str) -> Path:
    return CORRUPTED / f"{name}.npz"


def reliability_path(method: str) -> Path:
    return METRICS / "evaluate" / f"{method}-reliability.csv"


CORRUPTION_PLOT = METRICS / "corruption.csv"
STABILITY_PLOT = METRICS / "stability.csv"
