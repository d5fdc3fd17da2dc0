"""The "Does it reproduce?" study (README): run its presets one after another in this workspace,
keep each one's results in results/<name> and time each `dvc repro`.

    uv run python bench/reproduce.py                                      # all four studies
    uv run python bench/reproduce.py --data-root ../shared/data/cifar10   # offline copy of CIFAR-10
    uv run python bench/reproduce.py --only fewshot-mlp --force           # one study, every stage again
    uv run python bench/reproduce.py --only warmstart-mlp --suffix=-fresh \
        --set methods.warm.mitigate.fresh_optimizer=true ...              # a variant, kept apart

For each study: params.yaml <- presets/cifar10-<name>.yaml (with --data-root, data.root set to it
and data.download off, and each --set KEY=VALUE applied as `dvc exp run -S` would), `dvc repro`
(its output shown as it runs), then `lure results --keep results/<name><suffix>`. params.yaml is
put back at the end. Writes (merging by study and suffix)
bench/results/reproduce-<arch>-<cores>cores.json: per study, the seconds of its `dvc repro`, the
stages it ran and those it kept from an earlier run (whose time the seconds leave out), the
overrides, the machine, versions and commit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ("warmstart-mlp", "warmstart-cnn", "chunks-mlp", "fewshot-mlp")


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=STUDIES, default=list(STUDIES))
    parser.add_argument("--data-root", help="data.root for every study (and data.download off)")
    parser.add_argument("--force", action="store_true", help="dvc repro --force: run every stage again")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a params override for every study, as dvc exp run -S takes it")
    parser.add_argument("--suffix", default="", help="keep as results/<name><suffix> (a variant beside the study)")
    args = parser.parse_args()

    import torch

    from lure.device import cpu_name

    cores = os.cpu_count()
    out = ROOT / "bench" / "results" / f"reproduce-{platform.machine()}-{cores}cores.json"
    result = json.loads(out.read_text()) if out.is_file() else {"studies": {}}
    saved = (ROOT / "params.yaml").read_text()
    try:
        for name in args.only:
            result["studies"][name + args.suffix] = {
                **run_study(name, args.data_root, args.force, args.set, name + args.suffix),
                "machine": {"cpu": cpu_name(), "cores": cores, "arch": platform.machine()},
                "torch": torch.__version__, "python": platform.python_version(),
                "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                         text=True).stdout.strip(),
            }
            out.write_text(json.dumps(result, indent=1) + "\n")
    finally:
        (ROOT / "params.yaml").write_text(saved)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
