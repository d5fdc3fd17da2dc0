"""Batched crop + flip on the device against its definition, image by image."""

import torch
import torch.nn.functional as F

from lure.augment import crop_flip, draw_crop_flip


def reference(image: torch.Tensor, padding: int, offset: torch.Tensor, flip: bool) -> torch.Tensor:
    """torchvision's RandomCrop(padding) + RandomHorizontalFlip for one image, written out."""
    padded = F.pad(image, (padding,) * 4)
    h, w = image.shape[1:]
    top, left = int(offset[0]), int(offset[1])
    crop = padded[:, top : top + h, left : left + w]
    return crop.flip(2) if flip else crop


def test_crop_flip_matches_the_per_image_definition():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=g)
    offsets, flips = draw_crop_flip(64, 4, g)
    out = crop_flip(x, 4, offsets, flips)
    assert out.shape == x.shape and out.dtype == torch.uint8
    for i in range(64):
        assert torch.equal(out[i], reference(x[i], 4, offsets[i], bool(flips[i])))


def test_draws_stay_within_the_padding_and_flip_half_the_time():
    offsets, flips = draw_crop_flip(20000, 4, torch.Generator().manual_seed(1))
    assert offsets.min() == 0 and offsets.max() == 8  # every offset in [0, 2 * padding] occurs
    assert set(offsets.flatten().tolist()) == set(range(9))
    assert 0.48 < flips.float().mean() < 0.52


def test_zero_offset_and_no_flip_is_the_identity_at_padding_zero():
    x = torch.rand(5, 1, 8, 8)
    same = crop_flip(x, 0, torch.zeros(5, 2, dtype=torch.long), torch.zeros(5, dtype=torch.bool))
    assert torch.equal(same, x)
    flipped = crop_flip(x, 0, torch.zeros(5, 2, dtype=torch.long), torch.ones(5, dtype=torch.bool))
    assert torch.equal(flipped, x.flip(3))


def test_padding_brings_in_zeros():
    x = torch.full((1, 1, 4, 4), 9.0)
    out = crop_flip(x, 2, torch.tensor([[0, 0]]), torch.tensor([False]))  # the top-left corner
    assert out[0, 0, :2].eq(0).all() and out[0, 0, :, :2].eq(0).all() and out[0, 0, 2:, 2:].eq(9).all()
