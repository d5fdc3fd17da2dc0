"""What the bench scripts share. They run as `python bench/<script>.py`, with bench/ first on
sys.path, and import it as `from common import ...` (bench/gpu/check.py puts bench/ there itself)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def current_commit() -> str | None:
    """The commit of the working tree (`git rev-parse HEAD`) that a result was measured at: empty
    outside a git repository, None where there is no git (the device check's machine)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        return None
