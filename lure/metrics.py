"""Accuracy over chunks and calibration of a classifier's probabilities.

Calibration uses top-label confidence in B equal-width bins [i/B, (i+1)/B), the last closed,
[(B-1)/B, 1] (Guo et al. (2017) close their bins on the right, ((m-1)/M, m/M]: the two differ only
for a confidence on a bin edge). torchmetrics' MulticlassCalibrationError bins alike but for
a confidence of exactly 1.0 (common in float32 for a saturated model), which it counts in a bin of
its own; the tests compare with it elsewhere and check the saturated case by hand. Written out
here because importing torchmetrics pulls in torchvision: 7 s per stage. All of it runs on the
CPU, where the sums are deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Bins:
    count: torch.Tensor  # images per confidence bin
    confidence: torch.Tensor  # mean confidence in the bin (0 where empty)
    accuracy: torch.Tensor  # accuracy in the bin (0 where empty)


def reliability(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> Bins:
    """Per bin: how many images, their mean confidence, their accuracy (a reliability diagram)."""
    probs, labels = probs.detach().float().cpu(), labels.cpu()
    confidence, predicted = probs.max(1)
    correct = (predicted == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    index = (torch.bucketize(confidence, edges, right=True) - 1).clamp(0, bins - 1)
    count = torch.zeros(bins).index_add_(0, index, torch.ones_like(confidence))
    conf_sum = torch.zeros(bins).index_add_(0, index, confidence)
    acc_sum = torch.zeros(bins).index_add_(0, index, correct)
    nonempty = count.clamp_min(1)
    return Bins(count, conf_sum / nonempty, acc_sum / nonempty)


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE: sum over bins of (bin size / N) * |accuracy - mean confidence|."""
    b = reliability(probs, labels, bins)
    return ((b.count * (b.accuracy - b.confidence).abs()).sum() / b.count.sum()).item()


def maximum_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """MCE: the largest |accuracy - mean confidence| over the non-empty bins."""
    b = reliability(probs, labels, bins)
    return (b.accuracy - b.confidence).abs()[b.count > 0].max().item()


def calibration(logits: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> dict[str, float]:
    """Accuracy, ECE, MCE, NLL (mean cross-entropy) and Brier score (mean over images of the
    squared distance between the probability vector and the one-hot label, summed over classes)."""
    logits, labels = logits.detach().float().cpu(), labels.cpu()
    probs = logits.softmax(1)
    onehot = F.one_hot(labels, probs.shape[1]).float()
    return {
        "acc": (probs.argmax(1) == labels).float().mean().item(),
        "ece": expected_calibration_error(probs, labels, bins),
        "mce": maximum_calibration_error(probs, labels, bins),
        "nll": F.cross_entropy(logits, labels).item(),
        "brier": ((probs - onehot) ** 2).sum(1).mean().item(),
    }


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Temperature scaling (Guo et al. 2017): the T in [0.05, 20] minimising the NLL of logits / T."""
    from scipy.optimize import minimize_scalar

    logits, labels = logits.detach().float().cpu(), labels.cpu()
    result = minimize_scalar(lambda log_t: F.cross_entropy(logits / math.exp(log_t), labels).item(),
                             bounds=(math.log(0.05), math.log(20)), method="bounded", options={"xatol": 1e-4})
    return math.exp(result.x)


def anytime_summary(test_acc: list[float], test_errors: list[int]) -> dict[str, float]:
    """Over the chunk sequence: final accuracy, anytime accuracy (mean of the accuracy after every
    chunk) and CER, the cumulative error rate as the official LURE code counts it: the sum over
    chunks of the test images each chunk's final model gets wrong."""
    return {
        "final_acc": test_acc[-1],
        "anytime_acc": sum(test_acc) / len(test_acc),
        "cer": int(sum(test_errors)),
    }
