"""The device check: everything the GPU machine should measure, prepared here, run there in one call.

    uv run python bench/gpu/check.py pack            # here: .gpu/ (wheels, a CIFAR-10 subset, a manifest)
    bash bench/gpu/check.sh                          # there, with .gpu carried: install, then every part
    uv run python bench/gpu/check.py failed DIR      # here, on what came back: the parts to run again
    bash bench/gpu/rerun.sh                          # there, with that run's files in .gpu/previous/
    uv run python bench/gpu/check.py collect DIR     # here: bench/results/gpucheck-<gpu>.json

The GPU machine has PyTorch but not lure's other packages, and reaches no package index or dataset
mirror. `pack` gathers into .gpu/ (ignored by git) the wheels of every package lure needs (the
closure of uv.lock for Python 3.12 on x86-64 Linux) that the machine's image lacks
(bench/gpu/image-packages.txt), and a stratified CIFAR-10 subset as uint8 arrays; it refuses a
working tree and .gpu/ over 64 MiB together, the most a call carries.

`run` makes the parts below in this order, the order of what their figures are worth, each under a
hard time limit (PARTS: each limit and the estimate it rests on; with check.sh's install they add up
to 6 minutes). Each part writes OUT/<part>.json the moment it ends, and every command's output goes
to OUT/check.log, so a run stopped at its limit keeps every part that finished:
  machine      nvidia-smi, versions, pip list; the packed subset written out as an image folder
  throughput   ResNet-18 at batch 512 and 64: ours against the official-style baseline (an 8-worker
               DataLoader with pinned memory, per-image transforms, fp32), and evaluation; then ours
               with deterministic algorithms off
  tests        the device tests (pytest tests/test_device.py -k "cuda and not emulated")
  determinism  the same short training in two processes: the same weights, byte for byte
  pipeline     `dvc repro` of presets/gpu-check.yaml, each stage timed
  compiled     ResNet-18 at batch 512 under torch.compile, a cold compile
`run --rerun-from DIR` runs only the parts that DIR's run did not finish well; `collect` checks the
figures against the targets and projects the paper preset's time from them. `run --device cpu
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
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
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


@dataclass(frozen=True)
class Part:
    name: str
    limit_s: int  # a hard limit: the part is stopped there, and the parts after it still run
    estimate: str  # what the limit rests on
    run: Callable[[argparse.Namespace], dict]


INSTALL_LIMIT_S = 20  # check.sh's pip install of the wheels
INSTALL_ESTIMATE = "pip installed the 66 wheels (21 MiB) offline into a fresh folder in 3.0 s here (Python 3.12)"
TOTAL_LIMIT_S = 360  # the whole check, install included: 6 minutes, in the 10 a device call may take


def part_machine(args: argparse.Namespace) -> dict:
    """What the figures were measured on, then the packed subset as the image folder the other
    parts read."""
    from importlib.metadata import distributions

    import torch

    smi = timed(["nvidia-smi"], args, 15) if shutil.which("nvidia-smi") else None
    write_image_folder(args.pack / "cifar10-subset.npz", args.data)
    cuda = torch.cuda.is_available()
    return {
        "ok": True,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
        "driver": nvidia_smi("driver_version"), "nvidia_smi": "".join(line for _, line in smi["lines"]) if smi
        else None,
        "cpu": cpu_model(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None, "torchvision": version_of("torchvision"),
        "pack": read_json(args.pack / "manifest.json"),
        "install_s": float(os.environ["LURE_CHECK_INSTALL_S"]) if "LURE_CHECK_INSTALL_S" in os.environ else None,
        # what `pip list` shows (read directly: a uv environment has no pip)
        "pip_list": dict(sorted((d.metadata["Name"].lower(), d.version) for d in distributions())),
    }


def part_throughput(args: argparse.Namespace) -> dict:
    """bench/throughput.py: ResNet-18 at batch 512 and 64, ours against the baseline loop and
    evaluation, as the stages run (deterministic); then ours in cuDNN's benchmark mode."""
    tiny = ["--synthetic", "--images", "128", "--steps", "2", "--configs", "small_cnn:16,small_cnn:32",
            "--workers", "2"]
    sizes = tiny if args.tiny else ["--data", str(args.data), "--configs", "resnet18:512,resnet18:64"]
    rows, baseline = {}, None
    for variant, flags in (("deterministic", ["--baseline"]), ("benchmark", ["--no-deterministic", "--no-baseline"])):
        out = args.work / f"throughput-{variant}.json"
        run = timed([sys.executable, "bench/throughput.py", "--device", args.device, *sizes, *flags, "--out",
                     str(out)], args, args.left())
        if out.is_file():
            result = read_json(out)
            rows[variant] = result["rows"]
            baseline = baseline or {k: result[k] for k in ("baseline_workers", "baseline_pin_memory")}
        if run["rc"] != 0:
            return {"ok": False, "rc": run["rc"], "timed_out": run["timed_out"], "rows": rows, "baseline": baseline}
    return {"ok": True, "rows": rows, "baseline": baseline}


def part_tests(args: argparse.Namespace) -> dict:
    run = timed([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_device.py", "-k",
                 f"{args.device} and not emulated"], args, args.left())
    summary = next((line.strip() for _, line in reversed(run["lines"])
                    if " in " in line and ("passed" in line or "failed" in line)), None)
    failed = [line.split()[1] for _, line in run["lines"] if line.startswith("FAILED ")]
    return {"ok": run["rc"] == 0, "rc": run["rc"], "timed_out": run["timed_out"], "summary": summary,
            "failed": failed}


def part_determinism(args: argparse.Namespace) -> dict:
    """bench/gpu/determinism.py twice, in two processes: the same weights, byte for byte."""
    command = [sys.executable, "bench/gpu/determinism.py", "--data", str(args.data), "--device", args.device,
               *(["--tiny"] if args.tiny else [])]
    runs = []
    for _ in range(2):
        run = timed(command, args, args.left())
        if run["rc"] != 0:
            return {"ok": False, "rc": run["rc"], "timed_out": run["timed_out"], "runs": runs}
        runs.append(json.loads(run["lines"][-1][1]))
    identical = runs[0]["sha256"] == runs[1]["sha256"]
    return {"ok": identical, "identical": identical, "runs": runs}


def part_pipeline(args: argparse.Namespace) -> dict:
    """`dvc repro` of the GPU preset in a copy of the project, with each stage's time."""
    import yaml

    work = args.work / "project"
    if work.exists():
        shutil.rmtree(work)
    outputs = ("prepared", "corrupted", "models", "metrics", "dvc.lock", "dvc_plots", "cache", "tmp")
    shutil.copytree(ROOT, work, ignore=shutil.ignore_patterns(".git", ".gpu", ".venv", "__pycache__", *outputs))
    params = yaml.safe_load((ROOT / "presets" / "gpu-check.yaml").read_text())
    params["data"]["path"] = str(args.data.resolve())
    params["train"]["device"] = args.device
    if args.tiny:
        params["data"]["chunk_size"] = 24
        params["model"] = {"arch": "small_cnn", "width": 4}
        params["train"].update(epochs=1, batch_size=8, lr_milestones=[])
        params["robustness"].update(test_images=20, severities=[1])
        params["stability"] = {"every": 2, "samples": 4}
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # a copy without git (there may be none there): DVC without an SCM
    subprocess.run([sys.executable, "-m", "dvc", "config", "--local", "core.no_scm", "true"], cwd=work, check=True)
    # the stages' `python` is this one, whatever PATH says
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    run = timed([sys.executable, "-m", "dvc", "repro"], args, args.left(), cwd=work,
                env={"DVC_NO_ANALYTICS": "1", "PATH": path})
    starts = [(stamp, m.group(1)) for stamp, line in run["lines"] if (m := re.match(r"Running stage '(.+)'", line))]
    ends = [stamp for stamp, _ in starts[1:]] + [run["s"]]
    summary = work / "metrics" / "summary.json"
    return {"ok": run["rc"] == 0, "rc": run["rc"], "timed_out": run["timed_out"],
            "stages": {name: round(end - start, 1) for (start, name), end in zip(starts, ends)},
            "summary": read_json(summary) if summary.is_file() else None}


def part_compiled(args: argparse.Namespace) -> dict:
    """Ours under torch.compile at batch 512, its cold compile inside the part's time."""
    out = args.work / "throughput-compiled.json"
    sizes = ["--synthetic", "--images", "64", "--steps", "2", "--configs", "small_cnn:16"] if args.tiny else \
        ["--data", str(args.data), "--configs", "resnet18:512"]
    run = timed([sys.executable, "bench/throughput.py", "--device", args.device, *sizes, "--no-deterministic",
                 "--compile", "--no-baseline", "--out", str(out)], args, args.left())
    return {"ok": run["rc"] == 0 and out.is_file(), "rc": run["rc"], "timed_out": run["timed_out"],
            "rows": read_json(out)["rows"] if out.is_file() else []}


PARTS = [
    Part("machine", 15, "nvidia-smi about 1 s; writing the 7,000 packed images as PNG files took 3.3 s here (2 "
         "cores): about 5 s", part_machine),
    Part("throughput", 60, "two processes of about 6 s each to start (torch, CUDA) and to decode the 6,000 images "
         "(0.6 s here); ours 2 x 100 steps of batch 512 and 64, 57,600 images, 2 s at the targets; the baseline's, "
         "5 s at 12,000 img/s, and 2 s to start its 8 workers twice; evaluation 2 x 4 x 6,000 images, under 1 s "
         "at the target: about 30 s", part_throughput),
    Part("tests", 35, "the 30 device tests took 8.8 s here on the CPU, start included; on the GPU about as "
         "long, plus 3 s for CUDA to start: about 12 s", part_tests),
    Part("determinism", 25, "two processes of about 6 s to start and decode 2,048 images, each with 64 updates "
         "of ResNet-18 at batch 64, under 1 s at the target: about 14 s", part_determinism),
    Part("pipeline", 120, "13 stages: the tiny pipeline of the CPU dry run took 26 s here (2 s a stage), plus "
         "about 3 s for CUDA to start in each of the 8 stages that compute, plus the training (4 x 3 x 1,350 "
         "ResNet-18 images), the corrupted sets and the evaluations (90,000 images each), about 15 s: about 65 "
         "s", part_pipeline),
    Part("compiled", 85, "6 s to start, then Inductor's cold compile of ResNet-18's training step: the small "
         "CNN's took 21 s here on 2 cores; ResNet-18's has about 3 times the layers, compiled by 16 cores: "
         "about 50 s", part_compiled),
]


def run(args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    args.data = args.work / "cifar10-subset"
    args.log = args.out / "check.log"
    manifest = args.pack / "manifest.json"  # the commit that pack saw: there may be no git where this runs
    args.commit = read_json(manifest)["commit"] if manifest.is_file() else None
    start = time.perf_counter()
    rerun = parts_to_rerun(args.rerun_from) if args.rerun_from else args.parts
    chosen = [p for p in PARTS if p.name in args.parts and p.name in rerun]
    for part in chosen:
        began = time.perf_counter()
        # each command of the part gets what is left of the part's limit
        args.left = lambda part=part, began=began: max(1.0, part.limit_s - (time.perf_counter() - began))
        log(args, f"== {part.name} (limit {part.limit_s} s; estimate: {part.estimate})")
        try:
            values = part.run(args)
        except Exception as err:  # a part that breaks must not lose the others' results
            values = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        seconds = round(time.perf_counter() - began, 1)
        write_json(args.out / f"{part.name}.json", {"part": part.name, "seconds": seconds, "limit_s": part.limit_s,
                                                   "device": args.device, "commit": args.commit, **values})
        log(args, f"== {part.name}: {'ok' if values.get('ok') else 'NOT OK'} in {seconds} s")
    print(json.dumps({p.name: summarise(read_json(args.out / f"{p.name}.json")) for p in chosen}, indent=1))
    print(f"check: {len(chosen)} parts in {time.perf_counter() - start:.0f} s")


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


def log(args: argparse.Namespace, line: str) -> None:
    with args.log.open("a") as f:
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


def timed(command: list[str], args: argparse.Namespace, limit: float, cwd: Path = ROOT,
          env: dict | None = None) -> dict:
    """Run `command` in a process group of its own, its output appended to the check's log line by
    line with the seconds since its start; after `limit` seconds, stop the whole group (a stage's
    Python process too, not only DVC)."""
    import signal
    import threading

    start = time.perf_counter()
    lines: list[tuple[float, str]] = []
    with args.log.open("a") as out:
        out.write(f"$ {' '.join(command)}\n")
        process = subprocess.Popen(command, cwd=cwd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)

        def read() -> None:  # in a thread: a line without its end (pytest's dots) must not hold up the limit
            for line in process.stdout:
                stamp = time.perf_counter() - start
                lines.append((stamp, line))
                out.write(f"[{stamp:7.1f}s] {line}")
                out.flush()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            process.wait(timeout=limit)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            timed_out = True
            out.write(f"[stopped after {limit:.0f} s]\n")
        reader.join(timeout=5)
    return {"rc": process.returncode, "s": round(time.perf_counter() - start, 1), "lines": lines,
            "timed_out": timed_out}


def write_image_folder(npz: Path, folder: Path) -> None:
    """The packed subset as the ImageFolder tree that the imagefolder source reads."""
    import numpy as np
    from PIL import Image

    if folder.exists():
        shutil.rmtree(folder)
    arrays = np.load(npz)
    for part in ("train", "test"):
        for i, (image, label) in enumerate(zip(arrays[f"x_{part}"], arrays[f"y_{part}"])):
            target = folder / part / str(arrays["classes"][label]) / f"{i:05d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.transpose(1, 2, 0)).save(target)


# --- collect (here) ------------------------------------------------------------------------------


def collect(args: argparse.Namespace) -> None:
    """The parts that came back (a run's OUT) as one committed result: each figure against its
    target, by how much it is missed, and the paper preset's minutes on that GPU."""
    parts = {p.name: read_json(args.folder / f"{p.name}.json") for p in PARTS
             if (args.folder / f"{p.name}.json").is_file()}
    if "machine" not in parts:
        sys.exit(f"error: {args.folder}: no machine.json, so no record of what ran: not a device check's output")
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
    c = sub.add_parser("collect", help="here: a run's OUT as bench/results/gpucheck-<gpu>.json")
    c.add_argument("folder", type=Path)
    c.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.command == "failed":
        print(",".join(parts_to_rerun(args.folder)))
    else:
        {"pack": pack, "run": run, "collect": collect}[args.command](args)


if __name__ == "__main__":
    main()
