"""An ablation of LURE: its mask drawn at random, to tell *which* weights from *how many*."""

from __future__ import annotations

from typing import Literal

import torch

from lure.methods.base import Boundary, Reset
from lure.methods.masks import Mask
from lure.models import Network


class RandomMask(Mask):
    """Re-initialise a random `fraction`: LURE's mask drawn at random (the same count of marked
    entries over the same tensors; with score_params: weights, the same count reset)."""

    kind: Literal["random_mask"] = "random_mask"

    def forget(self, model: Network, boundary: Boundary) -> Reset:
        tensors = dict(model.named_parameters())
        scores = {n: torch.rand(tensors[n].shape, generator=boundary.generator) for n in self.scored(model)}
        return self.reset_lowest(model, scores, boundary)
