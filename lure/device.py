"""Where a stage computes, and the record of what a result was computed with."""

from __future__ import annotations

import os
import platform

import torch

from lure import __version__
from lure.errors import LureError


def pick_device(choice: str) -> torch.device:
    """train.device: auto (CUDA when available), cpu or cuda. On CUDA, ask PyTorch for
    deterministic algorithms (cuDNN included): same seed, same GPU, same results."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise LureError("train.device: cuda was asked for but no CUDA device is available (use auto or cpu)")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.device(choice)


def provenance(seed: int, run_seed: int, device: torch.device) -> dict[str, str | int]:
    """Recorded beside every metric: the data's seed, the device and versions, and the run seed."""
    return {"seed": seed, "device": str(device), "torch": torch.__version__, "python": platform.python_version(),
            "lure": __version__, "run_seed": run_seed}
