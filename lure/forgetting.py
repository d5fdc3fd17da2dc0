"""What a method does to the model when a new chunk arrives, before relearning.

A method is one function `(model, params, ctx) -> reset` that changes the model in place and
returns, per parameter tensor, the fraction of its entries it re-initialised. Adding a method is
one function here, registered in METHODS, plus a params section class in lure.config.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lure.config import LureParams, ScratchParams, WarmParams
from lure.train import Data, as_float


@dataclass
class ForgetContext:
    init_state: dict[str, torch.Tensor]  # the saved initial weights, before chunk 1
    fresh_model: Callable[[], nn.Module]  # a newly drawn model of the same architecture
    replay: Data  # what the new chunk trains on under the replay mode, earlier data first
    chunk: Data  # the new chunk's own training images
    generator: torch.Generator  # for every random draw the method makes


Reset = dict[str, float]


def warm(model: nn.Module, params: WarmParams, ctx: ForgetContext) -> Reset:
    """Keep every weight: continue from the previous chunk's model."""
    return {}


def scratch(model: nn.Module, params: ScratchParams, ctx: ForgetContext) -> Reset:
    """Reload the saved initial weights (and buffers): retrain from scratch."""
    model.load_state_dict(ctx.init_state)
    return {name: 1.0 for name, _ in model.named_parameters()}


def lure(model: nn.Module, params: LureParams, ctx: ForgetContext) -> Reset:
    """LURE's unlearn step: re-initialise the lowest-SNIP-saliency fraction, keep the rest."""
    source = ctx.replay if params.score_data == "replay" else ctx.chunk
    n = min(len(source), params.score_batches * params.score_batch_size)
    batches = list(zip(source.x[:n].split(params.score_batch_size), source.y[:n].split(params.score_batch_size)))
    scored = [name for name, _ in model.named_parameters() if params.score_params == "all" or is_weight(name)]
    scores = snip_saliency(model, batches, scored, train_mode=params.score_mode == "train")
    mask = lowest_fraction(scores, params.fraction)
    fresh = dict(ctx.fresh_model().named_parameters()) if params.reinit == "module" else {}
    reset: Reset = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name not in mask or not is_weight(name):  # official: only `weight` tensors are reset
                continue
            m = mask[name]
            draw = fresh[name].to(p) if fresh else kaiming_draw(p.shape, ctx.generator).to(p)
            p.copy_(torch.where(m, draw, p))
            reset[name] = m.float().mean().item()
    return reset


METHODS: dict[str, Callable[..., Reset]] = {"warm": warm, "scratch": scratch, "lure": lure}


def forget(model: nn.Module, params: WarmParams | ScratchParams | LureParams, ctx: ForgetContext) -> Reset:
    return METHODS[params.kind](model, params, ctx)


# --- building blocks --------------------------------------------------------------------------


def is_weight(name: str) -> bool:
    """Conv, linear and norm-layer scales: what the official code re-initialises."""
    return name.endswith("weight")


def snip_saliency(
    model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], names: list[str], train_mode: bool = False
) -> dict[str, torch.Tensor]:
    """SNIP connection sensitivity |g * theta| with g = sum over batches of |dCE/dtheta|.

    Computed on a copy, so neither gradients nor BatchNorm running statistics of `model` change.
    """
    probe = copy.deepcopy(model).train(train_mode)
    params = dict(probe.named_parameters())
    tensors = [params[n] for n in names]
    grads = [torch.zeros_like(t) for t in tensors]
    for x, y in batches:
        loss = F.cross_entropy(probe(as_float(x)), y)
        for g, dg in zip(grads, torch.autograd.grad(loss, tensors)):
            g += dg.abs()
    return {n: (g * t.detach()).abs() for n, g, t in zip(names, grads, tensors)}


def lowest_fraction(scores: dict[str, torch.Tensor], fraction: float) -> dict[str, torch.Tensor]:
    """Boolean masks marking the round(fraction * total) lowest scores over all tensors at once
    (one global threshold); ties are broken by position, so the count is exact."""
    flat = torch.cat([s.flatten() for s in scores.values()])
    k = round(fraction * flat.numel())
    marked = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    marked[torch.sort(flat, stable=True).indices[:k]] = True
    masks, start = {}, 0
    for name, s in scores.items():
        masks[name] = marked[start : start + s.numel()].view_as(s)
        start += s.numel()
    return masks


def kaiming_draw(shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """kaiming_uniform(a=sqrt(5)) as the official code draws it: 1-D tensors are drawn as (n, 1),
    so fan_in = 1 and a BatchNorm scale becomes U(-1, 1)."""
    draw = torch.empty(shape if len(shape) >= 2 else (*shape, 1))
    nn.init.kaiming_uniform_(draw, a=math.sqrt(5), generator=generator)
    return draw.view(shape)
