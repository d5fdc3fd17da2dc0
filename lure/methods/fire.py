"""FIRE (ICLR 2026; isaac7778/FIRE, vision/interventions/fire.py): orthogonalise every weight when a
chunk arrives."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from lure.methods.base import Boundary, Method, Reset
from lure.models import Network


class Fire(Method):
    """Every convolution's and linear layer's weight (the head's and the shortcuts' included)
    replaced by its Newton-Schulz orthogonalisation, kernel position by kernel position, times
    sqrt(d_out / d_in) / kernel area; biases and BatchNorm kept. Reports per weight the relative
    change ||W' - W|| / ||W||, at most 1."""

    kind: Literal["fire"] = "fire"
    iterations: int = Field(10, ge=1, description="Newton-Schulz iterations (the authors' 10)")

    def forget(self, model: Network, boundary: Boundary) -> Reset:
        reset = {}
        with torch.no_grad():
            for name, module in model.named_modules():
                if isinstance(module, (nn.Linear, nn.Conv2d)):
                    weight = module.weight
                    new = orthogonalised(weight, self.iterations)
                    reset[f"{name}.weight"] = min(1.0, float((new - weight).norm() / weight.norm()))
                    weight.copy_(new)
        return reset


def orthogonalised(weight: torch.Tensor, iterations: int) -> torch.Tensor:
    """FIRE's map of a weight: each (d_out, d_in) slice (one per kernel position of a convolution)
    through `newton_schulz`, then the whole times sqrt(d_out / d_in) / kernel area."""
    if weight.ndim == 4:
        out = torch.zeros_like(weight)
        for i in range(weight.shape[2]):
            for j in range(weight.shape[3]):
                out[:, :, i, j] = newton_schulz(weight[:, :, i, j], iterations)
        area = weight.shape[2] * weight.shape[3]
    else:
        out, area = newton_schulz(weight, iterations), 1.0
    return out * (math.sqrt(weight.shape[0] / weight.shape[1]) / area)


def newton_schulz(matrix: torch.Tensor, iterations: int) -> torch.Tensor:
    """X <- 1.5 X - 0.5 X X^T X from X = M / ||M||_F (on M^T where M is wider than tall): towards
    the orthogonal factor of M's polar decomposition, for singular values of M / ||M|| not too small."""
    x = matrix.T if matrix.shape[1] > matrix.shape[0] else matrix
    x = x / x.norm()
    for _ in range(iterations):
        x = 1.5 * x + -0.5 * x @ (x.T @ x)
    return x.T if matrix.shape[1] > matrix.shape[0] else x
