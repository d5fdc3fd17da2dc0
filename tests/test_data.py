"""Chunking and replay on the real digits data."""

import numpy as np
import pytest

from lure.chunks import Chunk, chunk_indices, describe_sizes, load_chunks, load_test, split_chunk
from lure.config import ReplaySettings, parse_params
from lure.errors import LureError
from lure.images import Images
from lure.io import load_arrays
from lure.prepare import prepare
from lure.replay import replay, reservoir
from lure.sources import decode, load_source


def params_with(params_dict, n_chunks, seed=0):
    params_dict["chunks"] = [{"k": k, "prev": k - 1} for k in range(2, n_chunks + 1)]
    params_dict["seed"] = seed
    return parse_params(params_dict)


def test_chunks_are_deterministic_disjoint_and_seeded():
    a = [chunk_indices(1000, 100, k, seed=0) for k in range(1, 9)]
    b = [chunk_indices(1000, 100, k, seed=0) for k in range(1, 9)]
    c = [chunk_indices(1000, 100, k, seed=1) for k in range(1, 9)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    flat = np.concatenate(a)
    assert len(np.unique(flat)) == len(flat) == 800


def test_too_many_chunks_for_the_pool_are_refused():
    with pytest.raises(LureError, match="data.chunk_size: 11 chunks of 100 images need 1100"):
        chunk_indices(1000, 100, 11, seed=0)


def test_chunks_of_listed_sizes_cut_the_same_permutation():
    """[10, 90] of a pool of 100: Hare & Tortoise's 10% then the rest; an int is the list of equal sizes."""
    first, rest = (chunk_indices(100, [10, 90], k, seed=0) for k in (1, 2))
    assert len(first) == 10 and len(rest) == 90 and set(first) | set(rest) == set(range(100))
    assert np.array_equal(chunk_indices(100, [10, 10, 80], 2, seed=0), chunk_indices(100, 10, 2, seed=0))
    with pytest.raises(LureError, match="the 2 chunks' sizes add up to 110, but the training pool has 100"):
        chunk_indices(100, [20, 90], 2, seed=0)
    with pytest.raises(LureError, match="data.chunk_size: lists 2 sizes, but chunk 3 is listed"):
        chunk_indices(100, [10, 20], 3, seed=0)
    assert [describe_sizes(size, n) for size, n in [([10, 90], 2), ([10, 20, 70], 3), ([10, 90], 1), (175, 4)]] == [
        "2 chunks of 10 and 90 images", "3 chunks of 10, 20 and 70 images", "1 chunk of 10 images",
        "4 chunks of 175 images"]


def test_validation_split_is_disjoint_and_sized():
    x = np.arange(200, dtype=np.uint8).reshape(200, 1, 1, 1)
    chunk = split_chunk(Images(x, np.arange(200)), 0.1, k=2, seed=0)
    assert len(chunk.val) == 20 and len(chunk.train) == 180
    assert set(chunk.val.y).isdisjoint(chunk.train.y)
    assert set(chunk.val.y) | set(chunk.train.y) == set(range(200))


def test_prepared_chunks_stay_byte_identical_when_more_arrive(params_dict, in_tmp):
    prepare(params_with(params_dict, 3), in_tmp / "three")
    prepare(params_with(params_dict, 4), in_tmp / "four")
    for name in ["test.npz", "chunk_1.npz", "chunk_2.npz", "chunk_3.npz", "seen_1.json", "seen_3.json"]:
        assert (in_tmp / "three" / name).read_bytes() == (in_tmp / "four" / name).read_bytes(), name
    assert (in_tmp / "four" / "chunk_4.npz").exists() and not (in_tmp / "three" / "chunk_4.npz").exists()


def test_prepared_data_is_a_function_of_the_seed(params_dict, in_tmp):
    prepare(params_with(params_dict, 2, seed=0), in_tmp / "a")
    prepare(params_with(params_dict, 2, seed=0), in_tmp / "b")
    prepare(params_with(params_dict, 2, seed=1), in_tmp / "c")
    assert (in_tmp / "a" / "chunk_2.npz").read_bytes() == (in_tmp / "b" / "chunk_2.npz").read_bytes()
    assert (in_tmp / "a" / "chunk_2.npz").read_bytes() != (in_tmp / "c" / "chunk_2.npz").read_bytes()


def test_prepared_chunks_hold_real_disjoint_images(params_dict, in_tmp):
    from sklearn.datasets import load_digits

    p = params_with(params_dict, 4)
    prepare(p, in_tmp / "prep")
    chunks = load_chunks(4, in_tmp / "prep")
    test = load_test(in_tmp / "prep")
    images = [c.train.x for c in chunks] + [c.val.x for c in chunks] + [test.x]
    rows = {x.tobytes() for part in images for x in part}
    total = sum(len(part) for part in images)
    digits = load_digits()
    # Every stored image is a digits image (0..16 scaled to 0..255), labels kept.
    source = {np.rint(img * (255 / 16)).astype(np.uint8)[None].tobytes(): y
              for img, y in zip(digits.images, digits.target)}
    assert all(x.tobytes() in source for part in images for x in part)
    assert all(source[x.tobytes()] == y for c in chunks for x, y in zip(c.train.x, c.train.y))
    # No image shared between chunks or with the test set (digits has a few exact duplicates).
    assert total - len(rows) <= 2
    assert len(chunks[0].train) == 157 and len(chunks[0].val) == 18 and len(test) == 360


def test_tampered_chunk_is_refused(params_dict, in_tmp):
    prepare(params_with(params_dict, 2), in_tmp / "prep")
    arrays = load_arrays(in_tmp / "prep" / "chunk_1.npz")
    np.savez(in_tmp / "prep" / "chunk_1.npz", **{k: v[::-1] for k, v in arrays.items()})
    with pytest.raises(LureError, match="does not match"):
        load_chunks(2, in_tmp / "prep")


def test_the_chunk_check_reads_a_bounded_sample_of_a_large_file(tmp_path, monkeypatch):
    """sampled_md5 (what load_chunks checks) sees a change of size or of a sampled block, and
    reads 1 MiB of a 64 MiB file, where a full hash would read all of it."""
    import builtins

    from lure.io import sampled_md5

    path = tmp_path / "chunk.npz"
    data = bytearray(np.random.default_rng(0).integers(0, 256, 64 << 20, dtype=np.uint8).tobytes())
    path.write_bytes(data)
    read = []
    real_open = builtins.open

    def counting_open(*args, **kwargs):
        f = real_open(*args, **kwargs)
        real_read = f.read
        f.read = lambda n=-1: read.append(len(chunk := real_read(n))) or chunk  # noqa: E731
        return f

    monkeypatch.setattr(builtins, "open", counting_open)
    before = sampled_md5(path)
    monkeypatch.undo()
    assert sum(read) == 16 * (1 << 16)
    data[-1] ^= 1  # the last block is sampled
    path.write_bytes(data)
    flipped = sampled_md5(path)
    assert flipped != before
    path.write_bytes(data + b"x")
    assert sampled_md5(path) != flipped and sampled_md5(path).startswith(f"{(64 << 20) + 1}:")


def make_chunks(n: int, size: int = 50) -> list[Chunk]:
    """Chunks whose labels are their (chunk, index) ids, so selections can be traced."""
    def split(k, part, m):
        ids = np.array([k * 10_000 + part * 1000 + i for i in range(m)])
        return Images(np.zeros((m, 1, 2, 2), np.uint8), ids)
    return [Chunk(split(k, 0, size), split(k, 1, size // 5)) for k in range(1, n + 1)]


def test_full_replay_trains_on_every_chunk_so_far():
    chunks = make_chunks(3)
    sets = replay(chunks, ReplaySettings(mode="full", buffer_size=10, buffer_val_size=2), seed=0)
    assert list(sets.train.y) == [y for c in chunks for y in c.train.y]
    assert list(sets.val.y) == [y for c in chunks for y in c.val.y]


def test_no_replay_trains_on_the_new_chunk_only():
    chunks = make_chunks(3)
    sets = replay(chunks, ReplaySettings(mode="none", buffer_size=10, buffer_val_size=2), seed=0)
    assert list(sets.train.y) == list(chunks[-1].train.y)
    assert list(sets.val.y) == list(chunks[-1].val.y)


def test_buffer_replay_is_a_fixed_size_seeded_sample_of_earlier_chunks():
    chunks = make_chunks(4)
    sets = replay(chunks, ReplaySettings(mode="buffer", buffer_size=30, buffer_val_size=4), seed=0)
    old_train = {y for c in chunks[:-1] for y in c.train.y}
    new, buffer = sets.train.y[:50], sets.train.y[50:]  # the official order: the new chunk, then the buffer
    assert list(new) == list(chunks[-1].train.y)
    assert len(buffer) == 30 and len(set(buffer)) == 30 and set(buffer) <= old_train
    assert len(sets.val.y) == 4 + len(chunks[-1].val)
    again = replay(chunks, ReplaySettings(mode="buffer", buffer_size=30, buffer_val_size=4), seed=0)
    other = replay(chunks, ReplaySettings(mode="buffer", buffer_size=30, buffer_val_size=4), seed=1)
    assert np.array_equal(again.train.y, sets.train.y)
    assert not np.array_equal(other.train.y, sets.train.y)


def test_buffer_at_chunk_k_grows_from_the_buffer_at_chunk_k_minus_1():
    chunks = make_chunks(5)
    settings = ReplaySettings(mode="buffer", buffer_size=30, buffer_val_size=4)
    buffers = [set(replay(chunks[:k], settings, seed=0).train.y[50:]) for k in range(2, 6)]
    for k in range(1, len(buffers)):  # the buffer before chunk k+2 = that before k+1, plus some of chunk k+1
        arrived = set(chunks[k].train.y)
        assert buffers[k] <= buffers[k - 1] | arrived
        assert buffers[k] & arrived and buffers[k - 1] - buffers[k]


def test_buffer_with_room_for_everything_keeps_everything():
    chunks = make_chunks(3, size=10)
    sets = replay(chunks, ReplaySettings(mode="buffer", buffer_size=1000, buffer_val_size=1000), seed=0)
    assert sorted(sets.train.y) == sorted(y for c in chunks for y in c.train.y)


def test_reservoir_samples_uniformly():
    # Algorithm R keeps every item with probability capacity / n.
    rng = np.random.default_rng(0)
    counts = np.zeros(100)
    for _ in range(2000):
        for part, index in reservoir([40, 60], 10, rng):
            counts[part * 40 + index] += 1
    rate = counts / 2000
    assert rate.min() > 0.06 and rate.max() < 0.14  # expected 0.1 for each item, sd 0.0067


def test_imagefolder_source_reads_real_images(in_tmp):
    """An ImageFolder tree written from the digits images reads back pixel for pixel."""
    from PIL import Image
    from sklearn.datasets import load_digits

    from lure.config import ImageFolderData

    digits = load_digits()
    expected = {}
    for part, start in [("train", 0), ("test", 100)]:
        for i in range(start, start + 30):
            img = np.rint(digits.images[i] * (255 / 16)).astype(np.uint8)
            folder = in_tmp / "digits" / part / f"class_{digits.target[i]}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / f"{i:04d}.png")
            expected[(part, img.tobytes())] = f"class_{digits.target[i]}"
    data = ImageFolderData(source="imagefolder", path=in_tmp / "digits", chunk_size=5)
    source = load_source(data, seed=0)
    pool, test = (decode(images, in_tmp, part)[0] for images, part in ((source.pool, "pool"), (source.test, "test")))
    assert pool.x.shape == (30, 1, 8, 8) and test.x.shape == (30, 1, 8, 8)
    for part, split in [("train", pool), ("test", test)]:
        for x, y in zip(split.x, split.y):
            assert expected[(part, x[0].tobytes())] == source.classes[y]


def test_label_noise_replaces_a_seeded_share_of_one_chunks_training_labels_while_it_is_new(params_dict, in_tmp):
    """Chunk 1 with half its training labels wrong (Hare & Tortoise's warm start): exactly that
    many, each now another class, drawn across the classes; its images, its validation labels, the
    other chunks and the test set as without noise; and chunk 1 replayed at chunk 2 has its own
    labels again."""
    params_dict["data"]["label_noise"] = {"chunk": 1, "fraction": 0.5}
    prepare(params_with(params_dict, 2), in_tmp / "noisy")
    params_dict["data"]["label_noise"] = None
    prepare(params_with(params_dict, 2), in_tmp / "clean")
    for name in ("test.npz", "chunk_2.npz"):
        assert (in_tmp / "noisy" / name).read_bytes() == (in_tmp / "clean" / name).read_bytes(), name
    clean, noisy = load_chunks(1, in_tmp / "clean")[0], load_chunks(1, in_tmp / "noisy")[0]
    assert np.array_equal(np.asarray(noisy.train.x), np.asarray(clean.train.x))
    assert np.array_equal(noisy.val.y, clean.val.y)
    wrong = noisy.train.y != clean.train.y
    assert wrong.sum() == int(0.5 * len(clean.train)) == noisy.noisy and clean.noisy == 0
    moved = (noisy.train.y[wrong] - clean.train.y[wrong]) % 10  # the offset to the wrong class
    assert set(np.unique(moved)) == set(range(1, 10))  # any other class, never the true one
    replayed = load_chunks(2, in_tmp / "noisy")
    assert np.array_equal(replayed[0].train.y, clean.train.y) and replayed[0].noisy == 0


def test_label_noise_in_a_chunk_not_listed_is_refused(params_dict, in_tmp):
    params_dict["data"]["label_noise"] = {"chunk": 3, "fraction": 0.5}
    with pytest.raises(LureError, match="data.label_noise.chunk: 3 is not one of the 2 chunks"):
        prepare(params_with(params_dict, 2), in_tmp / "prepared")
