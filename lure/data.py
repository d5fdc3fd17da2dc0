"""Data arriving in chunks: sources, the seeded chunking, and what each replay mode trains on.

Everything here is numpy (no torch), so the prepare stage starts fast; training moves Images
to its device with `Images.on` (lure.placement decides between that and streaming).

An image folder is read lazily: its pool and test set are ImageFiles (paths) until prepare
decodes the images that the test set and the chunks take, in parallel, each straight to disk, so
that no chunk has to fit in the host's memory; the chunk files are stored .npz archives that the
training stages memory-map.

Chunk k is a fixed slice of one seeded permutation of the training pool, so its content
depends on the seed, the pool and the chunk size only: asking for more chunks appends new
ones and leaves the earlier ones byte-identical.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lure import paths, streams
from lure.config import (
    DataSource,
    DigitsData,
    ImageFolderData,
    Params,
    ReplaySettings,
    TorchvisionData,
)
from lure.errors import LureError
from lure.io import atomic_dir, load_arrays, md5, read_json, sampled_md5, save_arrays, write_json

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class Images:
    """Images (N, C, H, W) as uint8 and their int64 labels: numpy arrays as stored, or torch
    tensors on a device (`on`), where training and evaluation use them."""

    x: np.ndarray | torch.Tensor
    y: np.ndarray | torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def take(self, index: np.ndarray | torch.Tensor) -> Images:
        return Images(self.x[index], self.y[index])

    def on(self, device: torch.device) -> Images:
        """A copy on `device`, read in whole (from memory-mapped files too), about 64 MB at a time,
        so that the host never holds a second copy of a large set on its way to a GPU."""
        import torch  # here, not at the top: preparing the data needs numpy only

        x = torch.empty(tuple(self.x.shape), dtype=torch.uint8, device=device)
        step = max(1, (64 << 20) // max(1, int(np.prod(self.x.shape[1:]))))
        for start in range(0, len(self), step):
            x[start:start + step] = torch.from_numpy(np.array(self.x[start:start + step])).to(device)
        return Images(x, torch.from_numpy(np.array(self.y)).to(device))

    @staticmethod
    def concat(parts: list[Images]) -> Images:
        """One set of the parts in order; memory-mapped parts stay on disk (Concatenated)."""
        if any(isinstance(p.x, np.memmap | Concatenated) for p in parts):
            x = Concatenated([p.x for p in parts])
        else:
            x = np.concatenate([p.x for p in parts])
        return Images(x, np.concatenate([np.asarray(p.y) for p in parts]))


class Concatenated:
    """Arrays read as one along their first axis without copying them: a replay set over
    memory-mapped chunk files, read only where indexed."""

    def __init__(self, parts: list[np.ndarray]) -> None:
        self.parts = [q for p in parts for q in (p.parts if isinstance(p, Concatenated) else [p])]
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])
        self.shape = (int(self.starts[-1]), *self.parts[0].shape[1:])
        self.dtype = self.parts[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return np.concatenate(self.parts).astype(dtype or self.dtype, copy=False)

    def __getitem__(self, index) -> np.ndarray:
        """Rows as an array in the order asked (an int, a slice or an index array)."""
        rows = np.arange(len(self))[index]
        if np.ndim(rows) == 0:
            part = int(np.searchsorted(self.starts, rows, side="right")) - 1
            return np.asarray(self.parts[part][rows - self.starts[part]])
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        part_of = np.searchsorted(self.starts, rows, side="right") - 1
        for part in np.unique(part_of):
            hits = np.flatnonzero(part_of == part)
            out[hits] = self.parts[part][rows[hits] - self.starts[part]]
        return out


@dataclass(frozen=True)
class ImageFiles:
    """Image files not decoded yet, and how prepare decodes them (`decode`): an image folder's
    pool and test set, so that images no chunk takes are never read. Indexing picks files."""

    files: np.ndarray  # paths, as str
    size: int | None  # data.image_size
    grayscale: bool  # every image of the folder is: stored with one channel
    bad_images: str  # data.bad_images

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index) -> ImageFiles:
        return ImageFiles(self.files[index], self.size, self.grayscale, self.bad_images)


@dataclass(frozen=True)
class Source:
    pool: Images  # where chunks are cut from
    test: Images
    classes: list[str]


@dataclass(frozen=True)
class Chunk:
    """A chunk's images: its training and validation splits."""

    train: Images
    val: Images
    noisy: int = 0  # training labels replaced by wrong ones (data.label_noise), while it is the new chunk


# --- sources ----------------------------------------------------------------------------------


def load_source(data: DataSource, seed: int) -> Source:
    """The source's training pool and test set (the pool cut to `shots_per_class` if set)."""
    if isinstance(data, DigitsData):
        source = _load_digits(data, seed)
    elif isinstance(data, TorchvisionData):
        source = _load_torchvision(data)
    elif isinstance(data, ImageFolderData):
        source = _load_imagefolder(data.path, data.image_size, data.bad_images, data.superclasses)
    else:
        raise AssertionError(data)
    if data.shots_per_class is not None:
        source = Source(few_shot(source.pool, data.shots_per_class, seed), source.test, source.classes)
    return source


def few_shot(pool: Images, shots: int, seed: int) -> Images:
    """`shots` seeded images of every class (all of a class that has fewer), in pool order."""
    return pool.take(few_shot_indices(np.asarray(pool.y), shots, seed))


def few_shot_indices(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    rng = streams.shots(seed)
    keep = [rng.permutation(np.flatnonzero(labels == c))[:shots] for c in np.unique(labels)]
    return np.sort(np.concatenate(keep))


# The training sets of torchvision's sources, images per class: known without reading them
TORCHVISION_CLASS_SIZES = {
    "mnist": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
    "cifar10": [5000] * 10,
    "cifar100": [500] * 100,
}


def known_pool_labels(data: DataSource, seed: int) -> np.ndarray | None:
    """The training pool's labels where they are known without reading the data (the embedded
    digits, which cost nothing to load, and torchvision's sources, whose sizes are fixed); None for
    an image folder."""
    if isinstance(data, DigitsData):
        labels = np.asarray(_load_digits(data, seed).pool.y)
    elif isinstance(data, TorchvisionData):
        labels = np.repeat(np.arange(len(sizes := TORCHVISION_CLASS_SIZES[data.source])), sizes)
    else:
        return None
    return labels if data.shots_per_class is None else labels[few_shot_indices(labels, data.shots_per_class, seed)]


def _load_digits(data: DigitsData, seed: int) -> Source:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # Pixel values are 0..16: spread them over uint8 so every source stores images alike.
    x = np.rint(digits.images * (255 / 16)).astype(np.uint8)[:, None]
    y = digits.target.astype(np.int64)
    x_pool, x_test, y_pool, y_test = train_test_split(
        x, y, test_size=data.test_fraction, stratify=y, random_state=streams.digits_split(seed)
    )
    return Source(Images(x_pool, y_pool), Images(x_test, y_test), [str(c) for c in digits.target_names])


def _test_part(root: Path) -> Path:
    """The folder of test images: test/, or val/ (ImageNet's layout) where there is no test/."""
    return root / "test" if (root / "test").is_dir() or not (root / "val").is_dir() else root / "val"


def _check_image_folder(root: Path, key: str = "data.path") -> None:
    if not root.is_dir():
        raise LureError(f"{key}: {root} is not a directory (expected train/<class>/* and test/<class>/*)")
    for part in (root / "train", _test_part(root)):
        if not part.is_dir():
            raise LureError(f"{key}: {part} is missing (expected train/<class>/* and test/<class>/*, or val/ for "
                            f"test/ as in ImageNet)")


# ImageNet class-index ranges (inclusive, over the 1000 classes in sorted WordNet-id order) of each
# superclass, as MadryLab's robustness library defines them (robustness/tools/constants.py; its
# restricted_label_mapping reads both ends as inclusive). The official LURE code imports the
# balanced one as its R-ImageNet (utils.py: 14 classes).
SUPERCLASSES = {
    # Tsipras et al. 2019, "Robustness may be at odds with accuracy": RESTRICTED_IMAGNET_RANGES
    "restricted_imagenet": {
        "dog": (151, 268), "cat": (281, 285), "frog": (30, 32), "turtle": (33, 37), "bird": (80, 100),
        "monkey": (365, 382), "fish": (389, 397), "crab": (118, 121), "insect": (300, 319),
    },
    # RestrictedImageNetBalanced: BALANCED_RANGES, 5 classes each (monkeys 4)
    "restricted_imagenet_balanced": {
        "bird": (10, 14), "turtle": (33, 37), "lizard": (42, 46), "spider": (72, 76), "crab": (118, 122),
        "dog": (200, 204), "cat": (281, 285), "big_cat": (286, 290), "beetle": (302, 306),
        "butterfly": (322, 326), "monkey": (371, 374), "fish": (393, 397), "fruit": (948, 952),
        "fungus": (992, 996),
    },
}
IMAGENET_CLASSES = 1000


def superclass_labels(grouping: str, classes: int = IMAGENET_CLASSES) -> np.ndarray:
    """For each ImageNet class index, its superclass's label under `grouping` (the position of
    its range), or -1 for a class that no range holds."""
    labels = np.full(classes, -1, np.int64)
    for label, (first, last) in enumerate(SUPERCLASSES[grouping].values()):
        labels[first:last + 1] = label
    return labels


def _class_folders(root: Path, superclasses: str | None) -> tuple[list[str], list[tuple[str, int]]]:
    """The class names, and each class folder that is read with its label: every folder under
    train/ its own class, or ImageNet's folders grouped into superclasses."""
    folders = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    test = _test_part(root)
    test_folders = sorted(p.name for p in test.iterdir() if p.is_dir())
    if test_folders != folders:
        raise LureError(f"data.path: class folders differ between train/ and {test.name}/ "
                        f"({len(folders)} and {len(test_folders)} folders; first differing: "
                        f"{next((a, b) for a, b in zip(folders + [''], test_folders + ['']) if a != b)})")
    if superclasses is None:
        if len(folders) < 2:
            raise LureError(f"data.path: {root / 'train'} needs at least two class folders, found {len(folders)}")
        return folders, [(name, label) for label, name in enumerate(folders)]
    if len(folders) != IMAGENET_CLASSES:
        raise LureError(f"data.superclasses: {superclasses} groups ImageNet's {IMAGENET_CLASSES} classes by their "
                        f"index in sorted folder order, but {root / 'train'} has {len(folders)} class folders")
    labels = superclass_labels(superclasses)
    return list(SUPERCLASSES[superclasses]), [(name, int(label)) for name, label in zip(folders, labels) if label >= 0]


def _load_imagefolder(root: Path, size: int | None = None, bad_images: str = "stop",
                      superclasses: str | None = None) -> Source:
    _check_image_folder(root)
    classes, folders = _class_folders(root, superclasses)
    train, test = (_image_files(part, folders) for part in (root / "train", _test_part(root)))
    grayscale = all(_is_grayscale(f) for f, _ in train + test)

    def images(files: list[tuple[Path, int]]) -> Images:
        paths_ = np.asarray([str(f) for f, _ in files])
        return Images(ImageFiles(paths_, size, grayscale, bad_images), np.asarray([c for _, c in files], np.int64))

    return Source(images(train), images(test), classes)


# Where torchvision keeps each dataset under `root`, and where it comes from.
TORCHVISION_LAYOUT = {
    "mnist": ("MNIST/raw", "the four MNIST idx files (train-images-idx3-ubyte, ...), uncompressed"),
    "cifar10": ("cifar-10-batches-py", "the extracted https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    "cifar100": ("cifar-100-python", "the extracted https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
}


def _load_torchvision(data: TorchvisionData) -> Source:
    root = data.root
    if (root / "train").is_dir() and (root / "test").is_dir():  # an ImageFolder copy at root
        return _load_imagefolder(root)
    from torchvision import datasets

    dataset_class = {"mnist": datasets.MNIST, "cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[data.source]
    try:
        train = dataset_class(str(root), train=True, download=data.download)
        test = dataset_class(str(root), train=False, download=data.download)
    except Exception as err:  # torchvision raises RuntimeError, URLError, OSError... when absent
        tried = "the download failed" if data.download else "data.download is off"
        raise _not_found(data, f"{tried} ({type(err).__name__}: {err})") from None
    return Source(_torchvision_split(train), _torchvision_split(test), list(train.classes))


def _not_found(data: TorchvisionData, why: str) -> LureError:
    folder, what = TORCHVISION_LAYOUT[data.source]
    return LureError(f"data.root: {data.source} is not in {data.root / folder} and {why}. Put {what} at "
                     f"{data.root / folder}, or an ImageFolder copy (train/<class>/*, test/<class>/*) at {data.root}.")


def check_source(data: DataSource) -> str:
    """Where the source's images are, checked without reading them (a missing folder raises,
    naming the key); what `lure check` says of them."""
    if isinstance(data, DigitsData):
        return "scikit-learn's bundled digits"
    if isinstance(data, ImageFolderData):
        _check_image_folder(data.path)
        return f"an image folder at {data.path}"
    folder = TORCHVISION_LAYOUT[data.source][0]
    if (data.root / "train").is_dir() and (data.root / "test").is_dir():
        return f"an ImageFolder copy at {data.root}"
    if (data.root / folder).is_dir():
        return f"torchvision's files at {data.root / folder}"
    if data.download:
        return f"not at {data.root / folder} yet: prepare downloads it (data.download is on)"
    raise _not_found(data, "data.download is off")


def check_chunks(params: Params, labels: np.ndarray) -> None:
    """The chunks that params.yaml lists fit in the source's training pool, given by its labels,
    and the noisy one is one of them (raises, naming the key)."""
    noise = params.data.label_noise
    if noise and noise.chunk > params.n_chunks:
        raise LureError(f"data.label_noise.chunk: {noise.chunk} is not one of the {params.n_chunks} chunks listed")
    cut_indices(params, labels, params.n_chunks)


def cut_indices(params: Params, labels: np.ndarray, k: int) -> np.ndarray:
    """The indices in the training pool (given by its labels) of chunk k under data.split."""
    d = params.data
    if d.split == "class_incremental":
        return class_chunk_indices(labels, d.classes_per_chunk, d.chunk_size, k, params.seed)
    return chunk_indices(len(labels), d.chunk_size, k, params.seed)


def describe_sizes(chunk_size: int | list[int], n: int) -> str:
    """'4 chunks of 175 images', or '2 chunks of 2500 and 22500 images'."""
    sizes = [str(chunk_size)] if isinstance(chunk_size, int) else [str(size) for size in chunk_size[:n]]
    if n == 1:
        return f"1 chunk of {sizes[0]} images"
    if len(sizes) == 1:
        return f"{n} chunks of {sizes[0]} images"
    return f"{n} chunks of {', '.join(sizes[:-1])} and {sizes[-1]} images"


def _torchvision_split(dataset) -> Images:
    x = np.asarray(dataset.data)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)  # to (N, C, H, W)
    return Images(np.ascontiguousarray(x, dtype=np.uint8), np.asarray(dataset.targets, dtype=np.int64))


GRAYSCALE_MODES = ("1", "L", "I;16", "I", "F")
DECODE_BATCH, DECODE_AHEAD = 32, 8  # at 224 pixels, at most 256 images (39 MB) decoded ahead of the writer
PROGRESS_EVERY_S = 10.0


def read_image(file: Path, size: int | None, grayscale: bool) -> np.ndarray:
    """One image as uint8 (C, H, W): grayscale (1 channel) or RGB (3; an alpha channel is dropped,
    as torchvision's ImageFolder loader drops it), with `size`, shorter side resized to `size`
    (bilinear) and its centre square cropped, the rule of torchvision's Resize + CenterCrop."""
    from PIL import Image

    with Image.open(file) as img:
        img = img.convert("L" if grayscale else "RGB")
        if size is not None:
            w, h = img.size
            if (w, h) != (size, size):
                short, long = min(w, h), max(w, h)
                scaled = (size, int(size * long / short)) if w <= h else (int(size * long / short), size)
                img = img.resize(scaled, Image.BILINEAR)
                w, h = img.size
            left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
            img = img.crop((left, top, left + size, top + size))
        array = np.asarray(img)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _read_or_none(args: tuple[Path, int | None, bool]) -> np.ndarray | str:
    """read_image, or the reason the file cannot be read (for a worker process)."""
    try:
        return read_image(*args)
    except Exception as err:  # Pillow raises OSError, UnidentifiedImageError, SyntaxError, ValueError...
        return f"{type(err).__name__}: {err}"


def _image_files(folder: Path, classes: list[tuple[str, int]]) -> list[tuple[Path, int]]:
    """The image files of each (class folder, label), in folder then file-name order."""
    files = []
    for name, label in classes:
        found = sorted(f for f in (folder / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise LureError(f"data.path: the class folder {folder / name} has no images")
        files += [(f, label) for f in found]
    return files


def _is_grayscale(file: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(file) as img:  # the header only
            return img.mode in GRAYSCALE_MODES
    except Exception:
        return False  # unreadable: read_image says so


class Ticker:
    """A plain progress line every PROGRESS_EVERY_S seconds, with the time left; none for work
    shorter than that."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done = label, total, 0
        self.start = self.last = time.perf_counter()

    def tick(self, item):
        self.done += 1
        now = time.perf_counter()
        if now - self.last >= PROGRESS_EVERY_S and self.done < self.total:
            left = (now - self.start) / self.done * (self.total - self.done)
            print(f"  {self.label}: {self.done}/{self.total}, {left:.0f} s left", flush=True)
            self.last = now
        return item


def decode(images: Images, scratch: Path, what: str) -> tuple[Images, list[str]]:
    """Images whose x is ImageFiles, decoded in parallel over the CPU cores, in file order,
    each written straight to a file under `scratch` that the result memory-maps; and the files
    left out as unreadable (data.bad_images: skip). Other Images are returned as they are."""
    if not isinstance(images.x, ImageFiles):
        return images, []
    files = images.x
    ticker = Ticker(f"{what}: decoding {len(files)} images", len(files))
    workers = min(len(files) // 256 + 1, os.cpu_count() or 1)  # a process pool pays for itself past a few hundred
    jobs = [(Path(f), files.size, files.grayscale) for f in files.files]
    kept, skipped, shape = [], [], None
    fd, raw = tempfile.mkstemp(suffix=".uint8", dir=scratch)
    with open(fd, "wb") as out, _workers(workers) as pool:
        for i, result in enumerate(_in_order(pool, jobs)):
            ticker.tick(None)
            file = jobs[i][0]
            if isinstance(result, str):
                if files.bad_images == "stop":
                    raise LureError(f"{file}: cannot be read ({result}); remove it, or set data.bad_images: skip")
                skipped.append(str(file))
                continue
            if shape is None:
                shape = result.shape
            elif result.shape != shape:
                raise LureError(f"{file}: image is {result.shape[2]}x{result.shape[1]} pixels, the first was "
                                f"{shape[2]}x{shape[1]} (width x height); set data.image_size to resize every image")
            out.write(np.ascontiguousarray(result).tobytes())
            kept.append(i)
    if not kept:
        raise LureError(f"data.path: no readable images among the {len(files)} under "
                        f"{Path(files.files[0]).parent.parent}")
    return Images(np.memmap(raw, np.uint8, "r", shape=(len(kept), *shape)), images.y[kept]), skipped


@contextmanager
def _workers(count: int) -> Iterator:
    """A pool of `count` processes (this process alone for one) whose map decodes in file order;
    on an error it drops the images still queued instead of decoding them first."""
    if count == 1:
        yield _ThisProcess()
        return
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(count)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _in_order(pool, jobs: list) -> Iterator:
    """The decoded images (or reasons) in job order, with DECODE_AHEAD batches of DECODE_BATCH
    images queued: a pool's map would queue them all, and the images decoded ahead of the writer
    would pile up in memory."""
    batches = iter([jobs[start:start + DECODE_BATCH] for start in range(0, len(jobs), DECODE_BATCH)])
    queued = deque(pool.submit(_read_batch, batch) for batch in itertools.islice(batches, DECODE_AHEAD))
    while queued:
        done = queued.popleft().result()
        following = next(batches, None)
        if following is not None:
            queued.append(pool.submit(_read_batch, following))
        yield from done


def _read_batch(jobs: list) -> list[np.ndarray | str]:
    return [_read_or_none(job) for job in jobs]


class _ThisProcess:
    """A pool's submit, run at once in this process."""

    @staticmethod
    def submit(fn, *args) -> Future:
        future: Future = Future()
        future.set_result(fn(*args))
        return future


# --- chunking ---------------------------------------------------------------------------------


def chunk_indices(pool_size: int, chunk_size: int | list[int], k: int, seed: int) -> np.ndarray:
    """Pool indices of chunk k (1-based): a fixed slice of one seeded permutation, each chunk
    chunk_size images long (or the k-th of a list of sizes)."""
    if isinstance(chunk_size, int):
        start, end = (k - 1) * chunk_size, k * chunk_size
        asked = f"{k} chunks of {chunk_size} images need {end}"
    else:
        if k > len(chunk_size):
            raise LureError(f"data.chunk_size: lists {len(chunk_size)} sizes, but chunk {k} is listed; give one size "
                            "per chunk")
        start, end = sum(chunk_size[: k - 1]), sum(chunk_size[:k])
        asked = f"the {k} chunks' sizes add up to {end}"
    if end > pool_size:
        raise LureError(f"data.chunk_size: {asked}, but the training pool has {pool_size}; lower data.chunk_size "
                        "or list fewer chunks")
    permutation = streams.pool(seed).permutation(pool_size)
    return permutation[start:end]


def class_chunk_indices(labels: np.ndarray, classes_per_chunk: int, chunk_size: int, k: int, seed: int) -> np.ndarray:
    """Class-incremental chunk k: up to chunk_size seeded images of the k-th group of classes
    (groups cut from one seeded class order, so earlier chunks stay the same as N grows)."""
    classes = np.unique(labels)
    if k * classes_per_chunk > len(classes):
        raise LureError(
            f"data.classes_per_chunk: {k} class-incremental chunks of {classes_per_chunk} classes need "
            f"{k * classes_per_chunk} classes, but the source has {len(classes)}"
        )
    order = streams.class_order(seed).permutation(classes)
    members = np.flatnonzero(np.isin(labels, order[(k - 1) * classes_per_chunk : k * classes_per_chunk]))
    return np.sort(streams.pool(seed, k).permutation(members)[:chunk_size])


def split_chunk(images: Images, val_fraction: float, k: int, seed: int) -> Chunk:
    """Chunk k's images, split seeded into training and validation (paper: 90/10)."""
    n_val = max(1, round(val_fraction * len(images)))
    if n_val >= len(images):
        raise LureError(f"data.val_fraction: leaves no training images in a chunk of {len(images)}")
    order = streams.validation(seed, k).permutation(len(images))
    return Chunk(train=images.take(np.sort(order[n_val:])), val=images.take(np.sort(order[:n_val])))


# --- the prepared folder (output of the prepare stage) ---------------------------------------


def prepare(params: Params, out_dir: str | Path) -> tuple[dict, list[str]]:
    """Cut the chunks and the test set into `out_dir`; return the dataset's description
    (meta.json: what a model needs to know, the same whatever the number of chunks) and the
    unreadable image files left out (data.bad_images: skip; listed in skipped.json).

    Besides chunk_<k>.npz, writes seen_<k>.json: the hashes of chunks 1..k. A stage that trains
    on chunks 1..k depends on that one file, so DVC re-runs it exactly when one of them changes.
    """
    source = load_source(params.data, params.seed)
    labels = np.asarray(source.pool.y)
    check_chunks(params, labels)  # first, so that the error names the chunk count asked for
    n = params.n_chunks
    d = params.data
    chunks = [split_chunk(source.pool.take(cut_indices(params, labels, k)), d.val_fraction, k, params.seed)
              for k in range(1, n + 1)]
    with atomic_dir(out_dir) as tmp:
        scratch = tmp / ".decoded"  # images decoded from a folder, until their .npz is written
        scratch.mkdir()
        test, skipped = decode(source.test, scratch, "test set")
        save_arrays(tmp / paths.TEST, {"x": test.x, "y": test.y})
        hashes, samples, sizes = {}, {}, []
        for k, chunk in enumerate(chunks, start=1):
            (train, skipped_train), (val, skipped_val) = decode(chunk.train, scratch, f"chunk {k}"), \
                decode(chunk.val, scratch, f"chunk {k} validation")
            skipped += skipped_train + skipped_val
            for part in (train, val):
                if part.x.shape[1:] != test.x.shape[1:]:
                    raise LureError(f"data.path: train/ images are {part.x.shape[1:]}, test/ images "
                                    f"{test.x.shape[1:]} (channels, height, width); set data.image_size")
            name = paths.chunk_file(k)
            arrays = {"x_train": train.x, "y_train": train.y, "x_val": val.x, "y_val": val.y}
            if d.label_noise and d.label_noise.chunk == k:
                arrays["y_train_noisy"] = noisy_labels(train.y, len(source.classes), d.label_noise.fraction,
                                                       params.seed, k)
            save_arrays(tmp / name, arrays)
            sizes.append((len(train), len(val)))
            del train, val  # their memory maps, before their files go
            shutil.rmtree(scratch)
            scratch.mkdir()
            hashes[name] = md5(tmp / name)
            samples[name] = sampled_md5(tmp / name)
            write_json(tmp / paths.seen_file(k), {"chunks": dict(hashes), "samples": dict(samples)})
        meta = {
            "source": params.data.source,
            "classes": source.classes,
            "image_shape": list(test.x.shape[1:]),
            "pool_size": len(source.pool),
            "test_size": len(test),
            "chunk_train_size": sizes[0][0],
            "chunk_val_size": sizes[0][1],
        }
        write_json(tmp / paths.META, meta)
        if skipped:  # not in meta.json, which must not change when chunks are added
            write_json(tmp / paths.SKIPPED, {"files": skipped})
        del test
        shutil.rmtree(scratch)
    return meta, skipped


def noise_metrics(chunk: Chunk) -> dict[str, int]:
    """What a training stage records of the new chunk's noisy labels (nothing without any)."""
    return {"noisy_labels": chunk.noisy} if chunk.noisy else {}


def noisy_labels(labels: np.ndarray, classes: int, fraction: float, seed: int, k: int) -> np.ndarray:
    """`labels` with int(fraction x n) of them, seeded, replaced by another class drawn uniformly
    (Hare & Tortoise's rule)."""
    rng = streams.label_noise(seed, k)
    noisy = np.array(labels, dtype=np.int64)
    wrong = rng.choice(len(noisy), int(fraction * len(noisy)), replace=False)
    noisy[wrong] = (noisy[wrong] + rng.integers(1, classes, len(wrong))) % classes
    return noisy


def _prepared_file(prepared: Path, name: str) -> Path:
    path = Path(prepared) / name
    if not path.is_file():
        raise LureError(f"{path} is missing: run the prepare stage (dvc repro) first")
    return path


def load_meta(prepared: Path = paths.PREPARED) -> dict:
    return read_json(_prepared_file(prepared, paths.META))


def load_test(prepared: Path = paths.PREPARED) -> Images:
    arrays = load_arrays(_prepared_file(prepared, paths.TEST), mmap=True)
    return Images(arrays["x"], np.array(arrays["y"]))


def load_chunks(k: int, prepared: Path = paths.PREPARED) -> list[Chunk]:
    """Chunks 1..k, checked against seen_<k>.json (the file DVC tracks for them, written by prepare
    with the chunk files) by their sizes and sampled hashes: a chunk file rewritten or swapped shows
    (the sampled last block holds the zip's directory, each array's CRC-32 in it), at a cost that
    does not grow with the files, where a full hash cost seconds per GB at every stage's start.
    Chunk k, the new one, has its noisy training labels where data.label_noise gave it some; the
    others their own."""
    prepared = Path(prepared)
    manifest = _prepared_file(prepared, paths.seen_file(k))
    expected = read_json(manifest).get("samples", {})
    chunks = []
    for i in range(1, k + 1):
        path = prepared / paths.chunk_file(i)
        if not path.is_file() or sampled_md5(path) != expected.get(paths.chunk_file(i)):
            raise LureError(f"{path} does not match {manifest}: re-run the prepare stage")
        a = load_arrays(path, mmap=True)  # images are read as training uses them
        y_train = np.array(a["y_train"])
        noisy = np.array(a["y_train_noisy"]) if i == k and "y_train_noisy" in a else y_train
        chunks.append(Chunk(Images(a["x_train"], noisy), Images(a["x_val"], np.array(a["y_val"])),
                            int((noisy != y_train).sum())))
    return chunks


# --- replay -----------------------------------------------------------------------------------


def reservoir(sizes: list[int], capacity: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Algorithm R over a stream of items given as (part, index) in order; seeded."""
    buffer: list[tuple[int, int]] = []
    seen = 0
    for part, size in enumerate(sizes):
        for index in range(size):
            if seen < capacity:
                buffer.append((part, index))
            else:
                slot = int(rng.integers(0, seen + 1))
                if slot < capacity:
                    buffer[slot] = (part, index)
            seen += 1
    return buffer


def _gather(parts: list[Images], picks: list[tuple[int, int]]) -> Images:
    picks = sorted(picks)
    if not picks:
        return Images(parts[0].x[:0], parts[0].y[:0])
    return Images(np.stack([parts[p].x[i] for p, i in picks]), np.asarray([parts[p].y[i] for p, i in picks]))


def replay(chunks: list[Chunk], settings: ReplaySettings, seed: int) -> Chunk:
    """What training on the last of `chunks` uses: (train, validation) under the replay mode.

    The order is the official code's: under full replay the chunks in order (chunk 1's images
    first), under buffer replay the new chunk first, then the buffer (which decides what LURE
    scores: the replay set's first images). Validation follows the same rule as training, so a
    method never selects its checkpoint on data it may not keep.
    """
    old, new = chunks[:-1], chunks[-1]
    mode = settings.mode
    if mode == "full" or not old:
        return Chunk(Images.concat([c.train for c in chunks]), Images.concat([c.val for c in chunks]))
    if mode == "none":
        return new
    if mode == "buffer":
        train_rng, val_rng = streams.reservoir(seed, 0), streams.reservoir(seed, 1)
        train_old, val_old = [c.train for c in old], [c.val for c in old]
        train_buf = _gather(train_old, reservoir([len(p) for p in train_old], settings.buffer_size, train_rng))
        val_buf = _gather(val_old, reservoir([len(p) for p in val_old], settings.buffer_val_size, val_rng))
        return Chunk(Images.concat([new.train, train_buf]), Images.concat([new.val, val_buf]))
    raise AssertionError(mode)
