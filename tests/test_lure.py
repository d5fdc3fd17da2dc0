"""LURE, warm start and scratch on small models: SNIP against a hand computation, exact reset fractions,
kept weights bit-identical, reset weights freshly drawn."""

import math

import pytest
import torch
from torch import nn

from lure.images import Images
from lure.methods.lure import Lure, snip_saliency
from lure.methods.masks import lowest_fraction
from lure.methods.reinit import kaiming_draw
from lure.methods.scratch import Scratch
from lure.methods.warm import Warm
from lure.models import small_cnn
from tests.conftest import boundary, digits_images, fresh_cnn, trained_like_model


class Linear2x2(nn.Module):
    """Logits = W x + b on a flattened 2x2 image in [0, 1]."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x.flatten(1))


def batches_of(x: torch.Tensor, y: torch.Tensor, size: int):
    return list(zip(x.split(size), y.split(size)))


def test_snip_saliency_matches_hand_computation():
    torch.manual_seed(0)
    model = Linear2x2()
    x = torch.randint(0, 256, (10, 1, 2, 2), dtype=torch.uint8)
    y = torch.randint(0, 3, (10,))
    scores = snip_saliency(model, batches_of(x, y, 5), ["fc.weight", "fc.bias"])

    # Hand: for mean cross-entropy over a batch of B, dL/dlogits = (softmax - onehot) / B,
    # dL/dW = dlogits^T x, dL/db = sum of dlogits; SNIP sums |grad| over batches, times |theta|.
    W, b = model.fc.weight.detach(), model.fc.bias.detach()
    gW, gb = torch.zeros_like(W), torch.zeros_like(b)
    for xb, yb in batches_of(x, y, 5):
        inputs = xb.float().flatten(1) / 255
        d = (torch.softmax(inputs @ W.T + b, 1) - nn.functional.one_hot(yb, 3).float()) / len(yb)
        gW += (d.T @ inputs).abs()
        gb += d.sum(0).abs()
    torch.testing.assert_close(scores["fc.weight"], (gW * W).abs())
    torch.testing.assert_close(scores["fc.bias"], (gb * b).abs())


def test_snip_leaves_the_model_untouched_even_in_train_mode():
    torch.manual_seed(0)
    model = small_cnn(1, 10, width=4).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randint(0, 256, (20, 1, 8, 8), dtype=torch.uint8)
    y = torch.randint(0, 10, (20,))
    snip_saliency(model, batches_of(x, y, 10), [n for n, _ in model.named_parameters()], train_mode=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN running stats too
    assert all(p.grad is None for p in model.parameters())
    assert not model.training


def test_lowest_fraction_is_exact_and_global():
    torch.manual_seed(0)
    scores = {"a": torch.rand(10, 7), "b": torch.rand(33) * 3, "c": torch.zeros(5)}  # ties in c
    for fraction in [0.0, 0.05, 0.2, 0.5, 1.0]:
        masks = lowest_fraction(scores, fraction)
        marked = torch.cat([scores[n].flatten()[masks[n].flatten()] for n in scores])
        kept = torch.cat([scores[n].flatten()[~masks[n].flatten()] for n in scores])
        assert marked.numel() == int(fraction * 108)
        if marked.numel() and kept.numel():
            assert marked.max() <= kept.min()  # one threshold across all tensors


@pytest.mark.parametrize("fraction", [0.05, 0.2, 0.6])
def test_lure_resets_exactly_the_asked_fraction_of_weights(fraction):
    model = trained_like_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = Lure(fraction=fraction, score_params="weights")
    reset = params.forget(model, boundary(fresh_cnn(), digits_images()))

    weights = [n for n in before if n.endswith("weight")]
    changed = {n: (p.detach() != before[n]) for n, p in model.named_parameters()}
    n_changed = sum(int(changed[n].sum()) for n in weights)
    assert n_changed == int(fraction * sum(before[n].numel() for n in weights))
    assert all(not changed[n].any() for n in before if not n.endswith("weight"))  # biases kept
    for n in weights:
        kept = ~changed[n]
        assert torch.equal(dict(model.named_parameters())[n].detach()[kept], before[n][kept])  # bit-identical
        assert reset[n] == pytest.approx(changed[n].float().mean().item())


def test_lure_draws_reset_weights_from_kaiming_uniform():
    model = trained_like_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    Lure(fraction=0.5, score_params="weights").forget(
        model, boundary(fresh_cnn(), digits_images(), seed=7))
    generator = torch.Generator().manual_seed(7)  # the same draws, in parameter order
    for n, p in model.named_parameters():
        if not n.endswith("weight"):
            continue
        draw = kaiming_draw(p.shape, generator)
        reset = p.detach() != before[n]
        assert torch.equal(p.detach()[reset], draw[reset])
        fan_in = p[0].numel() if p.dim() >= 2 else 1
        assert draw.abs().max() <= 1 / math.sqrt(fan_in)  # kaiming_uniform(a=sqrt(5)): BN scale U(-1, 1)


def test_lure_official_scoring_counts_biases_but_resets_only_weights():
    model = trained_like_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = digits_images()
    # The official mask: every parameter competes, on the first batch of 100 in eval mode.
    scores = snip_saliency(model, [(data.x[:100], data.y[:100])], list(before))
    official = lowest_fraction(scores, 0.3)
    Lure(fraction=0.3).forget(model, boundary(fresh_cnn(), data))
    for n, p in model.named_parameters():
        changed = p.detach() != before[n]
        if n.endswith("weight"):
            assert torch.equal(changed, official[n])  # exactly the marked entries are drawn afresh
        else:
            assert not changed.any()  # biases and BN shifts are kept, marked or not
    assert any(official[n].any() for n in before if not n.endswith("weight"))  # some were marked
    n_marked = sum(int(m.sum()) for m in official.values())
    assert n_marked == int(0.3 * sum(p.numel() for p in before.values()))


def test_lure_module_reinit_takes_a_fresh_models_values():
    model = trained_like_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    def fresh():
        torch.manual_seed(123)
        return small_cnn(1, 10, width=8)

    Lure(fraction=0.5, reinit="module", score_params="weights").forget(model, boundary(fresh, digits_images()))
    reference = dict(fresh().named_parameters())
    for n, p in model.named_parameters():
        reset = p.detach() != before[n]
        assert torch.equal(p.detach()[reset], reference[n].detach()[reset])
    bn = model.body[0][1].weight.detach()
    assert ((bn == 1) | (bn == before["body.0.1.weight"])).all()


def test_lure_is_deterministic_for_a_seed():
    results = []
    for _ in range(2):
        model = trained_like_model()
        Lure().forget(model, boundary(fresh_cnn(), digits_images(), seed=3))
        results.append(model.state_dict())
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])


def test_lure_scores_on_the_chosen_data():
    old, new = digits_images(0, 64), Images(digits_images(0, 128).x[64:], digits_images(0, 128).y[64:])
    masks = {}
    for source in ["replay", "chunk"]:
        m = trained_like_model()
        ctx = boundary(fresh_cnn(), old)
        ctx.new = new
        before = {n: p.detach().clone() for n, p in m.named_parameters()}
        Lure(score_data=source, score_batch_size=32).forget(m, ctx)
        masks[source] = torch.cat([(p.detach() != before[n]).flatten() for n, p in m.named_parameters()])
    assert not torch.equal(masks["replay"], masks["chunk"])


def test_warm_keeps_everything_and_scratch_restores_the_initial_weights():
    model = trained_like_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert Warm().forget(model, boundary(fresh_cnn(), digits_images())) == {}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    ctx = boundary(fresh_cnn(), digits_images())
    reset = Scratch().forget(model, ctx)
    assert all(torch.equal(ctx.initial[k], v) for k, v in model.state_dict().items())
    assert set(reset) == {n for n, _ in model.named_parameters()} and set(reset.values()) == {1.0}


def test_ties_at_the_threshold_count_or_all_marked_as_the_official_code():
    scores = {"a": torch.tensor([0.0, 0.0, 0.0, 0.5]), "b": torch.tensor([0.0, 0.2, 0.3, 0.9])}  # four zeros
    exact = lowest_fraction(scores, 0.25)  # int(0.25 * 8) = 2: two of the four zeros, by position
    assert [m.tolist() for m in exact.values()] == [[True, True, False, False], [False, False, False, False]]
    official = lowest_fraction(scores, 0.25, ties="threshold")  # every score <= the second lowest, 0.0
    assert [m.tolist() for m in official.values()] == [[True, True, True, False], [True, False, False, False]]
    # int(0.75 * 8) = 6: the sixth lowest is 0.3, held once, so both rules agree
    no_tie = [lowest_fraction(scores, 0.75, ties=t)["b"].tolist() for t in ("count", "threshold")]
    assert no_tie == [[True, True, True, False]] * 2
    # the official count is kthvalue(int(0.2 * 8)) = the 1st lowest, not round(1.6) = 2
    assert sum(int(m.sum()) for m in lowest_fraction(scores, 0.2).values()) == 1


def test_lure_scores_the_images_as_the_training_augments_them_by_default():
    from lure.augment import random_crop_flip

    data = digits_images(0, 64)

    masks, draws_left = {}, {}
    for setting in ("as_training", "none"):
        model = trained_like_model()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        ctx = boundary(fresh_cnn(), data, seed=5)
        ctx.augment = lambda x: random_crop_flip(x, torch.Generator().manual_seed(7), padding=2)
        Lure(score_augment=setting, score_params="weights", score_batch_size=64).forget(model, ctx)
        masks[setting] = {n: p.detach() != before[n] for n, p in model.named_parameters()}
        draws_left[setting] = ctx.generator.get_state()
    # the official mask: SNIP of the augmented batch
    x = random_crop_flip(data.x, torch.Generator().manual_seed(7), padding=2)
    model = trained_like_model()
    scores = snip_saliency(model, [(x, data.y)], [n for n, _ in model.named_parameters() if n.endswith("weight")])
    expected = lowest_fraction(scores, 0.2)
    assert all(torch.equal(masks["as_training"][n], expected[n]) for n in expected)
    assert not all(torch.equal(masks["none"][n], expected[n]) for n in expected)
    # the augmentation has draws of its own: the fresh weights' draws are the same either way
    assert torch.equal(draws_left["as_training"], draws_left["none"])
