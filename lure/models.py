"""Networks. Each takes uint8-range images as floats in [0, 1] and normalises inside the model,
so checkpoints carry their own input statistics."""

from __future__ import annotations

import torch
from torch import nn

from lure.config import ModelParams


class Normalize(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean[:, None, None]) / self.std[:, None, None]


def conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU blocks, one 2x2 max-pool, global average pool, linear head."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        self.normalize = Normalize(in_channels)
        self.features = nn.Sequential(
            conv_bn(in_channels, width),
            conv_bn(width, 2 * width),
            nn.MaxPool2d(2),
            conv_bn(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.normalize(x)))


def build_model(params: ModelParams, in_channels: int, num_classes: int) -> nn.Module:
    if params.arch == "small_cnn":
        return SmallCNN(in_channels, num_classes, params.width)
    raise AssertionError(params.arch)


def model_for(params: ModelParams, meta: dict) -> nn.Module:
    """The configured network for a prepared dataset (its meta.json)."""
    return build_model(params, in_channels=meta["image_shape"][0], num_classes=len(meta["classes"]))


def set_input_stats(model: nn.Module, images: torch.Tensor) -> None:
    """Per-channel mean/std of `images` (floats in [0, 1]) become the model's normalisation."""
    dims = [0, 2, 3]
    model.normalize.mean.copy_(images.mean(dims))
    model.normalize.std.copy_(images.std(dims).clamp_min(1e-3))
