"""Stability-gap mitigations that any method can switch on (Harun & Kanan 2023, "SGM"): a
classifier head set from class means where the method reset the head, right after it forgets
(`at_boundary`), then hooks of the training loop: dynamic soft targets, a fresh optimizer, an LR
warm-up."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from lure import distributed
from lure.config import Fraction, Strict
from lure.device import world_size
from lure.images import Images
from lure.models import as_float
from lure.train import Hook, Trainer


class Mitigations(Strict):
    """Stability-gap mitigations, options of every method: e.g. mitigate: {soft_targets: true,
    fresh_optimizer: true, warmup: 0.3, head_init: class_means}."""

    soft_targets: bool = Field(False, description="SGM's dynamic soft targets instead of one-hot labels")
    fresh_optimizer: bool = Field(False, description="start each chunk with a new optimiser (zero momentum, or "
                                  "Adam's moments and steps from 0) instead of the state carried over, as the "
                                  "official LURE code carries it")
    warmup: Fraction = Field(0.0, description="a linear LR warm-up over this fraction of the chunk's updates")
    head_init: Literal["random", "class_means"] = Field(
        "random", description="class_means: when the method resets the whole head (as scratch does), row c "
                              "becomes the mean of the L2-normalised penultimate features of class c's training "
                              "images (no augmentation), bias 0")

    def at_boundary(self, model: torch.nn.Module, reset: dict[str, float], train: Images) -> None:
        """Right after the method forgets: a class-mean head where it reset the whole head."""
        if self.head_init == "class_means" and reset.get("head.weight") == 1.0:
            class_mean_head(model, train.x, train.y)

    def hooks(self) -> list[Hook]:
        """The hooks of the training loop these settings ask for."""
        hooks: list[Hook] = []
        if self.fresh_optimizer:
            hooks.append(FreshOptimizer())
        if self.soft_targets:
            hooks.append(SoftTargetsLoss())
        if self.warmup:
            hooks.append(Warmup(self.warmup))
        return hooks


class FreshOptimizer(Hook):
    def before_fit(self, trainer: Trainer) -> None:
        trainer.optimizer.reset()


class Warmup(Hook):
    """LR ramps linearly from lr / n to lr over the first n updates of the chunk."""

    def __init__(self, fraction: float) -> None:
        self.fraction, self.updates = fraction, 0

    def before_fit(self, trainer: Trainer) -> None:
        self.updates = round(self.fraction * trainer.settings.epochs * trainer.epoch_updates)

    def before_step(self, trainer: Trainer) -> None:
        if trainer.updates < self.updates:
            trainer.optimizer.lr = trainer.lr * (trainer.updates + 1) / self.updates


class SoftTargetsLoss(Hook):
    def before_fit(self, trainer: Trainer) -> None:
        device = next(trainer.model.parameters()).device
        trainer.loss = SoftTargets(trainer.model.head.out_features, device).loss


class SoftTargets:
    """Dynamic soft targets. Per class, a running mean of the softmax vectors of the correctly
    classified training images seen so far in this chunk. The target of an image of class y is
    that row (uniform while the class has none), with the entry of a wrong prediction set to 1/C
    and the entry y set to 1, renormalised. The loss is the cross-entropy to that target."""

    def __init__(self, num_classes: int, device: torch.device) -> None:
        self.sums = torch.zeros(num_classes, num_classes, device=device)
        self.counts = torch.zeros(num_classes, device=device)

    def targets(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        c = self.sums.shape[0]
        means = torch.where(self.counts[:, None] > 0, self.sums / self.counts.clamp_min(1)[:, None], 1.0 / c)
        target = means[labels].clone()
        predicted = logits.argmax(1)
        wrong = predicted != labels
        rows = torch.arange(len(labels), device=labels.device)
        target[rows, predicted] = torch.where(wrong, torch.full_like(target[rows, predicted], 1.0 / c),
                                              target[rows, predicted])
        target[rows, labels] = 1.0
        return target / target.sum(1, keepdim=True)

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        probs = logits.detach().float().softmax(1)
        correct = (probs.argmax(1) == labels).float()
        if world_size() == 1:  # into the sums directly: one process's results stay as they were
            self.sums.index_add_(0, labels, probs * correct[:, None])
            self.counts.index_add_(0, labels, correct)
            return
        # under DDP, the whole batch's, summed over the ranks' slices: every rank keeps the same targets
        batch = torch.zeros(*self.sums.shape[:1], self.sums.shape[1] + 1, device=self.sums.device)
        batch.index_add_(0, labels, torch.cat([probs * correct[:, None], correct[:, None]], 1))
        distributed.all_sum(batch)
        self.sums += batch[:, :-1]
        self.counts += batch[:, -1]

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Soft cross-entropy to the targets of the accumulator's state, then accumulate the batch."""
        target = self.targets(logits.detach(), labels)
        self.update(logits, labels)
        return -(target * F.log_softmax(logits.float(), 1)).sum(1).mean()


@torch.no_grad()
def class_mean_head(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> list[int]:
    """Set head row c to the mean of the L2-normalised penultimate features of class c's images
    (uint8, no augmentation) and its bias to 0; rows of absent classes are kept.
    Returns the classes set."""
    was_training = model.training
    model.eval()
    features = torch.cat([F.normalize(model.body(model.normalize(as_float(part))), dim=1)
                          for part in x.split(batch_size)])
    model.train(was_training)
    head = model.head
    present = torch.unique(y)
    sums = torch.zeros(head.out_features, features.shape[1], device=features.device).index_add_(0, y, features)
    counts = torch.bincount(y, minlength=head.out_features).float()
    head.weight[present] = (sums[present] / counts[present, None]).to(head.weight.dtype)
    if head.bias is not None:
        head.bias[present] = 0.0
    return present.tolist()
