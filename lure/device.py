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
    if choice == "cpu" and settings.cpu_kernels == "portable":
        if settings.compile:
            raise LureError("train.compile: true on the CPU needs train.cpu_kernels: fast (Inductor's CPU code "
                            "follows the CPU's instructions; the portable kernels break it)")
        pin_cpu_kernels()
    if choice == "cuda":  # (lure/__init__.py sets cuBLAS's workspace for deterministic algorithms)
        torch.backends.cudnn.deterministic = settings.deterministic
        torch.backends.cudnn.benchmark = not settings.deterministic
        torch.use_deterministic_algorithms(settings.deterministic, warn_only=True)
        # what deterministic mode would also do: fill every new tensor with NaN; the code reads
        # no uninitialised memory, so that would cost time for nothing
        torch.utils.deterministic.fill_uninitialized_memory = False
    if choice == "cuda" and world_size() > 1:  # a rank that has joined its group: one GPU per rank
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device(choice)


# What train.cpu_kernels: portable fixes, each of which was measured to change a run's weights
# (README: "What reproduces where"). torch and MKL read these at their first computation.
PORTABLE_CPU_ENV = {
    "ATEN_CPU_CAPABILITY": "default",  # ATen's kernels without AVX2/AVX-512: their sums run in another order
    "MKL_CBWR": "COMPATIBLE",  # MKL's SSE2 path, on Intel's CPUs and others alike (AVX2 falls back to AUTO on AMD)
}


def pin_cpu_kernels() -> None:
    """Compute the same bits on any x86-64 CPU and thread count: ATen's baseline kernels, MKL's
    COMPATIBLE code path, no oneDNN (whose kernels and blocking follow the CPU's instructions and
    caches) and one thread (MKL's reproducible path needs a fixed count; one suits any machine and
    any number of runs at once). Must come before the process computes anything on the CPU. The
    environment is put back once torch and MKL have read it: the processes this one starts choose
    their own kernels."""
    before = {name: os.environ.get(name) for name in PORTABLE_CPU_ENV}
    os.environ.update(PORTABLE_CPU_ENV)
    try:
        torch.backends.mkldnn.enabled = False
        torch.set_num_threads(1)
        capability = torch.backends.cpu.get_cpu_capability()
        torch.ones(2, 2) @ torch.ones(2, 2)  # MKL reads MKL_CBWR at its first call
    finally:
        for name, value in before.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value
    if capability != "DEFAULT":
        raise LureError("train.cpu_kernels: portable cannot take effect: this process computed on the CPU before "
                        f"its device was picked (ATen already runs its {capability} kernels); start a new process, "
                        "or set ATEN_CPU_CAPABILITY=default and MKL_CBWR=COMPATIBLE before it starts")


def world_size() -> int:
    """The processes that compute this stage together: the size of the process group that
    lure.distributed joins under torchrun, 1 before it has joined or without one."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


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
              "deterministic": params.train.deterministic, "ranks": world_size()}
    if device.type == "cpu":
        record["cpu_kernels"] = params.train.cpu_kernels
    if device.type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(device)
    return record
