"""What training on a new chunk uses under each replay mode (replay.mode): every chunk so far, the
new one alone, or the new one with a seeded reservoir of the old ones."""

from __future__ import annotations

import numpy as np

from lure import streams
from lure.chunks import Chunk
from lure.config import ReplaySettings
from lure.images import Images


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
