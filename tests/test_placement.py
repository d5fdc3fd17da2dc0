"""Images resident on the device or streamed from the memory-mapped chunk files: the same
batches, so the same weights; and chunk files mapped, not read, until used."""

import numpy as np
import pytest
import torch

from lure.config import TrainSettings
from lure.images import Concatenated, Images
from lure.io import load_arrays, save_arrays
from lure.models import set_input_stats, small_cnn
from lure.placement import Streamed, place
from lure.streams import batch_order
from lure.train import fit
from tests.conftest import digits_images


def mapped(images: Images, path) -> Images:
    """`images` written as a chunk file is, and mapped back."""
    save_arrays(path, {"x": np.asarray(images.x), "y": np.asarray(images.y)})
    arrays = load_arrays(path, mmap=True)
    assert isinstance(arrays["x"], np.memmap)
    return Images(arrays["x"], np.array(arrays["y"]))


def test_a_memory_mapped_chunk_file_reads_as_the_arrays_written(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"x": rng.integers(0, 256, (50, 3, 5, 7), dtype=np.uint8), "y": rng.integers(0, 9, 50),
              "empty": np.zeros((0, 3, 5, 7), np.uint8), "fortran": np.asfortranarray(rng.random((6, 4)))}
    save_arrays(tmp_path / "a.npz", arrays)
    with np.load(tmp_path / "a.npz") as npz:  # numpy's own reader
        assert all(np.array_equal(npz[k], v) for k, v in arrays.items())
    for name, array in load_arrays(tmp_path / "a.npz", mmap=True).items():
        assert np.array_equal(array, arrays[name]) and array.shape == arrays[name].shape, name


def test_a_concatenated_replay_set_indexes_like_numpys_concatenation(tmp_path):
    rng = np.random.default_rng(1)
    parts = [rng.integers(0, 256, (n, 1, 3, 3), dtype=np.uint8) for n in (4, 0, 7, 5)]
    lazy = Concatenated([mapped(Images(p, np.zeros(len(p), np.int64)), tmp_path / f"{i}.npz").x if len(p) else p
                         for i, p in enumerate(parts)])
    whole = np.concatenate(parts)
    assert lazy.shape == whole.shape and len(lazy) == 16
    for index in (np.array([15, 0, 3, 4, 11, 4]), slice(2, 13, 3), 10, np.arange(16)[::-1]):
        assert np.array_equal(lazy[index], whole[index]), index
    assert np.array_equal(np.asarray(lazy), whole)


def test_streamed_images_read_like_the_resident_tensor(tmp_path):
    images = mapped(digits_images(0, 90), tmp_path / "d.npz")
    resident, streamed = images.on(torch.device("cpu")).x, Streamed(images.x, torch.device("cpu"))
    index = torch.tensor([5, 89, 0, 5, 33])
    assert torch.equal(streamed[index], resident[index]) and streamed.shape == resident.shape
    assert torch.equal(streamed[10:70][torch.tensor([0, 59])], resident[10:70][torch.tensor([0, 59])])
    assert [len(b) for b in streamed.split(40)] == [40, 40, 10] and not isinstance(streamed.split(40), list)
    assert torch.equal(torch.cat(list(streamed.split(40))), resident)


def test_input_statistics_are_numpys_and_the_same_streamed():
    images = np.asarray(digits_images(0, 300).x)
    x = images.astype(np.float64) / 255
    for source in (torch.from_numpy(images), Streamed(images, torch.device("cpu"))):
        model = small_cnn(1, 10, width=4)
        set_input_stats(model, source, batch_size=64)
        assert np.allclose(model.normalize.mean.numpy(), x.mean((0, 2, 3)), rtol=1e-6)
        assert np.allclose(model.normalize.std.numpy(), x.std((0, 2, 3), ddof=1), rtol=1e-6)


@pytest.mark.parametrize("augment", ["crop_flip", "resized_crop_flip"])
def test_streamed_and_resident_training_give_the_same_weights(tmp_path, augment):
    train = mapped(digits_images(0, 200), tmp_path / "train.npz")
    val = mapped(digits_images(200, 260), tmp_path / "val.npz")
    settings = TrainSettings(device="cpu", epochs=3, batch_size=32, lr=0.05, lr_milestones=[2], augment=augment,
                             crop_padding=1)
    weights = {}
    for placement in ("resident", "streamed"):
        placed = place({"train": train, "val": val}, torch.device("cpu"), placement)
        assert isinstance(placed["train"].x, Streamed) == (placement == "streamed")
        torch.manual_seed(0)
        model = small_cnn(1, 10, width=4)
        set_input_stats(model, placed["train"].x)
        result = fit(model, placed["train"], placed["val"], settings, batch_order(0, 1))
        weights[placement] = (model.state_dict(), result.metrics())
    (resident, resident_metrics), (streamed, streamed_metrics) = weights["resident"], weights["streamed"]
    assert resident_metrics == streamed_metrics
    assert all(torch.equal(resident[name], streamed[name]) for name in resident)


def test_auto_keeps_resident_what_fits_and_streams_the_rest(monkeypatch, capsys):
    import lure.placement

    small, large = (Images(np.asarray(d.x), np.asarray(d.y)) for d in (digits_images(0, 10), digits_images(0, 400)))
    monkeypatch.setattr(lure.placement, "free_memory", lambda device: 2 * 10_000)
    placed = place({"train": large, "val": small, "new": small}, torch.device("cpu"), "auto")
    assert [isinstance(placed[k].x, Streamed) for k in ("train", "val", "new")] == [True, False, False]
    said = capsys.readouterr().out
    assert "train 400 (0.0 MB) streamed" in said and "val 10 (0.0 MB) resident" in said
