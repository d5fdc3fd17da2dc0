"""A term added to the training loss while a chunk is relearned (shared by L2 Init and Parseval)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from lure.methods.base import MethodHook
from lure.train import Trainer


class Penalty(MethodHook):
    """The loss becomes the loss the trainer had (cross-entropy, or a mitigation's) plus `term()`,
    computed from the live weights at every update, in float32 whatever autocast the forward pass
    runs under (the authors' code has none)."""

    def __init__(self, term: Callable[[], torch.Tensor]) -> None:
        self.term = term

    def before_fit(self, trainer: Trainer) -> None:
        loss = trainer.loss
        device = next(trainer.model.parameters()).device.type

        def penalised(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            base = loss(logits, labels)
            with torch.autocast(device, enabled=False):
                return base + self.term()

        trainer.loss = penalised
