"""The device check: everything the GPU machine should measure, prepared here, run there in one call.

    uv run python bench/gpu/check.py pack            # here: .gpu/ (wheels, a CIFAR-10 subset, a manifest)
    bash bench/gpu/check.sh                          # there, with .gpu carried: install, then every part
    uv run python bench/gpu/check.py failed DIR      # here, on what came back: the parts to run again
    bash bench/gpu/rerun.sh                          # there, with that run's files in .gpu/previous/
    uv run python bench/gpu/check.py collect DIR...  # here: bench/results/gpucheck-<gpu>.json

The GPU machine has PyTorch but not lure's other packages, and reaches no package index or dataset
mirror. `pack` gathers into .gpu/ (ignored by git) the wheels of every package lure needs (the
closure of uv.lock for Python 3.12 on x86-64 Linux) that the machine's image lacks
(bench/gpu/image-packages.txt), and a stratified CIFAR-10 subset as uint8 arrays; it refuses a
working tree and .gpu/ over 64 MiB together, the most a call carries.

`run` writes the packed subset out as an image folder, then makes the parts below in this order,
the order of what their figures are worth, each under a hard time limit (PARTS: each limit and the
estimate it rests on; with check.sh's install they add up to 6 minutes, and a deadline 6 minutes
after check.sh's start stops whatever runs then). Each part writes OUT/<part>.json the moment it
ends, and every command's output goes to OUT/check.log, so a run stopped at its limit keeps every
part that finished:
  machine      nvidia-smi, versions, every installed package
  throughput   ResNet-18 at batch 512 and 64: ours against the official-style baseline (an 8-worker
               DataLoader with pinned memory, per-image transforms, fp32), and evaluation; then ours
               with deterministic algorithms off
  tests        the device tests (pytest tests/test_device.py -k "cuda and not emulated")
  determinism  the same short training in two processes: the same weights, byte for byte
  sharing      one training process alone, then two at once on the same device (DVC's queue with two
               workers): their throughput together over the one's
  pipeline     `dvc repro` of presets/gpu-check.yaml, each stage timed
  compiled     ResNet-18 at batch 512 under torch.compile, a cold compile
`run --rerun-from DIR` runs only the parts that DIR's run did not finish well (and the machine's
again: it may be another one); `collect` merges a run's OUT with its reruns', checks the figures
against the targets and projects the paper preset's time from them. `run --device cpu
--tiny` is the same run on the CPU with tiny sizes: the test suite's dry run (tests/test_gpu_check.py).

Not measured here: data-parallel training (train.processes > 1). NCCL refuses two ranks on one
GPU, and two processes sharing one would say nothing about scaling, so the single-GPU figures
above are the baseline. On a machine with N GPUs, add: `dvc repro` of presets/gpu-check.yaml with
-S train.processes=N (img/s per stage against the single-GPU run's, N x the ideal), and
tests/test_distributed.py's two-rank fit on two GPUs with nccl, to exercise torch's SyncBatchNorm
(on the CPU lure's gloo equivalent runs instead; the test suite measures its equivalence to one
process).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACK = ROOT / ".gpu"
LIMIT_MIB = 64
TARGETS = {"train_img_s_batch512": 30_000, "train_img_s_batch64": 8_000, "speedup_batch64": 5.0,
           "eval_img_s": 100_000, "paper_minutes_warm_scratch_lure": 20.0}
# Python 3.12 on x86-64 Linux, as pip's download flags and as environment markers
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64"]
MARKERS = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}


# --- pack (here) ---------------------------------------------------------------------------------


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def needed_packages() -> list[tuple[str, str]]:
    """(name, version) of every package lure runs with on the GPU machine (uv.lock, without the dev
    group, for Python 3.12 on x86-64 Linux)."""
    from packaging.markers import Marker

    exported = subprocess.run(["uv", "export", "--frozen", "--no-dev", "--no-emit-project", "--no-hashes",
                               "--no-header", "--no-annotate"], cwd=ROOT, capture_output=True, text=True, check=True)
    packages = []
    for line in exported.stdout.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        requirement, _, marker = line.partition(";")
        name, version = requirement.strip().split("==")
        if not marker.strip() or Marker(marker.strip()).evaluate(MARKERS):
            packages.append((name, version))
    return packages


# PyTorch and what it brings: the image's own build, never carried
TORCH_STACK = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-.+|cuda-.+)$")


def image_packages() -> set[str]:
    lines = (ROOT / "bench" / "gpu" / "image-packages.txt").read_text().splitlines()
    return {normalise(line) for line in lines if line.strip() and not line.startswith("#")}


def to_carry() -> tuple[list[tuple[str, str]], list[str]]:
    """The packages to carry as wheels, and those the image has already (name==version locked)."""
    image = image_packages()
    needed = needed_packages()
    there = {n for n, _ in needed if normalise(n) in image or TORCH_STACK.match(normalise(n))}
    return [(n, v) for n, v in needed if n not in there], sorted(f"{n}=={v}" for n, v in needed if n in there)


def download_wheels(packages: list[tuple[str, str]], folder: Path) -> None:
    """The wheels for Python 3.12 on x86-64 Linux, with pip (uv has no download; uvx brings pip).
    A package published as source only is built here into a wheel, which must be pure Python."""
    folder.mkdir(parents=True, exist_ok=True)
    platforms = [flag for p in PLATFORMS for flag in ("--platform", p)]
    pip = ["uvx", "pip"]
    for name, version in packages:
        wanted = f"{name}=={version}"
        found = subprocess.run([*pip, "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
                                "--implementation", "cp", *platforms, "-d", str(folder), wanted], capture_output=True)
        if found.returncode != 0:
            built = subprocess.run([*pip, "wheel", "-q", "--no-deps", "--no-binary", name, "-w", str(folder), wanted],
                                   capture_output=True, text=True)
            wheel = next(folder.glob(f"{normalise(name).replace('-', '_')}-{version}-*.whl"), None)
            if built.returncode != 0 or wheel is None or not wheel.name.endswith("-none-any.whl"):
                sys.exit(f"error: no wheel of {wanted} for Python 3.12 on x86-64 Linux, and none built here "
                         f"(pure Python only): {built.stderr.strip()[-300:]}")


def cifar_subset(source: Path | None, train: int, test: int) -> dict:
    """A stratified subset of CIFAR-10 (an ImageFolder copy at `source`) as uint8 (N, 3, 32, 32)
    arrays; random images of the same shape when `source` is None (the dry run)."""
    import numpy as np

    if source is None:
        rng = np.random.default_rng(0)
        return {"x_train": rng.integers(0, 256, (train, 3, 32, 32), dtype=np.uint8), "y_train": np.arange(train) % 10,
                "x_test": rng.integers(0, 256, (test, 3, 32, 32), dtype=np.uint8), "y_test": np.arange(test) % 10,
                "classes": np.array([f"class_{c}" for c in range(10)])}
    from PIL import Image

    classes = sorted(p.name for p in (source / "train").iterdir() if p.is_dir())
    arrays: dict = {"classes": np.array(classes)}
    for part, count in (("train", train), ("test", test)):
        images, labels = [], []
        for label, name in enumerate(classes):
            files = sorted((source / part / name).iterdir())[: count // len(classes)]
            images += [np.asarray(Image.open(f).convert("RGB")).transpose(2, 0, 1) for f in files]
            labels += [label] * len(files)
        arrays[f"x_{part}"], arrays[f"y_{part}"] = np.stack(images), np.asarray(labels, dtype=np.int64)
    return arrays


def tree_size(paths: list[Path]) -> int:
    return sum(f.stat().st_size for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())


def pack(args: argparse.Namespace) -> None:
    import numpy as np

    sys.path.insert(0, str(ROOT / "bench"))  # the bench scripts' shared code; this one runs from bench/gpu
    from common import current_commit

    out = args.out
    if out.exists() and any(out.iterdir()) and not (out / "manifest.json").is_file():
        sys.exit(f"error: {out} holds files that pack did not make: name a new folder")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    carry, from_image = to_carry()
    if args.wheels:
        download_wheels(carry, out / "wheels")
    np.savez(out / "cifar10-subset.npz", **cifar_subset(None if args.synthetic else args.cifar, args.train_images,
                                                        args.test_images))
    commit = current_commit()
    dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout)
    manifest = {"commit": commit, "dirty": dirty, "carried": [f"{n}=={v}" for n, v in carry],
                "from_image": from_image, "data": "synthetic" if args.synthetic else "cifar10",
                "train_images": args.train_images, "test_images": args.test_images}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.split()
    tree = tree_size([ROOT / f for f in listed if (ROOT / f).is_file()])
    packed = tree_size([out])
    total = (tree + packed) / 2**20
    print(f"working tree {tree / 2**20:.1f} MiB + {out.name}/ {packed / 2**20:.1f} MiB "
          f"({len(carry)} wheels{'' if args.wheels else ' listed, not downloaded'}, "
          f"{args.train_images} + {args.test_images} images) = {total:.1f} MiB of {LIMIT_MIB}")
    if total > LIMIT_MIB:
        sys.exit(f"error: {total:.1f} MiB is over the {LIMIT_MIB} MiB a device call carries: pack fewer images")


# --- run (there) ---------------------------------------------------------------------------------


@dataclass
class Run:
    """One run of the check: where it reads and writes, and its clock."""

    device: str
    tiny: bool
    pack: Path
    out: Path  # what comes back: a file per part and check.log
    work: Path  # scratch
    deadline: float  # time.time() by which everything must have ended
    manifest: dict | None = None  # pack's manifest.json, read once at the start
    part_ends: float = 0.0  # time.time() at which the running part is stopped

    @property
    def commit(self) -> str | None:
        """The commit that pack saw: there may be no git where this runs."""
        return self.manifest["commit"] if self.manifest else None

    @property
    def data(self) -> Path:
        return self.work / "cifar10-subset"

    @property
    def log(self) -> Path:
        return self.out / "check.log"

    def left(self) -> float:
        """Seconds the running part has left."""
        return max(0.0, self.part_ends - time.time())


@dataclass(frozen=True)
class Part:
    name: str
    limit_s: int  # a hard limit: the part is stopped there, and the parts after it still run
    estimate: str  # what the limit rests on
    run: Callable[[Run], dict]


INSTALL_LIMIT_S = 20  # check.sh's pip install of the wheels
INSTALL_ESTIMATE = "pip installed the 66 wheels (21 MiB) offline into a fresh folder in 3.0 s here (Python 3.12)"
TOTAL_LIMIT_S = 360  # the whole check from check.sh's start: 6 minutes, in the 10 a device call may take
MARGIN_S = 5  # kept back at the end for the last part's file and a killed command's clean-up


def part_machine(r: Run) -> dict:
    """What the figures were measured on."""
    from importlib.metadata import distributions

    import torch

    smi = timed(["nvidia-smi"], r, 15) if shutil.which("nvidia-smi") else None
    cuda = torch.cuda.is_available()
    packages = {(d.metadata["Name"] or "?").lower(): d.version for d in distributions()}
    install = os.environ.get("LURE_CHECK_INSTALL_S")
    return {
        "ok": True,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
        "driver": nvidia_smi("driver_version"),
        "nvidia_smi": "".join(line for _, line in smi["lines"]) if smi else None,
        "cpu": cpu_model(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None, "torchvision": version_of("torchvision"),
        "pack": r.manifest, "install_s": float(install) if install else None,
        "pip_list": dict(sorted(packages.items())),  # what `pip list` shows (a uv environment has no pip)
    }


def part_throughput(r: Run) -> dict:
    """bench/throughput.py: ResNet-18 at batch 512 and 64, ours against the baseline loop and
    evaluation, as the stages run (deterministic); then ours in cuDNN's benchmark mode."""
    tiny = ["--synthetic", "--images", "128", "--steps", "2", "--configs", "small_cnn:16,small_cnn:32",
            "--workers", "2"]
    sizes = tiny if r.tiny else ["--data", str(r.data), "--configs", "resnet18:512,resnet18:64"]
    rows, baseline = {}, None
    for variant, flags in (("deterministic", ["--baseline"]), ("benchmark", ["--no-deterministic", "--no-baseline"])):
        out = r.work / f"throughput-{variant}.json"
        run = timed([sys.executable, "bench/throughput.py", "--device", r.device, *sizes, *flags, "--out", str(out)],
                    r, r.left())
        if out.is_file():  # row by row: a run stopped early keeps its rows
            result = read_json(out)
            rows[variant] = result["rows"]
            baseline = baseline or {k: result[k] for k in ("baseline_workers", "baseline_pin_memory")}
        if run["rc"] != 0:
            return {"ok": False, "rc": run["rc"], "timed_out": run["timed_out"], "rows": rows, "baseline": baseline}
    return {"ok": True, "rows": rows, "baseline": baseline}


def part_tests(r: Run) -> dict:
    run = timed([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_device.py", "-k",
                 f"{r.device} and not emulated"], r, r.left())
    summary = next((line.strip() for _, line in reversed(run["lines"])
                    if " in " in line and ("passed" in line or "failed" in line)), None)
    failed = [line.split()[1] for _, line in run["lines"] if line.startswith("FAILED ")]
    return {"ok": run["rc"] == 0, "rc": run["rc"], "timed_out": run["timed_out"], "summary": summary,
            "failed": failed}


def part_determinism(r: Run) -> dict:
    """bench/gpu/determinism.py twice, in two processes: the same weights, byte for byte."""
    command = [sys.executable, "bench/gpu/determinism.py", "--data", str(r.data), "--device", r.device,
               *(["--tiny"] if r.tiny else [])]
    runs = []
    for _ in range(2):
        run = timed(command, r, r.left())
        printed = [line for _, line in run["lines"] if line.startswith("{")]  # its one line of JSON
        if run["rc"] != 0 or not printed:
            return {"ok": False, "rc": run["rc"], "timed_out": run["timed_out"], "runs": runs}
        runs.append(json.loads(printed[-1]))
    identical = runs[0]["sha256"] == runs[1]["sha256"]
    return {"ok": identical, "identical": identical, "runs": runs}


def part_sharing(r: Run) -> dict:
    """Training throughput of one process alone on the device, then of two at once sharing it (what
    DVC's queue with two workers does, README: "Several runs at once"): their sum over the one."""
    from concurrent.futures import ThreadPoolExecutor

    sizes = ["--synthetic", "--images", "128", "--steps", "2", "--configs", "small_cnn:16"] if r.tiny else \
        ["--data", str(r.data), "--configs", "resnet18:64", "--steps", "300"]  # timed windows that overlap

    def train(name: str) -> dict:
        out = r.work / f"sharing-{name}.json"
        run = timed([sys.executable, "bench/throughput.py", "--device", r.device, *sizes, "--no-baseline",
                     "--out", str(out)], r, r.left())
        return {"rc": run["rc"], "timed_out": run["timed_out"],
                "img_s": read_json(out)["rows"][0]["train_img_s"] if run["rc"] == 0 and out.is_file() else None}

    alone = train("alone")
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(train, ["first", "second"]))
    rates = [alone["img_s"], *(t["img_s"] for t in together)]
    if None in rates:
        failed = next(t for t in [alone, *together] if t["img_s"] is None)
        return {"ok": False, "rc": failed["rc"], "timed_out": failed["timed_out"], "img_s": rates}
    return {"ok": True, "alone_img_s": rates[0], "together_img_s": rates[1:],
            "together_over_alone": round(sum(rates[1:]) / rates[0], 2)}


def part_pipeline(r: Run) -> dict:
    """`dvc repro` of the GPU preset in a copy of the project, with each stage's time."""
    import yaml

    work = r.work / "project"
    if work.exists():
        shutil.rmtree(work)
    outputs = ("prepared", "corrupted", "models", "metrics", "dvc.lock", "dvc_plots", "cache", "tmp")
    shutil.copytree(ROOT, work, ignore=shutil.ignore_patterns(".git", ".gpu", ".venv", "__pycache__", *outputs))
    params = yaml.safe_load((ROOT / "presets" / "gpu-check.yaml").read_text())
    params["data"]["path"] = str(r.data.resolve())
    params["train"]["device"] = r.device
    if r.tiny:
        params["data"]["chunk_size"] = 24
        params["model"] = {"arch": "small_cnn", "width": 4}
        params["train"].update(epochs=1, batch_size=8, lr_milestones=[])
        params["robustness"].update(test_images=20, severities=[1])
        params["stability"] = {"every": 2, "samples": 4}
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    timed([sys.executable, "-m", "lure.cli", "pipelines"], r, r.left(), cwd=work)  # the preset's methods' files
    # a copy without git (there may be none there): DVC without an SCM; its stages' `python` is this one
    timed([sys.executable, "-m", "dvc", "config", "--local", "core.no_scm", "true"], r, r.left(), cwd=work)
    run = timed([sys.executable, "-m", "dvc", "repro"], r, r.left(), cwd=work,
                env={"DVC_NO_ANALYTICS": "1", "PATH": f"{python_shim(r)}{os.pathsep}{os.environ.get('PATH', '')}"})
    starts = [(stamp, m.group(1)) for stamp, line in run["lines"] if (m := re.match(r"Running stage '(.+)'", line))]
    ends = [stamp for stamp, _ in starts[1:]] + [run["s"]]
    summary = work / "metrics" / "summary.json"
    return {"ok": run["rc"] == 0, "rc": run["rc"], "timed_out": run["timed_out"],
            "stages": {name: round(end - start, 1) for (start, name), end in zip(starts, ends)},
            "summary": read_json(summary) if summary.is_file() else None}


def python_shim(r: Run) -> Path:
    """A folder whose `python` is this interpreter (dvc.yaml's stages run `python`; a link would lose
    a virtual environment)."""
    folder = r.work / "bin"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "python").write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    (folder / "python").chmod(0o755)
    return folder


def part_compiled(r: Run) -> dict:
    """Ours under torch.compile at batch 512, its cold compile inside the part's time."""
    out = r.work / "throughput-compiled.json"
    sizes = ["--synthetic", "--images", "64", "--steps", "2", "--configs", "small_cnn:16"] if r.tiny else \
        ["--data", str(r.data), "--configs", "resnet18:512"]
    run = timed([sys.executable, "bench/throughput.py", "--device", r.device, *sizes, "--no-deterministic",
                 "--compile", "--no-baseline", "--out", str(out)], r, r.left())
    return {"ok": run["rc"] == 0 and out.is_file(), "rc": run["rc"], "timed_out": run["timed_out"],
            "rows": read_json(out)["rows"] if out.is_file() else []}


# Estimates: the CPU dry run's own times (tests/test_gpu_check.py, 2 cores, nothing else running) and
# the targets' rates; each limit leaves the estimate room. With the install, the images written out
# (SETUP_ALLOWANCE_S) and MARGIN_S they add up to TOTAL_LIMIT_S; the run also stops every part at
# that deadline, counted from check.sh's start.
SETUP_ALLOWANCE_S = 10
SETUP_ESTIMATE = "writing the 7,000 packed images as PNG files took 3.3 s here"
PARTS = [
    Part("machine", 10, "nvidia-smi and the package list, about 2 s", part_machine),
    Part("throughput", 60, "two processes of about 6 s each to start (torch, CUDA) and to decode the 6,000 images "
         "(0.6 s here); ours 2 x 100 steps at batch 512 and 64 in each, 115,200 images, 4 s at the targets; the "
         "baseline's 57,600 images at 12,000 img/s, 5 s, and 2 s to start its 8 workers twice; evaluation 2 x 2 "
         "x 24,000 images, 1 s at the target: about 30 s", part_throughput),
    Part("tests", 40, "the 23 device tests took 8 s here on the CPU, start included; on the GPU each also "
         "runs its CPU reference, plus 3 s for CUDA to start: about 15 s", part_tests),
    Part("determinism", 25, "two processes of about 6 s to start and decode 2,048 images, each with 64 updates "
         "of ResNet-18 at batch 64, under 1 s at the target: about 14 s", part_determinism),
    Part("sharing", 25, "three processes of about 6 s to start, the last two at once, each with 300 updates "
         "of ResNet-18 at batch 64, 2.4 s at the target alone, twice that shared: about 20 s", part_sharing),
    Part("pipeline", 95, "13 stages: the dry run's took 29 s here (2 s a stage), plus about 3 s for CUDA to "
         "start in each of the 8 that compute, plus the training (3 x 4 x 1,350 ResNet-18 images), the "
         "corrupted sets and the evaluations (90,000 images each), about 15 s: about 65 s", part_pipeline),
    Part("compiled", 70, "6 s to start, then Inductor's cold compile of ResNet-18's training step: the small "
         "CNN's took 21 s here on 2 cores; ResNet-18 has about 3 times its layers, compiled on 16 cores: "
         "about 50 s", part_compiled),
]


def run(args: argparse.Namespace) -> None:
    started = float(os.environ.get("LURE_CHECK_STARTED", time.time()))  # check.sh's start, before the install
    r = Run(args.device, args.tiny, args.pack, args.out, args.work, deadline=started + TOTAL_LIMIT_S)
    r.out.mkdir(parents=True, exist_ok=True)
    r.work.mkdir(parents=True, exist_ok=True)
    manifest = r.pack / "manifest.json"
    r.manifest = read_json(manifest) if manifest.is_file() else None
    # a rerun records its machine again: it may be another one
    wanted = set(args.parts)
    if args.rerun_from:  # what did not finish well, and the machine again: this may be another one
        wanted &= {*parts_to_rerun(args.rerun_from), "machine"}
    chosen = [p for p in PARTS if p.name in wanted]
    if not r.data.is_dir():  # every part after the machine's reads it; a rerun on a fresh machine too
        began = time.time()
        write_image_folder(r.pack / "cifar10-subset.npz", r.data)
        log(r, f"== the packed images written out in {time.time() - began:.1f} s ({SETUP_ESTIMATE})")
    for part in chosen:
        began = time.time()
        r.part_ends = min(began + part.limit_s, r.deadline - MARGIN_S)
        log(r, f"== {part.name} (limit {part.limit_s} s, {r.left():.0f} s left for it; estimate: {part.estimate})")
        try:
            values = part.run(r) if r.left() > 1 else {"ok": False, "error": "no time left in the check"}
        except Exception as err:  # a part that breaks must not lose the others' results
            values = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        seconds = round(time.time() - began, 1)
        write_json(r.out / f"{part.name}.json", {"part": part.name, "seconds": seconds, "limit_s": part.limit_s,
                                                "device": r.device, "commit": r.commit, **values})
        log(r, f"== {part.name}: {'ok' if values.get('ok') else 'NOT OK'} in {seconds} s")
    print(json.dumps({p.name: summarise(read_json(r.out / f"{p.name}.json")) for p in chosen}, indent=1))
    print(f"check: {len(chosen)} parts, {time.time() - started:.0f} s since check.sh started")


PARTS_BY_NAME = {p.name: p for p in PARTS}


def summarise(part: dict) -> dict:
    shown = ("ok", "seconds", "summary", "identical", "error", "timed_out")
    return {k: v for k, v in part.items() if k in shown}


def parts_to_rerun(folder: Path) -> list[str]:
    """The parts whose file in `folder` (a run's OUT) is missing or not ok."""
    def ok(name: str) -> bool:
        path = folder / f"{name}.json"
        return path.is_file() and bool(read_json(path).get("ok"))

    return [p.name for p in PARTS if not ok(p.name)]


def write_json(path: Path, value: dict) -> None:
    """Whole or not at all: a run stopped while writing leaves the file as it was."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(partial, path)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def log(r: Run, line: str) -> None:
    with r.log.open("a") as f:
        f.write(line + "\n")
    print(line, flush=True)


def nvidia_smi(field: str) -> str | None:
    try:
        return subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=20).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def cpu_model() -> str:
    from lure.device import cpu_name

    return cpu_name()


def version_of(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def timed(command: list[str], r: Run, limit: float, cwd: Path = ROOT, env: dict | None = None) -> dict:
    """Run `command`, its output appended to the check's log line by line with the seconds since
    its start; after `limit` seconds, kill it and every process it started (a stage's Python
    process too, not only DVC). It stays in this process's group, so that the device call, which
    kills the group at its own limit, leaves nothing running behind it."""
    import threading

    start = time.perf_counter()
    lines: list[tuple[float, str]] = []
    with r.log.open("a") as out:
        process = subprocess.Popen(command, cwd=cwd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        out.write(f"$ [pid {process.pid}] {' '.join(command)}\n")
        out.flush()

        def read() -> None:  # in a thread: a line without its end (pytest's dots) must not hold up the limit
            for line in process.stdout:
                stamp = time.perf_counter() - start
                lines.append((stamp, line))
                out.write(f"[{stamp:7.1f}s] {line}")
                out.flush()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            process.wait(timeout=max(limit, 0.1))
            timed_out = False
        except subprocess.TimeoutExpired:
            kill_tree(process.pid)
            process.wait()
            timed_out = True
            out.write(f"[stopped after {limit:.0f} s]\n")
        reader.join(timeout=2)
    return {"rc": process.returncode, "s": round(time.perf_counter() - start, 1), "lines": lines,
            "timed_out": timed_out}


def kill_tree(pid: int) -> None:
    """SIGKILL `pid` and its descendants, found in /proc, until none is left (Linux)."""
    import signal

    while True:
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        tree, todo = [], [pid]
        while todo:
            tree.append(todo.pop())
            todo += children.get(tree[-1], [])
        alive = [p for p in tree if Path(f"/proc/{p}").exists() and not zombie(p)]
        if not alive:
            return
        for p in alive:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


def zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def write_image_folder(npz: Path, folder: Path) -> None:
    """The packed subset as the ImageFolder tree that the imagefolder source reads (written beside,
    then moved into place: a folder that exists is whole)."""
    import numpy as np
    from PIL import Image

    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    arrays = np.load(npz)
    for part in ("train", "test"):
        for i, (image, label) in enumerate(zip(arrays[f"x_{part}"], arrays[f"y_{part}"])):
            target = partial / part / str(arrays["classes"][label]) / f"{i:05d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.transpose(1, 2, 0)).save(target)
    partial.rename(folder)


# --- collect (here) ------------------------------------------------------------------------------


def collect(args: argparse.Namespace) -> None:
    """What came back from a run and its reruns (their OUT folders, later ones over earlier ones), as
    one committed result: each figure against its target, by how much it is missed, and the paper
    preset's minutes on that GPU."""
    parts: dict[str, dict] = {}
    gpus = set()
    for folder in args.folders:
        if not (folder / "machine.json").is_file():
            sys.exit(f"error: {folder}: no machine.json, so no record of what ran: not a device check's output")
        gpus.add(read_json(folder / "machine.json")["gpu"])
        parts |= {p.name: read_json(folder / f"{p.name}.json") for p in PARTS if (folder / f"{p.name}.json").is_file()}
    if len(gpus) > 1:
        sys.exit(f"error: the folders come from different devices ({', '.join(map(str, sorted(gpus, key=str)))}): "
                 f"collect each device's apart")
    machine = parts["machine"]
    rows = parts.get("throughput", {}).get("rows", {})
    compiled = parts.get("compiled", {}).get("rows", [])
    figures = throughput_figures(rows, compiled)
    result = {
        "device": machine["gpu"] or f"cpu x{machine['cpu_count']}", "commit": machine["commit"],
        "versions": {k: machine[k] for k in ("python", "torch", "cuda", "cudnn", "torchvision", "driver")},
        "cpu": machine["cpu"], "parts": {name: {k: v for k, v in part.items() if k != "pip_list"}
                                         for name, part in parts.items()},
        "not_run": [p.name for p in PARTS if p.name not in parts], "targets": TARGETS, "figures": figures,
        "missed_as_share_of_target": {k: round(v / TARGETS[k], 3) for k, v in figures.items()
                                      if k in TARGETS and v is not None and v < TARGETS[k]},
        "projection": projection(rows.get("deterministic", [])),
    }
    minutes = result["projection"].get("minutes_warm_scratch_lure")
    if minutes is not None:
        result["figures"]["paper_minutes_warm_scratch_lure"] = minutes
        if minutes > TARGETS["paper_minutes_warm_scratch_lure"]:
            result["missed_as_share_of_target"]["paper_minutes_warm_scratch_lure"] = round(
                TARGETS["paper_minutes_warm_scratch_lure"] / minutes, 3)
    out = args.out or ROOT / "bench" / "results" / f"gpucheck-{slug(result['device'])}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


def slug(device: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-")


def throughput_figures(rows: dict, compiled: list) -> dict:
    """The target figures from the throughput rows: the best of ours at each batch over the
    variants, the speed-up over the baseline in the same run, the best evaluation."""
    ours = [r for variant in rows.values() for r in variant] + compiled

    def best(key: str, batch: int | None = None) -> float | None:
        values = [r[key] for r in ours if r["model"] == "resnet18" and (batch is None or r["batch"] == batch)
                  and key in r]
        return max(values, default=None)

    same_run = {r["batch"]: r.get("speedup") for r in rows.get("deterministic", []) if r["model"] == "resnet18"}
    return {"train_img_s_batch512": best("train_img_s", 512), "train_img_s_batch64": best("train_img_s", 64),
            "speedup_batch512": same_run.get(512), "speedup_batch64": same_run.get(64),
            "eval_img_s": best("eval_img_s"),
            "compiled_train_img_s_batch512": max((r["train_img_s"] for r in compiled), default=None)}


def projection(rows: list) -> dict:
    """Minutes the paper preset would take on this device, from the measured img/s of the loop it
    runs with (deterministic, not compiled, ResNet-18 at batch 64): every epoch's training and
    validation pass, the continual evaluation every `stability.every` updates, the train-accuracy
    pass at the end of each chunk. Left out: each stage's start (Python, imports, CUDA), the
    corrupted sets and the evaluate stages."""
    import yaml

    basis = next((r for r in rows if (r["model"], r["batch"]) == ("resnet18", 64)), None)
    if basis is None:
        return {"made": False, "why": "no ResNet-18 batch-64 throughput measured"}
    p = yaml.safe_load((ROOT / "presets" / "cifar10-paper.yaml").read_text())
    chunks, size, epochs, batch = len(p["chunks"]) + 1, p["data"]["chunk_size"], p["train"]["epochs"], \
        p["train"]["batch_size"]
    train_per_chunk = size - round(p["data"]["val_fraction"] * size)
    val_per_chunk = size - train_per_chunk
    every, samples = p["stability"]["every"], p["stability"]["samples"]

    def chunk(k: int) -> tuple[int, int]:
        """(training images, evaluated images) of chunk k under full replay."""
        train = k * train_per_chunk * epochs
        probes = (k * train_per_chunk // batch) * epochs // every + 2 if k > 1 else 0
        return train, k * val_per_chunk * epochs + probes * k * min(samples, val_per_chunk) + k * train_per_chunk

    later = [chunk(k) for k in range(2, chunks + 1)]
    images = {"learn": chunk(1)} | {m: tuple(map(sum, zip(*later))) for m in ("warm", "scratch", "lure")}
    minutes = {m: round((t / basis["train_img_s"] + e / basis["eval_img_s"]) / 60, 2) for m, (t, e) in images.items()}
    return {"made": True, "basis": f"resnet18 batch 64, deterministic, not compiled: {basis['train_img_s']} train "
            f"img/s and {basis['eval_img_s']} eval img/s", "train_images": {m: t for m, (t, _) in images.items()},
            "evaluated_images": {m: e for m, (_, e) in images.items()}, "minutes": minutes,
            "minutes_warm_scratch_lure": round(sum(minutes.values()), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="here: gather .gpu/")
    p.add_argument("--out", type=Path, default=PACK)
    p.add_argument("--cifar", type=Path, default=ROOT.parent / "shared" / "data" / "cifar10")
    p.add_argument("--synthetic", action="store_true", help="random images instead of CIFAR-10 (the dry run)")
    p.add_argument("--train-images", type=int, default=6000)
    p.add_argument("--test-images", type=int, default=1000)
    p.add_argument("--no-wheels", dest="wheels", action="store_false", help="list the wheels, download none")
    r = sub.add_parser("run", help="there: the parts, each one's results to --out as it ends")
    r.add_argument("--pack", type=Path, default=PACK)
    r.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/lure-gpu-check-out")))
    r.add_argument("--device", default="cuda")
    r.add_argument("--work", type=Path, default=Path("/tmp/lure-gpu-check"), help="scratch folder")
    r.add_argument("--tiny", action="store_true", help="tiny sizes: the CPU dry run")
    r.add_argument("--parts", type=lambda s: s.split(","), default=[p.name for p in PARTS],
                   help=f"comma-separated, of {','.join(p.name for p in PARTS)}")
    r.add_argument("--rerun-from", type=Path, help="a run's OUT: run only the parts it did not finish well")
    f = sub.add_parser("failed", help="here: the parts a run's OUT did not finish well")
    f.add_argument("folder", type=Path)
    c = sub.add_parser("collect", help="here: a run's OUT (then its reruns') as bench/results/gpucheck-<gpu>.json")
    c.add_argument("folders", type=Path, nargs="+")
    c.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.command == "failed":
        print(",".join(parts_to_rerun(args.folder)))
    else:
        {"pack": pack, "run": run, "collect": collect}[args.command](args)


if __name__ == "__main__":
    main()
