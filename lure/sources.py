"""Where images come from: scikit-learn's digits, torchvision's datasets, and image folders, whose
images are read lazily (ImageFiles) until `decode` reads the ones that the test set and the chunks
take, in parallel, each straight to disk, so that no chunk has to fit in the host's memory; an image
that cannot be read stops prepare or is left out (data.bad_images)."""

from __future__ import annotations

import itertools
import os
import tempfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lure import streams
from lure.config import DataSource, DigitsData, ImageFolderData, TorchvisionData
from lure.errors import LureError
from lure.images import Images
from lure.ticker import Ticker

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


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


def _torchvision_split(dataset) -> Images:
    x = np.asarray(dataset.data)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)  # to (N, C, H, W)
    return Images(np.ascontiguousarray(x, dtype=np.uint8), np.asarray(dataset.targets, dtype=np.int64))


GRAYSCALE_MODES = ("1", "L", "I;16", "I", "F")
DECODE_BATCH, DECODE_AHEAD = 32, 8  # at 224 pixels, at most 256 images (39 MB) decoded ahead of the writer


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
            ticker.tick(i + 1)
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

