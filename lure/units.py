"""Hidden units: how active they are, and recycling them (ReDo, continual backprop).

A unit is an output channel of a convolution followed by BatchNorm and a ReLU, read by the next
conv or linear layer (lure.models.Units, declared per architecture). Recycling unit c draws its
incoming weights afresh from the architecture's initial distribution, resets its BatchNorm
entries to a fresh layer's (scale 1, shift 0, running mean 0, variance 1), zeroes its outgoing
weights (so the network's function is unchanged at first) and clears the momentum of all of these.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from lure.models import Network, Units, initial_draw

Reset = dict[str, float]


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

    return [model.get_submodule(u.bn).register_forward_hook(hook(i)) for i, u in enumerate(model.units)]


@torch.no_grad()
def unit_activity(model: Network, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
    """Per layer of units, the mean post-ReLU activation E|h| of every unit over the images of
    `batches`, in eval mode (BatchNorm's running statistics; nothing in the model changes)."""
    from lure.train import as_float

    sums = [torch.zeros(model.get_submodule(u.conv).out_channels) for u in model.units]

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
            momentum: dict[str, torch.Tensor], touched: dict[str, torch.Tensor]) -> None:
    """Recycle the units `index` (CPU int64) of one layer, in place; mark the entries it set in
    `touched` (boolean masks by parameter name, made as needed)."""
    if not len(index):
        return
    conv, bn, consumer = (model.get_submodule(path) for path in (units.conv, units.bn, units.consumer))
    rows = index.to(conv.weight.device)
    conv.weight[rows] = initial_draw(model, conv, len(index), generator).to(conv.weight)
    if conv.bias is not None:
        conv.bias[rows] = 0.0
    bn.weight[rows], bn.bias[rows] = 1.0, 0.0
    bn.running_mean[rows], bn.running_var[rows] = 0.0, 1.0
    consumer.weight[:, rows] = 0.0
    incoming = [f"{units.conv}.weight", f"{units.bn}.weight", f"{units.bn}.bias",
                *([f"{units.conv}.bias"] if conv.bias is not None else [])]
    outgoing = f"{units.consumer}.weight"
    params = dict(model.named_parameters())
    for name in [*incoming, outgoing]:
        if name not in touched:
            touched[name] = torch.zeros(params[name].shape, dtype=torch.bool)
    for name in incoming:
        if name in momentum:
            momentum[name][index.to(momentum[name].device)] = 0.0
        touched[name][index] = True
    if outgoing in momentum:
        momentum[outgoing][:, index.to(momentum[outgoing].device)] = 0.0
    touched[outgoing][:, index] = True


def shares(touched: dict[str, torch.Tensor]) -> Reset:
    """The fraction of each tensor's entries marked in `touched`."""
    return {name: mask.float().mean().item() for name, mask in touched.items()}


class ContinualBackprop:
    """Continual backprop (Dohare et al., Nature 2024), as a hook after every optimizer step.

    Per unit: utility u <- decay * u + (1 - decay) * |h| * mean_k |w_out_k|, with |h| the unit's
    mean activation on the step's batch, and an age in updates. Units older than `maturity` are
    eligible; per layer, `replacement_rate` times the eligible count accumulates, and each whole
    unit of it recycles the eligible unit of lowest bias-corrected utility u / (1 - decay^age)
    (its utility and age back to 0). The state carries over to the next chunk in the checkpoint.
    Not implemented: the paper's correction of the next layer's bias for the recycled unit's mean
    activation.
    """

    def __init__(self, model: Network, replacement_rate: float, maturity: int, decay: float,
                 generator: torch.Generator, state: dict) -> None:
        self.model, self.generator = model, generator
        self.rate, self.maturity, self.decay = replacement_rate, maturity, decay
        device = next(model.parameters()).device
        self.consumers = [model.get_submodule(u.consumer) for u in model.units]
        sizes = [model.get_submodule(u.conv).out_channels for u in model.units]
        if not state:  # the first chunk with continual backprop: every unit new
            state = {"utility": [torch.zeros(n) for n in sizes],
                     "age": [torch.zeros(n, dtype=torch.long) for n in sizes], "pending": [0.0] * len(sizes)}
        self.utility = [u.to(device) for u in state["utility"]]
        self.age, self.pending = list(state["age"]), list(state["pending"])  # ages on the CPU: no device syncs
        self.activity: list[torch.Tensor | None] = [None] * len(sizes)
        self.touched: dict[str, torch.Tensor] = {}  # entries recycled at least once in this chunk
        # training batches only, not the evaluations in between
        self.handles = watch_activity(model, self._record, training_only=True)

    def _record(self, i: int, activity: torch.Tensor, images: int) -> None:
        self.activity[i] = activity

    @torch.no_grad()
    def after_step(self, optimizer) -> None:
        for i, (units, consumer) in enumerate(zip(self.model.units, self.consumers)):
            # mean |w| of each input channel of the next layer: the unit's outgoing weights
            outgoing = consumer.weight.detach().abs().transpose(0, 1).flatten(1).mean(1)
            self.utility[i].mul_(self.decay).add_(self.activity[i] * outgoing, alpha=1 - self.decay)
            self.age[i] += 1
            eligible = (self.age[i] > self.maturity).nonzero().flatten()
            self.pending[i] += self.rate * len(eligible)
            count = int(self.pending[i])
            if count == 0:
                continue
            self.pending[i] -= count
            unbiased = 1 - self.decay ** self.age[i][eligible].double()  # the running mean's start-up bias
            device = self.utility[i].device
            score = self.utility[i][eligible.to(device)] / unbiased.float().to(device)
            index = eligible[score.topk(count, largest=False).indices.cpu()]
            recycle(self.model, units, index, self.generator, optimizer.momentum_buffers(), self.touched)
            self.utility[i][index.to(self.utility[i].device)] = 0.0
            self.age[i][index] = 0

    @property
    def reset(self) -> Reset:
        """The fraction of each tensor's entries recycled at least once so far in this chunk."""
        return shares(self.touched)

    def close(self) -> dict:
        """Stop recording; return the state to carry into the next chunk."""
        for handle in self.handles:
            handle.remove()
        return {"utility": [u.cpu() for u in self.utility], "age": self.age, "pending": self.pending}
