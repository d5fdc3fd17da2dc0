import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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


os.environ.setdefault("DVC_NO_ANALYTICS", "1")

SHARED_DATA = ROOT.parent / "shared" / "data"  # offline copies of MNIST and CIFAR-10 (see its README)
needs_shared_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"no offline datasets at {SHARED_DATA}")
