"""Hare & Tortoise (Lee et al., ICML 2024; dojeon-ai/Hare-Tortoise, src/trainers/base.py): a slow
copy of the network that the trained one is reset to, every few epochs."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from lure.methods.base import Boundary, Method, MethodHook
from lure.models import Network
from lure.train import Epoch, Trainer


class HareTortoise(Method):
    """While a chunk is relearned, the tortoise (a slow copy) follows the trained network, the hare:
    after every update, tortoise <- ema x tortoise + (1 - ema) x hare, parameters and BatchNorm's
    running statistics alike; after the chunk's epochs 1, 1 + reset_every, 1 + 2 reset_every, ...
    (the official loop's epoch % reset_every == 0, from epoch 0), the hare is set to the tortoise.
    As in the official code, whose reset makes the hare share the tortoise's tensors until the next
    average, the first update after a reset leaves the tortoise equal to the hare. The hare is the
    chunk's model (the official code's test_acc1); the tortoise, carried from chunk to chunk, is
    evaluated too (its accuracy is the official test_target_acc1). It starts at chunk 2 from the
    chunk-1 model (chunk 1 is learned once for every method; the official tortoise follows task 1
    too)."""

    kind: Literal["hare_tortoise"] = "hare_tortoise"
    ema: float = Field(0.999, ge=0.0, lt=1.0, description="the tortoise's decay per update (published: 0.999)")
    reset_every: int = Field(10, ge=1, description="epochs between the resets of the hare to the tortoise "
                             "(published: 10)")

    def relearning(self, model: Network, boundary: Boundary) -> MethodHook:
        return Tortoise(model, self.ema, self.reset_every, boundary.state)


class Tortoise(MethodHook):
    """The slow copy, kept beside the model on its device."""

    def __init__(self, model: Network, ema: float, reset_every: int, state: dict) -> None:
        self.model, self.ema, self.reset_every = model, ema, reset_every
        carried = state.get("networks", {}).get("tortoise")
        live = model.state_dict()
        self.slow = {n: (carried[n] if carried else t).detach().to(t.device).clone() for n, t in live.items()}
        self.names = [n for n, t in live.items() if t.is_floating_point()]  # BatchNorm's batch count stays the hare's
        self.tied = False  # the hare was just set to the tortoise: the official code's two share their tensors

    @torch.no_grad()
    def after_step(self, trainer: Trainer) -> None:
        live = self.model.state_dict()
        fast, slow = [live[n] for n in self.names], [self.slow[n] for n in self.names]
        if self.tied:  # the update moved the shared tensors: the tortoise moved with the hare
            torch._foreach_copy_(slow, fast)
            self.tied = False
        # the official arithmetic: ema * slow + (1 - ema) * fast
        averaged = torch._foreach_add(torch._foreach_mul(slow, self.ema), torch._foreach_mul(fast, 1 - self.ema))
        torch._foreach_copy_(slow, averaged)

    @torch.no_grad()
    def after_epoch(self, trainer: Trainer, epoch: int, stats: Epoch) -> None:
        if (epoch - 1) % self.reset_every == 0:
            live = self.model.state_dict()
            torch._foreach_copy_([live[n] for n in self.names], [self.slow[n] for n in self.names])
            self.tied = True

    def state(self) -> dict:
        """The tortoise, as another network of the chunk (evaluated beside the model)."""
        return {"networks": {"tortoise": {n: t.detach().cpu().clone() for n, t in self.slow.items()}}}
