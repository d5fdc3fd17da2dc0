"""How a source's training pool is cut into chunks, and the prepared folder the prepare stage writes
them to and the training stages read them from.

Chunk k is a fixed slice of one seeded permutation of the training pool (or the k-th seeded group of
classes, class-incremental), so its content depends on the seed, the pool and the chunk size only:
asking for more chunks appends new ones and leaves the earlier ones byte-identical. The chunk files
are stored .npz archives that the training stages memory-map.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lure import paths, streams
from lure.config import Params
from lure.errors import LureError
from lure.images import Images
from lure.io import load_arrays, read_json, sampled_md5


@dataclass(frozen=True)
class Chunk:
    """A chunk's images: its training and validation splits."""

    train: Images
    val: Images
    noisy: int = 0  # training labels replaced by wrong ones (data.label_noise), while it is the new chunk



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


# --- the prepared folder (lure.prepare writes it) -------------------------------------------


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

