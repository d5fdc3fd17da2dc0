"""Accuracy over chunks and calibration of a classifier's probabilities."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """Top-label ECE with `bins` equal-width confidence bins [i/B, (i+1)/B) (confidence 1.0 goes
    in the last): sum over bins of (bin size / N) * |accuracy - mean confidence|.
    Same binning as torchmetrics' MulticlassCalibrationError(norm="l1")."""
    confidence, predicted = probs.max(1)
    correct = (predicted == labels).float()
    edges = torch.linspace(0, 1, bins + 1, device=probs.device)
    index = (torch.bucketize(confidence, edges, right=True) - 1).clamp(0, bins - 1)
    count = torch.zeros(bins, device=probs.device).index_add_(0, index, torch.ones_like(confidence))
    conf_sum = torch.zeros(bins, device=probs.device).index_add_(0, index, confidence)
    acc_sum = torch.zeros(bins, device=probs.device).index_add_(0, index, correct)
    return ((acc_sum - conf_sum).abs().sum() / len(labels)).item()


def calibration(logits: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> dict[str, float]:
    """Accuracy, ECE, NLL (mean cross-entropy) and Brier score (mean over images of the squared
    distance between the probability vector and the one-hot label, summed over classes).
    Computed on the CPU, where the binning sums are deterministic."""
    logits, labels = logits.detach().float().cpu(), labels.cpu()
    probs = logits.softmax(1)
    onehot = F.one_hot(labels, probs.shape[1]).float()
    return {
        "acc": (probs.argmax(1) == labels).float().mean().item(),
        "ece": expected_calibration_error(probs, labels, bins),
        "nll": F.cross_entropy(logits, labels).item(),
        "brier": ((probs - onehot) ** 2).sum(1).mean().item(),
    }


def anytime_summary(test_acc: list[float], test_errors: list[int]) -> dict[str, float]:
    """Over the chunk sequence: final accuracy, anytime accuracy (mean of the accuracy after every
    chunk) and CER, the cumulative error rate as the official LURE code counts it: the sum over
    chunks of the test images each chunk's final model gets wrong."""
    return {
        "final_acc": test_acc[-1],
        "anytime_acc": sum(test_acc) / len(test_acc),
        "cer": int(sum(test_errors)),
    }
