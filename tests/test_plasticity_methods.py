"""DASH, FIRE, L2 Init, Parseval, Hare & Tortoise and SNR, each against an independent statement of
what it computes (tests/test_stage_methods.py runs them through the stages; bench/methods.py
against the authors' code)."""

import dataclasses
import hashlib
import json
import math

import pytest
import torch
import torch.nn.functional as F

from lure.config import TrainSettings
from lure.images import Images
from lure.methods import METHODS
from lure.methods.dash import descent_directions
from lure.methods.fire import newton_schulz, orthogonalised
from lure.models import as_float, mlp
from lure.train import Trainer, fit
from tests.conftest import ROOT, boundary, digits_images, snapshot, trained_like_model


def digits(n: int) -> Images:
    return digits_images(0, n)


def small_mlp(seed: int = 0):
    torch.manual_seed(seed)
    model = mlp(1, (8, 8), 10, width=12, depth=2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


# --- DASH ---------------------------------------------------------------------------------------


def gradient(model, images: Images, mode: str) -> dict[str, torch.Tensor]:
    """dL/dW of the mean cross-entropy over `images` in one batch, the model in `mode`."""
    copy = trained_like_model() if model is None else model
    copy.train(mode == "train")
    copy.zero_grad()
    F.cross_entropy(copy(as_float(images.x)), images.y).backward()
    return {n: p.grad.detach().clone() for n, p in copy.named_parameters()}


def test_dash_with_alpha_1_on_one_batch_scales_each_row_by_its_clamped_cosine_with_the_descent():
    """alpha 1 and one batch: the direction is -dL/dW itself (in eval mode, the official flow), and
    each row (linear) or kernel (conv) is scaled by clamp(<-g, w> / (|g| |w|), min_scale, 1)."""
    images = digits(64)
    model = trained_like_model()
    before = snapshot(model)
    g = gradient(trained_like_model(), images, "eval")
    edge = boundary(images=images)
    edge.new = images  # one chunk: one batch
    reset = METHODS["dash"](alpha=1.0, min_scale=0.2).forget(model, edge)
    for name in ("body.0.0.weight", "body.1.0.weight", "head.weight"):
        w, d = before[name], -g[name]
        rows_w, rows_d = w.reshape(w.shape[0], w.shape[1], -1) if w.ndim == 4 else w, \
            d.reshape(d.shape[0], d.shape[1], -1) if d.ndim == 4 else d
        # a row without gradient (a unit that is off on these images) has cosine 0
        cos = torch.nan_to_num((rows_w * rows_d).sum(-1) / (rows_w.norm(dim=-1) * rows_d.norm(dim=-1)), nan=0.0)
        expected = (rows_w * cos.clamp(0.2, 1)[..., None]).reshape(w.shape)
        torch.testing.assert_close(dict(model.named_parameters())[name].detach(), expected, rtol=1e-5, atol=1e-7)
        assert reset[name] == pytest.approx(1 - float(cos.clamp(0.2, 1).mean()), abs=1e-6)
    b, db = before["head.bias"], -g["head.bias"]
    bias_cos = (b @ db) / (b.norm() * db.norm())
    torch.testing.assert_close(model.head.bias.detach(), b * bias_cos.clamp(0.2, 1))
    assert torch.equal(model.body[0][1].weight, before["body.0.1.weight"])  # BatchNorm kept


def test_dash_averages_the_batches_in_stored_order_in_eval_mode():
    """Two batches of one chunk's size: (1 - a)(a(-g1)) + a(-g2), the gradients in eval mode (the
    model's BatchNorm running statistics), not train mode; the model itself untouched by the pass."""
    images = digits(96)
    first, second = Images(images.x[:48], images.y[:48]), Images(images.x[48:], images.y[48:])
    model = trained_like_model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    directions = descent_directions(model, images, 48, alpha=0.3)
    g1, g2 = gradient(trained_like_model(), first, "eval"), gradient(trained_like_model(), second, "eval")
    for name in ("body.1.0.weight", "head.weight", "head.bias"):
        torch.testing.assert_close(directions[name], 0.7 * (0.3 * -g1[name]) + 0.3 * -g2[name])
    trained = gradient(trained_like_model(), first, "train")["head.weight"]
    assert not torch.allclose(gradient(trained_like_model(), first, "eval")["head.weight"], trained)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and model.training


# --- FIRE ---------------------------------------------------------------------------------------


def well_conditioned(rows: int, cols: int, seed: int) -> torch.Tensor:
    """A matrix whose singular values lie in [0.5, 1]: Newton-Schulz converges in 10 iterations."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(max(rows, cols), max(rows, cols), generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(min(rows, cols), min(rows, cols), generator=g, dtype=torch.float64))
    s = torch.linspace(0.5, 1.0, min(rows, cols), dtype=torch.float64)
    m = (u[:, :min(rows, cols)] * s) @ v.T
    return (m if rows >= cols else m.T).float()


@pytest.mark.parametrize("shape", [(16, 8), (8, 16), (12, 12)])
def test_fire_gives_orthonormal_rows_or_columns_times_its_scale(shape):
    w = well_conditioned(*shape, seed=sum(shape))
    out = orthogonalised(w, 10) / math.sqrt(shape[0] / shape[1])
    gram = out @ out.T if shape[0] <= shape[1] else out.T @ out  # the shorter side's
    torch.testing.assert_close(gram, torch.eye(min(shape)), atol=2e-4, rtol=0)


def test_fire_orthogonalises_a_convolution_kernel_position_by_kernel_position():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 4, 3, 3, generator=g)
    out = orthogonalised(w, 10)
    for i in range(3):
        for j in range(3):
            expected = newton_schulz(w[:, :, i, j], 10) * (math.sqrt(6 / 4) / 9)
            assert torch.equal(out[:, :, i, j], expected)


def test_fire_replaces_every_conv_and_linear_weight_and_keeps_the_rest():
    model = trained_like_model()
    before = snapshot(model)
    reset = METHODS["fire"]().forget(model, boundary())
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed == set(reset) == {"body.0.0.weight", "body.1.0.weight", "body.3.0.weight", "head.weight"}


def test_dash_sums_a_large_batchs_gradient_in_parts_that_fit_in_memory():
    """A batch of more than PART images (a chunk of thousands) is put through in parts: its
    direction is the whole batch's mean-loss gradient all the same (to float rounding)."""
    import copy

    from lure.methods.dash import PART

    torch.manual_seed(0)
    model = trained_like_model()
    n = 2 * PART + 100
    images = Images(torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8), torch.randint(0, 10, (n,)))
    directions = descent_directions(model, images, n, alpha=1.0)
    probe = copy.deepcopy(model).eval()
    F.cross_entropy(probe(as_float(images.x)), images.y).backward()
    for name, p in probe.named_parameters():
        if name in directions:
            torch.testing.assert_close(directions[name], -p.grad, rtol=1e-4, atol=1e-6)


# --- L2 Init and Parseval -----------------------------------------------------------------------


def penalty_of(kind: str, model, **settings) -> torch.Tensor:
    """The term the method adds to the loss, through the trainer's loss as the loop calls it."""
    trainer = Trainer(model, TrainSettings(), torch.device("cpu"), 1)
    trainer.loss = lambda logits, labels: torch.zeros(())  # the penalty alone
    METHODS[kind](**settings).relearning(model, boundary()).before_fit(trainer)
    return trainer.objective(None, None)


def test_l2_init_adds_lambda_times_the_squared_distance_to_the_initial_weights_and_its_gradient():
    model = trained_like_model()
    initial = boundary().initial
    term = penalty_of("l2_init", model, coefficient=0.05)
    distance = sum(((p.detach() - initial[n]) ** 2).sum() for n, p in model.named_parameters())
    assert float(term.detach()) == pytest.approx(0.05 * float(distance), rel=1e-5)
    term.backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, 2 * 0.05 * (p.detach() - initial[name]))


def test_parseval_penalises_each_weights_gram_matrix_and_each_batchnorm_scale():
    model = trained_like_model()
    term = penalty_of("parseval", model, coefficient=0.01)
    expected = 0.0
    for name, p in model.named_parameters():
        if name.endswith(".weight"):
            w = p.detach().double()
            if p.ndim == 1:  # BatchNorm's scale
                expected += float(((w ** 2 - 1) ** 2).sum())
            else:
                w = w.reshape(w.shape[0], -1)
                expected += float(((w @ w.T - torch.eye(w.shape[0], dtype=torch.float64)) ** 2).sum())
    assert float(term.detach()) == pytest.approx(0.01 * expected, rel=1e-5)
    term.backward()
    head = model.head.weight.detach()
    torch.testing.assert_close(model.head.weight.grad, 0.01 * 4 * (head @ head.T - torch.eye(10)) @ head)
    assert model.head.bias.grad is None and model.body[0][1].bias.grad is None  # biases free


@pytest.mark.parametrize("kind", ["l2_init", "parseval"])
def test_the_penalty_stays_when_a_mitigation_replaces_the_loss(kind):
    """SGM's soft targets replace the trainer's loss after the method's hook has set up (the stage's
    order): what an update minimises is still the soft-target loss plus the method's term."""
    from lure.methods.mitigations import Mitigations

    model = trained_like_model()
    trainer = Trainer(model, TrainSettings(), torch.device("cpu"), 1)
    hooks = [METHODS[kind](coefficient=1.0).relearning(model, boundary()),
             *Mitigations(soft_targets=True).hooks()]
    for hook in hooks:  # as fit() calls them
        hook.before_fit(trainer)
    logits, labels = torch.randn(4, 10), torch.tensor([0, 1, 2, 3])
    term = penalty_of(kind, model, coefficient=1.0)
    assert float(term) > 1  # a term the loss cannot hide
    torch.testing.assert_close(trainer.objective(logits, labels), trainer.loss(logits, labels) + term)
    assert trainer.loss is not torch.nn.functional.cross_entropy  # the soft targets' loss


# --- Hare & Tortoise ----------------------------------------------------------------------------


def test_the_tortoise_after_n_updates_is_the_closed_form_average_of_the_hares():
    """After updates with hare weights h_1..h_n: tortoise = ema^n t_0 + sum_t (1 - ema) ema^(n - t) h_t."""
    model = trained_like_model()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    hook = METHODS["hare_tortoise"](ema=0.9).relearning(model, boundary())
    hares = []
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
        hares.append({k: v.clone() for k, v in model.state_dict().items()})
        hook.after_step(None)
    slow = hook.state()["networks"]["tortoise"]
    for name in ("body.1.0.weight", "head.bias", "body.0.1.running_mean"):
        expected = 0.9 ** 4 * start[name].double() + sum(0.1 * 0.9 ** (4 - t) * h[name].double()
                                                          for t, h in enumerate(hares, start=1))
        torch.testing.assert_close(slow[name].double(), expected, rtol=1e-5, atol=1e-6)


def test_the_hare_is_set_to_the_tortoise_after_epochs_1_11_21_and_they_move_together_once():
    model = trained_like_model()
    hook = METHODS["hare_tortoise"](ema=0.9, reset_every=10).relearning(model, boundary())
    resets = []
    for epoch in range(1, 22):
        with torch.no_grad():
            model.head.bias.add_(1.0)
        hook.after_step(None)
        before = model.head.bias.detach().clone()
        hook.after_epoch(None, epoch, None)
        if not torch.equal(model.head.bias, before):
            resets.append(epoch)
            assert torch.equal(model.head.bias, hook.slow["head.bias"])
    assert resets == [1, 11, 21]
    with torch.no_grad():  # the update after a reset: the official code's shared tensors move together
        model.head.bias.add_(1.0)
    hook.after_step(None)
    assert torch.equal(hook.slow["head.bias"], 0.9 * model.head.bias.detach() + (1 - 0.9) * model.head.bias.detach())


def test_the_tortoise_carries_over_to_the_next_chunk():
    model = trained_like_model()
    hook = METHODS["hare_tortoise"]().relearning(model, boundary())
    carried = hook.state()
    edge = boundary()
    edge.state = carried
    other = METHODS["hare_tortoise"]().relearning(trained_like_model(seed=7), edge)
    assert all(torch.equal(other.slow[k], carried["networks"]["tortoise"][k]) for k in other.slow)


# --- SNR ----------------------------------------------------------------------------------------


def test_snr_recycles_a_silent_unit_and_learns_each_units_threshold_from_its_firing():
    """A unit that never fires is recycled at the first update (whose thresholds start from no
    firing history: the window's images); a unit that fires is never recycled; a unit recycled has
    its age, counted in its histogram, back to 0; the thresholds follow FIRE's rule."""
    model = small_mlp()
    silent = 3
    with torch.no_grad():  # unit 3 of the first layer can never fire
        model.body[1].weight[silent] = 0.0
        model.body[1].bias[silent] = -1.0
    images = digits(64)
    hook = METHODS["snr"](window=32, threshold_every=4).relearning(model, boundary(images=images))
    settings = TrainSettings(epochs=1, batch_size=16, lr=0.01, lr_milestones=[], precision="fp32")
    fit(model, images, images, settings, torch.Generator().manual_seed(0), None, [hook])
    assert hook.step == 4
    state = hook.state()
    # recycled at the first update, then drawn afresh: its incoming row is no longer zero
    assert model.body[1].weight[silent].abs().sum() > 0 and "body.1.weight" in hook.reset
    # thresholds updated at update 0 (from no history: 16, the window's images then) and kept >= the window
    assert all(int(t.min()) >= 16 and int(t.max()) <= 20000 for t in state["tau"])
    assert state["ages"][0][silent] < 64  # counted from its recycling
    # carried to the next chunk in the checkpoint: the histograms' set entries only, whole again on arrival
    edge = dataclasses.replace(boundary(images=images), state=state)
    carried = METHODS["snr"](window=32, threshold_every=4).relearning(model, edge)
    assert all(torch.equal(a, b) for a, b in zip(carried.hist, hook.hist)) and any(int(h.sum()) for h in hook.hist)
    assert sum(rows.numel() for rows in state["hist"]) < sum(h.numel() for h in hook.hist) / 100


def test_snr_thresholds_contract_to_the_percentile_point_or_grow():
    """updated_thresholds on a scripted histogram: a unit whose inter-firing times reach 98% by
    age 5 gets 5 (within [images, tau_max]); one with no such point below its threshold doubles."""
    model = small_mlp()
    hook = METHODS["snr"](percentile=0.98, tau_max=100).relearning(model, boundary())
    hist = torch.zeros(12, 101, dtype=torch.long)
    hist[0, 5] = 100  # always fires again after 5 images
    hist[1, 80] = 10  # after 80, which is past its threshold 50
    hook.hist[0], hook.tau[0] = hist, torch.full((12,), 50)
    tau = hook.updated_thresholds(0, images=2)
    assert int(tau[0]) == 5 and int(tau[1]) == 100  # 2 x 50, at most tau_max
    assert int(tau[2]) == 2  # no history: the point is 1, raised to the window's images
    assert int(hook.hist[0].sum()) == 0  # the histograms restart


def test_every_new_method_is_checked_against_its_authors_code():
    """bench/methods.py's committed result: each method equals its authors' function somewhere to
    within the target, and each row that misses it says why."""
    result = json.loads((ROOT / "bench" / "results" / "methods-cpu.json").read_text())
    within = {row["method"] for row in result["rows"] if row["within_target"] and row["max_abs_diff"] <= 1e-6}
    assert within == {"dash", "fire", "l2_init", "parseval", "hare_tortoise", "snr"}
    assert all(row.get("why") for row in result["rows"] if not row["within_target"])
    # of the code as it is: a method changed since needs bench/methods.py run again
    stale = [path for path, digest in result["sources"].items()
             if hashlib.sha256((ROOT / path).read_bytes()).hexdigest() != digest]
    assert "lure/methods/dash.py" in result["sources"] and stale == [], f"run bench/methods.py again: {stale}"
