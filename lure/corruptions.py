"""Common corruptions (Hendrycks & Dietterich 2019, the CIFAR-10-C parameters), written in torch
for whole batches: seeded, on the images' device, for any image size and for grayscale.

Each corruption is `fn(x, c, g) -> x'` on floats in [0, 1] shaped (N, C, H, W), with `c` its
parameter at one severity (SEVERITIES) and `g` a CPU generator: random draws are made on the CPU
and moved to x's device, so a corrupted copy does not depend on the device that made it. Sizes in
pixels are the CIFAR (32 px) values; they are used as they are for other image sizes.

FOLLOWS says, per corruption, how closely it follows the original generator (make_cifar_c.py);
bench/corruptions.py measures it against the original run as released.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from lure import streams
from lure.chunks import load_test
from lure.config import Params
from lure.device import pick_device
from lure.errors import LureError

Tensor = torch.Tensor

# The published CIFAR-10-C parameters, severities 1..5.
SEVERITIES: dict[str, list] = {
    "gaussian_noise": [0.04, 0.06, 0.08, 0.09, 0.10],
    "shot_noise": [500, 250, 100, 75, 50],
    "impulse_noise": [0.01, 0.02, 0.03, 0.05, 0.07],
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
    "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
    "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
    "zoom_blur": [(1, 1.06), (1, 1.11), (1, 1.16), (1, 1.21), (1, 1.26)],  # arange(a, b, 0.01)
    "snow": [(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
             (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)],
    "frost": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
    "fog": [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
    "brightness": [0.05, 0.1, 0.15, 0.2, 0.3],
    "contrast": [0.75, 0.5, 0.4, 0.3, 0.15],
    "elastic_transform": [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)],
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
    "jpeg_compression": [80, 65, 58, 50, 40],
    # extras
    "speckle_noise": [0.06, 0.1, 0.12, 0.16, 0.2],
    "gaussian_blur": [0.4, 0.6, 0.7, 0.8, 1],
    "saturate": [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)],
}
STANDARD = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
            "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
            "jpeg_compression")
EXTRAS = ("speckle_noise", "gaussian_blur", "saturate")  # spatter (needs edge maps) is not provided

# How each follows the original: "exact" (deterministic, the original's computation), "in
# distribution" (the original's computation on draws of our own seeded generator: the original's
# draws give its images) or "approximate" (and where it departs). bench/corruptions.py measures it.
FOLLOWS: dict[str, tuple[str, str]] = {
    "gaussian_noise": ("in distribution", ""),
    "shot_noise": ("in distribution", ""),
    "impulse_noise": ("in distribution", "salt and pepper as skimage draws it"),
    "defocus_blur": ("exact", ""),
    "glass_blur": ("in distribution", "the original's pixel copies (not swaps), after storing as uint8"),
    "motion_blur": ("approximate", "ImageMagick's motion blur drawn as 2·radius + 1 Gaussian weights on the pixel grid"),
    "zoom_blur": ("exact", "the original's integer crop before each zoom"),
    "snow": ("approximate", "its motion blur as motion_blur's"),
    "frost": ("in distribution", "the original's photographs, shrunk to OpenCV's bytes; blended in float32 where the "
              "original uses float64"),
    "fog": ("in distribution", ""),
    "brightness": ("exact", ""),
    "contrast": ("exact", ""),
    "elastic_transform": ("in distribution", "two resamplings as the original; source positions in float "
                          "where OpenCV's warpAffine rounds them to 1/32 px"),
    "pixelate": ("exact", "through Pillow, as the original"),
    "jpeg_compression": ("exact", "through Pillow, as the original"),
    "speckle_noise": ("in distribution", ""),
    "gaussian_blur": ("exact", ""),
    "saturate": ("exact", ""),
}


# --- building blocks ----------------------------------------------------------------------------


def _rand(shape, g: torch.Generator, device) -> Tensor:
    return torch.rand(shape, generator=g).to(device)


def _randn(shape, g: torch.Generator, device) -> Tensor:
    return torch.randn(shape, generator=g).to(device)


def _uniform(shape, g: torch.Generator, low: float, high: float, device) -> Tensor:
    return _rand(shape, g, device) * (high - low) + low


def _pad(x: Tensor, p: int, mode: str = "reflect") -> Tensor:
    """Pad the images by p on every side. reflect: about the edge pixel (OpenCV's default,
    BORDER_REFLECT_101; replicate where the image is too small for it); symmetric: about the edge
    itself, the edge pixel repeated (scipy's and skimage's `reflect`); replicate: the edge pixel."""
    if p == 0:
        return x
    if mode == "symmetric":
        h, w = x.shape[-2:]
        return x[..., _symmetric(h, p, x.device)[:, None], _symmetric(w, p, x.device)[None, :]]
    if mode == "reflect" and p >= min(x.shape[-2:]):
        mode = "replicate"
    return F.pad(x, (p, p, p, p), mode=mode)


def _symmetric(n: int, p: int, device) -> Tensor:
    """Indices of 0..n-1 padded by p on both sides, mirrored about the edges (d c b a | a b c d)."""
    i = torch.arange(-p, n + p, device=device) % (2 * n)
    return torch.where(i < n, i, 2 * n - 1 - i)


def _filter(x: Tensor, kernels: Tensor, mode: str = "reflect") -> Tensor:
    """Convolve every channel of every image with a 2-D kernel: one (k, k) for all images, or
    (N, k, k), one per image."""
    n, c, h, w = x.shape
    k = kernels.shape[-1]
    padded = _pad(x, k // 2, mode)
    if kernels.dim() == 2:
        weight = kernels.expand(c, 1, k, k)
        return F.conv2d(padded, weight.to(x), groups=c)
    weight = kernels[:, None].repeat_interleave(c, dim=0)  # (N*C, 1, k, k)
    out = F.conv2d(padded.reshape(1, n * c, *padded.shape[-2:]), weight.to(x), groups=n * c)
    return out.reshape(n, c, h, w)


def gaussian_kernel(sigma: float, device=None, truncate: float = 4.0) -> Tensor:
    """2-D Gaussian as scipy/skimage build it: radius round(truncate * sigma), normalised."""
    radius = max(1, int(truncate * sigma + 0.5))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    k1 = torch.exp(-0.5 * (t / max(sigma, 1e-6)) ** 2)
    k1 = k1 / k1.sum()
    return k1[:, None] * k1[None, :]


def _blur(x: Tensor, sigma: float, mode: str = "replicate", truncate: float = 4.0) -> Tensor:
    # skimage.filters.gaussian, which the original calls, pads by repeating the edge by default.
    return _filter(x, gaussian_kernel(sigma, x.device, truncate), mode=mode) if sigma > 0 else x


def _gray(x: Tensor) -> Tensor:
    """Luminance (ITU-R 601), (N, 1, H, W)."""
    if x.shape[1] == 1:
        return x
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]


def rgb_to_hsv(x: Tensor) -> Tensor:
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    v, _ = x.max(1)
    delta = v - x.min(1).values
    s = torch.where(v > 0, delta / v.clamp_min(1e-12), torch.zeros_like(v))
    safe = delta.clamp_min(1e-12)
    h = torch.where(v == r, (g - b) / safe, torch.where(v == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    h = torch.where(delta > 0, (h / 6) % 1.0, torch.zeros_like(h))
    return torch.stack([h, s, v], 1)


def hsv_to_rgb(x: Tensor) -> Tensor:
    h, s, v = x[:, 0], x[:, 1], x[:, 2]
    i = torch.floor(h * 6)
    f = h * 6 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.long() % 6
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = torch.zeros_like(x)
    for k, (r, g, b) in enumerate(choices):
        m = i == k
        out[:, 0] = torch.where(m, r, out[:, 0])
        out[:, 1] = torch.where(m, g, out[:, 1])
        out[:, 2] = torch.where(m, b, out[:, 2])
    return out


def _on_hsv(x: Tensor, channel: int, fn: Callable[[Tensor], Tensor]) -> Tensor:
    hsv = rgb_to_hsv(x)
    hsv[:, channel] = fn(hsv[:, channel]).clamp(0, 1)
    return hsv_to_rgb(hsv)


def plasma_fractal(n: int, size: int, decay: float, g: torch.Generator, device) -> Tensor:
    """(n, size, size) diamond-square noise in [0, 1], size a power of two (as the original)."""
    grid = torch.zeros(n, size, size, device=device)
    step, wibble = size, 100.0

    def jitter(total: Tensor) -> Tensor:  # mean of four neighbours plus a random offset
        return total / 4 + wibble * _uniform(total.shape, g, -wibble, wibble, device)

    while step >= 2:
        half = step // 2
        corners = grid[:, 0::step, 0::step]
        square = corners + corners.roll(-1, 1)
        square = square + square.roll(-1, 2)
        grid[:, half::step, half::step] = jitter(square)
        centres = grid[:, half::step, half::step]
        corners = grid[:, 0::step, 0::step]
        grid[:, 0::step, half::step] = jitter(centres + centres.roll(1, 1) + corners + corners.roll(-1, 2))
        grid[:, half::step, 0::step] = jitter(centres + centres.roll(1, 2) + corners + corners.roll(-1, 1))
        step, wibble = half, wibble / decay
    grid = grid - grid.amin((1, 2), keepdim=True)
    return grid / grid.amax((1, 2), keepdim=True).clamp_min(1e-12)


def _plasma_like(x: Tensor, decay: float, g: torch.Generator) -> Tensor:
    """Plasma noise covering x's images, (N, 1, H, W)."""
    n, _, h, w = x.shape
    size = 1 << math.ceil(math.log2(max(h, w, 2)))
    return plasma_fractal(n, size, decay, g, x.device)[:, None, :h, :w]


def _clipped_zoom(x: Tensor, factor: float) -> Tensor:
    """The original's clipped_zoom: crop the centre to the integer size ceil(side / factor), enlarge
    that by `factor` as scipy.ndimage.zoom does at order 1 (to round(size * factor), corner-aligned
    linear interpolation), then cut (size - side) // 2 off the top and left. For a factor such as
    1.05 the copy is shifted a little, not exactly centred, as in the released files."""
    h, w = x.shape[-2:]
    ch, cw = math.ceil(h / factor), math.ceil(w / factor)
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[..., top : top + ch, left : left + cw]
    big = F.interpolate(crop, size=(round(ch * factor), round(cw * factor)), mode="bilinear", align_corners=True)
    trim_top, trim_left = (big.shape[-2] - h) // 2, (big.shape[-1] - w) // 2
    return big[..., trim_top : trim_top + h, trim_left : trim_left + w]


def _motion_kernels(radius: int, sigma: float, angles_deg: Tensor) -> Tensor:
    """(N, k, k) line kernels: 2 * radius + 1 Gaussian weights (sigma) along one direction per
    image, from the centre outwards, as ImageMagick's one-sided motion blur (on the pixel grid)."""
    length = 2 * radius + 1
    k = 2 * length - 1
    radius = length - 1  # the kernel's half-width
    steps = torch.arange(length, dtype=torch.float32, device=angles_deg.device)
    weights = torch.exp(-0.5 * (steps / sigma) ** 2)
    theta = torch.deg2rad(angles_deg)[:, None]
    rows = (radius - torch.round(steps * torch.sin(theta))).long().clamp(0, k - 1)
    cols = (radius + torch.round(steps * torch.cos(theta))).long().clamp(0, k - 1)
    kernels = torch.zeros(len(angles_deg), k * k, device=angles_deg.device)
    kernels.scatter_add_(1, rows * k + cols, weights.expand_as(rows).contiguous())
    kernels = kernels.view(-1, k, k)
    return kernels / kernels.sum((1, 2), keepdim=True)


def _motion_blur(x: Tensor, radius: int, sigma: float, angles: Tensor) -> Tensor:
    return _filter(x, _motion_kernels(radius, sigma, angles), mode="replicate")


# --- the corruptions ----------------------------------------------------------------------------


def gaussian_noise(x: Tensor, sigma: float, g) -> Tensor:
    return x + sigma * _randn(x.shape, g, x.device)


def shot_noise(x: Tensor, c: float, g) -> Tensor:
    return torch.poisson((x * c).cpu(), generator=g).to(x.device) / c


def impulse_noise(x: Tensor, amount: float, g) -> Tensor:
    """Salt and pepper on `amount` of the values, half each (skimage's s&p)."""
    hit = _rand(x.shape, g, x.device) < amount
    salt = _rand(x.shape, g, x.device) < 0.5
    return torch.where(hit, salt.to(x.dtype), x)


def speckle_noise(x: Tensor, c: float, g) -> Tensor:
    return x + x * c * _randn(x.shape, g, x.device)


def gaussian_blur(x: Tensor, sigma: float, g) -> Tensor:
    return _blur(x, sigma)


def glass_blur(x: Tensor, c: tuple, g) -> Tensor:
    """Blur, stored as uint8 (truncated), then the original's local "swaps", then blur again. The
    original's swap line, on a (H, W, 3) numpy array, copies rather than swaps: its right-hand
    side holds views, so the neighbour's pixel is copied in and the neighbour keeps its own. The
    released data carries that, and so does this."""
    sigma, delta, iterations = c
    x = torch.floor(_blur(x, sigma) * 255) / 255  # np.uint8(blurred * 255)
    h, w = x.shape[-2:]
    positions = [(r, col) for r in range(h - delta, delta, -1) for col in range(w - delta, delta, -1)]
    for _ in range(iterations):
        x = glass_copies(x, positions, torch.randint(-delta, delta, (len(positions), 2, len(x)), generator=g))
    return _blur(x, sigma)


def glass_copies(x: Tensor, positions: list[tuple[int, int]], offsets: Tensor) -> Tensor:
    """Going through `positions` (row, column) in order, copy into each the pixel at its offset
    (dy, dx) = offsets[i] (2, N), one offset per image: what the original's swap line does."""
    x = x.clone()
    images = torch.arange(len(x), device=x.device)
    for (r, col), (dy, dx) in zip(positions, offsets.to(x.device)):
        x[:, :, r, col] = x[images, :, r + dy, col + dx]
    return x


def defocus_blur(x: Tensor, c: tuple, g) -> Tensor:
    """Convolve with a disk of the given radius, itself smoothed by a small Gaussian (alias blur)."""
    radius, alias_sigma = c
    span = 8 if radius <= 8 else int(math.ceil(radius))
    t = torch.arange(-span, span + 1, dtype=torch.float32, device=x.device)
    disk = ((t[:, None] ** 2 + t[None, :] ** 2) <= radius**2).float()
    disk = disk / disk.sum()
    ksize = 3 if radius <= 8 else 5
    smooth = gaussian_kernel(alias_sigma, x.device, truncate=(ksize // 2) / alias_sigma)
    kernel = F.conv2d(F.pad(disk[None, None], (ksize // 2,) * 4), smooth[None, None])[0, 0]
    support = kernel.abs().sum(0).nonzero()  # trim the zero margin: same result, works on small images
    lo, hi = int(support.min()), int(support.max())
    r = max(kernel.shape[0] // 2 - lo, hi - kernel.shape[0] // 2)
    centre = kernel.shape[0] // 2
    return _filter(x, kernel[centre - r : centre + r + 1, centre - r : centre + r + 1])


def motion_blur(x: Tensor, c: tuple, g) -> Tensor:
    radius, sigma = c
    angles = _uniform((x.shape[0],), g, -45, 45, x.device)
    return _motion_blur(x, radius, sigma, angles)


def zoom_blur(x: Tensor, c: tuple, g) -> Tensor:
    """Mean of the image and its clipped-zoom copies at the factors numpy.arange(a, b, 0.01)
    gives (1.00 to 1.06 at severity 1: seven, the float steps reaching b)."""
    factors = np.arange(c[0], c[1], 0.01).tolist()
    out = x.clone()
    for factor in factors:
        out += _clipped_zoom(x, factor)
    return out / (len(factors) + 1)


def snow(x: Tensor, c: tuple, g) -> Tensor:
    loc, scale, zoom, threshold, radius, sigma, blend = c
    n, _, h, w = x.shape
    layer = loc + scale * _randn((n, 1, h, w), g, x.device)
    layer = _clipped_zoom(layer, zoom)
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer).clamp(0, 1)
    layer = _motion_blur(layer, radius, sigma, _uniform((n,), g, -135, -45, x.device))
    x = blend * x + (1 - blend) * torch.maximum(x, _gray(x) * 1.5 + 0.5)
    return x + layer + layer.flip(-2, -1)  # the layer, and the layer turned by 180 degrees


def frost(x: Tensor, c: tuple, g) -> Tensor:
    """image_weight * x + frost_weight * a random crop of one of the first five frost photographs
    (the original never draws the sixth), each shrunk to 0.2 of its size as OpenCV's default
    (bilinear) resize does; grey on grayscale images."""
    image_weight, frost_weight = c
    n, channels, h, w = x.shape
    photos = frost_photos(h, w, channels)
    which = torch.randint(0, len(photos), (n,), generator=g).tolist()
    crops = []
    for i in which:
        photo = photos[i]
        top = int(torch.randint(0, photo.shape[-2] - h, (1,), generator=g))
        left = int(torch.randint(0, photo.shape[-1] - w, (1,), generator=g))
        crops.append(photo[:, top : top + h, left : left + w])
    return image_weight * x + frost_weight * torch.stack(crops).to(x)


@functools.cache
def frost_photos(h: int, w: int, channels: int) -> tuple[Tensor, ...]:
    """The frost photographs of CIFAR-10-C (frost1-5; the `imagecorruptions` package ships them),
    (C, H', W') floats in [0, 1], shrunk to 0.2 of their size (enlarged where that would not
    hold an h x w crop), rounded to uint8 as OpenCV's resize returns them."""
    from importlib.metadata import PackageNotFoundError, distribution

    from PIL import Image

    try:
        package = distribution("imagecorruptions")
    except PackageNotFoundError:
        raise LureError("frost needs the photographs of the imagecorruptions package: uv sync") from None
    photos = []
    for name in ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg"):
        with Image.open(package.locate_file(f"imagecorruptions/frost/{name}")) as image:
            rgb = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)[None].float()
        height, width = rgb.shape[-2:]
        if int(0.2 * height) > h and int(0.2 * width) > w:  # OpenCV's 0.2x shrink, to its bytes
            small = F.interpolate(rgb, scale_factor=0.2, mode="bilinear", align_corners=False,
                                  recompute_scale_factor=False)
        else:  # large images: shrink less, to the least size that holds a crop with room to move
            scale = max(0.2, (h + 1) / height, (w + 1) / width)
            size = (max(h + 1, int(scale * height)), max(w + 1, int(scale * width)))
            small = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False)
        small = small[0].round().clamp(0, 255) / 255
        photos.append(_gray(small[None])[0] if channels == 1 else small)
    return tuple(photos)


def fog(x: Tensor, c: tuple, g) -> Tensor:
    strength, decay = c
    top = x.amax((1, 2, 3), keepdim=True)
    x = x + strength * _plasma_like(x, decay, g)
    return x * top / (top + strength)


def brightness(x: Tensor, c: float, g) -> Tensor:
    if x.shape[1] != 3:
        return x + c  # the value of a gray pixel is the pixel
    return _on_hsv(x.clamp(0, 1), 2, lambda v: v + c)


def contrast(x: Tensor, c: float, g) -> Tensor:
    mean = x.mean((2, 3), keepdim=True)
    return (x - mean) * c + mean


def saturate(x: Tensor, c: tuple, g) -> Tensor:
    if x.shape[1] != 3:
        return x  # a gray image has no saturation
    scale, shift = c
    return _on_hsv(x.clamp(0, 1), 1, lambda s: s * scale + shift)


def elastic_transform(x: Tensor, c: tuple, g) -> Tensor:
    """A random affine map of three points (cv2.warpAffine: bilinear, BORDER_REFLECT_101), then a
    smoothed random displacement field (scipy's map_coordinates: linear, `reflect`), two
    resamplings as in the original; sizes are fractions of the image side."""
    alpha, sigma, affine = (v * x.shape[-1] for v in c)
    n, _, h, w = x.shape
    shifts = _uniform((n, 3, 2), g, -affine, affine, x.device)
    field = _blur(_uniform((n, 2, h, w), g, -1, 1, x.device), sigma, mode="symmetric", truncate=3.0) * alpha
    return warp(x, shifts, field)


def warp(x: Tensor, shifts: Tensor, field: Tensor) -> Tensor:
    """Move three points around the centre by `shifts` (N, 3, 2) in (x, y) pixels; the affine map M
    they define warps the image as cv2.warpAffine does (out(p) = in(M^-1 p), reflected about the
    edge pixels); then displace that by `field` (N, 2, H, W) as (dx, dy): out(p) = warped(p +
    field(p)), reflected about the edges."""
    n, _, h, w = x.shape
    dev = x.device
    centre = torch.tensor([w // 2, h // 2], device=dev, dtype=x.dtype)  # numpy's float32(size) // 2
    side = min(h, w) // 3
    src = torch.stack([centre + side, centre + torch.tensor([side, -side], device=dev), centre - side])  # (3, 2)
    ones = torch.ones(n, 3, 1, device=dev)
    # M (2x3) with M [src; 1] = src + shifts, solved per image; sampling needs its inverse.
    m = torch.linalg.solve(torch.cat([src.expand(n, 3, 2), ones], 2), src + shifts).transpose(1, 2)
    inv = torch.linalg.inv(torch.cat([m, torch.tensor([0.0, 0, 1], device=dev).expand(n, 1, 3)], 1))[:, :2]
    ys, xs = torch.meshgrid(torch.arange(h, device=dev, dtype=x.dtype), torch.arange(w, device=dev, dtype=x.dtype),
                            indexing="ij")
    sx = inv[:, 0, 0, None, None] * xs + inv[:, 0, 1, None, None] * ys + inv[:, 0, 2, None, None]
    sy = inv[:, 1, 0, None, None] * xs + inv[:, 1, 1, None, None] * ys + inv[:, 1, 2, None, None]
    warped = _sample(x, sx, sy, about_edge_pixel=True)
    return _sample(warped, xs + field[:, 0], ys + field[:, 1], about_edge_pixel=False)


def _sample(x: Tensor, sx: Tensor, sy: Tensor, about_edge_pixel: bool) -> Tensor:
    """x at pixel coordinates (sx, sy) (N, H, W), bilinear, coordinates outside the image mirrored
    back: about the edge pixel (OpenCV's BORDER_REFLECT_101) or about the edge (scipy's reflect)."""
    h, w = x.shape[-2:]

    def mirror(t: Tensor, size: int) -> Tensor:
        if size == 1:
            return torch.zeros_like(t)
        if about_edge_pixel:
            t = (t % (2 * size - 2)).abs()
            return torch.where(t > size - 1, 2 * size - 2 - t, t)
        t = (t + 0.5) % (2 * size)
        return (torch.where(t > size, 2 * size - t, t) - 0.5).clamp(0, size - 1)

    gx, gy = mirror(sx, w), mirror(sy, h)
    grid = torch.stack([2 * gx / max(w - 1, 1) - 1, 2 * gy / max(h - 1, 1) - 1], -1)  # pixel centres -> [-1, 1]
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def pixelate(x: Tensor, c: float, g) -> Tensor:
    """Pillow's resize with the BOX filter to c of the size, then back, as the original (through
    Pillow, image by image, with the uint8 image in between)."""
    from PIL import Image

    h, w = x.shape[-2:]

    def resized(image: Image.Image) -> Image.Image:
        return image.resize((max(1, int(w * c)), max(1, int(h * c))), Image.BOX).resize((w, h), Image.BOX)

    return _through_pillow(x, resized)


def jpeg_compression(x: Tensor, quality: int, g) -> Tensor:
    """JPEG round trip at `quality` through Pillow, as the original (a codec: image by image, CPU)."""
    from PIL import Image

    def round_trip(image: Image.Image) -> Image.Image:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        return Image.open(buffer)

    return _through_pillow(x, round_trip)


def _through_pillow(x: Tensor, fn: Callable) -> Tensor:
    """Apply `fn` (Pillow image -> Pillow image) to each image of x as the uint8 image it was."""
    from PIL import Image

    images = to_uint8(x.clamp(0, 1)).permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for image in images:
        result = np.asarray(fn(Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)))
        out.append(result[..., None] if result.ndim == 2 else result)
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(x.device, x.dtype) / 255


CORRUPTIONS: dict[str, Callable[[Tensor, object, torch.Generator], Tensor]] = {
    name: globals()[name] for name in STANDARD + EXTRAS
}


def corrupt(x: Tensor, name: str, severity: int, g: torch.Generator) -> Tensor:
    """One corruption at severity 1..5 of a batch of floats in [0, 1]; the result is clipped."""
    return CORRUPTIONS[name](x, SEVERITIES[name][severity - 1], g).clamp(0, 1)


def to_uint8(x: Tensor) -> Tensor:
    """Stored as the released CIFAR-10-C: scaled by 255 and truncated, not rounded."""
    return (x * 255).to(torch.uint8)


def names_for(choice: str) -> tuple[str, ...]:
    """The corruptions a robustness.corruptions setting asks for."""
    return {"standard": STANDARD, "all": STANDARD + EXTRAS, "none": ()}[choice]


def corrupt_images(x: Tensor, name: str, severity: int, seed: int, batch_size: int = 1000) -> Tensor:
    """uint8 images (N, C, H, W) -> their corrupted copies, uint8, on x's device. Seeded by
    (seed, corruption, severity) only, so the copies are the same for every method."""
    generator = streams.corruption(seed, name, severity)
    return torch.cat([to_uint8(corrupt(part.float() / 255, name, severity, generator))
                      for part in x.split(batch_size)])


@dataclass
class CorruptedSets:
    """What the corrupt stage stores (lure.paths): the test images it corrupts, then, one
    corruption at a time, their copies at every severity."""

    subset: dict[str, np.ndarray]  # `index` in the test set, labels `y`, clean images `x`
    copies: Iterator[tuple[str, dict[str, np.ndarray]]]  # per corruption: its name, `x` (S, N, C, H, W), `severities`
    summary: str


def corrupted_sets(params: Params) -> CorruptedSets:
    """All of the test set, or a seeded subset of robustness.test_images, and its corrupted copies
    (made lazily, on train.device)."""
    r = params.robustness
    device = pick_device(params.train)
    test = load_test()
    index = np.arange(len(test))
    if r.test_images is not None and r.test_images < len(test):
        index = np.sort(streams.test_subset(params.seed).permutation(len(test))[: r.test_images])
    subset = {"index": index, "y": test.y[index], "x": test.x[index]}
    names = names_for(r.corruptions)

    def copies() -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        x = torch.from_numpy(subset["x"]).to(device)
        for name in names:
            yield name, {"x": np.stack([corrupt_images(x, name, s, params.seed).cpu().numpy() for s in r.severities]),
                         "severities": np.asarray(r.severities)}

    summary = f"{len(names)} corruptions x {len(r.severities)} severities of {len(index)} test images on {device}" \
        if names else f"no corruptions (robustness.corruptions: none): the {len(index)} clean test images alone"
    return CorruptedSets(subset, copies(), summary)
