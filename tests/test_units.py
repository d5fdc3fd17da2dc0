"""Unit-level resets on a small CNN: activity against a hand computation, ReDo recycles exactly
the dormant units, continual backprop's utility and replacement follow their definitions."""

import pytest
import torch

from lure.config import TrainSettings
from lure.images import Images
from lure.methods.continual_backprop import ContinualBackprop, UnitReplacement
from lure.methods.redo import Redo
from lure.methods.units import recycle, unit_activity
from lure.models import resnet
from lure.train import Trainer
from tests.conftest import boundary, digits_images, fresh_cnn, trained_like_model


def hand_activity(model, x):
    """Mean post-ReLU activation per channel of each conv-BN block of small_cnn, by hand."""
    model.eval()
    h = model.normalize(x.float() / 255)
    body = model.body
    out = []
    with torch.no_grad():
        for i, block in enumerate([body[0], body[1], body[3]]):
            if i == 2:
                h = body[2](h)  # the max-pool between blocks 2 and 3
            conv, bn = block[0], block[1]
            z = (conv(h) - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
            h = torch.relu(z * bn.weight[:, None, None] + bn.bias[:, None, None])
            out.append(h.mean(dim=(0, 2, 3)))
    return out


def test_unit_activity_matches_a_hand_computation_and_changes_nothing():
    model = trained_like_model()
    data = digits_images(0, 48)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    activity = unit_activity(model, [(data.x[:32], data.y[:32]), (data.x[32:], data.y[32:])])
    for got, want in zip(activity, hand_activity(model, data.x)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def dormant_model():
    model = trained_like_model()
    with torch.no_grad():
        model.body[1][1].bias[[3, 11]] = -100.0  # units 3 and 11 of the second block never fire
    return model


def test_redo_recycles_exactly_the_units_at_or_below_tau():
    model = dormant_model()
    data = digits_images(0, 64)
    tau = 0.3
    activity = hand_activity(dormant_model(), data.x)
    dormant = [set((a / a.mean() <= tau).nonzero().flatten().tolist()) for a in activity]
    assert {3, 11} <= dormant[1] and len(dormant[1]) < 16  # a real choice, not all or nothing

    before = {k: v.clone() for k, v in model.state_dict().items()}
    ctx = boundary(fresh_cnn(), data, seed=3)
    ctx.optimizer = {"momentum": {n: torch.ones_like(p) for n, p in model.named_parameters()}}
    reset = Redo(tau=tau, score_batch_size=64).forget(model, ctx)
    after = model.state_dict()

    # The rule, layer by layer in forward order: the recycled units' incoming rows drawn afresh
    # (within the layer's init bound), their BatchNorm entries a fresh layer's, their outgoing
    # weights zero, the optimiser's buffers of all of these cleared; everything else untouched.
    expected = {k: v.clone() for k, v in before.items()}
    momentum = {n: torch.ones_like(p) for n, p in model.named_parameters()}
    layers = [(u.conv, u.bn, u.consumer) for u in model.units]
    assert layers[0] == ("body.0.0", "body.0.1", "body.1.0") and layers[2] == ("body.3.0", "body.3.1", "head")
    for (conv, bn, consumer), units in zip(layers, dormant):
        idx = sorted(units)
        if idx:
            assert not torch.equal(after[f"{conv}.weight"][idx], before[f"{conv}.weight"][idx])
            assert after[f"{conv}.weight"][idx].abs().max() <= 1 / before[f"{conv}.weight"][0].numel() ** 0.5
        expected[f"{conv}.weight"][idx] = after[f"{conv}.weight"][idx]
        for key, fresh in [("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)]:
            expected[f"{bn}.{key}"][idx] = fresh
        expected[f"{consumer}.weight"][:, idx] = 0.0
        for name in [f"{conv}.weight", f"{bn}.weight", f"{bn}.bias"]:
            momentum[name][idx] = 0.0
        momentum[f"{consumer}.weight"][:, idx] = 0.0
    assert [k for k in after if not torch.equal(after[k], expected[k])] == []
    assert all(torch.equal(ctx.optimizer["momentum"][k], momentum[k]) for k in momentum)
    assert reset["body.1.1.weight"] == pytest.approx(len(dormant[1]) / 16)


def test_redo_with_tau_zero_recycles_only_silent_units():
    model = dormant_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    Redo(tau=0.0).forget(model, boundary(fresh_cnn(), digits_images()))
    changed_rows = (model.state_dict()["body.1.0.weight"] != before["body.1.0.weight"]).flatten(1).any(1)
    assert changed_rows.nonzero().flatten().tolist() == [3, 11]


def small_cbp(replacement_rate, maturity, decay):
    """A small CNN in training mode, a batch of digits, a trainer (its SGD) and continual backprop's
    hook on them, recording."""
    model = trained_like_model().train()
    trainer = Trainer(model, TrainSettings(lr=0.01, momentum=0.9, weight_decay=0.0), torch.device("cpu"), 1)
    cbp = UnitReplacement(model, replacement_rate, maturity, decay, generator=torch.Generator().manual_seed(0),
                          state={})
    cbp.before_fit(trainer)
    return model, digits_images(0, 32), trainer, cbp


def outgoing_means(model):
    """Mean |w| over each unit's outgoing weights: the next layer's input channel c, by hand."""
    return [model.body[1][0].weight.detach().abs().mean(dim=(0, 2, 3)),
            model.body[3][0].weight.detach().abs().mean(dim=(0, 2, 3)), model.head.weight.detach().abs().mean(dim=0)]


def train_step(model, optimizer, x, y):
    logits = model(x.float() / 255)
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(logits, y).backward()
    optimizer.step()


def test_continual_backprop_utility_follows_its_definition():
    model, data, trainer, cbp = small_cbp(replacement_rate=0.0, maturity=10**9, decay=0.9)
    # the activity of the step's forward pass (batch statistics, weights before the step)
    activities = []
    with torch.no_grad():
        h = model.normalize(data.x.float() / 255)
        for i, block in enumerate([model.body[0], model.body[1], model.body[3]]):
            if i == 2:
                h = model.body[2](h)
            z = block[0](h)
            mean, var = z.mean(dim=(0, 2, 3)), z.var(dim=(0, 2, 3), unbiased=False)  # batch statistics
            h = torch.relu((z - mean[:, None, None]) / torch.sqrt(var[:, None, None] + 1e-5)
                           * block[1].weight[:, None, None] + block[1].bias[:, None, None])
            activities.append(h.mean(dim=(0, 2, 3)))
    train_step(model, trainer.optimizer, data.x, data.y)
    cbp.after_step(trainer)
    for utility, activity, w in zip(cbp.utility, activities, outgoing_means(model)):
        torch.testing.assert_close(utility, 0.1 * activity * w, rtol=1e-4, atol=1e-7)
    assert all(torch.equal(a, torch.ones_like(a)) for a in cbp.age)
    cbp.after_fit(trainer)


def test_continual_backprop_replaces_the_lowest_utility_mature_units_at_the_rate():
    model, data, trainer, cbp = small_cbp(replacement_rate=0.25, maturity=1, decay=0.0)
    train_step(model, trainer.optimizer, data.x, data.y)
    cbp.after_step(trainer)  # age 1: none is mature yet
    assert cbp.reset == {} and cbp.pending == [0.0, 0.0, 0.0]

    train_step(model, trainer.optimizer, data.x, data.y)
    # decay 0: the utility is this step's activity (recorded by the hook) times mean |w_out|
    expected = [cbp.activity[i] * w for i, w in enumerate(outgoing_means(model))]
    cbp.after_step(trainer)  # age 2 > 1: a quarter of the 8 / 16 / 32 units are replaced
    for i, units in enumerate(model.units):
        replaced = (cbp.age[i] == 0).nonzero().flatten()
        assert len(replaced) == len(expected[i]) // 4
        assert set(replaced.tolist()) == set(expected[i].topk(len(replaced), largest=False).indices.tolist())
        # outgoing weights and their momentum zeroed, but in rows the next layer redrew afterwards
        rows = (cbp.age[i + 1] != 0).nonzero().flatten() if i + 1 < len(cbp.age) else slice(None)
        consumer = model.get_submodule(units.consumer).weight
        assert torch.all(consumer[rows][:, replaced] == 0)
        assert torch.all(trainer.optimizer.state["momentum"][f"{units.consumer}.weight"][rows][:, replaced] == 0)
        assert torch.all(cbp.utility[i][replaced] == 0)
    # the share of entries recycled at least once: a quarter of each layer's rows and columns
    assert cbp.reset["body.0.0.weight"] == pytest.approx(0.25)
    assert cbp.reset["body.1.0.weight"] == pytest.approx(1 - 0.75 * 0.75)  # rows and columns overlap
    assert cbp.reset["head.weight"] == pytest.approx(0.25)
    cbp.after_fit(trainer)
    carried = UnitReplacement(model, 0.25, 1, 0.0, torch.Generator(), cbp.state())
    assert all(torch.equal(a, b) for a, b in zip(carried.age, cbp.age))  # ages carry into the next chunk


def test_continual_backprop_ranks_by_the_bias_corrected_utility():
    model, data, trainer, cbp = small_cbp(replacement_rate=0.125, maturity=0, decay=0.9)
    train_step(model, trainer.optimizer, data.x, data.y)
    # Layer 0 (8 units) replaces one unit. Unit 2 is young (age 1, becoming 2) with a small running
    # utility, unit 5 old (age 99) with a slightly larger one; the rest are large. No new activity.
    cbp.utility[0] = torch.ones(8)
    cbp.utility[0][2], cbp.utility[0][5] = 0.01, 0.02
    cbp.age[0] = torch.full((8,), 99)
    cbp.age[0][2] = 1
    cbp.activity[0] = torch.zeros(8)
    cbp.after_step(trainer)
    # raw: 0.009 < 0.018, but corrected: 0.009 / (1 - 0.9^2) = 0.047 > 0.018 / (1 - 0.9^100)
    assert (cbp.age[0] == 0).nonzero().flatten().tolist() == [5]
    cbp.after_fit(trainer)


def test_continual_backprop_hooks_record_training_batches_only_from_fit_to_its_end():
    model = trained_like_model().train()
    data = digits_images(0, 16)
    cbp = UnitReplacement(model, 0.0, 10, 0.99, torch.Generator(), {})
    model(data.x.float() / 255)
    assert cbp.activity == [None, None, None]  # not yet fitting
    cbp.before_fit(None)
    model.eval()
    model(data.x.float() / 255)
    assert cbp.activity == [None, None, None]  # an evaluation is not a training step
    model.train()
    model(data.x.float() / 255)
    assert all(a is not None and a.shape == (n,) for a, n in zip(cbp.activity, [8, 16, 32]))
    cbp.after_fit(None)
    cbp.activity = [None] * 3
    model(data.x.float() / 255)
    assert cbp.activity == [None, None, None]
    assert set(cbp.state()) == {"utility", "age", "pending"}


def test_recycling_on_a_resnet_draws_from_its_fan_out_normal_init():
    torch.manual_seed(0)
    model = resnet("resnet18", 3, 10)
    units = model.units[0]  # body.layer1.0: conv1 -> bn1 -> conv2, 64 channels of 3x3
    assert units.consumer == "body.layer1.0.conv2"
    touched = {}
    recycle(model, units, torch.arange(64), torch.Generator().manual_seed(1), {}, touched)
    drawn = model.get_submodule(units.conv).weight.detach()
    # torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu"): std = sqrt(2 / (64 * 3 * 3))
    assert drawn.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.05)
    assert abs(drawn.mean().item()) < 0.005
    assert torch.all(model.get_submodule(units.consumer).weight == 0)
    # and ReDo / continual backprop run end to end on it
    x = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    data = Images(x, torch.randint(0, 10, (8,)))
    ctx = boundary(lambda: resnet("resnet18", 3, 10), data)
    Redo(tau=0.1, score_batch_size=8).forget(model, ctx)
    assert ContinualBackprop().forget(model, ctx) == {}
    hook = ContinualBackprop().relearning(model, ctx)
    assert len(hook.utility) == 8 and all(u.shape == (64,) for u in hook.utility[:2])
