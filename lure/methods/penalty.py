"""A term added to the training loss while a chunk is relearned (shared by L2 Init and Parseval)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from lure.methods.base import MethodHook
from lure.train import Trainer


class Penalty(MethodHook):
    """Adds `term()`, computed from the live weights at every update, to what the trainer minimises
    (Trainer.objective: the loss it has, cross-entropy or a mitigation's, plus its penalties)."""

    def __init__(self, term: Callable[[], torch.Tensor]) -> None:
        self.term = term

    def before_fit(self, trainer: Trainer) -> None:
        trainer.penalties.append(self.term)
