"""L2 Init (Kumar, Marklund and Van Roy, "Maintaining plasticity in continual learning via
regenerative regularization", 2023): pull the weights towards their initial values."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from lure.methods.base import Boundary, Method, MethodHook
from lure.methods.penalty import Penalty
from lure.models import Network


class L2Init(Method):
    """While a chunk is relearned, the loss plus coefficient x ||theta - theta_0||^2, theta_0 the
    run's initial weights (before chunk 1), over every parameter: the paper's form, and FIRE's with
    its coefficient halved. (DASH's code squares the sum of the layers' norms of their weights,
    BatchNorm's scales included and biases left out: another penalty.)"""

    kind: Literal["l2_init"] = "l2_init"
    coefficient: float = Field(1e-2, ge=0.0, description="lambda (DASH's code: 1e-2; FIRE's runs: coef / 2 with "
                               "coef 1e-5 to 1e-4)")

    def relearning(self, model: Network, boundary: Boundary) -> MethodHook:
        pairs = [(p, boundary.initial[name]) for name, p in model.named_parameters()]

        def term() -> torch.Tensor:
            return self.coefficient * sum(((p - p0) ** 2).sum() for p, p0 in pairs)

        return Penalty(term)
