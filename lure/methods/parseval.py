"""Parseval regularisation (Chung et al., NeurIPS 2024, "Parseval regularization for continual
reinforcement learning"; FIRE's vision/interventions/parseval.py): keep each weight's rows orthogonal."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from lure.methods.base import Boundary, Method, MethodHook
from lure.methods.penalty import Penalty
from lure.models import Network

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)


class Parseval(Method):
    """While a chunk is relearned, the loss plus coefficient x the sum, over every weight W of a
    convolution or linear layer (flattened to (d_out, -1)), of ||W W^T - s I||_F^2, and over every
    normalisation layer's scale gamma, of ||gamma^2 - s||^2 (FIRE's form; biases free)."""

    kind: Literal["parseval"] = "parseval"
    coefficient: float = Field(1e-3, ge=0.0, description="c (FIRE's default 1e-3)")
    scale: float = Field(1.0, gt=0.0, description="s, the target of each row's squared norm (FIRE: 1)")

    def relearning(self, model: Network, boundary: Boundary) -> MethodHook:
        norms = {f"{n}.{p}" for n, m in model.named_modules() if isinstance(m, NORMS) for p, _ in m.named_parameters()}
        weights = [(name in norms, p) for name, p in model.named_parameters() if "weight" in name]

        def term() -> torch.Tensor:
            return self.coefficient * sum(scaler_term(p, self.scale) if is_norm else matrix_term(p, self.scale)
                                          for is_norm, p in weights)

        return Penalty(term)


def matrix_term(weight: torch.Tensor, scale: float) -> torch.Tensor:
    w = weight.reshape(weight.shape[0], -1)
    return torch.norm(w @ w.t() - scale * torch.eye(w.shape[0], device=w.device), p="fro") ** 2


def scaler_term(gamma: torch.Tensor, scale: float) -> torch.Tensor:
    return (gamma ** 2 - scale).norm() ** 2
