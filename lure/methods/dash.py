"""DASH, Direction-Aware SHrinking (Shin et al., NeurIPS 2024; baekrok/DASH-Direction-Aware-SHrinking,
utils/train_utils.py): shrink each weight by how little it points where the loss descends."""

from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from lure.config import Fraction
from lure.images import Images
from lure.methods.base import Boundary, Method, Reset
from lure.models import Network, as_float


class Dash(Method):
    """When a chunk arrives: one pass over what the chunk trains on (all data so far under full
    replay), in stored order, in batches of one chunk's training images, without augmentation, on a
    copy of the model in eval mode (the official flow: DASH runs after the previous chunk's test);
    after each batch, per convolution and linear weight, g <- (1 - alpha) g + alpha (-dL/dW). Then
    each convolution kernel (output, input) and each linear row is scaled by clamp(cos(g, W),
    min_scale, 1), and each of their biases as a whole by one factor the same way. The optimiser's
    state is kept. Reports per tensor 1 - its mean factor."""

    kind: Literal["dash"] = "dash"
    alpha: Fraction = Field(0.3, description="weight of each batch's negative gradient in its running average "
                            "(the official default 0.3)")
    min_scale: Fraction = Field(0.3, description="lambda, the least factor a weight is scaled by (the official "
                                "default 0.3; FIRE's runs 0.05 and 0.1)")

    def forget(self, model: Network, boundary: Boundary) -> Reset:
        directions = descent_directions(model, boundary.replay, len(boundary.new), self.alpha)
        return shrink(model, directions, self.min_scale)


PART = 512  # images per forward pass while DASH gathers its directions


def weighted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The convolutions and linear layers, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def descent_directions(model: nn.Module, images: Images, batch_size: int, alpha: float) -> dict[str, torch.Tensor]:
    """The running average of -dL/dW (and -dL/db) over `images` in batches of `batch_size`, in
    stored order, by parameter name, from a copy of `model` in eval mode."""
    probe = copy.deepcopy(model).eval()
    layers = weighted_layers(probe)
    average = {f"{n}.{p}": torch.zeros_like(getattr(m, p)) for n, m in layers for p in ("weight", "bias")
               if getattr(m, p) is not None}
    for x, y in zip(images.x.split(batch_size), images.y.split(batch_size)):
        probe.zero_grad()
        # the batch's mean loss, its gradient summed over parts of at most PART images: a chunk-sized
        # batch would hold every image's activations at once (eval mode: each image's alone)
        for xs, ys in zip(x.split(PART), y.split(PART)):
            (F.cross_entropy(probe(as_float(xs)), ys) * (len(ys) / len(y))).backward()
        for name, module in layers:
            for part in ("weight", "bias"):
                param = getattr(module, part)
                if param is not None and param.grad is not None:
                    key = f"{name}.{part}"
                    average[key] = (1 - alpha) * average[key] + alpha * (-param.grad.detach())
    return average


@torch.no_grad()
def shrink(model: nn.Module, directions: dict[str, torch.Tensor], min_scale: float) -> Reset:
    """Each convolution kernel (its (output, input) slice) and each linear row by clamp(cos(g, W),
    min_scale, 1) with g its direction; each bias by one such factor."""
    reset = {}
    for name, module in weighted_layers(model):
        weight = module.weight
        rows = weight.view(weight.shape[0], weight.shape[1], -1) if weight.ndim == 4 else weight
        g = directions[f"{name}.weight"]
        g = g.view(*rows.shape) if weight.ndim == 4 else g
        scale = torch.clamp(torch.cosine_similarity(g, rows, dim=-1), min=min_scale, max=1)
        rows.mul_(scale[..., None])
        reset[f"{name}.weight"] = 1.0 - float(scale.mean())
        if module.bias is not None:
            bias_g = directions[f"{name}.bias"]
            bias_scale = torch.clamp(torch.cosine_similarity(bias_g.reshape(1, -1), module.bias.reshape(1, -1)),
                                     min=min_scale, max=1)
            module.bias.mul_(bias_scale)
            reset[f"{name}.bias"] = 1.0 - float(bias_scale)
    return reset
