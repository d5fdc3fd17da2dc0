"""Networks, and running them on images. Every model is `Network(normalize, body, head)`: it
takes images as floats in [0, 1], normalises them inside (so checkpoints carry their input
statistics), and ends in a linear `head`. Each architecture declares, where it is built, what the
forgetting methods need to know of it, so that no method hard-codes a module name:

- `layers`: its layers in forward order under common names (`stem`, `layer1`, ..., `head`);
- `units`: its layers of hidden units (a conv's output channels after BatchNorm and ReLU, and the
  layer that reads them), for unit-level resets (ReDo, continual backprop);
- `conv_init`: the distribution its convolutions are initialised from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from lure import distributed
from lure.config import ModelSettings
from lure.device import world_size
from lure.images import Images


class Normalize(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean[:, None, None]) / self.std[:, None, None]


@dataclass(frozen=True)
class Units:
    """A layer of hidden units: unit c is output channel c of `conv` (a conv, or a linear layer's
    output c), after `bn` (None where there is no BatchNorm) and a ReLU, and input channel c of
    `consumer` (a conv or linear layer). Module paths within the Network."""

    conv: str
    bn: str | None
    consumer: str


class Network(nn.Module):
    def __init__(self, in_channels: int, body: nn.Module, features: int, num_classes: int, *,
                 layers: dict[str, list[str]], units: list[Units], conv_init: str) -> None:
        super().__init__()
        self.normalize = Normalize(in_channels)
        self.body = body  # images -> (N, features)
        self.head = nn.Linear(features, num_classes)
        self.layers = {**layers, "head": ["head"]}  # name -> module paths, in forward order
        self.units = units
        self.conv_init = conv_init  # "uniform_fan_in" (PyTorch's default) | "normal_fan_out"

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
    blocks = ["body.0", "body.1", "body.3"]
    return Network(in_channels, body, 4 * width, num_classes,
                   layers={f"layer{i}": [block] for i, block in enumerate(blocks, start=1)},
                   units=[Units(f"{block}.0", f"{block}.1", f"{reader}.0" if reader != "head" else reader)
                          for block, reader in zip(blocks, [*blocks[1:], "head"])],
                   conv_init="uniform_fan_in")


def mlp(in_channels: int, image_size: tuple[int, int], num_classes: int, width: int, depth: int) -> Network:
    """The flattened image through `depth` linear-ReLU layers of `width` units (PyTorch's default
    initialisation), then the linear head: Ash & Adams' MLP (their code's is 100 x 2 with ReLU),
    whose ReLU units are the ones ReDo and continual backprop define."""
    inputs = in_channels * image_size[0] * image_size[1]
    modules: list[nn.Module] = [nn.Flatten()]
    for i in range(depth):
        modules += [nn.Linear(inputs if i == 0 else width, width), nn.ReLU(inplace=True)]
    hidden = [f"body.{1 + 2 * i}" for i in range(depth)]
    return Network(in_channels, nn.Sequential(*modules), width, num_classes,
                   layers={f"layer{i}": [path] for i, path in enumerate(hidden, start=1)},
                   units=[Units(path, None, reader) for path, reader in zip(hidden, [*hidden[1:], "head"])],
                   conv_init="uniform_fan_in")


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
    stages = [f"layer{i}" for i in range(1, 5)]
    # Hidden units inside each residual block (conv1 -> conv2, and conv2 -> conv3 in a bottleneck);
    # a block's output channels are summed with its shortcut, so they are no units of one layer.
    units = [Units(f"body.{stage}.{b}.conv{i}", f"body.{stage}.{b}.bn{i}", f"body.{stage}.{b}.conv{i + 1}")
             for stage in stages for b, block in enumerate(getattr(net, stage))
             for i in range(1, 3 if isinstance(block, models.resnet.Bottleneck) else 2)]
    return Network(in_channels, net, features, num_classes,
                   layers={"stem": ["body.conv1", "body.bn1"], **{stage: [f"body.{stage}"] for stage in stages}},
                   units=units, conv_init="normal_fan_out")  # torchvision: kaiming_normal_(mode="fan_out")


def build_model(settings: ModelSettings, in_channels: int, num_classes: int,
                image_size: tuple[int, int] | None = None) -> Network:
    """The network for images of `in_channels` (and, for the mlp, of `image_size`: height, width)."""
    if settings.arch == "small_cnn":
        return small_cnn(in_channels, num_classes, settings.width)
    if settings.arch == "mlp":
        if image_size is None:
            raise ValueError("the mlp needs the image size")
        return mlp(in_channels, image_size, num_classes, settings.width, settings.depth)
    return resnet(settings.arch, in_channels, num_classes)


def model_for(settings: ModelSettings, meta: dict, device: torch.device | str = "cpu") -> Network:
    """The configured network for a prepared dataset (its meta.json), on `device`."""
    channels, height, width = meta["image_shape"]
    return build_model(settings, channels, len(meta["classes"]), (height, width)).to(device)


@torch.no_grad()
def set_input_stats(model: Network, images, batch_size: int = 1000) -> None:
    """Per-channel mean/std of uint8 `images` (as floats in [0, 1]; a tensor or Streamed) become the
    model's normalisation. Summed a batch at a time in float64, two passes, so that the figures
    do not depend on where the images are (resident or streamed) and large sets need no float copy."""
    total = torch.zeros(images.shape[1], dtype=torch.float64, device=model.normalize.mean.device)
    for part in images.split(batch_size):
        total += as_float(part).double().sum((0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    squares = torch.zeros_like(total)
    for part in images.split(batch_size):
        squares += (as_float(part).double() - mean[:, None, None]).square().sum((0, 2, 3))
    model.normalize.mean.copy_(mean.float())
    model.normalize.std.copy_((squares / (count - 1)).sqrt().float().clamp_min(1e-3))


def initial_draw(model: Network, module: nn.Module, rows: int, generator: torch.Generator) -> torch.Tensor:
    """Fresh incoming weights for `rows` output units of `module` (conv or linear), from the
    distribution the architecture initialises it with (on the CPU)."""
    shape = (rows, *module.weight.shape[1:])
    receptive = math.prod(module.weight.shape[2:])
    if isinstance(module, nn.Conv2d) and model.conv_init == "normal_fan_out":
        std = math.sqrt(2.0 / (module.weight.shape[0] * receptive))
        return torch.randn(shape, generator=generator) * std
    bound = 1.0 / math.sqrt(module.weight.shape[1] * receptive)  # kaiming_uniform_(a=sqrt(5))
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


# --- running a network on uint8 images -----------------------------------------------------------


def as_float(x: torch.Tensor) -> torch.Tensor:
    """Stored uint8 pixels as the floats in [0, 1] that every model takes."""
    return x.float().div_(255)


@torch.no_grad()
def predict(model: nn.Module, images: Images, batch_size: int = 1000) -> torch.Tensor:
    """Logits for every image, in eval mode (the model's mode is restored)."""
    was_training = model.training
    model.eval()
    logits = torch.cat([model(as_float(x)) for x in images.x.split(batch_size)]) if len(images) else \
        torch.empty(0, device=images.x.device)
    model.train(was_training)
    return logits


def accuracy(model: nn.Module, images: Images, batch_size: int = 1000) -> float:
    """Under DDP each rank predicts its share of the images and the hits are summed over the
    ranks: every rank must call it, gets the same figure, and takes the same decisions from it."""
    if len(images) == 0:
        return float("nan")
    part = images.take(distributed.shard(len(images)))  # may be empty with fewer images than ranks
    hits = predict(model, part, batch_size).argmax(1) == part.y if len(part) else part.y.bool()
    if world_size() == 1:
        return hits.float().mean().item()
    return (distributed.all_sum(hits.sum()).float() / len(images)).item()


def first_batches(images: Images, batches: int, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first `batches` x `batch_size` images in stored order (as the official LURE code scores),
    as (images, labels) batches."""
    n = min(len(images), batches * batch_size)
    return list(zip(images.x[:n].split(batch_size), images.y[:n].split(batch_size)))
