"""Benchmark: one study part run as one `dvc repro`, and as DVC's queue with N workers, side by side.

    uv run python bench/dvc_queue.py                                  # the default pipeline, seeds 0 and 1, -j 2
    uv run python bench/dvc_queue.py --preset presets/digits-methods.yaml --seeds 0 1 2 3 -j 2

Two fresh clones of the committed HEAD, so that neither finds the other's stages in a DVC cache:
in one, `dvc repro` runs every stage in turn; in the other, bench/reproduce.py's queued run (the
stages the seeds share, one queued experiment per seed, `dvc queue start -j N` with cores/N threads
each, then `dvc repro` in the workspace, which restores every stage from the run-cache and runs the
report). Compares what both wrote: every output's hash in their dvc.lock files (equal where the
preset's kernels are portable: results independent of the thread count). Writes
bench/results/queue-<arch>-<cores>cores.json, which `uv run lure readme` shows in the README.
Target on a 2-core CPU: the queue at least 1.3x as fast.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import current_commit  # noqa: E402
from reproduce import ROOT, repro, run_queued, write_pipelines  # noqa: E402

TARGET_SPEEDUP = 1.3


def clone(where: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(ROOT), str(where)], check=True)
    return where


def outputs(root: Path) -> dict[str, str]:
    """Every output of every stage in the project's dvc.lock files (dvc.yaml's and each method's), by
    path: its md5."""
    locks = [root / "dvc.lock", *sorted((root / "pipelines").glob("*/dvc.lock"))]
    return {out["path"]: out.get("md5", "") for lock in locks
            for stage in yaml.safe_load(lock.read_text())["stages"].values() for out in stage.get("outs", [])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", type=Path, default=Path("params.yaml"), help="relative to the repository root")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("-j", "--jobs", type=int, default=2)
    args = parser.parse_args()
    params = yaml.safe_load((ROOT / args.preset).read_text())
    params["seeds"] = args.seeds
    # the clones' stages run `python -m stages.<name>` with this environment's Python
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    with tempfile.TemporaryDirectory() as tmp:
        sequential, queued = clone(Path(tmp) / "sequential"), clone(Path(tmp) / "queued")
        (sequential / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        write_pipelines(sequential)
        start = time.perf_counter()
        stages, _ = repro(cwd=sequential)
        sequential_s = time.perf_counter() - start
        ran = run_queued(params, args.jobs, "seeds", "bench", cwd=queued)
        a, b = outputs(sequential), outputs(queued)
    differ = sorted(path for path in a.keys() | b.keys() if a.get(path) != b.get(path))
    import torch

    from lure.device import cpu_name

    result = {
        "preset": str(args.preset), "seeds": args.seeds, "cpu_kernels": params["train"].get("cpu_kernels", "portable"),
        "sequential": {"seconds": round(sequential_s, 1), "stages_run": stages},
        "queued": ran, "speedup": round(sequential_s / ran["seconds"], 2), "target_speedup": TARGET_SPEEDUP,
        "outputs": len(a), "outputs_that_differ": differ,
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count()},
        "versions": {"torch": torch.__version__, "python": platform.python_version(),
                     "dvc": subprocess.run([sys.executable, "-m", "dvc", "--version"], capture_output=True,
                                           text=True).stdout.strip()},
        "commit": current_commit(),
    }
    out = ROOT / "bench" / "results" / f"queue-{platform.machine()}-{os.cpu_count()}cores.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
