"""An ablation of LURE: its mask without the data."""

from __future__ import annotations

from typing import Literal

from lure.methods.base import Boundary, Reset
from lure.methods.masks import Mask
from lure.models import Network


class Magnitude(Mask):
    """Re-initialise the lowest-|theta| fraction instead of the lowest |g * theta|."""

    kind: Literal["magnitude"] = "magnitude"

    def forget(self, model: Network, boundary: Boundary) -> Reset:
        tensors = dict(model.named_parameters())
        return self.reset_lowest(model, {n: tensors[n].detach().abs() for n in self.scored(model)}, boundary)
