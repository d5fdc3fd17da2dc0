"""Where a stage's images live while it runs: resident on the device (read in whole, once), or
streamed (left in the memory-mapped chunk files and copied to the device a batch at a time).

`train.placement: auto` keeps each set resident while the sets so far fit in half the device's
free memory (the GPU's, or the host's on the CPU), in the order the stage asks for them (training
images first), and streams the rest; `resident` and `streamed` force one way. Both give the same
batches, so the same weights: only the speed differs. The stage prints which it chose.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from lure import distributed
from lure.images import Images

GB = 1e9  # decimal, as disks are sold


class Streamed:
    """uint8 images (N, C, H, W) left on the host (a memory map, or a Concatenated replay set),
    read like a device tensor by the training loop and the evaluation: indexing with positions
    (a tensor or an array) gives those images on the device; a slice gives a narrower Streamed;
    `split` gives consecutive batches on the device."""

    def __init__(self, host, device: torch.device, rows: np.ndarray | None = None) -> None:
        self.host, self.device = host, device
        self.rows = np.arange(len(host)) if rows is None else rows  # the host's rows this view reads
        self.shape = torch.Size((len(self.rows), *host.shape[1:]))
        self.dtype = torch.uint8

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index) -> Streamed | torch.Tensor:
        if isinstance(index, slice):
            return Streamed(self.host, self.device, self.rows[index])
        positions = index.cpu().numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
        batch = torch.from_numpy(np.asarray(self.host[self.rows[positions]]))
        if self.device.type == "cuda":  # page-locked, so that the copy overlaps the GPU's work
            return batch.pin_memory().to(self.device, non_blocking=True)
        return batch.to(self.device)

    def split(self, size: int) -> Iterator[torch.Tensor]:
        """Consecutive batches on the device, one at a time: never the whole set at once."""
        for start in range(0, len(self), size):
            yield self[np.arange(start, min(start + size, len(self)))]


def free_memory(device: torch.device) -> int:
    """Bytes free on the device: the GPU's, or the host's available memory for the CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):  # not Linux: the pages the OS reports
        import os

        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _size(nbytes: int) -> str:
    return f"{nbytes / GB:.2f} GB" if nbytes >= GB else f"{nbytes / 1e6:.1f} MB"


def place(sets: dict[str, Images], device: torch.device, placement: str) -> dict[str, Images]:
    """Each set on `device`, resident or Streamed (see the module's docstring); prints the choice."""
    budget = free_memory(device) // 2
    if device.type == "cpu":
        budget //= distributed.local_world_size()  # the ranks of one machine share its memory
    placed, used, said = {}, 0, []
    for name, images in sets.items():
        size = int(np.prod(images.x.shape))
        resident = placement == "resident" or (placement == "auto" and used + size <= budget)
        if resident:
            used += size
            placed[name] = images.on(device)
        else:
            placed[name] = Images(Streamed(images.x, device), torch.from_numpy(np.array(images.y)).to(device))
        said.append(f"{name} {len(images)} ({_size(size)}) {'resident' if resident else 'streamed'}")
    if distributed.is_writer():
        print(f"images on {device.type}: {', '.join(said)}; train.placement: {placement}"
              + (f", budget {_size(budget)} (half the free memory)" if placement == "auto" else ""), flush=True)
    return placed
