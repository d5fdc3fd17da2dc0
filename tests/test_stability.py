"""The stability gap: its metrics on hand-made curves, and the mitigations against their definitions."""

import numpy as np
import pytest
import torch

from lure import streams
from lure.chunks import class_chunk_indices
from lure.config import DigitsData, TrainSettings, parse_params
from lure.errors import LureError
from lure.images import Images
from lure.methods import load_method
from lure.methods.mitigations import SoftTargets, Warmup, class_mean_head
from lure.models import small_cnn
from lure.sources import load_source
from lure.stability import Curves, gap_metrics, stability_summary
from lure.train import Hook, fit


def curves_of(steps, chunks: dict[int, list[float]], new: list[float]) -> Curves:
    curves = Curves()
    for i, step in enumerate(steps):
        per_chunk = {c: accs[i] for c, accs in chunks.items()}
        curves.add(step, per_chunk, old=sum(per_chunk.values()) / len(per_chunk), new=new[i])
    return curves


def test_gap_depth_minimum_and_recovery_step():
    # Before forgetting 0.9; the reset drops it to 0.5 (step 0), the minimum 0.3 comes at step 10,
    # and accuracy is back at 0.9 at step 30.
    curves = curves_of([0, 0, 10, 20, 30, 40], {1: [0.9, 0.5, 0.3, 0.6, 0.9, 0.95]}, [0.1, 0.1, 0.4, 0.7, 0.8, 0.85])
    m = gap_metrics(curves, k=2)
    assert m["acc_before"] == 0.9 and m["min_old"] == 0.3 and m["gap_depth"] == pytest.approx(0.6)
    assert m["recovered"] == 1 and m["recovery_updates"] == 30
    assert m["min_acc"] == 0.3
    assert m["wc_acc"] == pytest.approx(0.85 / 2 + 0.5 * 0.3)
    assert m["sgm_gap"] == pytest.approx(1 - np.mean([0.5, 0.3, 0.6, 0.9, 0.95]) / 0.9)


def test_never_recovers():
    curves = curves_of([0, 0, 10, 20], {1: [0.8, 0.8, 0.4, 0.7]}, [0.0, 0.0, 0.5, 0.9])
    m = gap_metrics(curves, k=2)
    assert m["recovered"] == 0 and "recovery_updates" not in m and m["gap_depth"] == pytest.approx(0.4)


def test_no_drop_means_no_gap_and_immediate_recovery():
    curves = curves_of([0, 0, 10], {1: [0.7, 0.7, 0.8]}, [0.2, 0.2, 0.6])
    m = gap_metrics(curves, k=2)
    assert m["gap_depth"] == 0.0 and m["recovered"] == 1 and m["recovery_updates"] == 0


def test_min_acc_averages_the_minimum_of_each_earlier_chunk():
    # Chunk 1 bottoms at 0.2, chunk 2 at 0.6: min-ACC 0.4; WC-ACC at chunk 3 = 0.9/3 + 2/3 * 0.4.
    curves = curves_of([0, 0, 10, 20], {1: [0.9, 0.8, 0.2, 0.7], 2: [0.95, 0.9, 0.8, 0.6]}, [0.1, 0.1, 0.5, 0.9])
    m = gap_metrics(curves, k=3)
    assert m["min_acc"] == pytest.approx(0.4)
    assert m["wc_acc"] == pytest.approx(0.9 / 3 + 2 / 3 * 0.4)


def test_summary_over_chunks():
    a = {"gap_depth": 0.2, "min_acc": 0.5, "wc_acc": 0.6, "sgm_gap": 0.1, "recovered": 1}
    b = {"gap_depth": 0.4, "min_acc": 0.3, "wc_acc": 0.7, "sgm_gap": 0.3, "recovered": 0}
    s = stability_summary([a, b])
    assert s == {"gap_depth": pytest.approx(0.3), "min_acc": pytest.approx(0.4), "wc_acc": 0.7,
                 "sgm_gap": pytest.approx(0.2), "never_recovered": 1}


def test_soft_targets_follow_their_definition():
    soft = SoftTargets(3, torch.device("cpu"))
    # Class 0 has seen two correct images with softmax (0.8, 0.1, 0.1) and (0.6, 0.3, 0.1).
    seen = torch.log(torch.tensor([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1]]))
    soft.update(seen, torch.tensor([0, 0]))
    soft.update(torch.log(torch.tensor([[0.2, 0.7, 0.1]])), torch.tensor([0]))  # wrong: not counted
    logits = torch.log(torch.tensor([[0.1, 0.8, 0.1], [0.9, 0.05, 0.05], [0.3, 0.3, 0.4]]))
    targets = soft.targets(logits, torch.tensor([0, 0, 1]))
    # Image 1 (class 0, predicted 1): mean row (0.7, 0.2, 0.1), entry 1 -> 1/3, entry 0 -> 1.
    expected_1 = torch.tensor([1.0, 1 / 3, 0.1]) / (1 + 1 / 3 + 0.1)
    # Image 2 (class 0, right): mean row with entry 0 -> 1.
    expected_2 = torch.tensor([1.0, 0.2, 0.1]) / 1.3
    # Image 3 (class 1, none seen yet, predicted 2): uniform, entry 2 -> 1/3 (already), entry 1 -> 1.
    expected_3 = torch.tensor([1 / 3, 1.0, 1 / 3]) / (5 / 3)
    torch.testing.assert_close(targets, torch.stack([expected_1, expected_2, expected_3]))
    loss = soft.loss(logits, torch.tensor([0, 0, 1]))
    torch.testing.assert_close(loss, -(targets * logits.log_softmax(1)).sum(1).mean())


def test_class_mean_head_sets_rows_to_normalised_feature_means():
    torch.manual_seed(0)
    model = small_cnn(1, 10, width=4).eval()
    x = torch.randint(0, 256, (30, 1, 8, 8), dtype=torch.uint8)
    y = torch.tensor([3] * 10 + [7] * 20)
    old = model.head.weight.detach().clone()
    assert class_mean_head(model, x, y) == [3, 7]
    with torch.no_grad():
        f = torch.nn.functional.normalize(model.body(model.normalize(x.float() / 255)), dim=1)
    torch.testing.assert_close(model.head.weight[3], f[:10].mean(0))
    torch.testing.assert_close(model.head.weight[7], f[10:].mean(0))
    assert model.head.bias[3] == 0 and model.head.bias[7] == 0
    untouched = [c for c in range(10) if c not in (3, 7)]
    assert torch.equal(model.head.weight[untouched], old[untouched])


class RecordLR(Hook):
    def __init__(self):
        self.lr = []

    def after_step(self, trainer):
        self.lr.append(trainer.optimizer.lr)


def test_warmup_ramps_the_learning_rate_linearly_over_its_share_of_the_chunk():
    torch.manual_seed(0)
    model = small_cnn(1, 10, width=4)
    data = Images(torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8), torch.randint(0, 10, (64,)))
    seen = RecordLR()
    # 2 epochs of 8 updates each; a warm-up over 0.25 of them: 4 updates, at lr / 4, 2 lr / 4, ...
    settings = TrainSettings(batch_size=8, lr=0.4, epochs=2, lr_milestones=[], select="last")
    fit(model, data, data, settings, torch.Generator().manual_seed(0), hooks=[Warmup(0.25), seen])
    assert seen.lr == pytest.approx([0.1, 0.2, 0.3] + [0.4] * 13)


def test_class_incremental_chunks_hold_their_classes_and_stay_put():
    pool = load_source(DigitsData(), seed=0).pool
    chunks = [class_chunk_indices(pool.y, 2, 1000, k, seed=0) for k in range(1, 6)]
    classes = [set(pool.y[c].tolist()) for c in chunks]
    assert all(len(c) == 2 for c in classes) and set().union(*classes) == set(range(10))
    assert all(a.isdisjoint(b) for i, a in enumerate(classes) for b in classes[i + 1:])
    assert all(len(c) == np.isin(pool.y, list(cl)).sum() for c, cl in zip(chunks, classes))  # all their images
    # chunk k brings the k-th pair of one seeded class order, whatever the number of chunks
    order = np.random.default_rng([0, streams.CLASS_ORDER]).permutation(10)
    assert classes == [set(order[2 * i : 2 * i + 2].tolist()) for i in range(5)]
    capped = class_chunk_indices(pool.y, 2, 100, 3, seed=0)
    assert len(capped) == 100 and set(capped) <= set(chunks[2])  # at most chunk_size of them
    with pytest.raises(LureError, match="data.classes_per_chunk: 6 class-incremental chunks of 2 classes need 12"):
        class_chunk_indices(pool.y, 2, 100, 6, seed=0)


def test_mitigations_are_options_of_any_method(params_dict):
    params_dict["methods"]["scratch_sgm"] = {"kind": "scratch", "mitigate": {"soft_targets": True, "warmup": 0.3,
                                                                             "head_init": "class_means"}}
    m = load_method(parse_params(params_dict), "scratch_sgm").mitigate
    assert m.soft_targets and m.warmup == 0.3 and m.head_init == "class_means" and not m.fresh_optimizer


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_fresh_optimizer_trains_as_from_no_carried_state(optimizer):
    """A fit that carries an optimiser state but asks for a fresh optimizer ends where a fit without
    a carried state ends, weights and state alike (Adam's step counts included); without the hook
    the carried state matters."""
    from lure.methods.mitigations import FreshOptimizer
    from tests.conftest import digits_images

    train, val = digits_images(0, 96), digits_images(96, 128)
    settings = TrainSettings(optimizer=optimizer, epochs=1, batch_size=16, lr=0.01, lr_milestones=[])
    params = dict(small_cnn(1, 10, width=4).named_parameters())
    kinds = ("momentum",) if optimizer == "sgd" else ("exp_avg", "exp_avg_sq")
    carried = {kind: {n: torch.full_like(p, 0.5) for n, p in params.items()} for kind in kinds}
    if optimizer != "sgd":
        carried["step"] = {n: torch.tensor(7.0) for n in params}

    def run(state, hooks):
        torch.manual_seed(0)
        model = small_cnn(1, 10, width=4)
        result = fit(model, train, val, settings, torch.Generator().manual_seed(0), state, hooks)
        return model.state_dict(), result.state

    (fresh, fresh_state), (plain, plain_state) = run(carried, [FreshOptimizer()]), run(None, [])
    assert all(torch.equal(fresh[k], plain[k]) for k in plain)
    assert all(torch.equal(fresh_state[kind][n], plain_state[kind][n]) for kind in plain_state
               for n in plain_state[kind])
    with_carried, _ = run(carried, [])
    assert not torch.equal(with_carried["head.weight"], plain["head.weight"])
