"""CUDA's device rules, checked on every CI run (tests/emulated_cuda.py): each rule catches a bug of
its kind planted in the product's own code; the training loop waits for the GPU a fixed number of
times per epoch, not per batch; cuBLAS is configured before its first use; and a relearn stage runs
as DVC runs it with `train.device: cuda`.

A planted bug is a one-line change to a module's source (`mutant`), run as that module: the test
fails loudly if the line it changes is no longer there."""

import json
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
import yaml

import lure.train
from lure.config import TrainSettings
from lure.images import Images
from lure.models import set_input_stats, small_cnn
from lure.placement import place
from lure.streams import batch_order
from lure.train import fit
from tests.conftest import ROOT, digits_images
from tests.emulated_cuda import CudaRuleBroken, emulated_cuda
from tests.test_placement import mapped

CUDA = torch.device("cuda")


def mutant(module: str, line: str, planted: str) -> types.ModuleType:
    """Module `module` (lure.train, ...) with `line` replaced by `planted`, as a module of its own."""
    path = ROOT / (module.replace(".", "/") + ".py")
    source = path.read_text()
    assert source.count(line) == 1, f"{path.name} no longer holds the line to plant a bug in: {line!r}"
    planted_module = types.ModuleType(f"{module}_planted")
    planted_module.__file__ = str(path)
    sys.modules[planted_module.__name__] = planted_module  # where dataclasses look their module up
    try:
        exec(compile(source.replace(line, planted), str(path), "exec"), planted_module.__dict__)
    finally:
        del sys.modules[planted_module.__name__]
    return planted_module


def short_fit(train_module, images: Images, device=CUDA, **settings):
    torch.manual_seed(0)
    model = small_cnn(1, 10, width=4)
    set_input_stats(model, torch.from_numpy(np.array(images.x)))
    model.to(device)
    placed = place({"train": images, "val": images}, device, settings.pop("placement", "resident"))
    return train_module.fit(model, placed["train"], placed["val"],
                            TrainSettings(**{"epochs": 1, "batch_size": 16, **settings}), batch_order(0, 1))


def numpy_images(n: int) -> Images:
    images = digits_images(0, n)
    return Images(images.x.numpy(), images.y.numpy())


# --- each rule catches a bug of its kind, planted in the product ----------------------------------


def test_a_device_mismatch_is_caught():
    import lure.augment

    planted = mutant("lure.augment", "rows = offsets[:, :1] + torch.arange(h, device=x.device)",
                     "rows = offsets[:, :1] + torch.arange(h)")
    x = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    offsets, flips = lure.augment.draw_crop_flip(4, 2, torch.Generator().manual_seed(0))
    planted.crop_flip(x, 2, offsets, flips)  # on the CPU the bug does no harm
    with emulated_cuda() as rules, pytest.raises(CudaRuleBroken, match="device mismatch"):
        planted.crop_flip(x.to(CUDA), 2, offsets.to(CUDA), flips.to(CUDA))
    assert [v.kind for v in rules.violations] == ["device mismatch"]
    assert any("lure/augment.py" in frame for frame in rules.violations[0].stack)  # where, in the product


def test_a_cpu_generator_for_a_cuda_draw_is_caught():
    line = "host_order = torch.randperm(len(train), generator=generator)"
    planted = mutant("lure.train", line, "host_order = torch.randperm(len(train), generator=generator, "
                                         "device=device)")
    short_fit(planted, numpy_images(48), torch.device("cpu"))
    with emulated_cuda() as rules, pytest.raises(CudaRuleBroken, match="CPU generator for a cuda draw"):
        short_fit(planted, numpy_images(48))
    assert rules.violations[0].kind == "CPU generator for a cuda draw"


def test_numpy_of_a_cuda_tensor_is_caught():
    from lure.corruptions import corrupt_images

    planted = mutant("lure.corruptions", "images = to_uint8(x.clamp(0, 1)).permute(0, 2, 3, 1).cpu().numpy()",
                     "images = to_uint8(x.clamp(0, 1)).permute(0, 2, 3, 1).numpy()")
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(planted.corrupt_images(x, "jpeg_compression", 3, seed=0),
                       corrupt_images(x, "jpeg_compression", 3, seed=0))
    with emulated_cuda() as rules, pytest.raises(CudaRuleBroken, match=r"\.numpy\(\) of a cuda tensor"):
        planted.corrupt_images(x.to(CUDA), "jpeg_compression", 3, seed=0)
    assert rules.violations[0].kind == ".numpy() of a cuda tensor"


def test_a_cuda_index_into_a_cpu_tensor_is_caught(monkeypatch):
    from lure.methods.base import Method
    from tests.conftest import boundary, trained_like_model

    monkeypatch.setattr(Method, "registry", {})  # the planted module declares its kind again
    planted = mutant("lure.methods.continual_backprop",
                     "index = eligible[score.topk(count, largest=False).indices.cpu()]",
                     "index = eligible[score.topk(count, largest=False).indices]")
    with emulated_cuda() as rules, pytest.raises(CudaRuleBroken, match="cuda index into a CPU tensor"):
        model = trained_like_model().to(CUDA)
        images = digits_images(0, 64)
        edge = boundary(images=Images(images.x.to(CUDA), images.y.to(CUDA)))
        hook = planted.ContinualBackprop(maturity=0, replacement_rate=0.5).relearning(model, edge)
        fit(model, edge.replay, edge.replay, TrainSettings(epochs=1, batch_size=32, precision="fp32"),
            torch.Generator().manual_seed(0), None, [hook])
    assert rules.violations[0].kind == "cuda index into a CPU tensor"


def test_an_op_without_a_deterministic_cuda_kernel_is_caught():
    """A max-pool written as AdaptiveMaxPool2d computes the same, but its backward has no
    deterministic CUDA kernel: under `deterministic: true` a GPU warns, this fails."""
    from lure.device import pick_device

    planted = mutant("lure.models", "        nn.MaxPool2d(2),\n", "        nn.AdaptiveMaxPool2d(4),\n")
    images = numpy_images(48)
    with emulated_cuda() as rules:
        pick_device(TrainSettings(device="cuda", deterministic=False))
        torch.manual_seed(0)
        model = planted.small_cnn(1, 10, width=4).to(CUDA)
        placed = place({"train": images, "val": images}, CUDA, "resident")
        fit(model, placed["train"], placed["val"], TrainSettings(epochs=1, batch_size=16), batch_order(0, 1))
        assert rules.violations == []  # benchmark mode: nondeterministic kernels are allowed
        pick_device(TrainSettings(device="cuda", deterministic=True))
        fit(model, placed["train"], placed["val"], TrainSettings(epochs=1, batch_size=16), batch_order(0, 1))
    assert {v.kind for v in rules.violations} == {"no deterministic CUDA kernel"}
    assert "adaptive_max_pool2d_backward" in rules.violations[0].detail


def test_the_emulation_follows_cudas_rules_where_they_are_subtle():
    """CPU 0-dim tensors are scalars of elementwise ops, not of others, and never their outputs; a
    write into a CPU tensor leaves it on the CPU; an explicit device is obeyed; a non_blocking copy
    to the host is a race; a copy to the device from pageable memory makes the host wait."""
    with emulated_cuda() as rules:
        on_gpu, scalar = torch.ones((), device=CUDA), torch.ones(())
        assert (on_gpu + scalar).is_cuda and (torch.ones(3, device=CUDA) * scalar).is_cuda
        torch.ones(3, device=CUDA).masked_fill_(torch.ones(3, dtype=torch.bool, device=CUDA), scalar)
        with pytest.raises(CudaRuleBroken, match="device mismatch"):
            torch.stack([on_gpu, scalar])
        with pytest.raises(CudaRuleBroken, match="device mismatch"):
            scalar.add_(on_gpu)
        host = torch.zeros(3)
        host[torch.tensor([0])] = on_gpu  # CUDA copies a 0-dim value to the indexed tensor's device
        assert not host.is_cuda and host.numpy()[0] == 1
        assert not torch.zeros_like(on_gpu, device="cpu").is_cuda and on_gpu.new_zeros(2, device="cpu").is_cpu
        with pytest.raises(CudaRuleBroken, match="non_blocking copy to the host"):
            on_gpu.to("cpu", non_blocking=True)
        waits = len(rules.syncs)
        torch.ones(3).pin_memory().to(CUDA, non_blocking=True)
        assert len(rules.syncs) == waits
        torch.ones(3).to(CUDA, non_blocking=True)
        assert "pageable" in rules.syncs[-1].detail
    assert [v.kind for v in rules.violations] == ["device mismatch"] * 2 + ["non_blocking copy to the host"]


# --- the host never waits for the GPU once per batch --------------------------------------------


@pytest.mark.parametrize("placement", ["resident", "streamed"])
@pytest.mark.parametrize("augment", ["none", "crop_flip"])
def test_training_waits_for_the_gpu_as_often_whatever_the_number_of_batches(tmp_path, placement, augment):
    """The syncs of one epoch (the loss and accuracy read at its end, the validation) are the
    same for 4 batches as for 16: none is made per batch."""
    def syncs(n: int) -> list:
        images = mapped(digits_images(0, n), tmp_path / f"{n}.npz")
        with emulated_cuda() as rules:
            short_fit(lure.train, images, placement=placement, augment=augment,
                      crop_padding=1)
        assert rules.violations == []
        return rules.syncs

    few, many = syncs(64), syncs(256)
    assert len(many) == len(few), "\n".join(map(str, many))


# --- cuBLAS is configured before its first use ----------------------------------------------------

FIRST_CUBLAS_USE = """
import os, sys, torch
sys.path.insert(0, {root!r})
from tests.emulated_cuda import emulated_cuda
with emulated_cuda() as rules:
    if {before_lure}:  # cuBLAS first used before lure is imported
        torch.ones(2, 2, device="cuda") @ torch.ones(2, 2, device="cuda")
    from lure.corruptions import corrupt_images  # through torch.linalg, as the corruption test does
    corrupt_images(torch.zeros(2, 3, 32, 32, dtype=torch.uint8, device="cuda"), "elastic_transform", 1, seed=0)
    from lure.config import TrainSettings
    from lure.device import pick_device
    pick_device(TrainSettings(device="cuda", deterministic=True))
    torch.nn.Linear(4, 2).cuda()(torch.ones(3, 4, device="cuda"))
print([v.kind for v in rules.violations])
"""


@pytest.mark.parametrize("before_lure", [False, True])
def test_cublas_is_configured_before_lures_code_first_uses_it(before_lure):
    """In a fresh process without CUBLAS_WORKSPACE_CONFIG: lure's own first cuBLAS call (here in a
    corruption, before any stage picks a device) already has the deterministic workspace. The
    planted bug: a process that used cuBLAS before importing lure, which the rule catches."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    ran = subprocess.run([sys.executable, "-c", FIRST_CUBLAS_USE.format(root=str(ROOT), before_lure=before_lure)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert ran.returncode == 0, ran.stderr[-2000:]
    found = eval(ran.stdout.strip().splitlines()[-1])
    assert found == (["cuBLAS not deterministic"] if before_lure else [])


# --- a relearn stage as DVC runs it, with train.device: cuda -------------------------------------


def test_dvc_runs_the_stages_of_a_relearn_on_emulated_cuda(tmp_path, monkeypatch):
    """`dvc repro` of LURE's relearn stage and its evaluation, every stage process under the
    emulation (tests/emulated_cuda_site): the GPU path of prepare, learn, branch, relearn (with the
    stability probe), corrupt and evaluate breaks none of CUDA's rules."""
    from tests.test_pipeline import commit, dvc, git, lure, project_files

    for name in project_files():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["data"]["chunk_size"] = 100
    params["chunks"] = [{"k": 2, "prev": 1}]
    params["methods"] = {"lure": params["methods"]["lure"]}
    params["model"]["width"] = 4
    params["train"].update(device="cuda", epochs=2, lr_milestones=[1], augment="crop_flip", crop_padding=1)
    params["stability"].update(every=2, samples=10)
    params["robustness"].update(corruptions="standard", severities=[1], test_images=20)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    lure(tmp_path, "pipelines")
    git(tmp_path, "init", "-q")
    commit(tmp_path, "tiny project on cuda")
    report = tmp_path / "emulated-cuda.jsonl"
    monkeypatch.setenv("LURE_EMULATED_CUDA", "1")
    monkeypatch.setenv("LURE_EMULATED_CUDA_REPORT", str(report))
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "tests" / "emulated_cuda_site"))
    out = dvc(tmp_path, "repro", "pipelines/lure/dvc.yaml:evaluate@0")
    assert not report.exists(), report.read_text()  # nothing broke a rule
    assert "chunk 2: reset" in out and "on cuda" in out
    relearned = json.loads((tmp_path / "metrics/relearn/seed_0/lure/chunk_2.json").read_text())
    assert relearned["provenance"]["device"] == "cuda" and "emulated" in relearned["provenance"]["gpu"]
    assert relearned["stability"]["gap_depth"] >= 0
    evaluated = json.loads((tmp_path / "metrics/evaluate/seed_0/lure.json").read_text())
    assert evaluated["provenance"]["device"] == "cuda"
