"""Benchmark: what changes a run's weights on one x86-64 machine, and what `train.cpu_kernels:
portable` costs, in one run.

    uv run python bench/reproducibility.py [--data ../shared/data/cifar10]

1. What differs: the default pipeline's stages for one seed and LURE's chunk 2 (3 epochs a chunk),
   each in a fresh process under one variation of the environment: torch's kernel dispatch
   (ATEN_CPU_CAPABILITY), MKL's code path (MKL_CBWR, STRICT mode included), oneDNN's instruction
   set (ONEDNN_MAX_CPU_ISA) or oneDNN off (torch.backends.mkldnn), 1 or 2 threads; with `fast`
   and with `portable` kernels. A variation "changes" a run when a model's bytes differ from the
   run as installed.
2. The cost, fast against portable: `dvc repro` of the default pipeline in a fresh copy of the
   project, and a CIFAR-size training run (the small CNN, width 32, on 2,048 CIFAR-10 images, 2
   epochs at batch 32).
Writes bench/results/reproducibility-<arch>-<cores>cores.json, which `uv run lure readme` shows.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import current_commit

ROOT = Path(__file__).resolve().parents[1]
VARIATIONS = {
    "as installed": {},
    "ATEN_CPU_CAPABILITY=default": {"ATEN_CPU_CAPABILITY": "default"},
    "ATEN_CPU_CAPABILITY=avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "ATEN_CPU_CAPABILITY=avx512": {"ATEN_CPU_CAPABILITY": "avx512"},
    "MKL_CBWR=COMPATIBLE": {"MKL_CBWR": "COMPATIBLE"},
    "MKL_CBWR=AVX2": {"MKL_CBWR": "AVX2"},
    "MKL_CBWR=AVX512": {"MKL_CBWR": "AVX512"},
    "MKL_CBWR=AVX2,STRICT": {"MKL_CBWR": "AVX2,STRICT"},
    "ONEDNN_MAX_CPU_ISA=SSE41": {"ONEDNN_MAX_CPU_ISA": "SSE41"},
    "ONEDNN_MAX_CPU_ISA=AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "torch.backends.mkldnn off": {"LURE_BENCH_MKLDNN_OFF": "1"},
    "1 thread": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    "2 threads": {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"},
}
STAGES = """
from stages import branch, learn, relearn
learn.main(seed=0)
branch.main("lure", seed=0)
relearn.main("lure", 2, seed=0)
"""
# oneDNN off before anything runs, for the variation that asks (a stage has no switch for it)
SITE = """import os
if os.environ.get("LURE_BENCH_MKLDNN_OFF"):
    import torch
    torch.backends.mkldnn.enabled = False
"""


def project(folder: Path, **train) -> Path:
    """A copy of the project's sources and params (no outputs), with train.* set as given."""
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in listed:
        if not name.startswith(("data/prepared/", "models/", "metrics/", "tests/", "bench/", "results/", "docs/")):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, folder / name)
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["train"].update(train)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return folder


def env(extra: dict[str, str], site: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("ATEN_", "MKL_", "ONEDNN_", "OMP_"))}
    return {**keep, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}", "DVC_NO_ANALYTICS": "1", **extra}


def models(root: Path) -> dict[str, str]:
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in (root / "models").rglob("*.pt")}


def what_differs(scratch: Path, site: Path) -> dict:
    """Per variation and kernels: whether the models differ from the run as installed."""
    result = {}
    for kernels in ("fast", "portable"):
        base = project(scratch / f"variations-{kernels}", epochs=3, lr_milestones=[2], cpu_kernels=kernels)
        params = yaml.safe_load((base / "params.yaml").read_text())
        params["chunks"] = [{"k": 2, "prev": 1}]
        (base / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        subprocess.run([sys.executable, "-m", "stages.prepare"], cwd=base, env=env({}, site), check=True,
                       capture_output=True)
        hashes = {}
        for name, variation in VARIATIONS.items():
            shutil.rmtree(base / "models", ignore_errors=True)
            subprocess.run([sys.executable, "-c", STAGES], cwd=base, env=env(variation, site), check=True,
                           capture_output=True)
            hashes[name] = models(base)
            print(f"{kernels:8s} {name:28s} {'same' if hashes[name] == hashes['as installed'] else 'changed'}",
                  flush=True)
        result[kernels] = {name: h != hashes["as installed"] for name, h in hashes.items() if name != "as installed"}
    return result


def timed(command: list[str], cwd: Path, environment: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=environment, check=True, capture_output=True)
    return round(time.perf_counter() - start, 1)


CIFAR_RUN = """
import sys, time, numpy as np, torch
from pathlib import Path
from lure.config import ImageFolderData, TrainSettings
from lure.images import Images
from lure.sources import decode, load_source
from lure.device import pick_device
from lure.models import set_input_stats, small_cnn
from lure.train import fit
settings = TrainSettings(device="cpu", cpu_kernels=sys.argv[2], epochs=2, batch_size=32, select="last")
pick_device(settings)
source = load_source(ImageFolderData(source="imagefolder", path=Path(sys.argv[1]), chunk_size=2), seed=0)
images, _ = decode(source.pool.take(np.arange(2048)), Path(sys.argv[3]), "pool")
images = Images(torch.from_numpy(np.array(images.x)), torch.from_numpy(np.array(images.y)))
torch.manual_seed(0)
model = small_cnn(3, 10, 32)
set_input_stats(model, images.x)
start = time.perf_counter()
fit(model, images, Images(images.x[:200], images.y[:200]), settings, torch.Generator().manual_seed(0))
print(round(time.perf_counter() - start, 1))
"""


def cost(scratch: Path, site: Path, data: Path) -> dict:
    """Seconds, fast against portable: the default pipeline's `dvc repro` from a fresh copy, and
    the training of a CIFAR-size run (decoding apart)."""
    seconds = {}
    for kernels in ("fast", "portable"):
        copy = project(scratch / f"pipeline-{kernels}", cpu_kernels=kernels)
        subprocess.run(["git", "init", "-q"], cwd=copy, check=True)
        subprocess.run(["git", "add", "-A"], cwd=copy, check=True)
        subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "b"], cwd=copy,
                       check=True)
        stages_python = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        repro = timed([sys.executable, "-m", "dvc", "repro"], copy, env(stages_python, site))
        decoded = scratch / f"decoded-{kernels}"
        decoded.mkdir()
        ran = subprocess.run([sys.executable, "-c", CIFAR_RUN, str(data), kernels, str(decoded)], cwd=scratch,
                             env=env({}, site), check=True, capture_output=True, text=True)
        seconds[kernels] = {"default_pipeline_repro_s": repro, "cifar_training_s": float(ran.stdout.split()[-1])}
        print(f"{kernels:8s} {seconds[kernels]}", flush=True)
    return {**seconds, "portable_over_fast": {k: round(seconds["portable"][k] / seconds["fast"][k], 2)
                                              for k in seconds["fast"]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "cifar10",
                        help="CIFAR-10 as an image folder (train/<class>/*)")
    args = parser.parse_args()
    commit = current_commit()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        site = scratch / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(SITE)
        differs = what_differs(scratch, site)
        costs = cost(scratch, site, args.data.resolve())
    import torch

    from lure.device import cpu_name

    result = {"commit": commit, "machine": {"cpu": cpu_name(), "cores": os.cpu_count(),
                                            "capability": torch.backends.cpu.get_cpu_capability()},
              "versions": {"python": platform.python_version(), "torch": torch.__version__},
              "changes_the_models": differs, "seconds": costs}
    out = ROOT / "bench" / "results" / f"reproducibility-{platform.machine()}-{os.cpu_count()}cores.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
