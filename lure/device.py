"""Where a stage computes, and the record of what a result was computed with."""

from __future__ import annotations

import os
import platform

import torch

from lure import __version__
from lure.config import Params, TrainSettings
from lure.errors import LureError


def pick_device(settings: TrainSettings) -> torch.device:
    """train.device: auto (CUDA when available), cpu or cuda. On CUDA, train.deterministic asks
    PyTorch for deterministic algorithms, cuDNN's included (same seed, same GPU, same results);
    off, cuDNN picks the fastest algorithm for each shape (benchmark mode) and results may vary
    in their last bits from run to run."""
    choice = settings.device
    if choice == "cuda" and not torch.cuda.is_available():
        raise LureError("train.device: cuda was asked for but no CUDA device is available (use auto or cpu)")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda":  # (lure/__init__.py sets cuBLAS's workspace for deterministic algorithms)
        torch.backends.cudnn.deterministic = settings.deterministic
        torch.backends.cudnn.benchmark = not settings.deterministic
        torch.use_deterministic_algorithms(settings.deterministic, warn_only=True)
        # what deterministic mode would also do: fill every new tensor with NaN; the code reads
        # no uninitialised memory, so that would cost time for nothing
        torch.utils.deterministic.fill_uninitialized_memory = False
    if choice == "cuda" and ranks() > 1:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))  # one GPU per rank (lure.distributed)
    return torch.device(choice)


def ranks() -> int:
    """The processes that compute this stage together: torchrun's WORLD_SIZE, 1 without it."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def cpu_name() -> str:
    """The processor's model name (the figures of CPU results depend on it), as /proc/cpuinfo says."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def provenance(params: Params, run_seed: int | None, device: torch.device) -> dict[str, str | int | bool]:
    """Recorded beside every metric: the data's seed, the device and versions, the run seed."""
    record = {"seed": params.seed, "device": device.type, "torch": torch.__version__,
              "python": platform.python_version(), "lure": __version__, "run_seed": run_seed,
              "deterministic": params.train.deterministic, "ranks": ranks()}
    if device.type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(device)
    return record
