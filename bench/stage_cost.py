"""Benchmark: where a small stage's wall time goes, and what DVC adds to it.

    uv run python bench/stage_cost.py                 # the default digits pipeline's `relearn warm 2`
    uv run python bench/stage_cost.py --runs 9 --before 7094a89   # and the code at an earlier commit, same run

Prepares the default pipeline (params.yaml as committed, digits) in a temporary folder up to the
chunk-2 relearn of `warm`, then runs `python -m stages.relearn warm 2 --seed 0` --runs times, each
in a fresh process as DVC runs it, with the stage's own functions timed where it calls them:

- startup: the interpreter alone (`python -c pass`, timed apart);
- imports: `import stages.relearn` (torch, pydantic, the library);
- params: reading and validating params.yaml;
- device: choosing the device and pinning the CPU kernels;
- data: the prepared chunks' metadata and arrays, their check against seen_<k>.json ("check",
  shown apart, and timed on a 256 MB file as a full md5, the check it was, and as sampled hashes),
  the replay sets and their placement;
- model: building the network and reading the checkpoints it starts from;
- log: dvclive's log, opened and closed;
- forgetting and training: the method's step and the training loop (`fit`, with the continual
  evaluation it carries), as the stage's timing.json has them;
- evaluation: the other networks' and the reset shares' bookkeeping after training;
- writing: the checkpoint and the metrics file;
- other: what is left of the process's wall time (its exit included).

Then the same stage through DVC (`dvc repro --force --single-item relearn@...`), whose wall time
less the stage's own is DVC's share. Medians over the runs. Writes
bench/results/stagecost-<arch>-<cores>cores.json, which `uv run lure readme` shows in the README.
Target: at most 2.5 s outside training (everything but `training`) on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import current_commit

ROOT = Path(__file__).resolve().parents[1]
TARGET_OUTSIDE_TRAINING_S = 2.5
STAGE = "pipelines/warm/dvc.yaml:relearn@0-chunk0"  # the matrix names chunk 2, the first of `chunks`, chunk0
BRANCH = "pipelines/warm/dvc.yaml:branch@0"

# Runs in the stage's process: times each phase where the stage calls it, then writes the phases.
TIMED_STAGE = r"""
import json, sys, time
started = time.perf_counter()
import stages.relearn as stage
imported = time.perf_counter()
import lure.relearn as library
try:
    import lure.chunks as data
except ImportError:  # a commit from before lure/data.py was split
    import lure.data as data
import lure.progress as progress

phases = {"imports": imported - started}

def timed(owner, name, phase):
    if not hasattr(owner, name):  # a function an earlier commit did not have
        return
    original = getattr(owner, name)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            phases[phase] = phases.get(phase, 0.0) + time.perf_counter() - start
    setattr(owner, name, wrapper)

timed(stage, "load_params", "params")
timed(library, "pick_device", "device")
for name in ("load_meta", "load_chunks", "replay", "place"):
    timed(library, name, "data")
timed(data, "sampled_md5", "check")
for name in ("model_for", "load_checkpoint"):
    timed(library, name, "model")
timed(library, "fit", "fit")
timed(library, "other_networks", "evaluation")
timed(library, "reset_shares", "evaluation")
timed(progress.Log, "__init__", "log")
timed(progress.Log, "close", "log")
timed(stage, "save_checkpoint", "writing")
timed(stage, "write_json", "writing")
import functools
from lure.errors import run_command

@functools.wraps(stage.main)
def main_then_report(*args, **kwargs):
    stage.main(*args, **kwargs)
    phases["stage"] = time.perf_counter() - started
    print("PHASES " + json.dumps(phases), flush=True)

sys.argv = ["stages.relearn", "warm", "2", "--seed", "0"]
run_command(main_then_report)  # and leave as the stage's command line leaves
"""


def run(cmd: list[str], cwd: Path, env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return seconds, result.stdout + result.stderr


def pipeline_copy(where: Path, commit: str | None) -> Path:
    """The pipeline's files (not its outputs), as in the working tree or at `commit`, in a git
    repository of its own."""
    root = where / "pipeline"
    root.mkdir(parents=True)
    if commit:
        archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    else:
        listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
        for name in listed.stdout.split():
            if (ROOT / name).is_file() and not name.startswith(("results/", "bench/")):
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, root / name)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com", "commit", "-qm", "copy"],
                   cwd=root, check=True)
    return root


def check_costs(prepared: Path, size_mb: int = 256) -> dict:
    """Seconds per GB of the chunks' check at a stage's start: the full md5 it was, the sampled one it
    is, on a file of `size_mb` MB (the digits' chunks are too small to time), read from the page
    cache, as a stage that has just had DVC hash its deps finds them."""
    from lure.io import md5, sampled_md5

    big = prepared.parent / "check-cost.bin"
    big.write_bytes(os.urandom(size_mb << 20))
    md5(big)  # into the page cache
    costs = {}
    for name, digest in (("full_md5_s_per_gb", md5), ("sampled_s_per_gb", sampled_md5)):
        start = time.perf_counter()
        digest(big)
        costs[name] = round((time.perf_counter() - start) * 1024 / size_mb, 4)
    big.unlink()
    return costs


def measure(commit: str | None, runs: int) -> dict:
    """The phases' medians over `runs` runs of the stage, and DVC's wall time for it, with the
    pipeline's code as in the working tree or at `commit`."""
    env = {**os.environ, "PYTHONPATH": "", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        root = pipeline_copy(Path(tmp), commit)
        branch, relearn = (BRANCH, STAGE) if (root / "pipelines" / "method.yaml").is_file() \
            else ("branch@warm-0", "relearn@warm-0-chunk0")  # code from before each method had its pipeline file
        for stage in ("prepare", "learn@0", branch):
            run([python, "-m", "dvc", "repro", "--single-item", stage], root, env)
        startup = [run([python, "-c", "pass"], root, env)[0] for _ in range(runs)]
        phases = []
        for _ in range(runs):
            wall, output = run([python, "-c", TIMED_STAGE], root, env)
            measured = json.loads(output.split("PHASES ", 1)[1].splitlines()[0])
            timing = json.loads((root / "metrics/stream/seed_0/warm/chunk_2/timing.json").read_text())
            measured["forgetting"], measured["training"] = timing["forget_s"], timing["train_s"]
            measured["probe and loop"] = measured.pop("fit") - timing["train_s"]
            measured["wall"] = wall
            phases.append(measured)
        chunk_check = check_costs(root / "data" / "prepared") if commit is None else None
        dvc_walls = [run([python, "-m", "dvc", "repro", "--force", "--single-item", relearn], root, env)[0]
                     for _ in range(runs)]
    median = {name: round(statistics.median(p.get(name, 0.0) for p in phases), 3) for name in phases[0]}
    median["startup"] = round(statistics.median(startup), 3)
    accounted = sum(v for k, v in median.items() if k not in ("wall", "stage", "check"))
    median["other"] = round(median["wall"] - accounted, 3)
    return {"seconds": median, "outside_training_s": round(median["wall"] - median["training"], 3),
            "dvc_repro_s": round(statistics.median(dvc_walls), 3),
            "dvc_own_s": round(statistics.median(dvc_walls) - median["wall"], 3),
            **({"chunk_check": chunk_check} if chunk_check else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--before", metavar="COMMIT", help="also measure the pipeline's code at this commit")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    commit = current_commit()
    import torch

    from lure.device import cpu_name

    result = {
        "stage": f"python -m stages.relearn warm 2 --seed 0 (the default digits pipeline: {STAGE})",
        "runs": args.runs, **measure(None, args.runs), "target_outside_training_s": TARGET_OUTSIDE_TRAINING_S,
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count()},
        "versions": {"torch": torch.__version__, "python": platform.python_version()}, "commit": commit,
    }
    if args.before:
        before = subprocess.run(["git", "rev-parse", args.before], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        result["before"] = {"commit": before, **measure(before, args.runs)}
    out = args.out or ROOT / "bench" / "results" / f"stagecost-{platform.machine()}-{os.cpu_count()}cores.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
