"""A user's own photo folder: images of any size and format Pillow reads, decoded once by
prepare with torchvision's Resize + CenterCrop rule, bad files reported or left out by path."""

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from lure.config import ImageFolderData
from lure.errors import LureError
from lure.sources import decode, load_source
from tests.conftest import run_stage

SIZES = [(40, 30), (30, 40), (17, 17), (64, 21), (16, 16), (23, 90)]
MODES = ["RGB", "L", "RGBA", "P"]


def photo(i: int) -> Image.Image:
    """A deterministic test picture: smooth gradients and a class-dependent stripe, in one of
    several sizes and modes."""
    w, h = SIZES[i % len(SIZES)]
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), ((xx + yy + 13 * i) % 256)], -1)
    return Image.fromarray(rgb.astype(np.uint8)).convert(MODES[i % len(MODES)])


def photo_folder(root, per_class: int, classes=("cat", "dog", "owl")) -> list:
    """train/ and test/ class folders of JPEG and PNG files; the files in the order read."""
    files = []
    for part, count in (("train", per_class), ("test", max(2, per_class // 4))):
        for c in classes:
            (root / part / c).mkdir(parents=True)
            for i in range(count):
                image = photo(i + 7 * len(c))
                suffix = ".png" if image.mode in ("RGBA", "P") or i % 2 else ".jpg"
                image = image.convert("RGB") if suffix == ".jpg" and image.mode not in ("RGB", "L") else image
                path = root / part / c / f"{i:04d}{suffix}"
                image.save(path)
                files.append(path)
    (root / "train" / classes[0] / "notes.txt").write_text("not an image: ignored")
    return files


def centre_crop_reference(path, size: int) -> np.ndarray:
    """The rule as torchvision states it, on the PIL image: Resize(size) then CenterCrop(size)."""
    from torchvision.transforms import functional

    with Image.open(path) as img:
        img = functional.center_crop(functional.resize(img.convert("RGB"), size), size)
        return np.asarray(img).transpose(2, 0, 1)


def test_mixed_sizes_and_formats_are_resized_by_torchvisions_rule(tmp_path):
    files = photo_folder(tmp_path, per_class=100)  # 300 training images: decoded by a pool of processes
    source = load_source(ImageFolderData(source="imagefolder", path=tmp_path, chunk_size=10, image_size=16), seed=0)
    (tmp_path / "scratch").mkdir()
    (pool, skipped), (test, _) = (decode(images, tmp_path / "scratch", "t") for images in (source.pool, source.test))
    assert pool.x.shape == (300, 3, 16, 16) and test.x.shape == (75, 3, 16, 16)
    assert pool.x.dtype == np.uint8 and list(np.bincount(pool.y)) == [100, 100, 100]
    train = [f for f in files if f.parts[-3] == "train"]
    for i in range(0, 300, 7):
        assert np.array_equal(pool.x[i], centre_crop_reference(train[i], 16)), train[i]
    assert source.classes == ["cat", "dog", "owl"] and skipped == []


def test_a_grayscale_folder_stays_one_channel(tmp_path):
    for part in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / part / c).mkdir(parents=True)
            for i in range(3):
                photo(4 * i + 1).convert("L").save(tmp_path / part / c / f"{i}.png")  # sizes vary with i
    source = load_source(ImageFolderData(source="imagefolder", path=tmp_path, chunk_size=2, image_size=8), seed=0)
    assert decode(source.pool, tmp_path, "t")[0].x.shape == (6, 1, 8, 8)


def test_mixed_sizes_without_image_size_name_the_file_and_the_setting(tmp_path):
    photo_folder(tmp_path, per_class=4)
    with pytest.raises(LureError, match=r"cat/0001.png: image is 16x16 pixels, the first was 64x21 \(width x "
                                        r"height\); set data.image_size"):
        decode(load_source(ImageFolderData(source="imagefolder", path=tmp_path, chunk_size=2), seed=0).pool, tmp_path, "t")


def test_an_empty_class_folder_is_named(tmp_path):
    photo_folder(tmp_path, per_class=4)
    (tmp_path / "train" / "emu").mkdir()
    (tmp_path / "test" / "emu").mkdir()
    with pytest.raises(LureError, match=r"the class folder .*train/emu has no images"):
        load_source(ImageFolderData(source="imagefolder", path=tmp_path, chunk_size=2, image_size=8), seed=0)


def test_a_truncated_image_stops_prepare_by_default_or_is_left_out_and_counted(tmp_path):
    photo_folder(tmp_path, per_class=12)
    bad = tmp_path / "train" / "dog" / "0003.png"
    bad.write_bytes(bad.read_bytes()[:60])  # truncated
    # two chunks of 18 take the whole pool of 36, the bad image too: only what the chunks take is read
    params = {"data": {"source": "imagefolder", "path": str(tmp_path), "chunk_size": 18, "image_size": 8},
              "chunks": [{"k": 2, "prev": 1}], "methods": {"warm": {}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    stopped = run_stage("stages.prepare", cwd=tmp_path)
    assert stopped.returncode == 2 and "Traceback" not in stopped.stderr
    assert f"error: {bad}: cannot be read" in stopped.stderr and "data.bad_images: skip" in stopped.stderr
    assert not (tmp_path / "data" / "prepared").exists()

    params["data"]["bad_images"] = "skip"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = run_stage("stages.prepare", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "1 unreadable images left out (listed in data/prepared/skipped.json)" in done.stdout
    assert json.loads((tmp_path / "data" / "prepared" / "skipped.json").read_text()) == {"files": [str(bad)]}
    meta = json.loads((tmp_path / "data" / "prepared" / "meta.json").read_text())
    assert "skipped_images" not in meta and meta["pool_size"] == 36 and meta["image_shape"] == [3, 8, 8]
    chunks = [np.load(tmp_path / "data" / "prepared" / f"chunk_{k}.npz") for k in (1, 2)]
    assert sum(len(c["y_train"]) + len(c["y_val"]) for c in chunks) == 35  # the chunk that took it has one fewer


# --- prepared chunks, training on them, ImageNet's superclasses -----------------------------------

def learnable_photo(label: int, i: int, rng: np.random.Generator) -> Image.Image:
    """A picture whose class shows in its colour (class c: channel c bright), in a random size,
    with noise, in one of several modes."""
    w, h = SIZES[i % len(SIZES)]
    rgb = rng.integers(0, 90, (h, w, 3))
    rgb[..., label % 3] += 150
    return Image.fromarray(rgb.astype(np.uint8)).convert(["RGB", "RGBA", "P", "RGB"][i % 4])


def learnable_folder(root, per_class: int, classes=("cat", "dog", "owl"), folders=None) -> None:
    """train/ and test/ (or the `folders` asked) of JPEG and PNG files whose colour tells the class."""
    rng = np.random.default_rng(0)
    for part, count in (("train", per_class), ("test", max(2, per_class // 3))):
        for label, c in enumerate(classes):
            (root / part / c).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image = learnable_photo(label, i, rng)
                suffix = ".png" if image.mode in ("RGBA", "P") else ".jpg"
                image.save(root / part / c / f"{i:04d}{suffix}")


def prepare_in(root, params: dict, capsys=None) -> str:
    """The prepare stage run in `root` with `params`; its output."""
    from stages import prepare

    (root / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        prepare.main()
    return capsys.readouterr().out if capsys else ""


def test_a_chunk_file_stays_the_same_when_chunks_are_added(tmp_path):
    learnable_folder(tmp_path / "photos", per_class=40)
    params = {"data": {"source": "imagefolder", "path": str(tmp_path / "photos"), "chunk_size": 30, "image_size": 12},
              "chunks": [{"k": 2, "prev": 1}], "methods": {"warm": {}}}
    prepare_in(tmp_path, params)
    two = {f.name: f.read_bytes() for f in (tmp_path / "data" / "prepared").iterdir()}
    params["chunks"].append({"k": 3, "prev": 2})
    prepare_in(tmp_path, params)
    three = {f.name: f.read_bytes() for f in (tmp_path / "data" / "prepared").iterdir()}
    assert set(three) - set(two) == {"chunk_3.npz", "seen_3.json"}
    assert all(three[name] == two[name] for name in two)
    chunk = np.load(tmp_path / "data" / "prepared" / "chunk_3.npz")
    assert chunk["x_train"].shape == (27, 3, 12, 12) and chunk["x_val"].shape == (3, 3, 12, 12)


def learned_weights(root, placement: str, capsys) -> tuple[dict, str]:
    from stages import learn

    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["placement"] = placement
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        learn.main(seed=0)
    import torch

    return torch.load(root / "models" / "seed_0" / "chunk_1.pt")["model"], capsys.readouterr().out


def test_the_learn_stage_gives_the_same_weights_streamed_or_resident(tmp_path, capsys):
    import torch

    learnable_folder(tmp_path / "photos", per_class=30)
    params = {"data": {"source": "imagefolder", "path": str(tmp_path / "photos"), "chunk_size": 40, "image_size": 20},
              "chunks": [{"k": 2, "prev": 1}], "methods": {"warm": {}},
              "model": {"width": 4},
              "train": {"device": "cpu", "epochs": 2, "batch_size": 16, "lr_milestones": [2],
                        "augment": "resized_crop_flip"}}
    prepare_in(tmp_path, params)
    resident, said_resident = learned_weights(tmp_path, "resident", capsys)
    streamed, said_streamed = learned_weights(tmp_path, "streamed", capsys)
    assert "images on cpu: train 36 (0.0 MB) resident" in said_resident
    assert "images on cpu: train 36 (0.0 MB) streamed" in said_streamed
    assert resident.keys() == streamed.keys() and all(torch.equal(resident[k], streamed[k]) for k in resident)


def test_restricted_imagenet_groups_class_indices_as_madrylabs_ranges():
    from lure.sources import SUPERCLASSES, superclass_labels

    labels = superclass_labels("restricted_imagenet")
    names = list(SUPERCLASSES["restricted_imagenet"])
    # ImageNet classes by index (torchvision's order): 151 Chihuahua and 268 Mexican hairless are the
    # first and last dog; 269 timber wolf and 150 sea lion are none; 30 bullfrog, 37 box turtle,
    # 80 black grouse, 365 orangutan, 397 puffer, 118 Dungeness crab, 319 dragonfly, 285 Egyptian cat.
    expected = {151: "dog", 268: "dog", 30: "frog", 32: "frog", 33: "turtle", 37: "turtle", 80: "bird", 100: "bird",
                365: "monkey", 382: "monkey", 389: "fish", 397: "fish", 118: "crab", 121: "crab", 300: "insect",
                319: "insect", 281: "cat", 285: "cat"}
    assert {i: names[labels[i]] for i in expected} == expected
    assert all(labels[i] == -1 for i in (0, 29, 38, 79, 101, 117, 122, 150, 269, 280, 286, 299, 320, 364, 383, 398, 999))
    assert (labels >= 0).sum() == 203 and (labels == names.index("dog")).sum() == 118

    balanced = superclass_labels("restricted_imagenet_balanced")
    names = list(SUPERCLASSES["restricted_imagenet_balanced"])
    assert len(names) == 14 and (balanced >= 0).sum() == 69
    assert [names[balanced[i]] for i in (10, 14, 42, 72, 122, 200, 290, 302, 326, 371, 374, 948, 996)] == [
        "bird", "bird", "lizard", "spider", "crab", "dog", "big_cat", "beetle", "butterfly", "monkey", "monkey",
        "fruit", "fungus"]
    assert all(balanced[i] == -1 for i in (9, 15, 199, 205, 375, 947, 997))


def test_an_imagenet_folder_is_grouped_into_superclasses(tmp_path):
    from lure.sources import superclass_labels

    labels = superclass_labels("restricted_imagenet_balanced")
    rng = np.random.default_rng(0)
    for part in ("train", "val"):  # ImageNet's layout: val/ holds the test images
        for index in range(1000):
            folder = tmp_path / "imagenet" / part / f"n{index:08d}"  # sorted order is index order
            folder.mkdir(parents=True)
            if labels[index] >= 0 or index == 500:  # classes out of every range may be empty; 500 is read by none
                for i in range(2):
                    learnable_photo(int(labels[index]), i, rng).convert("RGB").save(folder / f"{i}.jpg")
    params = {"data": {"source": "imagefolder", "path": str(tmp_path / "imagenet"), "chunk_size": 60,
                       "image_size": 8, "superclasses": "restricted_imagenet_balanced"},
              "chunks": [{"k": 2, "prev": 1}], "methods": {"warm": {}}}
    prepare_in(tmp_path, params)
    meta = json.loads((tmp_path / "data" / "prepared" / "meta.json").read_text())
    assert meta["classes"][:3] == ["bird", "turtle", "lizard"] and len(meta["classes"]) == 14
    assert meta["pool_size"] == 138 and meta["test_size"] == 138  # 69 classes x 2 images; class 500 left out
    test = np.load(tmp_path / "data" / "prepared" / "test.npz")
    assert list(np.bincount(test["y"])) == [10] * 10 + [8] + [10] * 3  # monkeys: 4 classes (371-374)

    (tmp_path / "imagenet" / "val" / "n00000999").rmdir()
    with pytest.raises(LureError, match="class folders differ between train/ and val/"):
        prepare_in(tmp_path, params)


def test_resnet50_learns_the_generated_photos_on_the_cpu(tmp_path):
    """A short ResNet-50 (ImageNet stem) run of the learn stage, random-resized crops and flips
    included, is well above chance (1/3) on the held-out test photos."""
    import torch

    from lure.chunks import load_test
    from lure.config import ModelSettings
    from lure.models import accuracy, model_for

    learnable_folder(tmp_path / "photos", per_class=60)
    params = {"data": {"source": "imagefolder", "path": str(tmp_path / "photos"), "chunk_size": 90, "image_size": 32},
              "chunks": [{"k": 2, "prev": 1}], "methods": {"warm": {}}, "model": {"arch": "resnet50"},
              # fast kernels (every core, oneDNN): portable ones would take several times as long
              "train": {"device": "cpu", "cpu_kernels": "fast", "epochs": 8, "batch_size": 16, "lr": 0.02,
                        "lr_milestones": [6], "weight_decay": 1e-4, "augment": "resized_crop_flip"}}
    prepare_in(tmp_path, params)
    learned = run_stage("stages.learn", "--seed", "0", cwd=tmp_path)  # a process of its own, to choose its kernels
    assert learned.returncode == 0, learned.stderr
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        meta = json.loads((tmp_path / "data" / "prepared" / "meta.json").read_text())
        model = model_for(ModelSettings(arch="resnet50"), meta)
        model.load_state_dict(torch.load(tmp_path / "models" / "seed_0" / "chunk_1.pt")["model"])
        test = load_test().on(torch.device("cpu"))
    # 30 of 60 right has a chance of 0.4% at 1/3 a guess. At lr 0.02, run seeds 0-4 got 59 or 60 here, with
    # portable and fast kernels, AVX2 and AVX-512, 1 and 2 threads; at lr 0.05 the same run got 20, 40 or 60
    # as the CPU's rounding fell (it failed on one CPU kind)
    assert len(test) == 60 and accuracy(model, test) >= 0.5
