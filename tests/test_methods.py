"""The other forgetting methods on small models: exactly the intended parameters change, by the
intended rule, and the layers they name are found in every architecture."""

import pytest
import torch

from lure.errors import LureError
from lure.methods.head_reset import HeadReset
from lure.methods.knowledge_evolution import KnowledgeEvolution
from lure.methods.later_layers import LaterLayers
from lure.methods.lure import Lure
from lure.methods.magnitude import Magnitude
from lure.methods.random_mask import RandomMask
from lure.methods.reinit import kaiming_draw
from lure.methods.shrink_perturb import ShrinkPerturb
from lure.models import mlp, resnet, small_cnn
from tests.conftest import boundary, changed_tensors, digits_images, fresh_cnn, snapshot, trained_like_model

# --- shrink & perturb ------------------------------------------------------------------------


def test_shrink_perturb_with_kaiming_noise_is_lambda_theta_plus_sigma_draw():
    model = trained_like_model()
    before = snapshot(model)
    reset = ShrinkPerturb(shrink=0.3, perturb=0.001).forget(model, boundary(fresh_cnn(), digits_images(), seed=5))
    generator = torch.Generator().manual_seed(5)  # the same draws, one per parameter, in order
    for n, p in model.named_parameters():
        draw = kaiming_draw(p.shape, generator)
        torch.testing.assert_close(p.detach(), 0.3 * before[n] + 0.001 * draw, rtol=0, atol=1e-7)
    assert reset == {n: pytest.approx(0.7) for n in before}


def test_shrink_perturb_with_module_noise_uses_a_fresh_models_values():
    model = trained_like_model()
    before = snapshot(model)
    ShrinkPerturb(shrink=0.4, perturb=0.1, noise="module").forget(model, boundary(fresh_cnn(), digits_images()))
    fresh = dict(fresh_cnn()().named_parameters())
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), 0.4 * before[n] + 0.1 * fresh[n].detach(), rtol=0, atol=1e-7)


def test_shrink_perturb_extremes_are_warm_start_and_a_fresh_model():
    model = trained_like_model()
    before = snapshot(model)
    ShrinkPerturb(shrink=1.0, perturb=0.0).forget(model, boundary(fresh_cnn(), digits_images()))
    assert changed_tensors(model, before) == set()
    ShrinkPerturb(shrink=0.0, perturb=1.0, noise="module").forget(model, boundary(fresh_cnn(), digits_images()))
    fresh = dict(fresh_cnn()().named_parameters())
    assert all(torch.equal(p.detach(), fresh[n].detach()) for n, p in model.named_parameters())


# --- later layers and the head -----------------------------------------------------------------


def test_later_layers_official_resets_conv_and_linear_weights_from_the_layer_on():
    model = trained_like_model()
    before = snapshot(model)
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    reset = LaterLayers(from_layer="layer2").forget(model, boundary(fresh_cnn(), digits_images(), seed=2))
    # small_cnn's layers: layer1 = body.0, layer2 = body.1, layer3 = body.3, head
    assert changed_tensors(model, before) == {"body.1.0.weight", "body.3.0.weight", "head.weight"}
    assert set(reset) == {"body.1.0.weight", "body.3.0.weight", "head.weight"} and set(reset.values()) == {1.0}
    generator = torch.Generator().manual_seed(2)
    for n in ["body.1.0.weight", "body.3.0.weight", "head.weight"]:  # drawn in parameter order
        assert torch.equal(dict(model.named_parameters())[n].detach(), kaiming_draw(before[n].shape, generator))
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers())


def test_later_layers_module_makes_those_layers_a_fresh_models():
    model = trained_like_model()
    model.train()(digits_images().x.float() / 255)  # move the BN running statistics
    before = {k: v.clone() for k, v in model.state_dict().items()}
    LaterLayers(from_layer="layer3", reinit="module").forget(model, boundary(fresh_cnn(), digits_images()))
    fresh = fresh_cnn()().state_dict()
    for k, v in model.state_dict().items():
        later = k.startswith(("body.3.", "head."))
        assert torch.equal(v, fresh[k] if later else before[k]), k


def test_later_layers_resolves_resnet_names_and_refuses_unknown_layers():
    torch.manual_seed(0)
    model = resnet("resnet18", 3, 10)
    assert list(model.layers) == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    before = snapshot(model)
    LaterLayers().forget(model, boundary(lambda: resnet("resnet18", 3, 10), digits_images()))
    changed = changed_tensors(model, before)
    expected = {n for n, p in model.named_parameters()
                if n.startswith(("body.layer3.", "body.layer4.", "head.")) and p.dim() >= 2}
    assert changed == expected  # convs (shortcuts included) and the head's weight; BN and biases kept
    assert any("downsample" in n for n in changed)
    layers = "stem, layer1, layer2, layer3, layer4, head"
    with pytest.raises(LureError, match=rf"from_layer: 'layer5' is not a layer .*{layers}"):
        LaterLayers(from_layer="layer5").forget(model, boundary(fresh_cnn(), digits_images()))


@pytest.mark.parametrize("reinit", ["module", "kaiming"])
def test_head_reset_touches_only_the_head(reinit):
    model = trained_like_model()
    before = snapshot(model)
    reset = HeadReset(reinit=reinit).forget(model, boundary(fresh_cnn(), digits_images()))
    head = dict(model.named_parameters())
    fresh = dict(fresh_cnn()().named_parameters())
    if reinit == "module":
        assert changed_tensors(model, before) == {"head.weight", "head.bias"}
        assert torch.equal(head["head.weight"].detach(), fresh["head.weight"].detach())
        assert torch.equal(head["head.bias"].detach(), fresh["head.bias"].detach())
    else:
        assert changed_tensors(model, before) == {"head.weight"}
    assert reset["head.weight"] == 1.0  # what `mitigate.head_init: class_means` keys on


# --- masks: magnitude and random, against LURE --------------------------------------------------


def weight_masks(model, before):
    return {n: p.detach() != before[n] for n, p in model.named_parameters() if n.endswith("weight")}


def test_magnitude_resets_exactly_the_lowest_absolute_weights():
    model = trained_like_model()
    before = snapshot(model)
    Magnitude(fraction=0.3, score_params="weights").forget(model, boundary(fresh_cnn(), digits_images()))
    masks = weight_masks(model, before)
    reset_old = torch.cat([before[n][m].abs() for n, m in masks.items()])
    kept = torch.cat([before[n][~m].abs() for n, m in masks.items()])
    assert reset_old.numel() == int(0.3 * (reset_old.numel() + kept.numel()))
    assert reset_old.max() <= kept.min()  # one global threshold on |theta|
    assert changed_tensors(model, before) <= set(masks)


def test_random_mask_resets_as_many_as_lure_but_others():
    counts, masks = {}, {}
    for params in [Lure(fraction=0.25, score_params="weights"),
                   RandomMask(fraction=0.25, score_params="weights")]:
        model = trained_like_model()
        before = snapshot(model)
        params.forget(model, boundary(fresh_cnn(), digits_images(), seed=4))
        m = weight_masks(model, before)
        counts[params.kind] = sum(int(v.sum()) for v in m.values())
        masks[params.kind] = torch.cat([v.flatten() for v in m.values()])
    assert counts["random_mask"] == counts["lure"] == int(0.25 * masks["lure"].numel())
    overlap = (masks["lure"] & masks["random_mask"]).sum() / masks["lure"].sum()
    assert overlap < 0.5  # chance level: about a quarter


def test_random_mask_is_spread_over_every_tensor_in_proportion():
    model = trained_like_model()
    before = snapshot(model)
    RandomMask(fraction=0.5, score_params="weights").forget(model, boundary(fresh_cnn(), digits_images()))
    for n, m in weight_masks(model, before).items():
        if m.numel() >= 500:
            assert 0.4 < m.float().mean() < 0.6, n


# --- Knowledge Evolution --------------------------------------------------------------------------


def test_kels_keeps_the_first_filters_over_the_first_inputs_and_resets_the_rest():
    model = trained_like_model()  # small_cnn(1 channel, 10 classes, width 8)
    before = snapshot(model)
    reset = KnowledgeEvolution(split="kels", split_rate=0.3).forget(model, boundary(fresh_cnn(), digits_images()))
    fresh = dict(fresh_cnn()().named_parameters())
    after = dict(model.named_parameters())
    # The fit part of each tensor, written out for this network and a split rate of 0.3:
    # ceil(0.3 * 8) = 3, ceil(0.3 * 16) = 5, ceil(0.3 * 32) = 10 units.
    fit = {
        "body.0.0.weight": (slice(0, 3), slice(0, 1)),   # (8, 1, 3, 3): the image channel is not split
        "body.0.1.weight": (slice(0, 3),), "body.0.1.bias": (slice(0, 3),),
        "body.1.0.weight": (slice(0, 5), slice(0, 3)),   # (16, 8, 3, 3)
        "body.1.1.weight": (slice(0, 5),), "body.1.1.bias": (slice(0, 5),),
        "body.3.0.weight": (slice(0, 10), slice(0, 5)),  # (32, 16, 3, 3)
        "body.3.1.weight": (slice(0, 10),), "body.3.1.bias": (slice(0, 10),),
        "head.weight": (slice(0, 10), slice(0, 10)),     # (10, 32): the classes are not split
        "head.bias": (slice(0, 10),),
    }
    assert set(fit) == set(before)
    for n, p in before.items():
        keep = torch.zeros(p.shape, dtype=torch.bool)
        keep[fit[n]] = True
        assert torch.equal(after[n].detach()[keep], p[keep]), n  # fit part: bit-identical
        assert torch.equal(after[n].detach()[~keep], fresh[n].detach()[~keep]), n  # reset part: a fresh model's
        assert reset[n] == pytest.approx(1 - keep.float().mean().item())
    assert reset["body.1.0.weight"] == pytest.approx(1 - (5 * 3) / (16 * 8))
    assert reset["head.bias"] == 0.0


def test_wels_split_is_fixed_for_a_run_and_keeps_about_the_rate():
    masks = []
    for chunk_seed in [1, 2]:  # two chunks of one run: new draws, the same split
        model = trained_like_model()
        before = snapshot(model)
        method = KnowledgeEvolution(split="wels", split_rate=0.7, reinit="kaiming")
        method.forget(model, boundary(fresh_cnn(), digits_images(), seed=chunk_seed, run_seed=9))
        masks.append(torch.cat([(p.detach() != before[n]).flatten() for n, p in model.named_parameters()]))
    assert torch.equal(masks[0], masks[1])
    assert 0.25 < masks[0].float().mean() < 0.35
    model = trained_like_model()
    before = snapshot(model)
    method.forget(model, boundary(fresh_cnn(), digits_images(), run_seed=10))
    other_run = torch.cat([(p.detach() != before[n]).flatten() for n, p in model.named_parameters()])
    assert not torch.equal(other_run, masks[0])


# --- the architectures declare what the methods need ------------------------------------------


@pytest.mark.parametrize("arch", ["small_cnn", "resnet18", "resnet50", "mlp"])
def test_layers_cover_every_parameter_once_and_units_chain(arch):
    torch.manual_seed(0)
    builders = {"small_cnn": lambda: small_cnn(3, 10, 8), "mlp": lambda: mlp(3, (8, 8), 10, width=16, depth=3)}
    model = builders.get(arch, lambda: resnet(arch, 3, 10))()
    owners = {}
    for layer, paths in model.layers.items():
        for path in paths:
            for name, _ in model.get_submodule(path).named_parameters():
                owners.setdefault(f"{path}.{name}", []).append(layer)
    assert set(owners) == {n for n, _ in model.named_parameters()}
    assert all(len(v) == 1 for v in owners.values())
    assert list(model.layers)[-1] == "head" and model.units
    for units in model.units:
        conv, consumer = model.get_submodule(units.conv), model.get_submodule(units.consumer)
        assert conv.weight.shape[0] == consumer.weight.shape[1]
        if units.bn is not None:
            assert model.get_submodule(units.bn).num_features == conv.weight.shape[0]


def test_the_mlp_is_flatten_then_relu_layers_of_width_units():
    torch.manual_seed(0)
    model = mlp(3, (8, 6), 10, width=16, depth=2)
    assert [type(m).__name__ for m in model.body] == ["Flatten", "Linear", "ReLU", "Linear", "ReLU"]
    assert model.body[1].weight.shape == (16, 3 * 8 * 6) and model.head.weight.shape == (10, 16)
    x = torch.rand(5, 3, 8, 6)
    normalised = model.normalize(x).flatten(1)
    hidden = torch.relu(model.body[3](torch.relu(model.body[1](normalised))))
    assert torch.allclose(model(x), model.head(hidden))
    assert list(model.layers) == ["layer1", "layer2", "head"] and len(model.units) == 2
