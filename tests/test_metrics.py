"""Calibration and anytime metrics against hand-checked values and reference libraries."""

import numpy as np
import pytest
import torch

from lure.metrics import anytime_summary, calibration, expected_calibration_error


def test_ece_on_a_hand_checked_example():
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    labels = torch.tensor([0, 1, 0, 1])
    # 15 bins. Confidence 0.9 (one right, one wrong) -> bin [0.867, 0.933): |0.5 - 0.9| * 2/4 = 0.2.
    # Confidence 0.6 (both right) -> bin [0.6, 0.667): |1.0 - 0.6| * 2/4 = 0.2.
    assert expected_calibration_error(probs, labels, bins=15) == pytest.approx(0.4)


def test_ece_is_zero_when_confidence_equals_accuracy():
    probs = torch.tensor([[0.75, 0.25]] * 4)
    labels = torch.tensor([0, 0, 0, 1])
    assert expected_calibration_error(probs, labels, bins=15) == pytest.approx(0.0, abs=1e-7)


def test_ece_matches_torchmetrics():
    from torchmetrics.functional.classification import multiclass_calibration_error

    torch.manual_seed(0)
    logits = torch.randn(500, 10) * 3
    labels = torch.randint(0, 10, (500,))
    probs = logits.softmax(1)
    for bins in [1, 10, 15]:
        expected = multiclass_calibration_error(probs, labels, num_classes=10, n_bins=bins, norm="l1").item()
        assert expected_calibration_error(probs, labels, bins) == pytest.approx(expected, abs=1e-6)


def test_nll_and_brier_match_scikit_learn():
    from sklearn.metrics import brier_score_loss, log_loss

    torch.manual_seed(1)
    logits = torch.randn(300, 4)
    labels = torch.randint(0, 4, (300,))
    m = calibration(logits, labels)
    probs = logits.softmax(1).numpy().astype(np.float64)
    probs /= probs.sum(1, keepdims=True)
    assert m["nll"] == pytest.approx(log_loss(labels.numpy(), probs, labels=range(4)), rel=1e-5)
    # sklearn's multiclass Brier: mean over samples of the summed squared error over classes.
    assert m["brier"] == pytest.approx(brier_score_loss(labels.numpy(), probs, labels=range(4)), rel=1e-5)
    assert m["acc"] == pytest.approx((logits.argmax(1) == labels).float().mean().item())


def test_brier_and_nll_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]))
    labels = torch.tensor([0, 2])
    m = calibration(logits, labels)
    brier = ((0.5**2 + 0.25**2 + 0.25**2) + (0.1**2 + 0.8**2 + 0.9**2)) / 2
    assert m["brier"] == pytest.approx(brier, rel=1e-6)
    assert m["nll"] == pytest.approx(-(np.log(0.5) + np.log(0.1)) / 2, rel=1e-6)


def test_anytime_summary():
    s = anytime_summary([0.5, 0.7, 0.9], [50, 30, 10])
    assert s == {"final_acc": 0.9, "anytime_acc": pytest.approx(0.7), "cer": 90}


def test_mce_and_reliability_bins_by_hand():
    from lure.metrics import maximum_calibration_error, reliability

    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6], [0.3, 0.7]])
    labels = torch.tensor([0, 1, 0, 1, 0])
    # Bins of width 0.2 (5 bins): 0.9 -> [0.8, 1.0): acc 1/2, conf 0.9 -> gap 0.4;
    # 0.6 -> [0.6, 0.8): 0.6 right, 0.6 right, 0.7 wrong: acc 2/3, conf 0.6333 -> gap 0.0333.
    b = reliability(probs, labels, bins=5)
    assert b.count.tolist() == [0, 0, 0, 3, 2]
    assert b.accuracy[4].item() == pytest.approx(0.5) and b.confidence[4].item() == pytest.approx(0.9)
    assert b.accuracy[3].item() == pytest.approx(2 / 3) and b.confidence[3].item() == pytest.approx(1.9 / 3)
    assert maximum_calibration_error(probs, labels, bins=5) == pytest.approx(0.4)
    assert expected_calibration_error(probs, labels, bins=5) == pytest.approx((2 * 0.4 + 3 * (2 / 3 - 1.9 / 3)) / 5)


def test_mce_matches_torchmetrics():
    from torchmetrics.functional.classification import multiclass_calibration_error

    from lure.metrics import maximum_calibration_error

    torch.manual_seed(2)
    probs = (torch.randn(400, 5) * 2).softmax(1)
    labels = torch.randint(0, 5, (400,))
    expected = multiclass_calibration_error(probs, labels, num_classes=5, n_bins=15, norm="max").item()
    assert maximum_calibration_error(probs, labels, 15) == pytest.approx(expected, abs=1e-6)


def test_temperature_scaling_recovers_a_known_temperature():
    from lure.metrics import fit_temperature

    torch.manual_seed(3)
    true_logits = torch.randn(20000, 10) * 2
    labels = torch.distributions.Categorical(logits=true_logits).sample()  # calibrated at T = 1
    assert fit_temperature(true_logits * 2.5, labels) == pytest.approx(2.5, rel=0.05)  # over-confident by 2.5
    overconfident = calibration(true_logits * 2.5, labels)["ece"]
    temperature = fit_temperature(true_logits * 2.5, labels)
    rescaled = expected_calibration_error((true_logits * 2.5 / temperature).softmax(1), labels)
    assert rescaled < overconfident / 3


def test_a_confidence_of_one_is_binned_in_the_last_bin_unlike_torchmetrics():
    from torchmetrics.functional.classification import multiclass_calibration_error

    # Two saturated images (confidence exactly 1.0, one right, one wrong) and two at 0.95 (both right),
    # in 10 bins: the last bin [0.9, 1] holds all four, accuracy 0.75, mean confidence 0.975.
    probs = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.95, 0.05], [0.95, 0.05]])
    labels = torch.tensor([0, 1, 0, 0])
    assert expected_calibration_error(probs, labels, bins=10) == pytest.approx(0.975 - 0.75)
    # torchmetrics counts the 1.0s apart: |0.5 - 1| * 2/4 + |1 - 0.95| * 2/4
    theirs = multiclass_calibration_error(probs, labels, num_classes=2, n_bins=10, norm="l1").item()
    assert theirs == pytest.approx(0.5 * 0.5 + 0.05 * 0.5)
