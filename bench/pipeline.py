"""Benchmark: the default pipeline from a fresh clone, as a newcomer runs it.

    uv run python bench/pipeline.py [--tests]

Clones the committed HEAD into a temporary folder, installs (`uv sync --frozen --compile-bytecode`,
timed apart), then times `uv run dvc repro` (every stage runs: a clone has no DVC cache), a second, no-op
`uv run dvc repro` and, with --tests, `uv run pytest` (what CI runs). Writes
bench/results/pipeline-<machine>.json, which `uv run lure readme` shows in the README.
Targets on a 2-core CPU machine: first repro <= 180 s, no-op <= 5 s, tests <= 600 s.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import current_commit

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    # the clone's own environment, not the one this script runs in (uv run sets VIRTUAL_ENV)
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")
    return elapsed, result.stdout + result.stderr


def main() -> None:
    tests = "--tests" in sys.argv[1:]
    commit = current_commit()
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "lure"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        install, _ = timed(["uv", "sync", "--frozen", "--compile-bytecode", "-q"], clone)
        first, log = timed(["uv", "run", "dvc", "repro"], clone)
        noop, _ = timed(["uv", "run", "dvc", "repro"], clone)
        if tests:
            tests_s, test_log = timed(["uv", "run", "pytest", "-q", "-p", "no:cacheprovider"], clone)
            # pytest -q's last line: "234 passed, 19 skipped in 392.43s (0:06:32)"
            summary = re.findall(r"^=* ?(\d+ passed.*?) in [\d.]+s", test_log, re.MULTILINE)[-1]
        stages = log.count("Running stage")
        torch_version = subprocess.run(["uv", "run", "python", "-c", "import torch; print(torch.__version__)"],
                                       cwd=clone, capture_output=True, text=True).stdout.strip()
    from lure.device import cpu_name  # torch's import, after the timings

    result = {
        "commit": commit,
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "platform": platform.platform()},
        "versions": {"python": platform.python_version(), "torch": torch_version},
        "install_s": round(install, 1),
        "first_repro_s": round(first, 1),
        "stages_run": stages,
        "noop_repro_s": round(noop, 2),
        **({"tests_s": round(tests_s), "tests": summary} if tests else {}),
        "targets": {"first_repro_s": 180, "noop_repro_s": 5, "tests_s": 600},
    }
    print(f"| step | seconds | target |\n|---|---:|---:|\n"
          f"| `uv sync --compile-bytecode` (wheels cached) | {install:.1f} | - |\n"
          f"| first `dvc repro` ({stages} stages) | {first:.1f} | 180 |\n"
          f"| no-op `dvc repro` | {noop:.2f} | 5 |"
          + (f"\n| `pytest` ({summary}) | {tests_s:.0f} | 600 |" if tests else ""))
    machine = result["machine"]
    print(f"{machine['cores']} cores, {machine['cpu']}; torch {torch_version}; commit {commit[:10]}")
    out = ROOT / "bench" / "results" / f"pipeline-{platform.machine()}-{os.cpu_count()}cores.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
