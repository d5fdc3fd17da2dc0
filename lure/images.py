"""Images as every stage holds them: uint8 (N, C, H, W) arrays and their labels, in memory or
memory-mapped from the prepared chunk files; numpy only, so that preparing the data needs no torch.
Training moves them to its device with `Images.on` (lure.placement decides between that and
streaming)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


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
