"""Benchmark: how DVC's own time grows with the number of stages, on a pipeline of cheap stages
shaped like lure's (each stage's lock entry as large as a relearn stage's: 24 deps, a params
section of 40 keys, one output).

    uv run python bench/dvc_scaling.py                    # 100 and 300 stages
    uv run python bench/dvc_scaling.py --stages 100 300 1000
    uv run python bench/dvc_scaling.py --stages --folder-dep 100 150   # the code as one folder dep
    uv run python bench/dvc_scaling.py --stages --split 10 --split-stages 100 300 1000   # 10 stages per file

For each size, in a fresh git + DVC repository: the first `dvc repro` (every stage runs: its
command is a shell `echo`, so the time is DVC's), a no-op `dvc repro`, a `dvc repro` that restores
every stage from the run-cache (outputs and dvc.lock removed), and the bookkeeping of one stage
(`dvc repro --force --single-item`). Per stage: seconds / stages; linear growth keeps it flat.
Also times parsing the resulting dvc.lock with ruamel's pure-Python and C loaders. With
--folder-dep, the same with the 20 code files as one folder dep (a smaller lock entry). With
--split K, the same stages in several pipeline files of K stages each (`parts/part_<j>/dvc.yaml`,
each with its own dvc.lock), upstream of one stage in the root dvc.yaml that reads them all, so
that a plain `dvc repro` runs them: the layout that keeps each lock small. Writes
bench/results/dvcscaling-<arch>-<cores>cores.json, keeping the rows of sizes not measured again.
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

from common import current_commit

ROOT = Path(__file__).resolve().parents[1]
CODE_FILES = 20  # + params file and the two data files: 24 deps, like a relearn stage


def make_pipeline(root: Path, n: int, code_files: int = CODE_FILES, split: int = 0) -> None:
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc(root, "init", "-q")
    (root / "code").mkdir()
    for i in range(CODE_FILES):
        (root / "code" / f"module_{i}.py").write_text(f"# module {i}\n" * 50)
    code_deps = [f"code/module_{i}.py" for i in range(code_files)] if code_files else ["code"]
    (root / "data").mkdir()
    for name in ("meta.json", "seen.json"):
        (root / "data" / name).write_text("{}\n")
    train = "\n".join(f"  key_{i}: {i}" for i in range(40))
    # the single file's foreach reads its items from the params file; split, each file lists its own
    items = "" if split else f"items: {list(range(n))}\n"
    (root / "params.yaml").write_text(f"{items}train:\n{train}\n")
    deps = "\n".join(f"        - {path}" for path in code_deps)
    work = f"""  work:
    foreach: ${{items}}
    do:
      cmd: echo ${{item}} > out/${{item}}.txt
      wdir: WDIR
      deps:
{deps}
        - data/meta.json
        - data/seen.json
      params:
        - train
      outs:
        - out/${{item}}.txt
"""
    if not split:
        (root / "dvc.yaml").write_text("stages:\n" + work.replace("      wdir: WDIR\n", ""))
    else:  # part j's file: its own items, the shared params file two levels up, commands run at the root
        for j, start in enumerate(range(0, n, split)):
            part = root / "parts" / f"part_{j}"
            part.mkdir(parents=True)
            items = list(range(start, min(start + split, n)))
            (part / "dvc.yaml").write_text(f"vars:\n  - ../../params.yaml\n  - part_items: {items}\nstages:\n"
                                           + work.replace("WDIR", "../..").replace("${items}", "${part_items}"))
        (root / "dvc.yaml").write_text("stages:\n  summary:\n    cmd: ls out > summary.txt\n    deps:\n"
                                       "      - out\n    outs:\n      - summary.txt\n")
    (root / "out").mkdir()
    (root / ".gitignore").write_text("/out\n/summary.txt\n")
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com", "commit", "-qm", "pipeline"],
                   cwd=root, check=True)


def dvc(root: Path, *args: str) -> float:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"dvc {' '.join(args)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return time.perf_counter() - start


def parse_seconds(lock: Path) -> dict:
    from ruamel.yaml import YAML

    text = lock.read_text()
    seconds = {}
    for name, pure in (("pure_python", True), ("c_loader", False)):
        yaml = YAML(typ="safe", pure=pure)
        start = time.perf_counter()
        yaml.load(text)
        seconds[name] = round(time.perf_counter() - start, 3)
    return {"lock_kb": round(len(text) / 1024), "parse_s": seconds}


def measure(n: int, code_files: int = CODE_FILES, split: int = 0) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_pipeline(root, n, code_files, split)
        first = dvc(root, "repro")
        noop = dvc(root, "repro")
        one = dvc(root, "repro", "--force", "--single-item", "parts/part_0/dvc.yaml:work@0" if split else "work@0")
        for out in (root / "out").iterdir():
            out.unlink()
        locks = sorted(root.glob("**/dvc.lock"), key=lambda p: -p.stat().st_size)
        for path in locks:
            path.unlink()
        restore = dvc(root, "repro")
        lock = parse_seconds(locks[0])  # the largest
    row = {"stages": n, "code_deps": code_files or "the folder", "first_repro_s": round(first, 1),
           "noop_repro_s": round(noop, 2), "restore_s": round(restore, 1), "one_stage_s": round(one, 2), **lock}
    if split:
        row["stages_per_file"] = split
    row["per_stage_s"] = {"first": round(first / n, 3), "restore": round(restore / n, 3)}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", type=int, nargs="*", default=[100, 300])
    parser.add_argument("--folder-dep", type=int, nargs="*", default=[], metavar="STAGES",
                        help="also these sizes with the code as one folder dep instead of 20 file deps")
    parser.add_argument("--split", type=int, default=10, help="stages per pipeline file for --split-stages")
    parser.add_argument("--split-stages", type=int, nargs="*", default=[], metavar="STAGES",
                        help="also these sizes in several pipeline files of --split stages each")
    args = parser.parse_args()
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    out = ROOT / "bench" / "results" / f"dvcscaling-{platform.machine()}-{os.cpu_count()}cores.json"
    kept = json.loads(out.read_text())["rows"] if out.is_file() else []  # rows of other sizes stay
    measured = ([measure(n) for n in args.stages] + [measure(n, 0) for n in args.folder_dep]
                + [measure(n, split=args.split) for n in args.split_stages])
    key = lambda row: (row["stages"], str(row.get("code_deps", CODE_FILES)), row.get("stages_per_file", 0))  # noqa: E731
    rows = sorted({key(r): r for r in [*kept, *measured]}.values(),
                  key=lambda r: (r.get("stages_per_file", 0), str(r.get("code_deps", "")), r["stages"]))
    from lure.device import cpu_name

    try:
        import _ruamel_yaml  # noqa: F401

        c_loader = True
    except ImportError:
        c_loader = False
    result = {"rows": rows, "c_loader_installed": c_loader,
              "machine": {"cpu": cpu_name(), "cores": os.cpu_count()},
              "versions": {"dvc": subprocess.run([sys.executable, "-m", "dvc", "--version"], capture_output=True,
                                                 text=True).stdout.strip(), "python": platform.python_version()},
              "commit": current_commit()}
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
