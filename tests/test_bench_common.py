"""The bench scripts' shared code (bench/common.py): the commit a result was measured at comes from
one helper, which every script imports as it is run, `python bench/<script>.py` from the root."""

import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPTS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "bench").rglob("*.py") if p.name != "common.py")
RECORDING = [s for s in SCRIPTS if "current_commit()" in (ROOT / s).read_text()]


def test_the_commit_comes_from_the_helper_alone():
    assert len(RECORDING) >= 10
    assert [s for s in SCRIPTS if '["git", "rev-parse", "HEAD"]' in (ROOT / s).read_text()] == []  # of this repository


@pytest.mark.parametrize("script", [s for s in RECORDING if s != "bench/pipeline.py"])  # it has no --help: it runs
def test_each_script_that_records_the_commit_starts_as_it_is_run(script):
    started = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert started.returncode == 0 and started.stdout.startswith("usage:"), started.stderr[-2000:]


def test_the_commit_is_heads_and_none_without_git(monkeypatch):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from common import current_commit
    finally:
        sys.path.pop(0)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert current_commit() == head and len(head) == 40
    monkeypatch.setenv("PATH", "")  # no git where the device check runs
    assert current_commit() is None
