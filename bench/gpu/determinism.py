"""One short training as a stage trains (lure.train.fit, the device set up by lure.device.pick_device,
precision auto, crop + flip), printing the SHA-256 of the weights it ends with: the device check runs
it twice, in two processes, and compares (same seed, same GPU, `deterministic: true` -> same bytes).

    python bench/gpu/determinism.py --data FOLDER [--device cuda] [--tiny]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from lure.config import ImageFolderData, ModelSettings, TrainSettings
from lure.device import pick_device
from lure.images import Images
from lure.models import build_model, set_input_stats
from lure.sources import decode, load_source
from lure.train import fit


def weights_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="an image folder (train/CLASS/*.png)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--tiny", action="store_true", help="the small CNN on 64 images: the CPU dry run")
    args = parser.parse_args()
    settings = TrainSettings(device=args.device, deterministic=args.deterministic, epochs=2, batch_size=64, lr=0.05,
                             lr_milestones=[1], augment="crop_flip", select="last")
    device = pick_device(settings)
    count = 64 if args.tiny else 2048
    source = load_source(ImageFolderData(source="imagefolder", path=args.data, chunk_size=2), seed=0)
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        images, _ = decode(source.pool.take(np.arange(min(count, len(source.pool)))), Path(scratch), "pool")
        images = Images(np.array(images.x), np.array(images.y))
    torch.manual_seed(0)
    model = build_model(ModelSettings(arch="small_cnn" if args.tiny else "resnet18", width=8 if args.tiny else 32),
                        3, 10).to(device)
    set_input_stats(model, torch.from_numpy(images.x).to(device))
    placed = images.on(device)
    result = fit(model, placed, placed, settings, torch.Generator().manual_seed(1))
    print(json.dumps({"sha256": weights_digest(model), "updates": result.updates, "train_acc": result.train_acc,
                      "seconds": round(result.seconds, 2)}))


if __name__ == "__main__":
    main()
