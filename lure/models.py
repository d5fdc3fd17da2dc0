"""Networks. Every model is `Network(normalize, body, head)`: it takes images as floats in [0, 1],
normalises them inside (so checkpoints carry their input statistics), and ends in a linear
`head`. Forgetting methods find layers by this structure (`head`, the body's blocks in order),
never by an architecture's own names."""

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


class Network(nn.Module):
    def __init__(self, in_channels: int, body: nn.Module, features: int, num_classes: int) -> None:
        super().__init__()
        self.normalize = Normalize(in_channels)
        self.body = body  # images -> (N, features)
        self.head = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.normalize(x)))


def conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def small_cnn(in_channels: int, num_classes: int, width: int = 32) -> Network:
    """Three conv-BN-ReLU blocks, one 2x2 max-pool, global average pool, linear head."""
    body = nn.Sequential(
        conv_bn(in_channels, width),
        conv_bn(width, 2 * width),
        nn.MaxPool2d(2),
        conv_bn(2 * width, 4 * width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return Network(in_channels, body, 4 * width, num_classes)


def resnet(arch: str, in_channels: int, num_classes: int) -> Network:
    """torchvision's ResNet without its fc. resnet18 gets the CIFAR stem (3x3 stride-1 conv, no
    max-pool), as in the LURE paper; resnet50 keeps the ImageNet stem, for large images."""
    from torchvision import models  # ~4 s to import: only for the models that need it

    net = getattr(models, arch)()
    if arch == "resnet18":
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    features = net.fc.in_features
    net.fc = nn.Identity()
    return Network(in_channels, net, features, num_classes)


def build_model(params: ModelParams, in_channels: int, num_classes: int) -> Network:
    if params.arch == "small_cnn":
        return small_cnn(in_channels, num_classes, params.width)
    return resnet(params.arch, in_channels, num_classes)


def model_for(params: ModelParams, meta: dict) -> Network:
    """The configured network for a prepared dataset (its meta.json)."""
    return build_model(params, in_channels=meta["image_shape"][0], num_classes=len(meta["classes"]))


def set_input_stats(model: Network, images: torch.Tensor) -> None:
    """Per-channel mean/std of `images` (floats in [0, 1]) become the model's normalisation."""
    dims = [0, 2, 3]
    model.normalize.mean.copy_(images.mean(dims))
    model.normalize.std.copy_(images.std(dims).clamp_min(1e-3))
