"""Every random stream of the pipeline, in one place.

Two seeds drive them all. `seed` is the data's: the test split, the chunks, the replay
reservoir, the held-out images of the continual evaluation and the corrupted test sets, shared
by every run. A run seed (one of `seeds`) drives what differs between runs on the same data: the
initial weights, the batch order and the forgetting draws.

Each stream is named by a key of integers, the seed first, then a purpose number (below) and
whatever else tells its draws apart (the chunk k, the method). The key goes through numpy's
SeedSequence, so that a draw for one purpose never shifts another's. (SeedSequence reads a key
without its trailing zeros: (s, 5) and (s, 5, 0) are one key. Data and training keys only meet
that way across the two kinds of generator, numpy's for the data, so that the prepare stage needs
no torch, and torch's CPU generators for training.)

Every draw is made on the CPU and then moved to the device that uses it, so results do not depend
on the device that made the draws. Building a model draws its initial weights from torch's global
generator: `initial_weights` and `fresh_model` seed it for the draw and restore it afterwards.
A few streams keep the derivations they were first written with (digits_split, test_subset,
corruption), so that results stay the same.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# Purposes of the data streams, keyed (seed, purpose, ...).
POOL, VALIDATION, RESERVOIR, SHOTS, CLASS_ORDER, TEST_SUBSET, HELD_OUT, LABEL_NOISE = 0, 1, 2, 3, 4, 5, 6, 7
# Purposes of the training streams, keyed (run seed, k, purpose, method) or, for draws that stay
# the same for a whole run, (run seed, purpose, method).
BATCH_ORDER, FORGETTING, FRESH_MODEL, RUN_SPLIT, SCORING_AUGMENT = 0, 1, 2, 3, 4


def _numpy(*key: int) -> np.random.Generator:
    return np.random.default_rng(list(key))


def _seed_of(*key: int) -> int:
    """A 63-bit seed from the key's SeedSequence, for the generators that take one integer."""
    return int(np.random.SeedSequence(list(key)).generate_state(1, np.uint64)[0] >> 1)


def _torch(*key: int) -> torch.Generator:
    import torch  # here, not at the top: the data stages use numpy only

    return torch.Generator().manual_seed(_seed_of(*key))


def method_number(method: str) -> int:
    """A stable number per method name (a params section), for keys."""
    return zlib.crc32(method.encode())


# --- the data's, from `seed` -----------------------------------------------------------------


def digits_split(seed: int) -> int:
    """The digits test split: scikit-learn's train_test_split takes an integer random_state."""
    return seed


def pool(seed: int, k: int | None = None) -> np.random.Generator:
    """The permutation that chunks are cut from (iid), or chunk k's sample of its classes."""
    return _numpy(seed, POOL) if k is None else _numpy(seed, POOL, k)


def validation(seed: int, k: int) -> np.random.Generator:
    """Chunk k's train/validation split."""
    return _numpy(seed, VALIDATION, k)


def reservoir(seed: int, part: int) -> np.random.Generator:
    """The replay buffer's reservoir sampling: part 0 for training images, 1 for validation."""
    return _numpy(seed, RESERVOIR, part)


def shots(seed: int) -> np.random.Generator:
    """The few-shot sample of each class."""
    return _numpy(seed, SHOTS)


def class_order(seed: int) -> np.random.Generator:
    """The order in which class-incremental chunks bring the classes."""
    return _numpy(seed, CLASS_ORDER)


def test_subset(seed: int) -> np.random.Generator:
    """The test images that get corrupted, when robustness.test_images asks for a subset."""
    return np.random.default_rng(_seed_of(seed, TEST_SUBSET))


def held_out(seed: int, k: int) -> np.random.Generator:
    """Chunk k's held-out images for the continual evaluation."""
    return _numpy(seed, HELD_OUT, k)


def label_noise(seed: int, k: int) -> np.random.Generator:
    """Which of chunk k's training labels are wrong, and the wrong labels."""
    return _numpy(seed, LABEL_NOISE, k)


def corruption(seed: int, name: str, severity: int) -> torch.Generator:
    """One corrupted copy of the test set, the same for every method and run."""
    import torch

    return torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode()) * 7 + severity) % 2**63)


# --- a run's, from its run seed ----------------------------------------------------------------


@contextmanager
def _global_torch_seed(seed: int) -> Iterator[None]:
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def initial_weights(run_seed: int):
    """Build the run's initial model inside this: its weights are drawn from the run seed."""
    return _global_torch_seed(run_seed)


def batch_order(run_seed: int, k: int) -> torch.Generator:
    """Chunk k's batch order and augmentation draws, the same for every method of the run."""
    return _torch(run_seed, k, BATCH_ORDER)


def forgetting(run_seed: int, k: int, method: str) -> torch.Generator:
    """A method's draws when chunk k arrives (masks, fresh values, samples)."""
    return _torch(run_seed, k, FORGETTING, method_number(method))


def scoring_augment(run_seed: int, k: int, method: str) -> torch.Generator:
    """The augmentation of the images a method scores when chunk k arrives: a stream of its own, so
    that turning it on or off leaves the method's other draws (fresh weights) as they are."""
    return _torch(run_seed, k, SCORING_AUGMENT, method_number(method))


def fresh_model(run_seed: int, k: int, method: str):
    """Build a method's freshly drawn model at chunk k inside this."""
    return _global_torch_seed(_seed_of(run_seed, k, FRESH_MODEL, method_number(method)))


def run_split(run_seed: int, method: str) -> torch.Generator:
    """Draws that stay the same at every chunk of a run (Knowledge Evolution's split)."""
    return _torch(run_seed, RUN_SPLIT, method_number(method))
