"""Drawing fresh values for the weights a method resets: shared by the methods that re-initialise."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from lure.methods.base import Boundary, Reset
from lure.models import Network

Reinit = Literal["kaiming", "module"]


def kaiming_draw(shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """kaiming_uniform(a=sqrt(5)) as the official LURE code draws it: 1-D tensors are drawn as
    (n, 1), so fan_in = 1 and a BatchNorm scale becomes U(-1, 1)."""
    draw = torch.empty(shape if len(shape) >= 2 else (*shape, 1))
    nn.init.kaiming_uniform_(draw, a=math.sqrt(5), generator=generator)
    return draw.view(shape)


def reinit_where(model: Network, masks: dict[str, torch.Tensor], reinit: Reinit, boundary: Boundary) -> Reset:
    """theta <- m * draw + (1 - m) * theta for every tensor with a mask (True: re-initialise);
    draws in parameter order, from kaiming_draw or a freshly built model (`reinit`)."""
    fresh = dict(boundary.fresh_model().named_parameters()) if reinit == "module" else {}
    reset: Reset = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name not in masks:
                continue
            m = masks[name].to(p.device)
            draw = fresh[name].to(p) if fresh else kaiming_draw(p.shape, boundary.generator).to(p)
            p.copy_(torch.where(m, draw, p))
            reset[name] = m.float().mean().item()
    return reset


def reset_modules(model: Network, paths: list[str], reinit: Reinit, boundary: Boundary) -> Reset:
    """Re-initialise whole modules. kaiming: their conv and linear weights get kaiming_draw values
    (the official LURE code's later-layer and head resets); module: every parameter and buffer
    takes a freshly built model's value."""
    if reinit == "module":
        fresh = boundary.fresh_model()
        reset: Reset = {}
        for path in paths:
            target, source = model.get_submodule(path), fresh.get_submodule(path)
            target.load_state_dict(source.state_dict())
            reset.update({f"{path}.{name}": 1.0 for name, _ in target.named_parameters()})
        return reset
    masks = {".".join(filter(None, [path, name, "weight"])): torch.ones_like(module.weight, dtype=torch.bool)
             for path in paths for name, module in model.get_submodule(path).named_modules()
             if isinstance(module, (nn.Conv2d, nn.Linear))}  # a path's own module is named ""
    return reinit_where(model, masks, "kaiming", boundary)
