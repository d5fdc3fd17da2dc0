"""ReDo (Sokar et al. 2023): recycle dormant units when a chunk arrives."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from lure.methods.base import Boundary, Method, Reset
from lure.methods.units import dormancy_scores, recycle, shares, unit_activity
from lure.models import Network, first_batches


class Redo(Method):
    """Recycle dormant units: a unit's mean activation on a seeded sample of the replay images
    (score_batches x score_batch_size, as ReDo samples its replay buffer), over its layer's mean, at
    most `tau` -> its incoming weights drawn afresh, its BN entries reset, its outgoing weights and
    their optimiser buffers zeroed. Recycles once, when a chunk arrives (the paper: every few updates)."""

    kind: Literal["redo"] = "redo"
    tau: float = Field(0.1, ge=0.0, description="dormancy threshold (published: 0.025 and 0.1)")
    score_batches: int = Field(1, ge=1, description="batches in the sample")
    score_batch_size: int = Field(256, ge=1, description="images per batch of the sample")

    def forget(self, model: Network, boundary: Boundary) -> Reset:
        replay = boundary.replay
        n = min(len(replay), self.score_batches * self.score_batch_size)
        sample = replay.take(torch.randperm(len(replay), generator=boundary.generator)[:n].to(replay.y.device))
        activity = unit_activity(model, first_batches(sample, self.score_batches, self.score_batch_size))
        touched: dict[str, torch.Tensor] = {}
        for units, active in zip(model.units, activity):
            dormant = (dormancy_scores(active) <= self.tau).nonzero().flatten()
            recycle(model, units, dormant, boundary.generator, boundary.optimizer, touched)
        return shares(touched)
