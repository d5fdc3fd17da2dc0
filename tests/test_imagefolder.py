"""A user's own photo folder: images of any size and format Pillow reads, decoded once by
prepare with torchvision's Resize + CenterCrop rule, bad files reported or left out by path."""

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from lure.config import ImageFolderData
from lure.data import load_source
from lure.errors import LureError
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
    assert source.pool.x.shape == (300, 3, 16, 16) and source.test.x.shape == (75, 3, 16, 16)
    assert source.pool.x.dtype == np.uint8 and list(np.bincount(source.pool.y)) == [100, 100, 100]
    train = [f for f in files if f.parts[-3] == "train"]
    for i in range(0, 300, 7):
        assert np.array_equal(source.pool.x[i], centre_crop_reference(train[i], 16)), train[i]
    assert source.classes == ["cat", "dog", "owl"] and source.skipped == 0


def test_a_grayscale_folder_stays_one_channel(tmp_path):
    for part in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / part / c).mkdir(parents=True)
            for i in range(3):
                photo(4 * i + 1).convert("L").save(tmp_path / part / c / f"{i}.png")  # sizes vary with i
    source = load_source(ImageFolderData(source="imagefolder", path=tmp_path, chunk_size=2, image_size=8), seed=0)
    assert source.pool.x.shape == (6, 1, 8, 8)


def test_mixed_sizes_without_image_size_name_the_file_and_the_setting(tmp_path):
    photo_folder(tmp_path, per_class=4)
    with pytest.raises(LureError, match=r"cat/0001.png: image is 16x16 pixels, the first was 64x21 \(width x "
                                        r"height\); set data.image_size"):
        load_source(ImageFolderData(source="imagefolder", path=tmp_path, chunk_size=2), seed=0)


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
    params = {"data": {"source": "imagefolder", "path": str(tmp_path), "chunk_size": 8, "image_size": 8},
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
    assert "1 unreadable images left out" in done.stdout
    meta = json.loads((tmp_path / "data" / "prepared" / "meta.json").read_text())
    assert meta["skipped_images"] == 1 and meta["pool_size"] == 35 and meta["image_shape"] == [3, 8, 8]
