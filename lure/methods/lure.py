"""LURE's unlearn step (Ramkumar et al., TMLR 2023): re-initialise the weights of lowest SNIP
saliency and keep the rest. Its defaults reproduce the official code (NeurAI-Lab/LURE); each of
that code's quirks is an option."""

from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from lure.methods.base import Boundary, Reset
from lure.methods.masks import Mask
from lure.models import Network, as_float, first_batches


class Lure(Mask):
    """Re-initialise the lowest-SNIP fraction, s = |theta * sum over batches of |dCE/dtheta||, keep
    the rest."""

    kind: Literal["lure"] = "lure"
    score_data: Literal["replay", "chunk"] = Field(
        "replay", description="replay (official): the first images of the replay set in stored order, i.e. "
                              "chunk 1's under full replay; chunk: the new chunk's (official -snip_no_replay)")
    score_batches: int = Field(1, ge=1, description="batches scored (official: one)")
    score_batch_size: int = Field(100, ge=1, description="images per scored batch (official: 100)")
    score_mode: Literal["eval", "train"] = Field(
        "eval", description="eval (official): BatchNorm uses its running statistics while scoring; train: batch "
                            "statistics (the running statistics are left untouched either way)")
    score_augment: Literal["as_training", "none"] = Field(
        "as_training", description="as_training (official: it scores images of its training set, whose transform "
                                   "augments them): the scored images go through the training's augmentation "
                                   "(train.augment), with draws of their own; none: the stored images")

    def forget(self, model: Network, boundary: Boundary) -> Reset:
        images = boundary.replay if self.score_data == "replay" else boundary.new
        batches = first_batches(images, self.score_batches, self.score_batch_size)
        if self.score_augment == "as_training" and boundary.augment:
            batches = [(boundary.augment(x), y) for x, y in batches]
        scores = snip_saliency(model, batches, self.scored(model), train_mode=self.score_mode == "train")
        return self.reset_lowest(model, scores, boundary)


def snip_saliency(
    model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], names: list[str], train_mode: bool = False
) -> dict[str, torch.Tensor]:
    """SNIP connection sensitivity |g * theta| with g = sum over batches of |dCE/dtheta|.

    Computed on a copy, so neither gradients nor BatchNorm running statistics of `model` change,
    in fp32 and the default memory layout whatever the training used (bf16 autocast,
    channels_last), so that the mask does not depend on them.
    """
    probe = copy.deepcopy(model).train(train_mode).to(memory_format=torch.contiguous_format)
    params = dict(probe.named_parameters())
    tensors = [params[n] for n in names]
    grads = [torch.zeros_like(t) for t in tensors]
    device_type = tensors[0].device.type if tensors else "cpu"
    for x, y in batches:
        # fp32 whatever autocast the caller runs under, for the backward pass too (it follows the
        # caller's), and without cuDNN's TF32 convolutions, which PyTorch allows by default
        with torch.autocast(device_type, enabled=False), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            loss = F.cross_entropy(probe(as_float(x)), y)
            for g, dg in zip(grads, torch.autograd.grad(loss, tensors)):
                g += dg.abs()
    return {n: (g * t.detach()).abs() for n, g, t in zip(names, grads, tensors)}
