"""Classifier-head reset (RIFLE, Li et al. 2020)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lure.methods.base import Boundary, Method, Reset
from lure.methods.reinit import Reinit, reset_modules
from lure.models import Network


class HeadReset(Method):
    """Re-initialise the classifier head, the final linear layer (the official LURE code's version
    matches no layer and does nothing)."""

    kind: Literal["head_reset"] = "head_reset"
    reinit: Reinit = Field("module", description="module: weight and bias as a freshly built head has them (RIFLE); "
                           "kaiming: the weight alone drawn from kaiming_uniform(a=sqrt(5)), what the official LURE "
                           "code meant to do")

    def forget(self, model: Network, boundary: Boundary) -> Reset:
        return reset_modules(model, model.layers["head"], self.reinit, boundary)
