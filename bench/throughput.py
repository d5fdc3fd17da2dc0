"""Benchmark: training and evaluation throughput (images/s) per model and batch size, against a
plain baseline loop in the same run.

    uv run python bench/throughput.py                       # CPU here, CUDA where there is one
    uv run python bench/throughput.py --configs resnet18:64,resnet18:512 --steps 50
    uv run python bench/throughput.py --no-deterministic --compile --no-baseline   # the fast path alone

Ours: the pipeline's Trainer (data resident on the device as uint8, crop + flip on the device in
batches, bf16 autocast and channels_last on CUDA) and predict() at a large batch.
Baseline: as the official LURE code trains: torchvision-style dataset (uint8 array -> PIL image
-> RandomCrop(32, 4) -> RandomHorizontalFlip -> ToTensor -> Normalize, per image), DataLoader,
fp32, torch.optim.SGD.
Data: CIFAR-10 from an ImageFolder copy (default ../shared/data/cifar10), or random images with
--synthetic; a training run cycles through them as often as its steps need. The device is set up
as the stages set it up (lure.device.pick_device, --deterministic or not). Writes
bench/results/throughput-<device>.json, or --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from common import current_commit

from lure.config import ModelSettings, TrainSettings
from lure.device import cpu_name, pick_device
from lure.images import Images
from lure.models import build_model, predict
from lure.sources import decode, load_source
from lure.train import Trainer

ROOT = Path(__file__).resolve().parents[1]


def load_images(args) -> Images:
    if args.synthetic:
        rng = np.random.default_rng(0)
        return Images(rng.integers(0, 256, (args.images, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, args.images))
    import tempfile

    from lure.config import ImageFolderData

    source = load_source(ImageFolderData(source="imagefolder", path=args.data, chunk_size=2), seed=0)
    with tempfile.TemporaryDirectory() as scratch:
        images, _ = decode(source.pool.take(np.arange(min(args.images, len(source.pool)))), Path(scratch), "pool")
        return Images(np.array(images.x), images.y)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def ours_train(model, images: Images, batch: int, steps: int, device, compile_: bool) -> float:
    settings = TrainSettings(batch_size=batch, lr=0.01, augment="crop_flip", compile=compile_)
    data = images.take(np.arange(batch * steps) % len(images)).on(device)
    trainer = Trainer(model, settings, device, epoch_updates=steps)
    warm = Images(data.x[: batch * 2], data.y[: batch * 2])
    trainer.epoch(warm, torch.Generator().manual_seed(0))  # allocations, cuDNN choice, compilation
    sync(device)
    start = time.perf_counter()
    seen = trainer.epoch(data, torch.Generator().manual_seed(1)).images
    sync(device)
    return seen / (time.perf_counter() - start)


def ours_eval(model, images: Images, device, at_least: int) -> float:
    """predict() at batch 1000 over the images, as many passes as make `at_least` images."""
    data = images.on(device)
    predict(model, Images(data.x[:1000], data.y[:1000]), 1000)
    sync(device)
    passes = -(-at_least // len(data))
    start = time.perf_counter()
    for _ in range(passes):
        predict(model, data, 1000)
    sync(device)
    return passes * len(data) / (time.perf_counter() - start)


class BaselineDataset(torch.utils.data.Dataset):
    """torchvision.datasets.CIFAR10's __getitem__: a PIL image per sample, then the transforms."""

    def __init__(self, images: Images, mean, std) -> None:
        from torchvision import transforms

        self.images = images
        self.transform = transforms.Compose([
            transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
            transforms.ToTensor(), transforms.Normalize(mean, std),
        ])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images.x[i].transpose(1, 2, 0))), int(self.images.y[i])


def baseline_train(model, images: Images, batch: int, steps: int, device, workers: int) -> float:
    model.normalize.mean.zero_()  # the baseline normalises in its transforms
    model.normalize.std.fill_(1)
    dataset = BaselineDataset(images.take(np.arange(batch * (steps + 2)) % len(images)), (0.49, 0.48, 0.45),
                              (0.25, 0.24, 0.26))
    # pinned memory, as on the GPU (the CPU dry run rehearses the same loader, where torch ignores it)
    warnings.filterwarnings("ignore", message="'pin_memory' argument is set as true but no accelerator")
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                                         pin_memory=True, drop_last=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    model.train()
    seen, start = 0, None
    for i, (x, y) in enumerate(loader):
        if i == 2:  # after two warm-up steps
            sync(device)
            start, seen = time.perf_counter(), 0
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen += len(y)
    sync(device)
    return seen / (time.perf_counter() - start)


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--configs", help="model:batch pairs", default=(
        "resnet18:64,resnet18:512,small_cnn:64,small_cnn:512" if cuda else "small_cnn:64,small_cnn:512,resnet18:64"))
    parser.add_argument("--steps", type=int, default=100 if cuda else 4, help="timed training steps per run")
    parser.add_argument("--images", type=int, default=50000 if cuda else 4096, help="images loaded (eval set size)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "cifar10")
    parser.add_argument("--synthetic", action="store_true", help="random images instead of CIFAR-10")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="baseline DataLoader workers")
    parser.add_argument("--compile", action="store_true", help="torch.compile our model")
    parser.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=True,
                        help="train.deterministic (CUDA: deterministic algorithms, or cuDNN's benchmark mode)")
    parser.add_argument("--cpu-kernels", choices=["fast", "portable"], default="fast",
                        help="train.cpu_kernels on the CPU (bench/reproducibility.py measures what portable costs)")
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the baseline loop")
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/throughput-<device>.json")
    args = parser.parse_args()
    device = pick_device(TrainSettings(device=args.device, deterministic=args.deterministic,
                                       cpu_kernels=args.cpu_kernels))
    images = load_images(args)
    cpu = f"{cpu_name()} x{os.cpu_count()}"
    commit = current_commit()  # None where the device check runs: no git there
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu, "commit": commit,
              "torch": torch.__version__, "python": platform.python_version(),
              "data": "synthetic" if args.synthetic else "cifar10", "compile": args.compile,
              "deterministic": args.deterministic, "cpu_kernels": args.cpu_kernels, "baseline_workers": args.workers,
              "baseline_pin_memory": True, "rows": []}
    out = args.out or ROOT / "bench" / "results" / f"throughput-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    for config in args.configs.split(","):
        arch, batch = config.split(":")[0], int(config.split(":")[1])
        steps = args.steps

        def model():
            torch.manual_seed(0)
            return build_model(ModelSettings(arch=arch), 3, 10).to(device)

        row = {"model": arch, "batch": batch, "steps": steps,
               "train_img_s": round(ours_train(model(), images, batch, steps, device, args.compile))}
        if args.baseline:
            base = baseline_train(model(), images, batch, steps, device, args.workers)
            row |= {"baseline_train_img_s": round(base), "speedup": round(row["train_img_s"] / base, 2)}
        row["eval_img_s"] = round(ours_eval(model().eval(), images, device, at_least=4 * len(images)))
        result["rows"].append(row)
        out.write_text(json.dumps(result, indent=2) + "\n")  # row by row: a run stopped early keeps its rows
        print(f"{arch:10s} batch {batch:4d}: train {row['train_img_s']:9d} img/s"
              + (f", baseline {row['baseline_train_img_s']:9d} img/s (x{row['speedup']:.2f})" if args.baseline else "")
              + f", eval {row['eval_img_s']:9d} img/s", flush=True)
    print(f"{result['device']}; torch {torch.__version__}; wrote {out}")


if __name__ == "__main__":
    main()
