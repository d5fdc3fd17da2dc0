"""Benchmark: DVC's own time per stage on lure's own pipeline, as one pipeline file and as one per
method: every stage of a study restored from a DVC cache that holds its runs.

    uv run python bench/dvc_layout.py --preset presets/cifar10-fire-continual.yaml \
        --cache ../study/.dvc/cache --data-root ../shared/data/cifar10 --before d2b4305

Two fresh clones of this repository: HEAD (each method's stages in pipelines/<method>/dvc.yaml)
and --before (a commit from when dvc.yaml held every stage). In each, params.yaml <- the preset
(data.root set, data.download off, as bench/reproduce.py runs it), --cache as its DVC cache (`dvc
cache dir --local`: a study's cache, whose run-cache holds every stage), `lure pipelines` where the
clone has it; then `dvc repro` with no dvc.lock, timed: DVC restores each stage from the run-cache
(the stages' code is the same at both commits, so one run-cache serves both) and runs only the
report, which no cache holds. Then a no-op `dvc repro`. Per restored stage: the seconds of the
restoring `dvc repro` over the stages restored (the report's own run is in the seconds).
Writes bench/results/dvclayout-<arch>-<cores>cores.json, which `uv run lure readme` shows.
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

ROOT = Path(__file__).resolve().parents[1]


def run(command: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"error: {' '.join(command)} failed in {cwd}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return time.perf_counter() - start, result.stdout + result.stderr


def measure(where: Path, commit: str, params: dict, cache: Path) -> dict:
    subprocess.run(["git", "clone", "-q", str(ROOT), str(where)], check=True)
    subprocess.run(["git", "checkout", "-q", commit], cwd=where, check=True)
    (where / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc = [sys.executable, "-m", "dvc"]
    run([*dvc, "cache", "dir", "--local", str(cache)], where)
    per_method = (where / "pipelines" / "method.yaml").is_file()
    if per_method:
        run([sys.executable, "-m", "lure.cli", "pipelines"], where)
    locks = [where / "dvc.lock", *(where / "pipelines").glob("*/dvc.lock")]
    for lock in locks:
        lock.unlink()
    seconds, output = run([*dvc, "repro"], where)
    restored = output.count("is cached - skipping run")
    ran = [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]
    noop_s, _ = run([*dvc, "repro"], where)
    locks = [where / "dvc.lock", *(where / "pipelines").glob("*/dvc.lock")]
    return {"layout": "one file per method" if per_method else "one file", "commit": commit[:10],
            "pipeline_files": len(locks), "stages_restored": restored, "stages_run": ran,
            "restore_s": round(seconds, 1), "per_restored_stage_s": round(seconds / max(restored, 1), 3),
            "noop_repro_s": round(noop_s, 2), "largest_lock_kb": round(max(f.stat().st_size for f in locks) / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", type=Path, required=True, help="relative to the repository root")
    parser.add_argument("--cache", type=Path, required=True, help="a DVC cache holding the preset's runs")
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--before", required=True, help="a commit whose dvc.yaml holds every stage")
    args = parser.parse_args()
    params = yaml.safe_load((ROOT / args.preset).read_text())
    params["data"].update(root=str(args.data_root), download=False)
    # the clones' stages run `python -m stages.<name>` with this environment's Python
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    head = current_commit()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(Path(tmp) / name, commit, params, args.cache.resolve())
                for name, commit in (("per-method", head), ("one-file", args.before))]
    from lure.device import cpu_name

    result = {"preset": str(args.preset), "rows": rows,
              "machine": {"cpu": cpu_name(), "cores": os.cpu_count()},
              "versions": {"python": platform.python_version(),
                           "dvc": subprocess.run([sys.executable, "-m", "dvc", "--version"], capture_output=True,
                                                 text=True).stdout.strip()},
              "commit": head}
    out = ROOT / "bench" / "results" / f"dvclayout-{platform.machine()}-{os.cpu_count()}cores.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
