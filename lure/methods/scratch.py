"""Retrain from scratch: every chunk starts again from the run's initial weights."""

from __future__ import annotations

from typing import Literal

from lure.methods.base import Boundary, Method, Reset
from lure.models import Network


class Scratch(Method):
    """Reload the saved initial weights and buffers (the official LURE code's --use_randinit)."""

    kind: Literal["scratch"] = "scratch"

    def forget(self, model: Network, boundary: Boundary) -> Reset:
        model.load_state_dict(boundary.initial)
        return {name: 1.0 for name, _ in model.named_parameters()}
