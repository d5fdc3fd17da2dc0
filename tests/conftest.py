"""Fixtures and helpers shared by the tests."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"  # offline copies of MNIST and CIFAR-10 (see its README)
needs_shared_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"no offline datasets at {SHARED_DATA}")

os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def _pin_this_process() -> None:
    """Every test computes as `train.cpu_kernels: portable` does (before anything has computed), so
    that what the suite checks comes out the same on any x86-64 CPU kind and thread count, and a
    stage run in process may pin in its turn."""
    from lure.device import pin_cpu_kernels

    pin_cpu_kernels()


_pin_this_process()


def _devices() -> list:
    import torch

    return ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")),
            "emulated-cuda"]


@pytest.fixture(params=_devices())
def device(request):
    """Every device this machine has: the CPU always, CUDA where there is one, and everywhere CUDA
    emulated on the CPU under CUDA's device rules (tests/emulated_cuda.py): a test fails where its
    code breaks one of them, as it would on a GPU. The tests that take it are the GPU test suite
    when run on a GPU machine (pytest -k "cuda and not emulated"). On CUDA they run without cuDNN's TF32
    convolutions, so that results compare with the CPU's to fp32's precision."""
    import torch

    allowed = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    if request.param == "emulated-cuda":
        from tests.emulated_cuda import emulated_cuda

        with emulated_cuda() as rules:
            yield torch.device("cuda")
        assert not rules.violations, "\n".join(map(str, rules.violations))
    else:
        yield torch.device(request.param)
    torch.backends.cudnn.allow_tf32 = allowed


@pytest.fixture
def params_dict() -> dict:
    """The shipped params.yaml, as a fresh mapping to edit."""
    import yaml

    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Run the test from an empty directory (stages write relative to the working directory)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_stage(module: str, *args: str, cwd, timeout: float = 600) -> subprocess.CompletedProcess:
    """A stage (or `lure.cli`) as DVC runs it: a fresh Python process in `cwd`."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=timeout)


# --- small real data and models for the methods' tests ------------------------------------------


def digits_images(start: int = 0, stop: int = 64):
    """scikit-learn's digits start..stop as the pipeline stores them (uint8, 0..255), as tensors."""
    import torch
    from sklearn.datasets import load_digits

    from lure.images import Images

    d = load_digits()
    x = torch.from_numpy((d.images[start:stop] * (255 / 16)).round().astype("uint8"))[:, None]
    return Images(x, torch.from_numpy(d.target[start:stop]).long())


def trained_like_model(seed: int = 1):
    """A small CNN for 8x8 digits whose weights (BN scales included) are moved off their initial
    values, so that a reset is visible."""
    import torch

    from lure.models import small_cnn

    torch.manual_seed(seed)
    model = small_cnn(1, 10, width=8)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def fresh_cnn(seed: int = 123):
    """A factory of the same freshly built small CNN, as Boundary.fresh_model draws one."""
    def build():
        import torch

        from lure.models import small_cnn

        torch.manual_seed(seed)
        return small_cnn(1, 10, width=8)
    return build


def boundary(model_factory=None, images=None, seed: int = 0, run_seed: int = 100):
    """A chunk boundary on `images` (replay and new chunk alike) with seeded generators."""
    import torch

    from lure.methods import Boundary

    model_factory = model_factory or fresh_cnn()
    images = images if images is not None else digits_images()
    return Boundary(initial=model_factory().state_dict(), fresh_model=model_factory, replay=images, new=images,
                    generator=torch.Generator().manual_seed(seed),
                    run_generator=torch.Generator().manual_seed(run_seed))


def snapshot(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def changed_tensors(model, before: dict) -> set[str]:
    import torch

    return {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
