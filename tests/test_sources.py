"""Every data source loads real data; an absent dataset gets a message saying what to put where."""

import numpy as np
import pytest
import torch

from lure.config import DigitsData, ModelSettings, TorchvisionData, TrainSettings
from lure.errors import LureError
from lure.models import accuracy, build_model, set_input_stats
from lure.sources import Source, decode, few_shot, load_source
from lure.train import fit
from tests.conftest import SHARED_DATA, needs_shared_data


@pytest.fixture(scope="module")
def cifar10(tmp_path_factory):
    """CIFAR-10's pool and test set from the ImageFolder copy, decoded as prepare decodes them."""
    data = TorchvisionData(source="cifar10", root=SHARED_DATA / "cifar10", download=False, chunk_size=100)
    source, scratch = load_source(data, 0), tmp_path_factory.mktemp("decoded")
    return Source(decode(source.pool, scratch, "pool")[0], decode(source.test, scratch, "test")[0], source.classes)


@needs_shared_data
def test_mnist_loads_from_torchvision_files():
    source = load_source(TorchvisionData(source="mnist", root=SHARED_DATA, download=False, chunk_size=100), 0)
    assert source.pool.x.shape == (60000, 1, 28, 28) and source.test.x.shape == (10000, 1, 28, 28)
    assert source.pool.x.dtype == np.uint8 and len(source.classes) == 10
    assert np.bincount(source.test.y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert source.pool.x.mean() / 255 == pytest.approx(0.1307, abs=1e-3)  # the published mean


@needs_shared_data
def test_cifar10_loads_from_an_imagefolder_copy(cifar10):
    assert cifar10.pool.x.shape == (50000, 3, 32, 32) and cifar10.test.x.shape == (10000, 3, 32, 32)
    assert cifar10.classes[:3] == ["airplane", "automobile", "bird"]  # the official label order
    assert np.bincount(cifar10.pool.y).tolist() == [5000] * 10
    channel_means = cifar10.pool.x.mean(axis=(0, 2, 3)) / 255
    np.testing.assert_allclose(channel_means, [0.4914, 0.4822, 0.4465], atol=1e-3)  # published means


def test_few_shot_keeps_n_seeded_images_per_class():
    full = load_source(DigitsData(), seed=0)
    few = load_source(DigitsData(shots_per_class=7), seed=0)
    assert np.bincount(few.pool.y).tolist() == [7] * 10
    assert np.array_equal(few.test.y, full.test.y)  # the test set is untouched
    rows = {x.tobytes() for x in full.pool.x}
    assert all(x.tobytes() in rows for x in few.pool.x)
    assert np.array_equal(load_source(DigitsData(shots_per_class=7), seed=0).pool.x, few.pool.x)
    assert not np.array_equal(few_shot(full.pool, 7, seed=1).x, few_shot(full.pool, 7, seed=2).x)


@pytest.mark.parametrize("source, folder", [("mnist", "MNIST/raw"), ("cifar10", "cifar-10-batches-py"),
                                            ("cifar100", "cifar-100-python")])
def test_absent_dataset_says_what_to_put_where(tmp_path, source, folder):
    with pytest.raises(LureError) as info:
        load_source(TorchvisionData(source=source, root=tmp_path, download=False, chunk_size=10), 0)
    message = str(info.value)
    assert f"{source} is not in {tmp_path / folder}" in message and "data.download is off" in message
    assert "ImageFolder copy" in message


@needs_shared_data
def test_short_cifar10_run_on_cpu_learns(cifar10):
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    train = cifar10.pool.take(np.arange(0, 50000, 20)).on(cpu)  # 2500 images, all classes
    val = cifar10.test.take(np.arange(0, 10000, 10)).on(cpu)
    model = build_model(ModelSettings(arch="small_cnn", width=16), 3, 10)
    set_input_stats(model, train.x)
    params = TrainSettings(epochs=2, batch_size=32, lr=0.05, lr_milestones=[], augment="crop_flip")
    result = fit(model, train, val, params, torch.Generator().manual_seed(0))
    assert result.updates == 2 * 79  # a few hundred steps
    assert accuracy(model, val) > 0.2  # chance: 0.1; 0.293 with the suite's portable kernels, on any CPU kind


def test_resnets_take_any_channel_count_and_end_in_the_head():
    for arch, size in [("resnet18", 32), ("resnet50", 64)]:
        for channels in (1, 3):
            model = build_model(ModelSettings(arch=arch), channels, 7).eval()
            assert model(torch.rand(2, channels, size, size)).shape == (2, 7)
            assert isinstance(model.head, torch.nn.Linear)
    stem = build_model(ModelSettings(arch="resnet18"), 3, 10).body
    assert stem.conv1.kernel_size == (3, 3) and stem.conv1.stride == (1, 1)
    assert isinstance(stem.maxpool, torch.nn.Identity)  # the CIFAR stem
    assert isinstance(build_model(ModelSettings(arch="resnet50"), 3, 10).body.maxpool, torch.nn.MaxPool2d)
