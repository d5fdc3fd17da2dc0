"""What a method does to the model when a new chunk arrives, before relearning.

A method is one function `(model, params, ctx) -> reset` that changes the model in place and
returns, per parameter tensor, the share of its old values it forgot: the fraction of its entries
re-initialised (for shrink & perturb, which keeps `shrink` of every entry, 1 - shrink). A method
that also acts while the chunk is relearned sets `ctx.during_training` (continual backprop).
Adding a method is one function here, registered in METHODS, plus a params class in lure.config.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lure.config import (
    ContinualBackpropParams, HeadResetParams, KnowledgeEvolutionParams, LaterLayersParams, LureParams,
    MagnitudeParams, MaskParams, MethodBase, RandomMaskParams, RedoParams, ScratchParams, ShrinkPerturbParams,
    WarmParams,
)
from lure.errors import LureError
from lure.models import Network
from lure.train import Data, as_float
from lure.units import ContinualBackprop, dormancy_scores, recycle, shares, unit_activity


@dataclass
class ForgetContext:
    init_state: dict[str, torch.Tensor]  # the saved initial weights, before chunk 1
    fresh_model: Callable[[], Network]  # a newly drawn model of the same architecture
    replay: Data  # what the new chunk trains on under the replay mode, earlier data first
    chunk: Data  # the new chunk's own training images
    generator: torch.Generator  # for the method's random draws at this chunk
    run_generator: torch.Generator  # the same draws at every chunk of a run (a split fixed for the run)
    momentum: dict[str, torch.Tensor] = field(default_factory=dict)  # carried SGD momentum; a method may clear entries
    state: dict = field(default_factory=dict)  # the method's state from the previous chunk's checkpoint
    during_training: ContinualBackprop | None = None  # set by a method that acts at every update


Reset = dict[str, float]


def warm(model: Network, params: WarmParams, ctx: ForgetContext) -> Reset:
    """Keep every weight: continue from the previous chunk's model."""
    return {}


def scratch(model: Network, params: ScratchParams, ctx: ForgetContext) -> Reset:
    """Reload the saved initial weights (and buffers): retrain from scratch."""
    model.load_state_dict(ctx.init_state)
    return {name: 1.0 for name, _ in model.named_parameters()}


def lure(model: Network, params: LureParams, ctx: ForgetContext) -> Reset:
    """LURE's unlearn step: re-initialise the lowest-SNIP-saliency fraction, keep the rest."""
    source = ctx.replay if params.score_data == "replay" else ctx.chunk
    batches = scoring_batches(source, params.score_batches, params.score_batch_size)
    scores = snip_saliency(model, batches, scored_names(model, params), train_mode=params.score_mode == "train")
    return reset_lowest(model, scores, params, ctx)


def magnitude(model: Network, params: MagnitudeParams, ctx: ForgetContext) -> Reset:
    """Re-initialise the lowest-|theta| fraction (LURE without the data)."""
    tensors = dict(model.named_parameters())
    return reset_lowest(model, {n: tensors[n].detach().abs() for n in scored_names(model, params)}, params, ctx)


def random_mask(model: Network, params: RandomMaskParams, ctx: ForgetContext) -> Reset:
    """Re-initialise a random `fraction`, drawn as LURE's would be: same count, same tensors."""
    tensors = dict(model.named_parameters())
    scores = {n: torch.rand(tensors[n].shape, generator=ctx.generator) for n in scored_names(model, params)}
    return reset_lowest(model, scores, params, ctx)


def shrink_perturb(model: Network, params: ShrinkPerturbParams, ctx: ForgetContext) -> Reset:
    """theta <- shrink * theta + perturb * fresh, for every parameter, one fresh draw each."""
    fresh = dict(ctx.fresh_model().named_parameters()) if params.noise == "module" else {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = fresh[name].to(p) if fresh else kaiming_draw(p.shape, ctx.generator).to(p)
            p.mul_(params.shrink).add_(noise, alpha=params.perturb)
    return {name: 1.0 - params.shrink for name, _ in model.named_parameters()}


def later_layers(model: Network, params: LaterLayersParams, ctx: ForgetContext) -> Reset:
    """Re-initialise every layer from `from_layer` on, the head included."""
    names = list(model.layers)
    if params.from_layer not in names:
        raise LureError(f"from_layer: {params.from_layer!r} is not a layer of this network (its layers: "
                        f"{', '.join(names)})")
    later = names[names.index(params.from_layer):]
    return reset_modules(model, [path for layer in later for path in model.layers[layer]], params.reinit, ctx)


def head_reset(model: Network, params: HeadResetParams, ctx: ForgetContext) -> Reset:
    """Re-initialise the classifier head."""
    return reset_modules(model, model.layers["head"], params.reinit, ctx)


def knowledge_evolution(model: Network, params: KnowledgeEvolutionParams, ctx: ForgetContext) -> Reset:
    """Re-initialise the reset part of every layer, keep the fit part (fixed for the run)."""
    fit = fit_masks(model, params.split, params.split_rate, ctx.run_generator)
    return reinit_where(model, {name: ~keep for name, keep in fit.items()}, params.reinit, ctx)


def redo(model: Network, params: RedoParams, ctx: ForgetContext) -> Reset:
    """Recycle the dormant units: activity at most `tau` of their layer's mean, on a seeded sample
    of the replay data (as ReDo samples its replay buffer)."""
    n = min(len(ctx.replay), params.score_batches * params.score_batch_size)
    sample = ctx.replay.take(torch.randperm(len(ctx.replay), generator=ctx.generator)[:n].to(ctx.replay.y.device))
    activity = unit_activity(model, scoring_batches(sample, params.score_batches, params.score_batch_size))
    touched: dict[str, torch.Tensor] = {}
    for units, active in zip(model.units, activity):
        dormant = (dormancy_scores(active) <= params.tau).nonzero().flatten()
        recycle(model, units, dormant, ctx.generator, ctx.momentum, touched)
    return shares(touched)


def continual_backprop(model: Network, params: ContinualBackpropParams, ctx: ForgetContext) -> Reset:
    """Nothing at the boundary; low-utility units are replaced while the chunk is relearned."""
    ctx.during_training = ContinualBackprop(model, params.replacement_rate, params.maturity, params.decay,
                                            ctx.generator, ctx.state)
    return {}


METHODS: dict[str, Callable[..., Reset]] = {
    "warm": warm, "scratch": scratch, "lure": lure, "magnitude": magnitude, "random_mask": random_mask,
    "shrink_perturb": shrink_perturb, "later_layers": later_layers, "head_reset": head_reset,
    "knowledge_evolution": knowledge_evolution, "redo": redo, "continual_backprop": continual_backprop,
}


def forget(model: Network, params: MethodBase, ctx: ForgetContext) -> Reset:
    return METHODS[params.kind](model, params, ctx)


def reset_shares(model: Network, reset: Reset) -> tuple[float, dict[str, float]]:
    """The share of all parameters reset, and of each of the architecture's layers (entries
    weighted by count), from a method's per-tensor `reset`."""
    sizes = {name: p.numel() for name, p in model.named_parameters()}

    def share(names: list[str]) -> float:
        return sum(reset.get(n, 0.0) * sizes[n] for n in names) / sum(sizes[n] for n in names)

    by_layer = {layer: share([n for n in sizes if n.startswith(tuple(f"{path}." for path in paths))])
                for layer, paths in model.layers.items()}
    return share(list(sizes)), by_layer


# --- building blocks --------------------------------------------------------------------------


def is_weight(name: str) -> bool:
    """Conv, linear and norm-layer scales: what the official code re-initialises."""
    return name.endswith("weight")


def scored_names(model: nn.Module, params: MaskParams) -> list[str]:
    return [name for name, _ in model.named_parameters() if params.score_params == "all" or is_weight(name)]


def scoring_batches(source: Data, batches: int, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first `batches` x `batch_size` images of `source`, in stored order (as the official code)."""
    n = min(len(source), batches * batch_size)
    return list(zip(source.x[:n].split(batch_size), source.y[:n].split(batch_size)))


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


def reset_lowest(model: Network, scores: dict[str, torch.Tensor], params: MaskParams, ctx: ForgetContext) -> Reset:
    """Mark the lowest `fraction` of `scores` globally; re-initialise the marked entries of the
    tensors named `weight` (as the official LURE code: marked biases and BN shifts are kept)."""
    masks = lowest_fraction(scores, params.fraction)
    return reinit_where(model, {name: m for name, m in masks.items() if is_weight(name)}, params.reinit, ctx)


def reinit_where(model: Network, masks: dict[str, torch.Tensor], reinit: str, ctx: ForgetContext) -> Reset:
    """theta <- m * draw + (1 - m) * theta for every tensor with a mask (True: re-initialise);
    draws in parameter order, from kaiming_draw or a freshly built model (`reinit`)."""
    fresh = dict(ctx.fresh_model().named_parameters()) if reinit == "module" else {}
    reset: Reset = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name not in masks:
                continue
            m = masks[name].to(p.device)
            draw = fresh[name].to(p) if fresh else kaiming_draw(p.shape, ctx.generator).to(p)
            p.copy_(torch.where(m, draw, p))
            reset[name] = m.float().mean().item()
    return reset


def reset_modules(model: Network, paths: list[str], reinit: str, ctx: ForgetContext) -> Reset:
    """Re-initialise whole modules. kaiming: their conv and linear weights get kaiming_draw values
    (the official LURE code's later-layer and head resets); module: every parameter and buffer
    takes a freshly built model's value."""
    if reinit == "module":
        fresh = ctx.fresh_model()
        reset: Reset = {}
        for path in paths:
            target, source = model.get_submodule(path), fresh.get_submodule(path)
            target.load_state_dict(source.state_dict())
            reset.update({f"{path}.{name}": 1.0 for name, _ in target.named_parameters()})
        return reset
    masks = {".".join(filter(None, [path, name, "weight"])): torch.ones_like(module.weight, dtype=torch.bool)
             for path in paths for name, module in model.get_submodule(path).named_modules()
             if isinstance(module, (nn.Conv2d, nn.Linear))}  # a path's own module is named ""
    return reinit_where(model, masks, "kaiming", ctx)


def fit_masks(model: Network, split: str, rate: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Knowledge Evolution's fit part of every parameter (True: kept). kels: the first
    ceil(rate * n) output units over the first ceil(rate * n) inputs, except the input image
    channels and the classes, which are not split; wels: each entry kept with probability `rate`."""
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


def kaiming_draw(shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """kaiming_uniform(a=sqrt(5)) as the official code draws it: 1-D tensors are drawn as (n, 1),
    so fan_in = 1 and a BatchNorm scale becomes U(-1, 1)."""
    draw = torch.empty(shape if len(shape) >= 2 else (*shape, 1))
    nn.init.kaiming_uniform_(draw, a=math.sqrt(5), generator=generator)
    return draw.view(shape)
