"""Batched crop + flip and resized crop + flip on the device against their definitions, image by image."""

import pytest
import torch
import torch.nn.functional as F

from lure.augment import (
    crop_flip,
    draw_crop_flip,
    draw_resized_crop_flip,
    random_resized_crop_flip,
    resized_crop_flip,
)


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


# RandomResizedCrop + RandomHorizontalFlip. torchvision is the independent statement; it is imported
# inside the tests that need it, as its import takes seconds.


def torchvision_resized_crop_flip(image: torch.Tensor, box: torch.Tensor, flip: bool, size: list[int]):
    """torchvision's resized_crop (bilinear, no antialias) then horizontal_flip, for one image."""
    import torchvision.transforms.v2.functional as TF

    top, left, h, w = box.tolist()
    out = TF.resized_crop(image, top, left, h, w, size, interpolation=TF.InterpolationMode.BILINEAR, antialias=False)
    return TF.horizontal_flip(out) if flip else out


def test_resized_crop_flip_matches_torchvision_image_by_image():
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 256, (12, 3, 37, 45), dtype=torch.uint8, generator=g)
    drawn, drawn_flips = draw_resized_crop_flip(6, 37, 45, g)
    edges = torch.tensor(
        [
            [0, 0, 37, 45],  # the whole image
            [0, 0, 37, 1],  # the first column
            [0, 44, 37, 1],  # the last column
            [36, 0, 1, 45],  # the last row
            [5, 7, 1, 1],  # one pixel
            [30, 40, 7, 5],  # the bottom-right corner
        ]
    )
    boxes = torch.cat([drawn, edges])
    flips = torch.cat([drawn_flips, torch.tensor([False, True, False, True, False, True])])
    exact = total = 0
    for size in (None, 7, 24, 64):
        out = resized_crop_flip(x, boxes, flips, size)
        shape = [37, 45] if size is None else [size, size]
        assert out.shape == (12, 3, *shape) and out.dtype == torch.uint8
        assert out.is_contiguous(memory_format=torch.channels_last)
        for i in range(12):
            # torchvision's uint8 path on the GPU: float32 interpolation, then rounding.
            ref = torchvision_resized_crop_flip(x[i].float(), boxes[i], bool(flips[i]), shape)
            diff = (out[i].int() - ref.round().int()).abs()
            assert diff.max() <= 1
            tie = (ref - ref.floor() - 0.5).abs() < 1e-3  # x.5 values: float noise picks the side
            assert diff[~tie].eq(0).all()
            exact += int(diff.eq(0).sum())
            total += diff.numel()
            # torchvision's uint8 path on the CPU (fixed point, two passes) rounds differently: within 1.
            native = torchvision_resized_crop_flip(x[i], boxes[i], bool(flips[i]), shape)
            assert (out[i].int() - native.int()).abs().max() <= 1
    assert exact / total >= 0.99


def test_whole_image_unflipped_at_its_own_size_is_the_identity():
    x = torch.randint(0, 256, (4, 3, 9, 13), dtype=torch.uint8)
    whole = torch.tensor([[0, 0, 9, 13]] * 4)
    assert torch.equal(resized_crop_flip(x, whole, torch.zeros(4, dtype=torch.bool)), x)
    assert torch.equal(resized_crop_flip(x, whole, torch.ones(4, dtype=torch.bool)), x.flip(3))


def test_random_resized_crop_flip_uses_its_own_draws():
    x = torch.randint(0, 256, (5, 3, 20, 30), dtype=torch.uint8)
    out = random_resized_crop_flip(x, torch.Generator().manual_seed(3), size=16)
    boxes, flips = draw_resized_crop_flip(5, 20, 30, torch.Generator().manual_seed(3))
    assert torch.equal(out, resized_crop_flip(x, boxes, flips, 16))


def test_resized_crop_draws_lie_inside_the_image_within_the_scale_and_ratio_bounds():
    height, width, n = 37, 45, 20000
    boxes, flips = draw_resized_crop_flip(n, height, width, torch.Generator().manual_seed(4))
    assert boxes.dtype == torch.int64 and boxes.shape == (n, 4) and flips.shape == (n,)
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (h >= 1).all() and (w >= 1).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    # The sides are rounded: the drawn area and ratio lie within half a pixel of each side.
    lo_w, hi_w, lo_h, hi_h = w - 0.5, w + 0.5, h - 0.5, h + 0.5
    assert (lo_w * lo_h <= 1.0 * height * width).all() and (hi_w * hi_h >= 0.08 * height * width).all()
    assert (lo_w / hi_h <= 4 / 3).all() and (hi_w / lo_h >= 3 / 4).all()
    assert (top == 0).any() and (left == 0).any() and (top + h == height).any() and (left + w == width).any()
    assert 0.48 < flips.float().mean() < 0.52


def test_resized_crop_draws_are_deterministic_given_the_generator():
    a = draw_resized_crop_flip(100, 37, 45, torch.Generator().manual_seed(5))
    b = draw_resized_crop_flip(100, 37, 45, torch.Generator().manual_seed(5))
    c = draw_resized_crop_flip(100, 37, 45, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_resized_crop_draws_follow_torchvisions_distribution():
    import torchvision.transforms as T

    height, width, n = 37, 45, 20000
    boxes, _ = draw_resized_crop_flip(n, height, width, torch.Generator().manual_seed(7))
    torch.manual_seed(7)
    image = torch.empty(3, height, width)
    ref = torch.tensor([T.RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(n)])

    def summary(b: torch.Tensor) -> torch.Tensor:
        """Mean area fraction, log aspect ratio, and centre (row, column) as fractions of the image."""
        top, left, h, w = b.double().T
        return torch.stack(
            [h * w / (height * width), torch.log(w / h), (top + h / 2) / height, (left + w / 2) / width]
        ).mean(1)

    assert torch.allclose(summary(boxes), summary(ref), atol=0.01)


@pytest.mark.parametrize("height, width", [(10, 40), (40, 10)])
def test_resized_crop_falls_back_to_torchvisions_centre_crop(height, width):
    import torchvision.transforms as T

    # Scale (1, 1) on a long image: no try fits (a box of the whole area is too tall or too wide),
    # so every box is the fallback, a centre crop with the ratio clamped to the nearer bound.
    boxes, _ = draw_resized_crop_flip(50, height, width, torch.Generator().manual_seed(8), scale=(1.0, 1.0))
    ref = T.RandomResizedCrop.get_params(torch.empty(3, height, width), [1.0, 1.0], [3 / 4, 4 / 3])
    assert torch.equal(boxes, torch.tensor([ref] * 50))
