"""Data augmentation for whole batches on the device: no per-image Python work."""

from __future__ import annotations

import math

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


def draw_resized_crop_flip(
    n: int,
    height: int,
    width: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[torch.Tensor, torch.Tensor]:
    """For n images of height x width: crop boxes (n, 4) int64 as (top, left, h, w) and flip flags (n,).

    torchvision's RandomResizedCrop.get_params rule (10 tries of a random area and log-uniform aspect
    ratio, the first that fits wins, else a centre crop with the ratio clamped), with all tries drawn for
    all images at once. The number of draws is fixed per call, so the stream never depends on which try
    was accepted and the same generator state gives the same boxes."""
    tries = 10
    area = height * width * (scale[0] + (scale[1] - scale[0]) * _rand((n, tries), generator))
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * _rand((n, tries), generator))
    ws = torch.sqrt(area * aspect).round().long()  # round half to even, like Python's round
    hs = torch.sqrt(area / aspect).round().long()
    fits = (ws > 0) & (ws <= width) & (hs > 0) & (hs <= height)
    first = fits.long().argmax(1, keepdim=True)  # index of the first accepted try (0 when none is)
    found = fits.any(1)
    h0, w0 = _centre_crop_size(height, width, ratio)
    h = torch.where(found, hs.gather(1, first)[:, 0], h0)
    w = torch.where(found, ws.gather(1, first)[:, 0], w0)
    position = _rand((n, 2), generator)  # uniform placement of an accepted box among its positions
    top = torch.where(found, _uniform_int(position[:, 0], height - h), (height - h0) // 2)
    left = torch.where(found, _uniform_int(position[:, 1], width - w), (width - w0) // 2)
    flips = torch.rand(n, generator=generator) < 0.5
    return torch.stack([top, left, h, w], 1), flips


def _rand(shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """Uniform [0, 1) in float64, so the rounding of box sides matches torchvision's Python floats."""
    return torch.rand(shape, generator=generator, dtype=torch.float64)


def _uniform_int(u: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """An integer uniform in [0, high] per element from u uniform in [0, 1): randint with a per-image bound."""
    return torch.minimum((u * (high + 1)).long(), high)


def _centre_crop_size(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """torchvision's fallback (h, w) when no try fits: the largest centre crop with the ratio clamped."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        return int(round(width / min(ratio))), width
    if in_ratio > max(ratio):
        return height, int(round(height * max(ratio)))
    return height, width


def random_resized_crop_flip(x: torch.Tensor, generator: torch.Generator, size: int | None = None) -> torch.Tensor:
    """resized_crop_flip of one batch with its own draws (made on the CPU, moved to x's device)."""
    boxes, flips = draw_resized_crop_flip(len(x), x.shape[2], x.shape[3], generator)
    return resized_crop_flip(x, boxes.to(x.device), flips.to(x.device), size)


def resized_crop_flip(
    x: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor, size: int | None = None
) -> torch.Tensor:
    """Each image's box (top, left, h, w) resized to size x size (x's own H x W when size is None) with
    bilinear interpolation, then flipped horizontally where `flips`: torchvision's RandomResizedCrop
    (antialias=False) + RandomHorizontalFlip, for a uint8 batch (B, C, H, W) at once.

    One affine_grid + grid_sample for the whole batch. The sample points are clamped to the pixel
    centres of each box, so that pixels outside the box never leak in: that is F.interpolate's edge
    rule on the cropped image. The result is uint8, laid out channels-last."""
    b, c, height, width = x.shape
    out_h, out_w = (height, width) if size is None else (size, size)
    boxes, flips = boxes.to(x.device, torch.float32), flips.to(x.device)
    grid = F.affine_grid(_box_thetas(boxes, flips, height, width), [b, c, out_h, out_w], align_corners=False)
    grid = _clamp_to_box(grid, boxes, height, width)
    out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8, memory_format=torch.channels_last)


def _box_thetas(boxes: torch.Tensor, flips: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The (B, 2, 3) affine maps from output coordinates to each box in the input's normalised [-1, 1]
    coordinates (align_corners=False): output pixel k lands on box pixel (k + 0.5) * side / out - 0.5,
    F.interpolate's sample point. A flip negates the x scale, reading the box right to left."""
    top, left, h, w = boxes.unbind(1)
    theta = boxes.new_zeros(len(boxes), 2, 3)
    theta[:, 0, 0] = torch.where(flips, -w / width, w / width)
    theta[:, 0, 2] = (2 * left + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * top + h) / height - 1
    return theta


def _clamp_to_box(grid: torch.Tensor, boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The grid (B, H', W', 2) with each point held between its box's first and last pixel centres, in
    normalised coordinates (pixel j's centre is (2j + 1) / size - 1)."""
    top, left, h, w = boxes.unbind(1)
    low = torch.stack([(2 * left + 1) / width - 1, (2 * top + 1) / height - 1], 1)[:, None, None]
    high = torch.stack([(2 * (left + w) - 1) / width - 1, (2 * (top + h) - 1) / height - 1], 1)[:, None, None]
    return torch.maximum(torch.minimum(grid, high), low)
