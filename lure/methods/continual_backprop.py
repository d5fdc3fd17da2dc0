"""Continual backprop (Dohare et al., Nature 2024): while training, replace the hidden units of
lowest utility, a few at a time."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from lure import distributed
from lure.device import world_size
from lure.methods.base import Boundary, Method, MethodHook
from lure.methods.units import Recycler, recycle, unit_count, watch_activity
from lure.models import Network
from lure.train import Trainer


class ContinualBackprop(Method):
    """Nothing at the boundary; after every update, per layer, replacement_rate x (units older than
    `maturity` updates) accumulates, and each whole unit of it recycles the mature unit of lowest
    bias-corrected utility u / (1 - decay^age), u <- decay * u + (1 - decay) * |h| * mean |w_out|.
    The published settings suit long runs: a layer of n units replaces one every
    1 / (replacement_rate * n) updates once its units are `maturity` updates old. Starts at chunk 2
    (chunk 1 is learned once for every method, by plain backprop) and carries utilities and ages
    from chunk to chunk in the checkpoint; leaves out the paper's correction of the next layer's
    bias for a recycled unit."""

    kind: Literal["continual_backprop"] = "continual_backprop"
    replacement_rate: float = Field(1e-5, ge=0.0, le=1.0, description="units replaced per eligible unit and update "
                                    "(published, CIFAR-100: 1e-5)")
    maturity: int = Field(1000, ge=0, description="updates a unit lives before it may be replaced (published: 1000)")
    decay: float = Field(0.99, ge=0.0, lt=1.0, description="of the running utility (published: 0.99)")

    def relearning(self, model: Network, boundary: Boundary) -> MethodHook:
        return UnitReplacement(model, self.replacement_rate, self.maturity, self.decay, boundary.generator,
                               boundary.state)


class UnitReplacement(Recycler):
    """Continual backprop's hook: per unit, a running utility and an age in updates, updated after
    every optimizer step from the step's batch (recorded by forward hooks while fitting); whole
    units of the accumulated replacement count recycle the eligible units of lowest bias-corrected
    utility (their utility and age back to 0). When an earlier epoch's checkpoint is selected, the
    carried state and `reset` are still the last step's, as the optimiser's state is."""

    def __init__(self, model: Network, replacement_rate: float, maturity: int, decay: float,
                 generator: torch.Generator, state: dict) -> None:
        self.model, self.generator = model, generator
        self.rate, self.maturity, self.decay = replacement_rate, maturity, decay
        device = next(model.parameters()).device
        self.consumers = [model.get_submodule(u.consumer) for u in model.units]
        sizes = [unit_count(model, u) for u in model.units]
        if not state:  # the first chunk with continual backprop: every unit new
            state = {"utility": [torch.zeros(n) for n in sizes],
                     "age": [torch.zeros(n, dtype=torch.long) for n in sizes], "pending": [0.0] * len(sizes)}
        self.utility = [u.to(device) for u in state["utility"]]
        self.age, self.pending = list(state["age"]), list(state["pending"])  # ages on the CPU: no device syncs
        self.activity: list[torch.Tensor | None] = [None] * len(sizes)
        self.touched: dict[str, torch.Tensor] = {}  # entries recycled at least once in this chunk
        self.handles: list = []

    def _record(self, i: int, activity: torch.Tensor, images: int) -> None:
        # under DDP, the whole batch's mean over the ranks' slices: every rank replaces the same units
        if world_size() > 1:
            total = distributed.all_sum(torch.cat([activity * images, activity.new_tensor([images])]))
            activity = total[:-1] / total[-1]
        self.activity[i] = activity

    def before_fit(self, trainer: Trainer) -> None:
        # training batches only, not the evaluations in between
        self.handles = watch_activity(self.model, self._record, training_only=True)

    @torch.no_grad()
    def after_step(self, trainer: Trainer) -> None:
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
            recycle(self.model, units, index, self.generator, trainer.optimizer.state, self.touched)
            self.utility[i][index.to(self.utility[i].device)] = 0.0
            self.age[i][index] = 0

    def state(self) -> dict:
        return {"utility": [u.cpu() for u in self.utility], "age": self.age, "pending": self.pending}
