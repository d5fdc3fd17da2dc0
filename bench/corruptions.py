"""Benchmark: lure's corruptions against the original CIFAR-10-C generator (Hendrycks'
make_cifar_c.py, run as released) on the same CIFAR-10 test images.

The original needs tools the project does not install, so this runs in its own environment:

    apt-get install libmagickwand-6.q16-6        # ImageMagick, for the original's motion blur
    uv venv /tmp/cifar-c -p 3.11
    uv pip install -p /tmp/cifar-c -e . "numpy<2" "scipy<1.13" "scikit-image==0.20.*" opencv-python-headless wand
    /tmp/cifar-c/bin/python bench/corruptions.py --original PATH/TO/make_cifar_c.py

(make_cifar_c.py is in github.com/hendrycks/robustness, ImageNet-C/create_c/; only its
corruption functions are run, and the frost photographs are read from the imagecorruptions
package.) Per corruption and severity it writes, over the first --images test images:
- `to_clean_db` / `ssim_to_clean`: mean PSNR and SSIM of each copy to its clean image, ours and
  the original's, each with its own random draws: whether the two agree in distribution;
- `same_input_db` (deterministic corruptions) and `same_draws_db` (random ones, the original's
  draws replayed into our computation): mean PSNR between our copy and the original's (an image
  equal byte for byte counts as 100 dB; null where all are); `equal` is the share of equal bytes;
and `frost_photos`: how far our shrunk frost photographs are from OpenCV's.
Writes bench/results/corruptions-cifar10.json, which the README's corruption table is made from.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import current_commit

from lure import corruptions
from lure.corruptions import FOLLOWS, SEVERITIES, corrupt_images, to_uint8
from lure.device import cpu_name

ROOT = Path(__file__).resolve().parents[1]
SEED = 0


def load_original(path: Path) -> dict:
    """The original's corruption functions: its source up to the end of the distortions (what
    follows loads the data set and writes the files)."""
    source = path.read_text()
    end = source.index("# /////////////// End Distortions ///////////////")
    namespace = {"__name__": "make_cifar_c", "__file__": str(path)}
    exec(compile(source[:end], str(path), "exec"), namespace)
    gaussian = namespace["gaussian"]  # skimage >= 0.19 says channel_axis where the original says multichannel

    def gaussian_as_released(image, *args, multichannel=False, **kwargs):
        return gaussian(image, *args, channel_axis=-1 if multichannel else None, **kwargs)

    namespace["gaussian"] = gaussian_as_released
    return namespace


def load_images(folder: Path, n: int) -> np.ndarray:
    """The first n CIFAR-10 test images (files are named by their index in the test set), (N, 32, 32, 3)."""
    from PIL import Image

    files = sorted(folder.glob("*/*.png"), key=lambda f: int(f.stem))[:n]
    return np.stack([np.array(Image.open(f).convert("RGB")) for f in files])


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per image, in dB; inf where the images are equal."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(1)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(255.0**2 / mse)


def mean_db(values: np.ndarray) -> float | None:
    """Mean PSNR over images, images equal to the reference counted at 100 dB; None if all are."""
    return None if np.isinf(values).all() else round(float(np.minimum(values, 100).mean()), 2)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(np.mean([structural_similarity(p, q, channel_axis=2, data_range=255) for p, q in zip(a, b)]))


def original_copies(fn, images: np.ndarray, severity: int) -> np.ndarray:
    """As the original stores them: np.uint8 of each output, images in order, numpy seeded once."""
    from PIL import Image

    np.random.seed(SEED)
    return np.stack([np.uint8(fn(Image.fromarray(image), severity)) for image in images])


def our_copies(name: str, images: np.ndarray, severity: int) -> np.ndarray:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return corrupt_images(x, name, severity, SEED).permute(0, 2, 3, 1).numpy()


def as_float(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


def stored(x: torch.Tensor) -> np.ndarray:
    return to_uint8(x.clamp(0, 1)).permute(0, 2, 3, 1).numpy()


# Our computation on the original's random draws, replayed from numpy seeded as original_copies
# seeds it, draw for draw in the original's order (one image after another).


def replay_glass_blur(images: np.ndarray, severity: int) -> np.ndarray:
    sigma, delta, iterations = SEVERITIES["glass_blur"][severity - 1]
    x = torch.floor(corruptions._blur(as_float(images), sigma) * 255) / 255
    positions = [(r, c) for r in range(32 - delta, delta, -1) for c in range(32 - delta, delta, -1)]
    np.random.seed(SEED)
    draws = np.stack([[np.random.randint(-delta, delta, size=(2,)) for _ in range(iterations * len(positions))]
                      for _ in images])  # (N, iterations * positions, (dx, dy))
    draws = torch.from_numpy(draws).view(len(images), iterations, len(positions), 2)
    for i in range(iterations):
        x = corruptions.glass_copies(x, positions, draws[:, i].flip(-1).permute(1, 2, 0))  # -> (positions, (dy, dx), N)
    return stored(corruptions._blur(x, sigma))


def replay_motion_blur(images: np.ndarray, severity: int) -> np.ndarray:
    radius, sigma = SEVERITIES["motion_blur"][severity - 1]
    np.random.seed(SEED)
    angles = torch.tensor([np.random.uniform(-45, 45) for _ in images], dtype=torch.float32)
    return stored(corruptions._motion_blur(as_float(images), radius, sigma, angles))


def replay_elastic_transform(images: np.ndarray, severity: int) -> np.ndarray:
    alpha, sigma, affine = (v * 32 for v in SEVERITIES["elastic_transform"][severity - 1])
    np.random.seed(SEED)
    shifts, noise = [], []
    for _ in images:
        shifts.append(np.random.uniform(-affine, affine, size=(3, 2)).astype(np.float32))
        noise.append([np.random.uniform(-1, 1, size=(32, 32)) for _ in range(2)])  # dx, then dy
    field = corruptions._blur(torch.tensor(np.array(noise), dtype=torch.float32), sigma, mode="symmetric",
                              truncate=3.0) * alpha
    return stored(corruptions.warp(as_float(images), torch.from_numpy(np.stack(shifts)), field))


def replay_frost(images: np.ndarray, severity: int) -> np.ndarray:
    image_weight, frost_weight = SEVERITIES["frost"][severity - 1]
    photos = corruptions.frost_photos(32, 32, 3)
    np.random.seed(SEED)
    crops = []
    for _ in images:
        photo = photos[np.random.randint(5)]
        top, left = np.random.randint(0, photo.shape[1] - 32), np.random.randint(0, photo.shape[2] - 32)
        crops.append(photo[:, top : top + 32, left : left + 32])
    return stored(image_weight * as_float(images) + frost_weight * torch.stack(crops))


REPLAYS = {"glass_blur": replay_glass_blur, "motion_blur": replay_motion_blur,
           "elastic_transform": replay_elastic_transform, "frost": replay_frost}


def frost_photo_distance(original: dict) -> dict:
    """Our shrunk frost photographs against OpenCV's (cv2.imread, then resize by 0.2), in 1/255."""
    cv2 = original["cv2"]
    ours = corruptions.frost_photos(32, 32, 3)
    worst, equal, total = 0, 0, 0
    for i, name in enumerate(("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")):
        theirs = cv2.resize(cv2.imread(name), (0, 0), fx=0.2, fy=0.2)[..., [2, 1, 0]].astype(int)
        mine = (ours[i].permute(1, 2, 0) * 255).round().int().numpy()
        worst = max(worst, int(np.abs(mine - theirs).max()))
        equal += int((mine == theirs).sum())
        total += mine.size
    return {"max_abs": worst, "equal": round(equal / total, 4)}


def compare(name: str, fn, images: np.ndarray) -> dict:
    kind, how = FOLLOWS[name]
    row: dict = {"corruption": name, "follows": kind, "how": how, "severities": []}
    for severity in range(1, 6):
        start = time.perf_counter()
        theirs = original_copies(fn, images, severity)
        ours = our_copies(name, images, severity)
        entry = {"severity": severity,
                 "to_clean_db": {"ours": mean_db(psnr(ours, images)), "original": mean_db(psnr(theirs, images))},
                 "ssim_to_clean": {"ours": round(ssim(ours, images), 4), "original": round(ssim(theirs, images), 4)}}
        if kind == "exact":
            entry["same_input_db"] = mean_db(psnr(ours, theirs))
            entry["equal"] = round(float((ours == theirs).mean()), 4)
        elif name in REPLAYS:
            replayed = REPLAYS[name](images, severity)
            entry["same_draws_db"] = mean_db(psnr(replayed, theirs))
            entry["equal"] = round(float((replayed == theirs).mean()), 4)
        row["severities"].append(entry)
        print(f"{name} {severity}: {json.dumps(entry)} ({time.perf_counter() - start:.1f} s)", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--original", type=Path, required=True, help="make_cifar_c.py of hendrycks/robustness")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "cifar10" / "test",
                        help="CIFAR-10 test images as an ImageFolder (class/index.png)")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--only", help="comma-separated corruptions (default: all that lure provides)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "corruptions-cifar10.json")
    args = parser.parse_args()
    images = load_images(args.data, args.images)
    names = args.only.split(",") if args.only else list(corruptions.STANDARD + corruptions.EXTRAS)
    from importlib.metadata import distribution

    original_path = args.original.resolve()
    with tempfile.TemporaryDirectory() as frost_dir:  # the original reads ./frost1.png ...
        photos = distribution("imagecorruptions").locate_file("imagecorruptions/frost")
        for photo in Path(photos).iterdir():
            os.symlink(photo, Path(frost_dir) / photo.name)
        os.chdir(frost_dir)
        original = load_original(original_path)
        rows = [compare(name, original[name], images) for name in names]
        photos_distance = frost_photo_distance(original)
    commit = current_commit()
    versions = {m: __import__(m).__version__ for m in ("torch", "numpy", "scipy", "skimage", "cv2", "PIL")}
    versions["ImageMagick"] = __import__("wand.version").version.MAGICK_VERSION
    result = {"commit": commit, "machine": f"{cpu_name()} x{os.cpu_count()}",
              "python": platform.python_version(), "versions": versions, "images": len(images), "seed": SEED,
              "frost_photos": photos_distance, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
