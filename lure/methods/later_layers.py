"""Later-layer forgetting (Zhou et al. 2022): re-initialise the layers from one on."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lure.errors import LureError
from lure.methods.base import Boundary, Method, Reset
from lure.methods.reinit import Reinit, reset_modules
from lure.models import Network


class LaterLayers(Method):
    """Re-initialise every layer from `from_layer` on, the head included. Layer names are the
    architecture's (lure.models: small_cnn has layer1-layer3 and head; the ResNets stem,
    layer1-layer4 and head)."""

    kind: Literal["later_layers"] = "later_layers"
    from_layer: str = Field("layer3", description="the first layer reset (official LURE code: all but conv1, "
                            "layer1 and layer2 of a ResNet-18)")
    reinit: Reinit = Field(
        "kaiming", description="kaiming (official LURE code): conv and linear weights drawn from "
                               "kaiming_uniform(a=sqrt(5)), BN and biases kept; unlike that code, which skips "
                               "ResNet shortcut convs by a name filter, those are reset with their layer; module: "
                               "every parameter and BN statistic of those layers as a freshly built model has them")

    def forget(self, model: Network, boundary: Boundary) -> Reset:
        names = list(model.layers)
        if self.from_layer not in names:
            raise LureError(f"from_layer: {self.from_layer!r} is not a layer of this network (its layers: "
                            f"{', '.join(names)})")
        later = names[names.index(self.from_layer):]
        return reset_modules(model, [path for layer in later for path in model.layers[layer]], self.reinit, boundary)
