"""The "Does it reproduce?" study (README): run its presets one after another in this workspace,
keep each one's results in results/<name> and time each `dvc repro`.

    uv run python bench/reproduce.py                                      # all four studies
    uv run python bench/reproduce.py --data-root ../shared/data/cifar10   # offline copy of CIFAR-10
    uv run python bench/reproduce.py --only fewshot-mlp --force           # one study, every stage again
    uv run python bench/reproduce.py --only warmstart-mlp --suffix=-fresh \
        --set methods.warm.mitigate.fresh_optimizer=true ...              # a variant, kept apart

Several runs at once, on DVC's own experiment queue (no executor of ours):

    uv run python bench/reproduce.py --only chunks-mlp -j 2                    # the seeds, 2 at a time
    uv run python bench/reproduce.py --only chunks-mlp -j 2 --split methods    # or the methods

runs the stages every part shares first in the workspace (prepare and corrupt; with --split methods
the chunk-1 training too), queues one experiment per seed (params.yaml holding only that seed) or
per method (its pipeline file as the target: `dvc exp run --queue pipelines/<method>/dvc.yaml`),
starts N workers with cores/N threads each (`dvc queue start -j N`) and waits for them, then runs
`dvc repro` in the workspace with the whole params.yaml: every stage comes back from DVC's
run-cache and only the report runs. A failed queued experiment is reported with its log (`dvc
queue logs`), and the bench stops; running it again runs only what is missing (what finished is in
the run-cache).

For each study: params.yaml <- presets/cifar10-<name>.yaml (with --data-root, data.root set to it
and data.download off, and each --set KEY=VALUE applied as `dvc exp run -S` would), `lure
pipelines` (staged in git for the queue), `dvc repro` (its output shown as it runs), then `lure
results --keep results/<name><suffix>`. params.yaml and its methods' pipeline files are put back at
the end. Writes (merging by study and suffix) bench/results/reproduce-<arch>-<cores>cores.json: per
study, the seconds of its `dvc repro`, the stages it ran and those it kept from an earlier run
(whose time the seconds leave out), the
overrides, the machine, versions and commit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml
from common import current_commit

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ("warmstart-mlp", "warmstart-cnn", "chunks-mlp", "fewshot-mlp",  # Ash & Adams', LURE's claims
           "dash-chunks", "fire-continual", "hare-tortoise")  # the newer papers' (issue 28)


def override(params: dict, assignment: str) -> None:
    """Apply KEY=VALUE (a dotted key, a YAML value) to the params mapping."""
    key, _, value = assignment.partition("=")
    *parents, last = key.split(".")
    for part in parents:
        if not isinstance(params.get(part), dict):  # e.g. `warm: {}` read as None, or a new section
            params[part] = {}
        params = params[part]
    params[last] = yaml.safe_load(value)


def run_study(name: str, data_root: str | None, force: bool, sets: list[str], kept: str) -> dict:
    params = yaml.safe_load((ROOT / "presets" / f"cifar10-{name}.yaml").read_text())
    if data_root:
        params["data"].update(root=data_root, download=False)
    for assignment in sets:
        override(params, assignment)
    (ROOT / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    write_pipelines()
    start = time.perf_counter()
    stages = skipped = 0
    with subprocess.Popen([sys.executable, "-m", "dvc", "repro", *(["--force"] if force else [])], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as repro:
        for line in repro.stdout:
            print(line, end="", flush=True)
            stages += line.startswith("Running stage")
            # kept from an earlier run: unchanged, or restored from DVC's run-cache
            skipped += line.startswith("Stage '") and ("didn't change" in line or "is cached" in line)
    seconds = time.perf_counter() - start
    if repro.returncode != 0:
        sys.exit(f"error: dvc repro of presets/cifar10-{name}.yaml failed (exit {repro.returncode})")
    subprocess.run([sys.executable, "-m", "lure.cli", "results", "--keep", f"results/{kept}"], cwd=ROOT, check=True)
    print(f"{kept}: {stages} stages run in {seconds:.0f} s", flush=True)
    return {"seconds": round(seconds, 1), "stages_run": stages, "stages_skipped": skipped, "seeds": params["seeds"],
            "methods": list(params["methods"]), **({"overrides": sets} if sets else {})}


def write_pipelines(cwd: Path = ROOT, stage: bool = False) -> None:
    """`lure pipelines`: each method of params.yaml its pipeline file; staged in git with `stage`, as
    a queued experiment carries only what git tracks or has staged."""
    subprocess.run([sys.executable, "-m", "lure.cli", "pipelines"], cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    if stage:
        subprocess.run(["git", "add", "pipelines"], cwd=cwd, check=True)


def dvc(*args: str, cwd: Path = ROOT, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        sys.exit(f"error: dvc {' '.join(args)} failed (exit {result.returncode}):\n{result.stdout}{result.stderr}")
    return result


def repro(*targets: str, cwd: Path = ROOT) -> tuple[int, int]:
    """`dvc repro` in the workspace, shown as it runs: (stages run, stages kept or restored)."""
    stages = kept = 0
    with subprocess.Popen([sys.executable, "-m", "dvc", "repro", *targets], cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as run:
        for line in run.stdout:
            print(line, end="", flush=True)
            stages += line.startswith("Running stage")
            kept += line.startswith("Stage '") and ("didn't change" in line or "is cached" in line)
    if run.returncode != 0:
        sys.exit(f"error: dvc repro {' '.join(targets)} failed (exit {run.returncode})")
    return stages, kept


def queue_statuses(cwd: Path) -> tuple[dict[str, str], int]:
    """Each queued experiment's status by name, from `dvc queue status`'s table, and the workers alive."""
    rows = dvc("queue", "status", cwd=cwd).stdout.splitlines()
    workers = next((sum(int(n) for n in re.findall(r"(\d+) (?:active|idle)", row)) for row in rows
                    if row.startswith("Worker status")), 0)
    tasks = [row.split() for row in rows[1:] if row.strip() and not row.startswith("Worker status")]
    return {cols[1]: cols[-1] for cols in tasks if len(cols) >= 4}, workers


def wait_for(names: list[str], cwd: Path, poll_s: float = 10.0) -> dict[str, str]:
    """Poll until every named experiment has left the queue; print each change. Exits if the
    workers are gone with experiments still queued (run the same command again)."""
    seen: dict[str, str] = {}
    idle_polls = 0
    while True:
        statuses, workers = queue_statuses(cwd)
        idle_polls = idle_polls + 1 if workers == 0 else 0
        if idle_polls >= 3 and any(statuses.get(n) == "Queued" for n in names):
            sys.exit("error: DVC's queue workers are gone with experiments still queued: run the same command "
                     "again (what finished comes back from the run-cache)")
        for name in names:
            if statuses.get(name) != seen.get(name):
                print(f"queue: {name} {statuses.get(name, 'missing')}", flush=True)
        seen = {name: statuses.get(name, "missing") for name in names}
        if all(status not in ("Queued", "Running") for status in seen.values()):
            return seen
        time.sleep(poll_s)


def run_queued(params: dict, jobs: int, split: str, label: str, cwd: Path = ROOT) -> dict:
    """The pipeline of `params` as one queued experiment per seed (params.yaml holding only that
    seed) or per method (its pipeline file as the target), `jobs` at a time (each with cores/jobs
    threads), after the stages they share; then `dvc repro` of the whole in the workspace, which
    restores every stage from the run-cache and runs the report. Exits, with each failed
    experiment's log, if one did not finish."""
    def write(values: dict) -> None:
        (cwd / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))

    start = time.perf_counter()
    write(params)
    write_pipelines(cwd, stage=True)
    shared, _ = repro("prepare", "corrupt", *(["learn"] if split == "methods" else []), cwd=cwd)  # once, not per part
    stamp = time.strftime("%m%d%H%M%S")
    names = []
    for i, part in enumerate(params["seeds"] if split == "seeds" else params["methods"]):
        names.append(f"{label}-{split}-{i}-{stamp}")
        if split == "seeds":
            write({**params, "seeds": [part]})
            dvc("exp", "run", "--queue", "-n", names[-1], cwd=cwd)
        else:
            dvc("exp", "run", "--queue", "-n", names[-1], f"pipelines/{part}/dvc.yaml", cwd=cwd)
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    dvc("queue", "start", "-j", str(jobs), cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
    statuses = wait_for(names, cwd)
    dvc("queue", "stop", cwd=cwd, check=False)  # the workers end once idle
    queued_s = time.perf_counter() - start
    write(params)
    failed = [n for n, status in statuses.items() if status != "Success"]
    for n in failed:
        log = dvc("queue", "logs", n, cwd=cwd, check=False)
        text = (log.stdout + log.stderr).strip() or "(DVC kept no log for it: treeverse/dvc#10673)"
        print(f"--- {n}: {statuses[n]}; its log:\n{text}\n---", file=sys.stderr)
    if failed:
        sys.exit(f"error: {len(failed)} of {len(names)} queued experiments did not finish ({', '.join(failed)}): "
                 "run the same command again; what finished comes back from DVC's run-cache")
    restore_start = time.perf_counter()
    stages, restored = repro(cwd=cwd)
    restore_s = time.perf_counter() - restore_start
    return {"seconds": round(time.perf_counter() - start, 1), "jobs": jobs, "split": split,
            "experiments": len(names), "queued_s": round(queued_s, 1), "workspace_s": round(restore_s, 1),
            "stages_shared": shared, "stages_run": stages, "stages_restored": restored}


def run_study_queued(name: str, data_root: str | None, sets: list[str], kept: str, jobs: int, split: str) -> dict:
    params = yaml.safe_load((ROOT / "presets" / f"cifar10-{name}.yaml").read_text())
    if data_root:  # absolute: queued experiments run in copies under .dvc/tmp
        params["data"].update(root=str(Path(data_root).resolve()), download=False)
    for assignment in sets:
        override(params, assignment)
    ran = run_queued(params, jobs, split, kept)
    subprocess.run([sys.executable, "-m", "lure.cli", "results", "--keep", f"results/{kept}"], cwd=ROOT, check=True)
    print(f"{kept}: {ran['experiments']} experiments on {jobs} workers, then {ran['stages_run']} stages run and "
          f"{ran['stages_restored']} restored in the workspace, {ran['seconds']:.0f} s", flush=True)
    return {**ran, "seeds": params["seeds"], "methods": list(params["methods"]),
            **({"overrides": sets} if sets else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=STUDIES, default=list(STUDIES))
    parser.add_argument("--data-root", help="data.root for every study (and data.download off)")
    parser.add_argument("--force", action="store_true", help="dvc repro --force: run every stage again")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a params override for every study, as dvc exp run -S takes it")
    parser.add_argument("--suffix", default="", help="keep as results/<name><suffix> (a variant beside the study)")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="queued experiments run at once (DVC's queue); "
                        "1: one dvc repro in the workspace")
    parser.add_argument("--split", choices=("seeds", "methods"), default="seeds",
                        help="with -j: one queued experiment per seed, or per method")
    args = parser.parse_args()

    import torch

    from lure.device import cpu_name

    cores = os.cpu_count()
    out = ROOT / "bench" / "results" / f"reproduce-{platform.machine()}-{cores}cores.json"
    result = json.loads(out.read_text()) if out.is_file() else {"studies": {}}
    saved = (ROOT / "params.yaml").read_text()
    try:
        for name in args.only:
            kept = name + args.suffix
            ran = (run_study_queued(name, args.data_root, args.set, kept, args.jobs, args.split) if args.jobs > 1
                   else run_study(name, args.data_root, args.force, args.set, kept))
            result["studies"][kept + (f"-j{args.jobs}" if args.jobs > 1 else "")] = {
                **ran,
                "machine": {"cpu": cpu_name(), "cores": cores, "arch": platform.machine()},
                "torch": torch.__version__, "python": platform.python_version(),
                "commit": current_commit(),
            }
            out.write_text(json.dumps(result, indent=1) + "\n")
    finally:
        (ROOT / "params.yaml").write_text(saved)
        write_pipelines()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
