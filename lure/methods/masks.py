"""Re-initialising the lowest-scoring fraction of the weights over one global threshold: LURE's
mechanism, shared by its ablations, which differ in the score only (lure: SNIP |g * theta|;
magnitude: |theta|; random_mask: at random)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from lure.config import Fraction
from lure.methods.base import Boundary, Method, Reset
from lure.methods.reinit import Reinit, reinit_where
from lure.models import Network


class Mask(Method):
    fraction: Fraction = Field(0.2, description="the lowest-scoring fraction of the scored parameters, over one "
                               "global threshold (official: snip_size 0.2)")
    score_params: Literal["all", "weights"] = Field(
        "all", description="all (official): every parameter competes for the threshold, BN scales and shifts and "
                           "biases included, but only tensors named `weight` are reset, so slightly less than "
                           "`fraction` is reset; weights: only `weight` tensors are scored, and exactly `fraction` "
                           "of them is reset")
    reinit: Reinit = Field(
        "kaiming", description="kaiming (official): theta <- m * theta + (1 - m) * r, r ~ kaiming_uniform(a=sqrt(5)) "
                               "with 1-D tensors drawn as (n, 1), so a reset BN scale becomes U(-1, 1); module: the "
                               "value a freshly built model has (BN scale 1)")
    ties: Literal["count", "threshold"] = Field(
        "count", description="count: exactly int(fraction x scored) entries are marked, ties at the threshold "
                             "broken by position; threshold (official): every entry at or below the threshold (the "
                             "int(fraction x scored)-th lowest score), so more than that whenever the threshold "
                             "score is tied with higher-ranked ones (e.g. zeros of an untrained network)")

    def scored(self, model: Network) -> list[str]:
        """The parameters that compete for the threshold."""
        return [name for name, _ in model.named_parameters() if self.score_params == "all" or is_weight(name)]

    def reset_lowest(self, model: Network, scores: dict[str, torch.Tensor], boundary: Boundary) -> Reset:
        """Mark the lowest `fraction` of `scores` globally; re-initialise the marked entries of the
        tensors named `weight` (as the official LURE code: marked biases and BN shifts are kept)."""
        masks = lowest_fraction(scores, self.fraction, self.ties)
        return reinit_where(model, {name: m for name, m in masks.items() if is_weight(name)}, self.reinit, boundary)


def is_weight(name: str) -> bool:
    """Conv, linear and norm-layer scales: what the official code re-initialises."""
    return name.endswith("weight")


def lowest_fraction(scores: dict[str, torch.Tensor], fraction: float, ties: str = "count") -> dict[str, torch.Tensor]:
    """Boolean masks marking the int(fraction * total) lowest scores over all tensors at once
    (one global threshold). Ties at the threshold: `count` breaks them by position, so the count
    is exact; `threshold` marks every score at or below it, as the official code does."""
    flat = torch.cat([s.flatten() for s in scores.values()])
    k = int(fraction * flat.numel())  # the official kthvalue(int(sparsity * total))
    order = torch.sort(flat, stable=True)
    if ties == "threshold" and k:
        marked = flat <= order.values[k - 1]
    else:
        marked = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
        marked[order.indices[:k]] = True
    masks, start = {}, 0
    for name, s in scores.items():
        masks[name] = marked[start : start + s.numel()].view_as(s)
        start += s.numel()
    return masks
