"""Data augmentation for whole batches on the device: no per-image Python work."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def draw_crop_flip(n: int, padding: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """For n images: crop offsets (n, 2) in [0, 2 * padding] (row, column) and flip flags (n,)."""
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    return offsets, flips


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int) -> torch.Tensor:
    """crop_flip of one batch with its own draws (made on the CPU, moved to x's device)."""
    offsets, flips = draw_crop_flip(len(x), padding, generator)
    return crop_flip(x, padding, offsets.to(x.device), flips.to(x.device))


def crop_flip(x: torch.Tensor, padding: int, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Random crop of the zero-padded images at `offsets`, then a horizontal flip where `flips`:
    torchvision's RandomCrop(size, padding) + RandomHorizontalFlip, for a batch (B, C, H, W) at once.
    The result is laid out channels-last."""
    b, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = offsets[:, :1] + torch.arange(h, device=x.device)  # (B, H) source rows
    cols = offsets[:, 1:] + torch.arange(w, device=x.device)  # (B, W) source columns
    cols = torch.where(flips[:, None], cols.flip(1), cols)  # a flip reads the columns backwards
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (B,H,W,C) -> (B,C,H,W)
