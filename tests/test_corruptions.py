"""Each corruption does its documented kind of operation, at every severity, on real images."""

import numpy as np
import pytest
import torch

from lure.config import DigitsData
from lure.corruptions import CORRUPTIONS, EXTRAS, SEVERITIES, STANDARD, corrupt, plasma_fractal, rgb_to_hsv, to_uint8
from lure.sources import load_source

RANDOM = {"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "glass_blur", "motion_blur", "snow",
          "frost", "fog", "elastic_transform"}


def color_images() -> torch.Tensor:
    """64 real 32x32 colour images: patches of the two photographs scikit-learn ships
    (load_sample_images), shrunk 4x so that their detail is at CIFAR scale."""
    from sklearn.datasets import load_sample_images

    patches = []
    for photo in load_sample_images().images:  # (427, 640, 3) uint8 each
        small = torch.nn.functional.avg_pool2d(torch.from_numpy(photo.copy()).permute(2, 0, 1).float()[None], 4)[0]
        for i in range(32):
            top, left = (i // 8) * 24 + 2, (i % 8) * 18 + 2
            patches.append(small[:, top : top + 32, left : left + 32])
    return torch.stack(patches) / 255


@pytest.fixture(scope="module")
def images():
    return color_images()


@pytest.fixture(scope="module")
def digits():
    return torch.from_numpy(load_source(DigitsData(), 0).test.x[:64]).float() / 255


def run(x, name, severity, seed=0):
    return corrupt(x, name, severity, torch.Generator().manual_seed(seed))


def test_there_are_15_standard_corruptions_and_3_extras():
    assert len(STANDARD) == 15 and set(EXTRAS) == {"speckle_noise", "gaussian_blur", "saturate"}
    assert set(CORRUPTIONS) == set(SEVERITIES) and all(len(v) == 5 for v in SEVERITIES.values())


@pytest.mark.parametrize("name", STANDARD + EXTRAS)
def test_shape_range_seed_on_colour_grayscale_and_odd_sizes(images, digits, name):
    odd = torch.nn.functional.interpolate(images[:8], size=(40, 24), mode="bilinear")
    for x in (images, digits, odd):
        for severity in range(1, 6):
            y = run(x, name, severity)
            assert y.shape == x.shape and y.dtype == x.dtype
            assert y.min() >= 0 and y.max() <= 1
            assert torch.equal(y, run(x, name, severity))  # same seed, same images
        if name in RANDOM:
            assert not torch.equal(run(x, name, 3, seed=0), run(x, name, 3, seed=1))
    assert not torch.equal(run(images, name, 5), images)


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "speckle_noise", "impulse_noise", "jpeg_compression",
                                  "gaussian_blur", "defocus_blur", "zoom_blur", "fog", "contrast", "brightness"])
def test_damage_grows_with_severity(images, name):
    damage = [(run(images, name, s) - images).abs().mean().item() for s in range(1, 6)]
    assert damage == sorted(damage), damage


# The published parameters (make_cifar_c.py), measured back from what each corruption does.


def test_gaussian_noise_has_the_published_sigma(images):
    mid = (images > 0.3) & (images < 0.7)  # far from the clipping bounds
    for severity, sigma in enumerate([0.04, 0.06, 0.08, 0.09, 0.10], start=1):
        residual = (run(images, "gaussian_noise", severity) - images)[mid]
        assert residual.std().item() == pytest.approx(sigma, rel=0.05)
        assert abs(residual.mean().item()) < 0.01


def test_impulse_noise_hits_the_published_fraction_with_black_and_white(images):
    for severity, amount in enumerate([0.01, 0.02, 0.03, 0.05, 0.07], start=1):
        y = run(images, "impulse_noise", severity)
        changed = y != images
        assert changed.float().mean().item() == pytest.approx(amount, rel=0.15)
        assert set(y[changed].unique().tolist()) <= {0.0, 1.0}


def test_contrast_scales_the_spread_around_the_mean(images):
    for severity, c in enumerate([0.75, 0.5, 0.4, 0.3, 0.15], start=1):
        y = run(images, "contrast", severity)
        torch.testing.assert_close(y.std((2, 3)), c * images.std((2, 3)), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(y.mean((2, 3)), images.mean((2, 3)), rtol=1e-4, atol=1e-5)


def test_brightness_raises_the_hsv_value_and_keeps_the_hue(images):
    before = rgb_to_hsv(images)
    for severity, shift in enumerate([0.05, 0.1, 0.15, 0.2, 0.3], start=1):
        value = rgb_to_hsv(run(images, "brightness", severity))[:, 2]
        torch.testing.assert_close(value, (before[:, 2] + shift).clamp(max=1), atol=1e-5, rtol=0)
    after = rgb_to_hsv(run(images, "brightness", 2))
    coloured = (before[:, 1] > 0.1) & (after[:, 2] < 1) & (before[:, 2] > 0.1)
    hue_change = (after[:, 0] - before[:, 0]).abs()[coloured]
    assert torch.minimum(hue_change, 1 - hue_change).max() < 1e-3


def test_saturate_scales_the_hsv_saturation(images):
    y = run(images, "saturate", 1)  # scale 0.3, shift 0
    torch.testing.assert_close(rgb_to_hsv(y)[:, 1], rgb_to_hsv(images)[:, 1] * 0.3, atol=1e-4, rtol=0)


def test_pixelate_output_is_piecewise_constant(images):
    for severity, c in enumerate([0.95, 0.9, 0.85, 0.75, 0.65], start=1):
        y = run(images, "pixelate", severity)
        blocks = int(32 * c)
        row_changes = (y[..., :, 1:] != y[..., :, :-1]).any(dim=(1, 2)).sum(-1)  # column boundaries per image
        col_changes = (y[..., 1:, :] != y[..., :-1, :]).any(dim=(1, 3)).sum(-1)
        assert (row_changes <= blocks - 1).all() and (col_changes <= blocks - 1).all()


def total_variation(x):
    return ((x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., 1:] - x[..., :-1]).abs().mean()).item()


@pytest.mark.parametrize("name", ["gaussian_blur", "defocus_blur", "motion_blur", "zoom_blur"])
def test_blurs_smooth_the_image(images, name):
    assert all(total_variation(run(images, name, s)) < total_variation(images) for s in range(1, 6))


# --- as the original (make_cifar_c.py) computes, stated independently -------------------------------


def test_pixelate_is_pillows_box_resize_down_and_back(images):
    from PIL import Image

    for severity, c in enumerate([0.95, 0.9, 0.85, 0.75, 0.65], start=1):
        got = to_uint8(run(images[:8], "pixelate", severity)).permute(0, 2, 3, 1).numpy()
        for image, out in zip(to_uint8(images[:8]).permute(0, 2, 3, 1).numpy(), got):
            size = int(32 * c)
            expected = Image.fromarray(image).resize((size, size), Image.BOX).resize((32, 32), Image.BOX)
            assert np.array_equal(out, np.asarray(expected)), severity


def test_glass_blurs_swap_line_copies_as_numpys_does():
    from lure.corruptions import glass_copies

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (2, 3, 8, 8), generator=g).float() / 255
    positions = [(r, c) for r in range(7, 1, -1) for c in range(7, 1, -1)]
    offsets = torch.randint(-1, 1, (len(positions), 2, 2), generator=g)
    got = glass_copies(x, positions, offsets)
    for i in range(2):
        a = x[i].permute(1, 2, 0).numpy().copy()  # (H, W, 3) as the original holds it
        for (h, w), (dy, dx) in zip(positions, offsets[:, :, i].tolist()):
            a[h, w], a[h + dy, w + dx] = a[h + dy, w + dx], a[h, w]  # the original's line
        assert np.array_equal(got[i].permute(1, 2, 0).numpy(), a)
    assert not torch.equal(got.flatten(2).sort(-1).values, x.flatten(2).sort(-1).values)  # no permutation


def test_zoom_is_scipys_clipped_zoom():
    from scipy.ndimage import zoom

    from lure.corruptions import _clipped_zoom

    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for factor in [1.0, 1.01, 1.05, 1.06, 1.11, 1.25, 1.75, 2.25]:
        ch = int(np.ceil(32 / factor))
        top = (32 - ch) // 2
        for i in range(3):
            image = x[i].permute(1, 2, 0).numpy()
            big = zoom(image[top : top + ch, top : top + ch], (factor, factor, 1), order=1)
            trim = (big.shape[0] - 32) // 2
            expected = big[trim : trim + 32, trim : trim + 32]
            np.testing.assert_allclose(_clipped_zoom(x[i : i + 1], factor)[0].permute(1, 2, 0).numpy(), expected,
                                       atol=2e-6, err_msg=f"factor {factor}")


def test_zoom_blur_averages_the_factors_numpy_arange_gives():
    from lure.corruptions import _clipped_zoom

    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    factors = [1.0, 1.01, 1.02, 1.03, 1.04, 1.05, 1.06]  # np.arange(1, 1.06, 0.01): its float steps reach 1.06
    expected = (x + sum(_clipped_zoom(x, f) for f in factors)) / 8
    torch.testing.assert_close(run(x, "zoom_blur", 1), expected.clamp(0, 1))


def test_elastic_warp_is_two_resamplings_as_opencv_then_scipy():
    from scipy.ndimage import affine_transform, gaussian_filter, map_coordinates

    from lure.corruptions import _blur, warp

    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 32, 32, generator=g)
    shifts = torch.rand(2, 3, 2, generator=g) * 5 - 2.5
    noise = torch.rand(2, 2, 32, 32, generator=g) * 2 - 1
    field = _blur(noise, 2.0, mode="symmetric", truncate=3.0) * 3
    got = warp(x, shifts, field)
    src = np.float32([[26, 26], [26, 6], [6, 6]])  # the original's three points around the centre of 32 x 32
    for i in range(2):
        # skimage's gaussian(..., mode='reflect', truncate=3) of the noise: scipy's reflect
        for d in range(2):
            np.testing.assert_allclose(field[i, d].numpy(), gaussian_filter(noise[i, d].double().numpy(), 2.0,
                                       mode="reflect", truncate=3.0) * 3, atol=1e-5)
        dst = src + shifts[i].numpy()
        m = np.linalg.solve(np.c_[src, np.ones(3)], dst).T  # cv2.getAffineTransform(src, dst)
        inv = np.linalg.inv(np.r_[m, [[0, 0, 1]]])[:2]
        # cv2.warpAffine(..., BORDER_REFLECT_101): out(x, y) = in(inv (x, y)); scipy's mirror is reflect-101,
        # in (row, column) order
        warped = np.stack([affine_transform(x[i, ch].double().numpy(), inv[::-1, 1::-1], inv[::-1, 2], order=1,
                                            mode="mirror") for ch in range(3)])
        rows, cols = np.mgrid[0:32, 0:32]
        for ch in range(3):
            expected = map_coordinates(warped[ch], [rows + field[i, 1].numpy(), cols + field[i, 0].numpy()],
                                       order=1, mode="reflect")
            np.testing.assert_allclose(got[i, ch].numpy(), expected, atol=2e-5)


def test_frost_blends_a_crop_of_a_shrunk_frost_photograph():
    from lure.corruptions import frost_photos

    photos = frost_photos(32, 32, 3)
    # OpenCV's resize by fx = fy = 0.2 makes round(0.2 * side) pixels; the photographs are 900 x 600,
    # 560 x 315 (twice), 527 x 350 and 660 x 495
    assert [tuple(p.shape) for p in photos] == [(3, 120, 180), (3, 63, 112), (3, 63, 112), (3, 70, 105), (3, 99, 132)]
    black = torch.zeros(12, 3, 32, 32)
    out = run(black, "frost", 3)  # (0.9, 0.4): 0.4 of a crop, no clipping on black
    for image in out:
        crop = image / 0.4
        found = any(torch.allclose(p.unfold(1, 32, 1).unfold(2, 32, 1)[:, r, c], crop, atol=1e-5)
                    for p in photos for r in range(p.shape[1] - 31) for c in range(p.shape[2] - 31)
                    if torch.allclose(p[:, r, c], crop[:, 0, 0], atol=1e-5))
        assert found
    # the frost of the photographs varies from crop to crop, as the released frost does
    assert out.mean((1, 2, 3)).std() > 0.01


def test_frost_enlarges_the_photographs_for_large_images():
    # frost4 shrinks to 70 x 105 and frost2 to 63 x 112: larger images need larger photographs, each
    # with room for a crop to move (the crop's corner is drawn below photo size - image size)
    from lure.corruptions import frost_photos

    for h, w in [(122, 122), (192, 192), (64, 200)]:
        assert all(p.shape[1] > h and p.shape[2] > w for p in frost_photos(h, w, 3))
        assert run(torch.zeros(2, 3, h, w), "frost", 1).shape == (2, 3, h, w)


def test_warp_is_cv2s_affine_convention():
    # Shifting the three points by (+2, -1) in (x, y) moves the picture 2 right and 1 up.
    from lure.corruptions import warp

    x = torch.rand(2, 3, 16, 16)
    y = warp(x, torch.tensor([2.0, -1.0]).expand(2, 3, 2), torch.zeros(2, 2, 16, 16))
    torch.testing.assert_close(y[..., 1:14, 2:15], x[..., 2:15, 0:13], atol=1e-5, rtol=0)


def test_jpeg_compression_is_pillows_round_trip_at_the_published_quality(images):
    import io

    import numpy as np
    from PIL import Image

    for severity, quality in enumerate([80, 65, 58, 50, 40], start=1):
        expected = []
        for image in to_uint8(images[:8]).permute(0, 2, 3, 1).numpy():
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, "JPEG", quality=quality)
            expected.append(np.asarray(Image.open(buffer)))
        got = to_uint8(run(images[:8], "jpeg_compression", severity)).permute(0, 2, 3, 1).numpy()
        assert np.abs(got.astype(int) - np.stack(expected)).max() <= 1  # float round trip: at most one level


def test_blurs_keep_the_mean_brightness(images):
    for name in ["gaussian_blur", "defocus_blur", "motion_blur"]:
        assert run(images, name, 5).mean().item() == pytest.approx(images.mean().item(), abs=0.01)


def test_snow_frost_and_fog_brighten_and_wash_out(images):
    assert run(images, "snow", 5).mean() > images.mean()
    assert run(images, "frost", 2).mean() > images.mean()
    fogged = run(images, "fog", 5)
    assert fogged.std((2, 3)).mean() < images.std((2, 3)).mean()  # fog lowers contrast


def test_elastic_transform_moves_pixels_without_changing_the_palette(images):
    y = run(images, "elastic_transform", 3)
    assert (y - images).abs().mean() > 0.02
    assert y.mean().item() == pytest.approx(images.mean().item(), abs=0.02)


def test_plasma_fractal_is_seeded_noise_in_the_unit_interval():
    a = plasma_fractal(2, 32, 3, torch.Generator().manual_seed(0), "cpu")
    assert a.shape == (2, 32, 32) and a.min() == 0 and a.max() == 1
    assert torch.equal(a, plasma_fractal(2, 32, 3, torch.Generator().manual_seed(0), "cpu"))
    # Smooth: neighbours differ far less than random pixels do.
    shuffled = a.flatten(1)[:, torch.randperm(1024)].view_as(a)
    assert (a[:, 1:] - a[:, :-1]).abs().mean() < 0.3 * (a - shuffled).abs().mean()


def test_storage_truncates_like_the_released_files():
    assert to_uint8(torch.tensor([0.0, 0.999, 1.0, 0.5])).tolist() == [0, 254, 255, 127]
