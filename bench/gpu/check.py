"""The device check: everything the GPU machine should measure, prepared here, run there in one call.

    uv run python bench/gpu/check.py pack        # here: .gpu/ with wheels, a CIFAR-10 subset, a manifest
    # there, the device tool's run with carry [".gpu"] and the command:
    bash bench/gpu/check.sh                      # install the wheels, then `check.py run`

The GPU machine has PyTorch but not lure's other packages, and reaches no package index or dataset
mirror. `pack` gathers into .gpu/ (ignored by git) the wheels of every package lure needs (the
closure of uv.lock for Python 3.12 on x86-64 Linux) that the machine's image lacks
(bench/gpu/image-packages.txt), and a stratified CIFAR-10 subset as uint8 arrays; it refuses a
working tree and .gpu/ over 64 MiB together, the most a call carries.

`run` makes each part in turn, each with a time limit so that a slow part cannot lose the others'
results, and writes results.json (updated after every part) and a log per part to --out:
  1. tests: the device-parametrised tests on the device (pytest -k <device>), with their summary;
  2. throughput: bench/throughput.py, ours against the official code's loop, at batch 64 and 512
     for ResNet-18 and the small CNN, deterministic on and off, compile on and off, train and eval;
  3. repro: `dvc repro` of presets/gpu-check.yaml (ResNet-18, 8 chunks, warm, scratch and LURE,
     corruptions and calibration) on the subset, with the time of each stage;
  4. determinism: one relearn stage run again gives byte-identical model and metrics;
  5. projection: the measured img/s times the images the paper preset trains and evaluates, as
     minutes on this GPU, per method and for warm + scratch + LURE.
`run --device cpu --tiny` is the same on the CPU with tiny sizes: the test suite's dry run.

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


class Results:
    """results.json in --out, rewritten after every part."""

    def __init__(self, out: Path, device: str, pack: Path) -> None:
        import torch

        self.out, self.path = out, out / "results.json"
        manifest = pack / "manifest.json"
        self.data = {
            "device": torch.cuda.get_device_name(0) if device == "cuda" else f"cpu x{os.cpu_count()}",
            "driver": nvidia_smi("driver_version"), "torch": torch.__version__,
            "torchvision": version_of("torchvision"), "python": platform.python_version(),
            "pack": json.loads(manifest.read_text()) if manifest.is_file() else None,
            "image_versions": image_versions(json.loads(manifest.read_text())["from_image"]) if manifest.is_file()
            else None,
            "targets": TARGETS, "parts": {},
        }
        self.save()

    def part(self, name: str, **values) -> None:
        self.data["parts"][name] = values
        self.save()

    def save(self) -> None:
        self.path.write_text(json.dumps(self.data, indent=2) + "\n")


def image_versions(names: list[str]) -> dict[str, str | None]:
    """The versions of the packages lure takes from the machine's image (`names`: name==locked)."""
    from importlib.metadata import PackageNotFoundError, version

    def found(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {name: found(name) for name in (line.split("==")[0] for line in names)}


def nvidia_smi(field: str) -> str | None:
    try:
        return subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=20).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def version_of(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def timed(command: list[str], log: Path, limit: float, cwd: Path = ROOT, env: dict | None = None) -> dict:
    """Run `command` in a process group of its own, its output appended to `log` line by line with
    the seconds since its start; after `limit` seconds, stop the whole group (a stage's Python
    process too, not only DVC)."""
    import signal
    import threading

    start = time.perf_counter()
    lines: list[tuple[float, str]] = []
    with log.open("a") as out:
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


def part_tests(args, results: Results) -> None:
    run = timed([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_device.py",
                 "-k", args.device], args.out / "tests.log", args.limits["tests"])
    summary = next((line.strip() for _, line in reversed(run["lines"])
                    if " in " in line and ("passed" in line or "failed" in line)), None)
    results.part("tests", rc=run["rc"], seconds=run["s"], timed_out=run["timed_out"], summary=summary)


def part_throughput(args, results: Results) -> None:
    """Our loop against the baseline, then deterministic off, then compiled."""
    sizes = ["--synthetic", "--images", "128", "--steps", "2", "--configs", "small_cnn:16", "--workers", "0"] \
        if args.tiny else ["--data", str(args.data)]
    variants = {  # flags, share of the part's time
        "deterministic": (["--baseline"], 0.4),
        "benchmark": (["--no-deterministic", "--no-baseline"], 0.25),
        # one compile of ResNet-18's training takes most of a minute; on a CPU minutes: the dry run leaves it out
        **({} if args.tiny else {"benchmark_compiled": (["--no-deterministic", "--compile", "--no-baseline",
                                                         "--configs", "resnet18:512"], 0.35)}),
    }
    rows, seconds = {}, {}
    for name, (flags, share) in variants.items():
        out = args.out / f"throughput-{name}.json"
        run = timed([sys.executable, "bench/throughput.py", "--device", args.device, *sizes, *flags, "--out", str(out)],
                    args.out / "throughput.log", args.limits["throughput"] * share)
        seconds[name] = run["s"]
        if out.is_file():
            rows[name] = json.loads(out.read_text())["rows"]
            out.unlink()  # in results.json now: $OUT holds 8 files at most
        results.part("throughput", seconds=seconds, rows=rows, **throughput_targets(rows))


def throughput_targets(rows: dict) -> dict:
    """The measured figures against the targets, by how much each is missed."""
    base = {(r["model"], r["batch"]): r for r in rows.get("deterministic", [])}
    fast = {(r["model"], r["batch"]): r for variant in rows.values() for r in variant}
    best = {key: max(r["train_img_s"] for variant in rows.values() for r in variant
                     if (r["model"], r["batch"]) == key) for key in fast}
    figures = {"train_img_s_batch512": best.get(("resnet18", 512)), "train_img_s_batch64": best.get(("resnet18", 64)),
               "speedup_batch64": base.get(("resnet18", 64), {}).get("speedup"),
               "eval_img_s": max((r["eval_img_s"] for variant in rows.values() for r in variant
                                  if r["model"] == "resnet18"), default=None)}
    missed = {k: round(v / TARGETS[k], 3) for k, v in figures.items() if v is not None and v < TARGETS[k]}
    return {"figures": figures, "missed_as_share_of_target": missed}


def part_repro(args, results: Results, work: Path) -> None:
    """dvc repro of the GPU preset in a copy of the project (`work`), with each stage's time."""
    import yaml

    if work.exists():
        shutil.rmtree(work)
    outputs = ("prepared", "corrupted", "models", "metrics", "dvc.lock", "dvc_plots", "cache", "tmp")
    shutil.copytree(ROOT, work, ignore=shutil.ignore_patterns(".git", ".gpu", ".venv", "__pycache__", *outputs))
    params = yaml.safe_load((ROOT / "presets" / "gpu-check.yaml").read_text())
    params["data"]["path"] = str(args.data.resolve())  # the subset, unpacked once for every part
    params["train"]["device"] = args.device
    if args.tiny:
        params.update(chunks=[{"k": 2, "prev": 1}], methods={"warm": {}, "lure": {}})
        params["data"]["chunk_size"] = 24
        params["model"] = {"arch": "small_cnn", "width": 4}
        params["train"].update(epochs=1, batch_size=8, lr_milestones=[])
        params["robustness"] = {"corruptions": "standard", "severities": [1], "test_images": 20}
        params["stability"] = {"every": 2, "samples": 4}
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # a copy without git (there may be none there): DVC without an SCM
    subprocess.run([sys.executable, "-m", "dvc", "config", "--local", "core.no_scm", "true"], cwd=work, check=True)
    run = timed([sys.executable, "-m", "dvc", "repro"], args.out / "repro.log", args.limits["repro"], cwd=work,
                env={"DVC_NO_ANALYTICS": "1"})
    starts = [(stamp, m.group(1)) for stamp, line in run["lines"] if (m := re.match(r"Running stage '(.+)'", line))]
    ends = [stamp for stamp, _ in starts[1:]] + [run["s"]]
    stages = {name: round(end - start, 1) for (start, name), end in zip(starts, ends)}
    summary = work / "metrics" / "summary.json"
    results.part("repro", rc=run["rc"], seconds=run["s"], timed_out=run["timed_out"], stages=stages,
                 summary=json.loads(summary.read_text()) if summary.is_file() else None)


def write_image_folder(npz: Path, folder: Path) -> None:
    """The packed subset as the ImageFolder tree that the imagefolder source reads."""
    import numpy as np
    from PIL import Image

    arrays = np.load(npz)
    for part in ("train", "test"):
        for i, (image, label) in enumerate(zip(arrays[f"x_{part}"], arrays[f"y_{part}"])):
            target = folder / part / str(arrays["classes"][label]) / f"{i:05d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.transpose(1, 2, 0)).save(target)


def part_determinism(args, results: Results, work: Path) -> None:
    """The relearn stage of LURE at chunk 2 again: the same model bytes and metrics but timings."""
    model = work / "models" / "seed_0" / "lure" / "chunk_2.pt"
    metrics = work / "metrics" / "relearn" / "seed_0" / "lure" / "chunk_2.json"
    if not model.is_file():
        results.part("determinism", ran=False, why="the repro part did not reach it")
        return
    before_model, before_metrics = model.read_bytes(), metrics.read_bytes()
    run = timed([sys.executable, "-m", "stages.relearn", "lure", "2", "--seed", "0"], args.out / "repro.log",
                args.limits["determinism"], cwd=work)
    results.part("determinism", ran=True, rc=run["rc"], seconds=run["s"],
                 model_identical=model.read_bytes() == before_model, metrics_identical=metrics.read_bytes() ==
                 before_metrics)


def part_projection(args, results: Results) -> None:
    """Minutes the paper preset would take on this device, from the measured img/s of the loop it
    runs with (deterministic, not compiled): every epoch's training and validation pass, the
    continual evaluation every 10 updates, the train-accuracy pass at the end of each chunk. Left
    out: each stage's start (Python, imports, CUDA), the corrupted sets and the evaluate stages."""
    import yaml

    rows = results.data["parts"].get("throughput", {}).get("rows", {}).get("deterministic", [])
    paper = [r for r in rows if (r["model"], r["batch"]) == ("resnet18", 64)]  # the paper's model and batch
    basis = paper or (rows if args.tiny else [])  # the dry run measures the small CNN alone
    if not basis:
        results.part("projection", made=False, why="no ResNet-18 batch-64 throughput measured")
        return
    r = basis[0]
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
    minutes = {m: round((t / r["train_img_s"] + e / r["eval_img_s"]) / 60, 2) for m, (t, e) in images.items()}
    total = round(sum(minutes.values()), 2)
    target = TARGETS["paper_minutes_warm_scratch_lure"]
    results.part("projection", made=True, basis=f"{r['model']} batch {r['batch']}, deterministic, not compiled: "
                 f"{r['train_img_s']} train img/s and {r['eval_img_s']} eval img/s",
                 train_images={m: t for m, (t, _) in images.items()},
                 evaluated_images={m: e for m, (_, e) in images.items()}, minutes=minutes,
                 minutes_warm_scratch_lure=total, missed_by=round(total / target, 2) if total > target else None)


def run(args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    args.data = args.work / "cifar10-subset"
    write_image_folder(args.pack / "cifar10-subset.npz", args.data)
    # seconds: about 7.5 minutes with the install and the unpacking, inside the 8 a run should take
    args.limits = {"tests": 45, "throughput": 130, "repro": 220, "determinism": 25}
    results = Results(args.out, args.device, args.pack)
    work = args.work / "project"
    for name, part in [("tests", lambda: part_tests(args, results)),
                       ("throughput", lambda: part_throughput(args, results)),
                       ("projection", lambda: part_projection(args, results)),
                       ("repro", lambda: part_repro(args, results, work)),
                       ("determinism", lambda: part_determinism(args, results, work))]:
        try:
            part()
        except Exception as err:  # a part that breaks must not lose the others' results
            results.part(name, error=f"{type(err).__name__}: {err}")
    shown = ("rc", "seconds", "stages", "figures", "missed_as_share_of_target", "model_identical",
             "metrics_identical", "minutes", "minutes_warm_scratch_lure")
    print(json.dumps({name: {k: v for k, v in part.items() if k in shown} | (
        {"summary": part["summary"]} if name == "tests" else {}) for name, part in results.data["parts"].items()},
        indent=1))


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
    r = sub.add_parser("run", help="there: every part, results to --out")
    r.add_argument("--pack", type=Path, default=PACK)
    r.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/lure-gpu-check-out")))
    r.add_argument("--device", default="cuda")
    r.add_argument("--work", type=Path, default=Path("/tmp/lure-gpu-check"), help="scratch folder")
    r.add_argument("--tiny", action="store_true", help="tiny sizes: the CPU dry run")
    args = parser.parse_args()
    pack(args) if args.command == "pack" else run(args)


if __name__ == "__main__":
    main()
