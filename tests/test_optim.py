"""The optimisers (lure.optim) against torch.optim's, step by step: the same weights and the same
state, fresh or continued from a carried state; the schedule and the clipping of the loop."""

import math

import pytest
import torch
from torch import nn

from lure.config import TrainSettings
from lure.optim import SGD, Adam, clear_entries, make_optimizer
from lure.train import lr_at

# ours' state kinds, and torch.optim's names for them
TORCH_NAMES = {"momentum": "momentum_buffer", "exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq", "step": "step"}
SETTINGS = {
    "sgd": dict(lr=0.1, momentum=0.9, weight_decay=1e-3),
    "adam": dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2),
    "adamw": dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2),
}


def reference(kind: str, params):
    """torch.optim's optimiser, its multi-tensor implementation (as ours is written)."""
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[kind]
    return cls(params, foreach=True, **SETTINGS[kind])


def ours(kind: str, model: nn.Module, state=None):
    settings = TrainSettings(optimizer=kind, **SETTINGS[kind])
    return make_optimizer(list(model.named_parameters()), settings, state)


def steps(pairs, n: int, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x, y = torch.randn(8, 5, generator=g), torch.randint(0, 3, (8,), generator=g)
        for model, optimizer in pairs:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()


def assert_same(model, optimizer, ref, ref_optimizer) -> None:
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        assert torch.equal(p, q), name
        for kind in optimizer.kinds:
            assert torch.equal(optimizer.state[kind][name], ref_optimizer.state[q][TORCH_NAMES[kind]]), (kind, name)


def pair():
    torch.manual_seed(0)
    model, ref = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)), nn.Sequential(
        nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    ref.load_state_dict(model.state_dict())
    return model, ref


@pytest.mark.parametrize("kind", list(SETTINGS))
def test_each_optimizer_is_torch_optims_bit_for_bit(kind):
    model, ref = pair()
    optimizer, ref_optimizer = ours(kind, model), reference(kind, ref.parameters())
    steps([(model, optimizer), (ref, ref_optimizer)], 6)
    assert_same(model, optimizer, ref, ref_optimizer)
    assert isinstance(optimizer, SGD if kind == "sgd" else Adam)


@pytest.mark.parametrize("kind", list(SETTINGS))
def test_each_optimizer_continues_from_a_carried_state_as_torch_optim_goes_on(kind):
    model, ref = pair()
    ref_optimizer = reference(kind, ref.parameters())
    steps([(ref, ref_optimizer)], 3)  # the previous chunk
    model.load_state_dict(ref.state_dict())
    carried = {kind_: {n: ref_optimizer.state[p][TORCH_NAMES[kind_]].clone() for n, p in ref.named_parameters()}
               for kind_ in ours(kind, model).kinds}
    optimizer = ours(kind, model, carried)
    steps([(model, optimizer), (ref, ref_optimizer)], 3, seed=1)
    assert_same(model, optimizer, ref, ref_optimizer)
    assert optimizer.carried_state()[optimizer.kinds[0]]["0.weight"].device.type == "cpu"


@pytest.mark.parametrize("kind", list(SETTINGS))
def test_a_parameter_without_a_gradient_is_left_as_it_is(kind):
    model, _ = pair()
    model[0].bias.requires_grad_(False)
    bias = model[0].bias.detach().clone()
    optimizer = ours(kind, model)
    steps([(model, optimizer)], 2)
    assert torch.equal(model[0].bias, bias)
    if kind != "sgd":
        assert float(optimizer.state["step"]["0.bias"]) == 0 and float(optimizer.state["step"]["0.weight"]) == 2


def test_clearing_entries_zeroes_every_buffer_of_them_and_keeps_the_step_count():
    model, _ = pair()
    optimizer = ours("adam", model)
    steps([(model, optimizer)], 2)
    clear_entries(optimizer.state, "2.weight", torch.tensor([1]), dim=1)
    for kind in ("exp_avg", "exp_avg_sq"):
        buffer = optimizer.state[kind]["2.weight"]
        assert torch.all(buffer[:, 1] == 0) and torch.all(buffer[:, [0, 2, 3]] != 0)
    assert float(optimizer.state["step"]["2.weight"]) == 2


def test_a_reset_optimizer_steps_as_a_new_one():
    model, ref = pair()
    optimizer = ours("adam", model)
    steps([(model, optimizer)], 3)
    ref.load_state_dict(model.state_dict())
    optimizer.reset()
    fresh = ours("adam", ref)
    steps([(model, optimizer), (ref, fresh)], 2, seed=2)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), ref.parameters()))


def test_the_warm_up_rises_from_0_and_the_cosine_falls_to_0():
    warm = TrainSettings(lr=0.1, warmup=0.1, lr_milestones=[], epochs=10)
    total = 100  # 10 epochs of 10 updates
    assert [lr_at(warm, u // 10, u, total) for u in (0, 5, 9, 10, 99)] == pytest.approx([0, 0.05, 0.09, 0.1, 0.1])
    cosine = TrainSettings(lr=0.1, warmup=0.1, schedule="cosine", lr_milestones=[], epochs=10)
    lrs = [lr_at(cosine, u // 10, u, total) for u in range(total)]
    assert lrs[10] == pytest.approx(0.1) and lrs[55] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 1e-3
    step = TrainSettings(lr=0.1, lr_milestones=[2, 4], lr_gamma=0.1, epochs=6)
    assert [round(lr_at(step, e, e * 10, 60), 6) for e in range(6)] == [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]


def test_cosine_refuses_milestones():
    with pytest.raises(ValueError, match="lr_milestones"):
        TrainSettings(schedule="cosine", lr_milestones=[5])


def test_the_loop_clips_each_updates_gradient_to_the_norm_asked():
    """One update of plain SGD (no momentum, no decay) at lr 1 moves the weights by minus the clipped
    gradient, whose norm over all parameters is the limit."""
    from lure.images import Images
    from lure.train import Trainer

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    images = Images(torch.randint(0, 256, (8, 1, 2, 2), dtype=torch.uint8), torch.randint(0, 3, (8,)))
    before = [p.detach().clone() for p in model.parameters()]
    settings = TrainSettings(lr=1.0, momentum=0.0, weight_decay=0.0, batch_size=8, clip_grad_norm=0.01,
                             lr_milestones=[])
    Trainer(model, settings, torch.device("cpu"), 1).epoch(images, torch.Generator().manual_seed(0))
    moved = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, model.parameters())])
    assert moved.norm().item() == pytest.approx(0.01, rel=1e-4)
