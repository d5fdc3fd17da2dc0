"""Hidden units: how active they are, and recycling them (shared by ReDo and continual backprop).

A unit is an output channel of a convolution followed by BatchNorm and a ReLU, or an output of a
linear layer followed by a ReLU (the mlp), read by the next conv or linear layer (lure.models.Units,
declared per architecture). Recycling unit c draws its incoming weights afresh from the
architecture's initial distribution (its bias 0), resets its BatchNorm entries, if any, to a fresh
layer's (scale 1, shift 0, running mean 0, variance 1), zeroes its outgoing weights (so the
network's function is unchanged at first) and clears the optimiser's buffers of all of these.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from lure.methods.base import MethodHook, Reset
from lure.models import Network, Units, as_float, initial_draw
from lure.optim import State, clear_entries
from lure.train import Trainer


def watch_activity(model: Network, record: Callable[[int, torch.Tensor, int], None],
                   training_only: bool = False) -> list[RemovableHandle]:
    """Call record(layer, activity, images) on every forward pass, per layer of units: activity is
    each unit's mean post-ReLU activation |h| over the batch (and positions), in float.
    Returns the hooks' handles, to remove when done."""
    def hook(i: int):
        def on_forward(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if module.training or not training_only:
                h = output.detach().relu().float()
                record(i, h.mean(dim=[0, *range(2, h.dim())]), len(h))
        return on_forward

    return [model.get_submodule(u.bn or u.conv).register_forward_hook(hook(i)) for i, u in enumerate(model.units)]


def unit_count(model: Network, units: Units) -> int:
    return model.get_submodule(units.conv).weight.shape[0]


@torch.no_grad()
def unit_activity(model: Network, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
    """Per layer of units, the mean post-ReLU activation E|h| of every unit over the images of
    `batches`, in eval mode (BatchNorm's running statistics; nothing in the model changes)."""
    sums = [torch.zeros(unit_count(model, u)) for u in model.units]

    def add(i: int, activity: torch.Tensor, images: int) -> None:
        sums[i] += activity.cpu() * images

    handles = watch_activity(model, add)
    was_training = model.training
    model.eval()
    try:
        for x, _ in batches:
            model(as_float(x))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    images = sum(len(x) for x, _ in batches)
    return [s / images for s in sums]


def dormancy_scores(activity: torch.Tensor) -> torch.Tensor:
    """ReDo's score: each unit's activity over the mean activity of its layer (0 if all are silent)."""
    mean = activity.mean()
    return activity / mean if mean > 0 else torch.zeros_like(activity)


@torch.no_grad()
def recycle(model: Network, units: Units, index: torch.Tensor, generator: torch.Generator,
            optimizer: State, touched: dict[str, torch.Tensor]) -> None:
    """Recycle the units `index` (CPU int64) of one layer, in place, and clear the optimiser's
    buffers of the entries it set; mark those in `touched` (boolean masks by parameter name, made
    as needed)."""
    if not len(index):
        return
    conv, consumer = model.get_submodule(units.conv), model.get_submodule(units.consumer)
    rows = index.to(conv.weight.device)
    conv.weight[rows] = initial_draw(model, conv, len(index), generator).to(conv.weight)
    if conv.bias is not None:
        conv.bias[rows] = 0.0
    if units.bn is not None:
        bn = model.get_submodule(units.bn)
        bn.weight[rows], bn.bias[rows] = 1.0, 0.0
        bn.running_mean[rows], bn.running_var[rows] = 0.0, 1.0
    consumer.weight[:, rows] = 0.0
    incoming = [f"{units.conv}.weight", *([f"{units.bn}.weight", f"{units.bn}.bias"] if units.bn else []),
                *([f"{units.conv}.bias"] if conv.bias is not None else [])]
    outgoing = f"{units.consumer}.weight"
    params = dict(model.named_parameters())
    for name in [*incoming, outgoing]:
        if name not in touched:
            touched[name] = torch.zeros(params[name].shape, dtype=torch.bool)
    for name in incoming:
        clear_entries(optimizer, name, index)
        touched[name][index] = True
    clear_entries(optimizer, outgoing, index, dim=1)
    touched[outgoing][:, index] = True


def shares(touched: dict[str, torch.Tensor]) -> Reset:
    """The fraction of each tensor's entries marked in `touched`."""
    return {name: mask.float().mean().item() for name, mask in touched.items()}


class Recycler(MethodHook):
    """A hook that recycles units while a chunk is relearned (continual backprop, SNR): it watches
    them through forward hooks (`handles`, removed when the chunk's training ends) and reports the
    entries it recycled (`touched`)."""

    handles: list[RemovableHandle]
    touched: dict[str, torch.Tensor]

    def after_fit(self, trainer: Trainer) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    @property
    def reset(self) -> Reset:
        """The fraction of each tensor's entries recycled at least once so far in this chunk."""
        return shares(self.touched)
