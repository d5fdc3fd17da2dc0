"""Benchmark: photo folders of mixed sizes. Prepare's throughput, peak host memory and disk at two
scales (so that what grows with the folder shows), and training speed with the images resident
versus streamed from the memory-mapped chunk files; extrapolated to 250,000 photos at 224 pixels.

    uv run python bench/images.py                      # 1000 and 3000 photos, about 3 minutes on 2 cores
    uv run python bench/images.py --scales 500 --train-images 256 --out /tmp/images.json   # a quick look

Photos: synthetic JPEGs (quality 90) of 300-640 x 240-480 pixels, smooth gradients with noise and
shapes, so that they compress and decode like photos rather than like noise; 10 classes. Prepare
runs as DVC runs it (`python -m stages.prepare`, data.image_size 224, two chunks that take the
whole pool); its peak memory is the sum over its process tree of the resident anonymous memory
(what must fit in RAM) and, apart, of the mapped file pages (page cache the kernel can reclaim),
sampled every 0.1 s.
Training: lure's Trainer, small_cnn (width 8), batch 32, resized_crop_flip, one epoch over
`--train-images` images of the prepared chunk 1, resident (read in whole) then streamed.
Writes bench/results/images-<machine>-<cores>cores.json, or --out.
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

import numpy as np
import yaml
from common import current_commit

ROOT = Path(__file__).resolve().parents[1]
SIZE = 224
TARGET = 250_000
CLASSES = 10


def synthetic_photo(rng: np.random.Generator):
    from PIL import Image, ImageDraw

    w, h = int(rng.integers(300, 641)), int(rng.integers(240, 481))
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    base = rng.random(3) * 255
    slope = rng.normal(0, 120, (3, 2))
    rgb = base[:, None, None] + slope[:, 0, None, None] * xx + slope[:, 1, None, None] * yy + rng.normal(0, 12, (3, h, w))
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8).transpose(1, 2, 0))
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        draw.ellipse((x0, y0, x0 + int(rng.integers(10, w // 2)), y0 + int(rng.integers(10, h // 2))),
                     fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return image


def make_folder(root: Path, train: int, test: int) -> None:
    rng = np.random.default_rng(0)
    for part, count in (("train", train), ("test", test)):
        for i in range(count):
            folder = root / part / f"class_{i % CLASSES}"
            folder.mkdir(parents=True, exist_ok=True)
            synthetic_photo(rng).save(folder / f"{i:06d}.jpg", quality=90)


def tree_rss(pid: int) -> tuple[int, int]:
    """Proportional resident bytes (PSS: a page shared by n processes counts 1/n in each, so
    forked workers are not counted twice) of a process and its descendants (Linux /proc):
    anonymous memory, which must fit in RAM, and mapped file pages, the page cache of the files
    read and written, which the kernel reclaims under pressure."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    anon = file = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        stack += children.get(p, [])
        try:
            lines = Path(f"/proc/{p}/smaps_rollup").read_text().splitlines()[1:]
            rollup = dict(line.split(":", 1) for line in lines)
            anon += int(rollup["Pss_Anon"].split()[0]) * 1024
            file += int(rollup["Pss_File"].split()[0]) * 1024
        except (OSError, KeyError, ValueError):
            pass
    return anon, file


def run_prepare(work: Path, photos: Path, train: int, sample_memory: bool) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"] = {"source": "imagefolder", "path": str(photos), "chunk_size": train // 2, "image_size": SIZE}
    params["chunks"] = [{"k": 2, "prev": 1}]
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "stages.prepare"], cwd=work, env={**os.environ,
                               "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak_anon = peak_file = 0
    while process.poll() is None:
        if sample_memory:
            anon, file = tree_rss(process.pid)
            peak_anon, peak_file = max(peak_anon, anon), max(peak_file, file)
        time.sleep(0.1)
    seconds = time.perf_counter() - start
    output = process.stdout.read()
    if process.returncode:
        raise SystemExit(f"prepare failed:\n{output}")
    prepared = work / "data" / "prepared"
    disk = sum(f.stat().st_size for f in prepared.iterdir())
    return {"seconds": round(seconds, 1), "peak_anon_mb": round(peak_anon / 1e6),  # 0 unless sampled
            "peak_file_mb": round(peak_file / 1e6), "disk_mb": round(disk / 1e6, 1),
            "output": output.strip().splitlines()[-1]}


def training_speed(prepared: Path, images: int) -> dict:
    import torch

    from lure.chunks import load_chunks
    from lure.config import ModelSettings, TrainSettings
    from lure.images import Images
    from lure.models import build_model, set_input_stats
    from lure.placement import Streamed, place
    from lure.train import Trainer, updates_per_epoch

    chunk = load_chunks(1, prepared)[0].train
    chunk = Images(chunk.x[:images], chunk.y[:images])
    cpu = torch.device("cpu")
    settings = TrainSettings(device="cpu", batch_size=32, lr=0.01, augment="resized_crop_flip")
    result = {}
    for placement in ("resident", "streamed"):
        start = time.perf_counter()
        train = place({"train": chunk}, cpu, placement)["train"]
        placed_s = time.perf_counter() - start
        torch.manual_seed(0)
        model = build_model(ModelSettings(arch="small_cnn", width=8), 3, CLASSES)
        set_input_stats(model, train.x)
        trainer = Trainer(model, settings, cpu, updates_per_epoch(len(train), settings.batch_size))
        stats = trainer.epoch(train, torch.Generator().manual_seed(0))
        result[f"{placement}_train_img_s"] = round(stats.images_per_s, 1)
        result[f"{placement}_place_s"] = round(placed_s, 2)
    streamed = Streamed(chunk.x, cpu)
    order = torch.randperm(len(streamed), generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    for batch in order.split(128):
        streamed[batch]
    result["streamed_read_img_s"] = round(len(streamed) / (time.perf_counter() - start))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1000, 3000], help="training photos per run")
    parser.add_argument("--train-images", type=int, default=1000, help="images of chunk 1 trained on, per placement")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for train in args.scales:
            test = train // 10
            work = Path(tmp) / f"run_{train}"
            work.mkdir()
            start = time.perf_counter()
            make_folder(work / "photos", train, test)
            print(f"{train} + {test} photos made in {time.perf_counter() - start:.0f} s", flush=True)
            # timed alone, then again for its memory: sampling /proc takes CPU from the 2 cores
            timed = run_prepare(work, work / "photos", train, sample_memory=False)
            prepared = run_prepare(work, work / "photos", train, sample_memory=True)
            row = {"photos": train + test, "seconds": timed["seconds"],
                   **{k: v for k, v in prepared.items() if k != "seconds"},
                   "prepare_img_s": round((train + test) / timed["seconds"], 1)}
            if train == args.scales[0]:
                row.update(training_speed(work / "data" / "prepared", min(args.train_images, int(train // 2 * 0.9))))
            rows.append(row)
            print(json.dumps(row), flush=True)
    largest = rows[-1]
    per_image = SIZE * SIZE * 3  # uint8 bytes of one stored image
    extrapolated = {
        "photos": TARGET,
        "prepare_hours": round(TARGET / largest["prepare_img_s"] / 3600, 2),
        "prepared_disk_gb": round(TARGET * largest["disk_mb"] / largest["photos"] / 1e3, 1),
        "prepare_peak_anon_mb": max(r["peak_anon_mb"] for r in rows),
        "resident_device_gb": round(TARGET * per_image / 1e9, 1),
        "rimagenet_paper_resident_device_gb": round((8 * 6250 + 3450) * per_image / 1e9, 1),
    }
    import torch

    from lure.device import cpu_name

    result = {
        "machine": {"cpu": cpu_name(), "cores": cores, "arch": platform.machine()},
        "torch": torch.__version__, "python": platform.python_version(),
        "commit": current_commit(),
        "image_size": SIZE, "rows": rows, "extrapolated": extrapolated,
    }
    out = args.out or ROOT / "bench" / "results" / f"images-{platform.machine()}-{cores}cores.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
