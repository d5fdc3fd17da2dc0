"""Knowledge Evolution (Taha et al. 2021): every layer split once into a fit part, kept, and a reset
part, re-initialised at every chunk."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from lure.methods.base import Boundary, Method, Reset
from lure.methods.reinit import Reinit, reinit_where
from lure.models import Network


class KnowledgeEvolution(Method):
    """Keep every layer's fit part, re-initialise its reset part; the split is drawn once per run
    (run seed and method) and is the same at every chunk."""

    kind: Literal["knowledge_evolution"] = "knowledge_evolution"
    split: Literal["kels", "wels"] = Field(
        "kels", description="kels: the fit part is the first ceil(rate * C_out) filters over the first "
                            "ceil(rate * C_in) input channels (the image channels and the classes are not split); "
                            "wels: each weight kept with probability split_rate")
    split_rate: float = Field(0.5, gt=0.0, le=1.0, description="the share that the fit part keeps")
    reinit: Reinit = Field("module", description="module (KE): the reset part takes a freshly built model's "
                           "values; kaiming: kaiming_uniform(a=sqrt(5)) draws")

    def forget(self, model: Network, boundary: Boundary) -> Reset:
        fit = fit_masks(model, self.split, self.split_rate, boundary.run_generator)
        return reinit_where(model, {name: ~keep for name, keep in fit.items()}, self.reinit, boundary)


def fit_masks(model: Network, split: str, rate: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The fit part of every parameter (True: kept). kels: the first ceil(rate * n) output units
    over the first ceil(rate * n) inputs, except the input image channels and the classes, which
    are not split; wels: each entry kept with probability `rate`."""
    masks = {}
    first_layer = next(name for name, p in model.named_parameters() if p.dim() >= 2)
    for name, p in model.named_parameters():
        if split == "wels":
            masks[name] = torch.rand(p.shape, generator=generator) < rate
            continue
        keep = torch.zeros(p.shape, dtype=torch.bool)
        outputs = p.shape[0] if name.startswith("head.") else math.ceil(rate * p.shape[0])
        if p.dim() == 1:
            keep[:outputs] = True
        else:
            inputs = p.shape[1] if name == first_layer else math.ceil(rate * p.shape[1])
            keep[:outputs, :inputs] = True
        masks[name] = keep
    return masks
