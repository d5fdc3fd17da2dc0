"""Stability-gap mitigations that any method can switch on (Harun & Kanan 2023, "SGM"):
dynamic soft targets and a data-driven classifier head. (A fresh optimizer and LR warm-up live
in lure.train.)"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
        self.sums.index_add_(0, labels, probs * correct[:, None])
        self.counts.index_add_(0, labels, correct)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Soft cross-entropy to the targets of the accumulator's state, then accumulate the batch."""
        target = self.targets(logits.detach(), labels)
        self.update(logits, labels)
        return -(target * F.log_softmax(logits.float(), 1)).sum(1).mean()


@torch.no_grad()
def class_mean_head(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> list[int]:
    """Set head row c to the mean of the L2-normalised penultimate features of class c's images
    (uint8, no augmentation) and its bias to 0; rows of absent classes are kept.
    Returns the classes set."""
    was_training = model.training
    model.eval()
    features = torch.cat([F.normalize(model.body(model.normalize(part.float() / 255)), dim=1)
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
