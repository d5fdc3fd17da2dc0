"""The device path: every piece that a stage runs with `train.device: cuda`, on every device this
machine has (the `device` fixture: the CPU always, CUDA where there is one), against the CPU or
against its definition. Run on a GPU machine, `pytest -k cuda` is the GPU test suite."""

import pytest
import torch

from lure.config import TrainSettings
from lure.corruptions import STANDARD, corrupt_images
from lure.device import pick_device
from lure.images import Images
from lure.methods import METHODS, Boundary
from lure.methods.lure import Lure, snip_saliency
from lure.metrics import calibration
from lure.models import accuracy, first_batches, predict, set_input_stats, small_cnn
from lure.relearn import Probe
from lure.train import fit
from tests.conftest import digits_images, fresh_cnn, trained_like_model

CPU = torch.device("cpu")


def on(images: Images, device: torch.device) -> Images:
    return Images(images.x.to(device), images.y.to(device))


def test_corrupting_on_the_device_gives_the_cpus_images(device):
    from tests.test_corruptions import color_images

    x = (color_images()[:16] * 255).to(torch.uint8)
    for name in STANDARD + ("speckle_noise", "gaussian_blur", "saturate"):
        for severity in (1, 5):
            here = corrupt_images(x.to(device), name, severity, seed=3)
            assert here.device.type == device.type and here.dtype == torch.uint8
            reference = corrupt_images(x, name, severity, seed=3)
            # the same draws; float results may differ in their last bit, so a truncated pixel by one level
            assert (here.cpu().int() - reference.int()).abs().max() <= 1, (name, severity)
            assert torch.equal(here, corrupt_images(x.to(device), name, severity, seed=3))  # seeded


def test_crop_flip_on_the_device_matches_its_definition(device):
    from lure.augment import crop_flip, draw_crop_flip
    from tests.test_augment import reference

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8, generator=g)
    offsets, flips = draw_crop_flip(32, 4, g)
    out = crop_flip(x.to(device), 4, offsets.to(device), flips.to(device))
    assert out.device.type == device.type
    for i in range(32):
        assert torch.equal(out[i].cpu(), reference(x[i], 4, offsets[i], bool(flips[i])))


def test_resized_crop_flip_on_the_device_gives_the_cpus_images(device):
    from lure.augment import draw_resized_crop_flip, resized_crop_flip

    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8, generator=g)
    boxes, flips = draw_resized_crop_flip(32, 16, 16, g)
    here = resized_crop_flip(x.to(device), boxes.to(device), flips.to(device))
    assert here.device.type == device.type
    # the same sample points; bilinear weights may differ in their last bit, so a pixel by one level
    assert (here.cpu().int() - resized_crop_flip(x, boxes, flips).int()).abs().max() <= 1


@pytest.mark.parametrize("augment", ["crop_flip", "resized_crop_flip"])
def test_streamed_and_resident_training_on_the_device_give_the_same_weights(device, tmp_path, augment):
    from lure.placement import Streamed, place
    from lure.streams import batch_order
    from tests.test_placement import mapped

    train, val = mapped(digits_images(0, 200), tmp_path / "train.npz"), mapped(digits_images(200, 260),
                                                                                tmp_path / "val.npz")
    settings = TrainSettings(epochs=2, batch_size=32, lr=0.05, lr_milestones=[1], augment=augment, crop_padding=1)
    pick_device(TrainSettings(device=device.type))  # as a stage sets it up: deterministic algorithms on CUDA
    weights = {}
    for placement in ("resident", "streamed"):
        placed = place({"train": train, "val": val}, device, placement)
        assert isinstance(placed["train"].x, Streamed) == (placement == "streamed")
        torch.manual_seed(0)
        model = small_cnn(1, 10, width=4).to(device)
        set_input_stats(model, placed["train"].x)
        result = fit(model, placed["train"], placed["val"], settings, batch_order(0, 1))
        weights[placement] = ({k: v.cpu() for k, v in model.state_dict().items()}, result.metrics())
    assert weights["resident"][1] == weights["streamed"][1]
    assert all(torch.equal(weights["resident"][0][k], weights["streamed"][0][k]) for k in weights["resident"][0])


def short_fit(device: torch.device, **settings):
    pick_device(TrainSettings(device=device.type))  # as a stage sets it up: deterministic algorithms on CUDA
    torch.manual_seed(0)
    train, val = on(digits_images(0, 320), device), on(digits_images(320, 420), device)
    model = small_cnn(1, 10, width=8).to(device)
    set_input_stats(model, train.x)
    result = fit(model, train, val, TrainSettings(**{"epochs": 5, "batch_size": 32, "lr": 0.05,
                                                     "lr_milestones": [4], **settings}),
                 torch.Generator().manual_seed(0))
    return model, result, val


def test_a_short_fit_on_the_device_learns_and_is_deterministic(device):
    model, result, val = short_fit(device)
    assert result.val_acc > 0.5 and accuracy(model, val) == result.val_acc  # chance: 0.1
    assert all(m.device.type == "cpu" for m in result.state["momentum"].values())  # carried to the checkpoint
    again, _, _ = short_fit(device)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_a_short_fit_in_bf16_and_channels_last_learns(device):
    model, result, _ = short_fit(device, precision="bf16", augment="crop_flip", crop_padding=1)
    assert result.val_acc > 0.3  # chance: 0.1
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: the weights stay fp32
    assert model.body[0][0].weight.is_contiguous()  # laid out as stored again after the chunk


def boundary_on(device: torch.device, seed: int = 0) -> Boundary:
    images = on(digits_images(0, 64), device)
    build = fresh_cnn()
    return Boundary(initial={k: v.to(device) for k, v in build().state_dict().items()},
                    fresh_model=lambda: build().to(device), replay=images, new=images,
                    generator=torch.Generator().manual_seed(seed), run_generator=torch.Generator().manual_seed(9),
                    optimizer={"momentum": {n: torch.ones_like(p)
                                            for n, p in trained_like_model().to(device).named_parameters()}})


@pytest.mark.parametrize("kind", list(METHODS))
def test_every_method_forgets_on_the_device_as_on_the_cpu(device, kind):
    settings = {"redo": {"tau": 0.5}, "later_layers": {"from_layer": "layer2"}}.get(kind, {})
    method = METHODS[kind](**settings)
    results = {}
    for where in (CPU, device):
        model = trained_like_model().to(where)
        boundary = boundary_on(where)
        reset = method.forget(model, boundary)
        hook = method.relearning(model, boundary)
        assert all(v.device.type == where.type for v in model.state_dict().values())
        if hook:  # a method that acts while relearning: two updates with its hook, in fp32 on either device
            result = fit(model, boundary.replay, boundary.replay, TrainSettings(epochs=1, batch_size=32,
                                                                                  precision="fp32"),
                         torch.Generator().manual_seed(0), boundary.optimizer, [hook])
            assert result.updates == 2
            assert all(t.device.type == "cpu" for t in tensors_in(hook.state()))  # carried in the checkpoint
        # copies (.cpu() of a CPU tensor is the tensor itself), taken after everything the method did
        results[where.type] = (reset, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
    (cpu_reset, cpu_state), (reset, state) = results["cpu"], results[device.type]
    assert reset.keys() == cpu_reset.keys()
    assert all(reset[k] == pytest.approx(cpu_reset[k], abs=0.01) for k in reset)  # LURE: ties may fall apart
    for key, value in state.items():
        close = torch.isclose(value.float(), cpu_state[key].float(), rtol=1e-3, atol=1e-5)
        assert close.float().mean() > 0.99, key


def tensors_in(value) -> list[torch.Tensor]:
    """Every tensor in a nest of dicts and lists."""
    if isinstance(value, torch.Tensor):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [t for item in items for t in tensors_in(item)]


def test_the_mitigations_act_on_the_device_as_on_the_cpu(device):
    """Every stability-gap mitigation at once (a class-mean head after scratch's reset, soft targets,
    a fresh optimizer, a warm-up), in fp32 on either device."""
    method = METHODS["scratch"](mitigate={"head_init": "class_means", "soft_targets": True, "fresh_optimizer": True,
                                          "warmup": 0.3})
    states = {}
    for where in (CPU, device):
        model = trained_like_model().to(where)
        boundary = boundary_on(where)
        reset = method.forget(model, boundary)
        method.mitigate.at_boundary(model, reset, boundary.replay)
        fit(model, boundary.replay, boundary.replay, TrainSettings(epochs=2, batch_size=16, precision="fp32"),
            torch.Generator().manual_seed(0), boundary.optimizer, method.mitigate.hooks())
        states[where.type] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    for key, value in states[device.type].items():
        torch.testing.assert_close(value, states["cpu"][key], rtol=1e-3, atol=1e-4, msg=key)


def test_snip_on_the_device_is_the_cpus(device):
    model = trained_like_model()
    batches = first_batches(digits_images(0, 100), 1, 100)
    names = [n for n, _ in model.named_parameters()]
    cpu = snip_saliency(model, batches, names)
    here = snip_saliency(model.to(device), [(x.to(device), y.to(device)) for x, y in batches], names)
    for name in names:
        torch.testing.assert_close(here[name].cpu(), cpu[name], rtol=1e-3, atol=1e-7)


def test_bf16_autocast_and_channels_last_do_not_change_what_lure_resets(device):
    """Scoring runs in fp32 and in the default layout whatever the training used, so LURE marks and
    draws the same entries in a model laid out channels_last inside a bf16 autocast block."""
    def lure_on(model, autocast: bool):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            reset = Lure(fraction=0.3).forget(model, boundary_on(device, seed=4))
        changed = {n: (p.detach() != before[n]) for n, p in model.named_parameters()}
        return reset, changed, {n: p.detach().clone() for n, p in model.named_parameters()}

    plain = lure_on(trained_like_model().to(device), autocast=False)
    fast = lure_on(trained_like_model().to(device).to(memory_format=torch.channels_last), autocast=True)
    assert plain[0] == fast[0]
    assert all(torch.equal(plain[1][n], fast[1][n]) for n in plain[1])  # the same entries marked
    assert all(torch.equal(plain[2][n], fast[2][n]) for n in plain[2])  # and drawn alike


def test_the_stability_probe_measures_on_the_device(device):
    model = trained_like_model().to(device)
    held = [on(digits_images(a, a + 40), device) for a in (0, 40, 80)]
    probe = Probe(model, held, every=1)
    probe.measure(0)
    cpu_model = trained_like_model()
    expected = [accuracy(cpu_model, digits_images(a, a + 40)) for a in (0, 40, 80)]
    assert probe.curves.per_chunk[1][0] == pytest.approx(expected[0], abs=1e-6)
    assert probe.curves.old[0] == pytest.approx((expected[0] + expected[1]) / 2, abs=1e-6)
    assert probe.curves.new[0] == pytest.approx(expected[2], abs=1e-6)


def test_evaluation_and_calibration_on_the_device_are_the_cpus(device):
    cpu_model = trained_like_model()
    test = digits_images(0, 300)
    cpu = calibration(predict(cpu_model, test, 128), test.y, 15)
    here_test = on(test, device)
    logits = predict(cpu_model.to(device), here_test, 128)
    assert logits.device.type == device.type
    here = calibration(logits, here_test.y, 15)
    assert here == pytest.approx(cpu, abs=1e-5)
