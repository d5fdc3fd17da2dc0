"""Shrink & perturb (Ash & Adams 2020): shrink every weight towards zero and add a little noise."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from lure.config import Fraction
from lure.methods.base import Boundary, Method, Reset
from lure.methods.reinit import Reinit, kaiming_draw
from lure.models import Network


class ShrinkPerturb(Method):
    """theta <- shrink * theta + perturb * noise, for every parameter, one fresh draw each. The
    defaults are the LURE code's (0.3, 0.001, kaiming); Ash & Adams' reference code uses shrink 0.4,
    perturb 0.1, noise: module."""

    kind: Literal["shrink_perturb"] = "shrink_perturb"
    shrink: Fraction = Field(0.3, description="share of every weight kept")
    perturb: float = Field(0.001, ge=0.0, description="scale of the noise added")
    noise: Reinit = Field("kaiming", description="kaiming: kaiming_uniform(a=sqrt(5)) draws, 1-D tensors as (n, 1) "
                          "(the LURE code); module: a freshly built model's parameters (Ash & Adams)")

    def forget(self, model: Network, boundary: Boundary) -> Reset:
        fresh = dict(boundary.fresh_model().named_parameters()) if self.noise == "module" else {}
        with torch.no_grad():
            for name, p in model.named_parameters():
                noise = fresh[name].to(p) if fresh else kaiming_draw(p.shape, boundary.generator).to(p)
                p.mul_(self.shrink).add_(noise, alpha=self.perturb)
        return {name: 1.0 - self.shrink for name, _ in model.named_parameters()}
