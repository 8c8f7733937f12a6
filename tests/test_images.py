"""Image DataModules on tiny fixtures written in each dataset's on-disk format (ImageFolder, flat RGBA
folder, VOC 2007, STL-10 binary): layout detection, splits, label fraction, caching, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import datamodules.images as images_mod
from data_fixtures import VOC_FIXTURE_LABELS, voc_annotation, write_stl10_split, write_voc
from datamodules.images import ImageFolderDataModule, decode_image
from datamodules.paths import DatasetNotFoundError
from datamodules.splits import balanced_subset, stratified_split
from datamodules.voc_stl import VOC_CLASSES, STL10DataModule, VOC2007DataModule, voc_largest_object

CLASSES = ["ant", "bee", "cat"]


def _write(path, rng, size=(12, 10), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": 3, "RGBA": 4}[mode]
    arr = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(arr).save(path)  # mode inferred from the channel count
    return arr


@pytest.fixture
def folder_tree(tmp_path):
    """``tree/{train,test}/<class>/*.jpg``: 10 train and 4 test images per class."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 10), ("test", 4)):
        for c in CLASSES:
            for i in range(n):
                _write(tmp_path / "tree" / split / c / f"{i:03d}.jpg", rng)
    return tmp_path


def _dm(tmp_path, **kw):
    kw.setdefault("image_size", 8)
    return ImageFolderDataModule(data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"), **kw)


def test_own_split_shapes_labels_and_normalisation(folder_tree):
    dm = _dm(folder_tree, folder="tree", batch_size=64)
    assert dm.class_names == CLASSES and dm.num_classes == 3
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (27, 3, 12)  # val = 10% of train per class
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (27, 3, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.long
    assert 0.0 <= x.min() and x.max() <= 1.0 and set(y.tolist()) == {0, 1, 2}
    assert torch.bincount(dm.test_set.labels).tolist() == [4, 4, 4]
    dm2 = _dm(folder_tree, folder="tree", normalization="minus_one_one")
    dm2.setup()
    x2 = dm2.val_set[0][0]
    assert x2.min() < 0 and torch.allclose((x2 + 1) / 2, dm.val_set[0][0], atol=1e-6)


@pytest.mark.parametrize("ratios,expected", [([0.8, 0.1, 0.1], (11, 2, 1)), ([0.7, 0.2, 0.1], (10, 3, 1))])
def test_ratio_splits_are_stratified_disjoint_and_seeded(folder_tree, ratios, expected):
    dm = _dm(folder_tree, folder="tree", split_ratios=ratios)
    dm.setup()
    per_class = 14  # train + test pooled; boundaries at round(cumulative ratio * 14) within each class
    for ds, n in zip((dm.train_set, dm.val_set, dm.test_set), expected):
        assert torch.bincount(ds.labels, minlength=3).tolist() == [n] * 3
    every = torch.cat([dm.train_set.images, dm.val_set.images, dm.test_set.images]).flatten(1)
    assert len(torch.unique(every, dim=0)) == 3 * per_class  # no image in two splits
    assert len(dm.train_set) + len(dm.val_set) + len(dm.test_set) == 3 * per_class
    labels = np.repeat(np.arange(3), per_class)
    parts = stratified_split(labels, ratios, seed=5)
    assert sum(len(p) for p in parts) == len(labels) and len(np.unique(np.concatenate(parts))) == len(labels)
    again = stratified_split(labels, ratios, seed=5)
    assert all((a == b).all() for a, b in zip(parts, again))
    assert any((a != b).any() for a, b in zip(parts, stratified_split(labels, ratios, seed=6)))


def test_label_fraction_is_class_balanced_and_seeded(folder_tree):
    dm = _dm(folder_tree, folder="tree", label_fraction=0.4)
    dm.setup()
    counts = torch.bincount(dm.train_set.labels).tolist()
    assert counts == [4, 4, 4]  # 40% of 27 training labels = 10.8 -> 4 per class
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    sub = balanced_subset(labels, 0.3, seed=1)
    assert np.bincount(labels[sub]).tolist() == [10, 10, 10]
    assert (sub == balanced_subset(labels, 0.3, seed=1)).all()
    assert not (sub == balanced_subset(labels, 0.3, seed=2)).all()
    with pytest.raises(ValueError, match="class 2 has only 20"):
        balanced_subset(labels, 0.9, seed=0)
    with pytest.raises(ValueError, match="label_fraction"):
        balanced_subset(labels, 0.0, seed=0)


def test_limit_per_class_and_cache_reuse(folder_tree, monkeypatch):
    dm = _dm(folder_tree, folder="tree", limit_per_class=3, val_fraction=0.34)
    dm.setup()
    assert len(dm.train_set) + len(dm.val_set) == 9 and len(dm.test_set) == 9
    assert list((folder_tree / "cache" / "images").glob("*.pt"))
    monkeypatch.setattr(images_mod, "decode_images", lambda *a, **k: pytest.fail("cache was not reused"))
    dm2 = _dm(folder_tree, folder="tree", limit_per_class=3, val_fraction=0.34)
    dm2.setup()
    assert torch.equal(dm2.train_set.images, dm.train_set.images)


def test_flat_rgba_folder_is_unlabelled_rgb(tmp_path):
    rng = np.random.default_rng(1)
    arrays = [_write(tmp_path / "faces" / f"{i}.png", rng, size=(8, 8), mode="RGBA") for i in range(10)]
    dm = _dm(tmp_path, folder="faces", split_ratios=[0.8, 0.1, 0.1])
    dm.setup()
    assert dm.class_names == [] and (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (8, 1, 1)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 8, 8) and (y == -1).all()
    # RGB channels are kept as they are (alpha dropped), exactly, at the native size
    assert torch.equal(decode_image(tmp_path / "faces" / "0.png", 8), torch.from_numpy(arrays[0][:, :, :3]).permute(2, 0, 1))
    with pytest.raises(ValueError, match="unlabelled"):
        _dm(tmp_path, folder="faces", label_fraction=0.5).setup()


def test_corrupt_image_error_names_the_file(folder_tree):
    bad = folder_tree / "tree" / "train" / "bee" / "bad.jpg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(ValueError, match="bad.jpg"):
        _dm(folder_tree, folder="tree").setup()


def test_missing_folder_and_bad_settings(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="nowhere") as err:
        _dm(tmp_path, folder="nowhere").setup()
    assert "download" not in str(err.value)  # an image folder has none to offer
    with pytest.raises(DatasetNotFoundError, match=r"anime-face-crops/images' .* not found.*Kaggle 'Anime Face Dataset'"):
        _dm(tmp_path, folder="anime-face-crops/images").setup()  # a study's folder: where to get it
    with pytest.raises(ValueError, match=r"normalization='imagenet' is not allowed: expected one of \['zero_one'"):
        _dm(tmp_path, normalization="imagenet")
    with pytest.raises(ValueError, match=r"val_fraction=0.0 is not allowed: expected a number > 0 and < 1"):
        _dm(tmp_path, val_fraction=0.0)
    with pytest.raises(ValueError, match=r"label_fraction=1.5 .* > 0 and <= 1"):
        _dm(tmp_path, label_fraction=1.5)
    with pytest.raises(ValueError, match=r"image_channels=4 .* expected one of \[1, 3\]"):
        _dm(tmp_path, image_channels=4)
    with pytest.raises(ValueError, match=r"split_ratios must be \[train, val, test\]"):
        _dm(tmp_path, split_ratios=[0.9, 0.1])
    with pytest.raises(ValueError, match="split ratios"):
        stratified_split(np.zeros(10), [0.5, 0.2, 0.2], 0)


# --- PASCAL VOC 2007 (torchvision VOCDetection layout) ------------------------------------------
@pytest.fixture
def voc_tree(tmp_path):
    write_voc(tmp_path)  # per split: dog, cat, car as the largest object (and a small person each)
    return tmp_path


def test_voc_largest_object_label_and_own_split(voc_tree):
    dm = VOC2007DataModule(data_dir=str(voc_tree), cache_dir=str(voc_tree / "cache"), image_size=8)
    assert dm.class_names == list(VOC_CLASSES) and dm.num_classes == 20
    dm.setup()
    idx = lambda n: VOC_CLASSES.index(n)  # noqa: E731
    assert dm.train_set.labels.tolist() == [idx(n) for n in VOC_FIXTURE_LABELS] == [idx("dog"), idx("cat"), idx("car")]
    assert dm.val_set.labels.tolist() == [idx("dog"), idx("cat"), idx("car")]
    assert len(dm.test_set) == 3 and dm.train_set.images.shape == (3, 3, 8, 8)
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (3, 3, 8, 8)


def test_voc_errors(voc_tree, tmp_path):
    xml = voc_tree / "voc" / "VOCdevkit" / "VOC2007" / "Annotations" / "000000.xml"
    xml.write_text(voc_annotation([("dragon", (0, 0, 5, 5))]))
    with pytest.raises(ValueError, match="dragon"):
        voc_largest_object(xml)
    xml.write_text("<annotation><object>")
    with pytest.raises(ValueError, match="000000.xml"):
        voc_largest_object(xml)
    with pytest.raises(DatasetNotFoundError, match="VOC 2007"):
        VOC2007DataModule(data_dir=str(tmp_path / "empty"), cache_dir=str(tmp_path / "c")).setup()


def test_voc_download_fetches_only_the_missing_image_set(voc_tree, monkeypatch):
    import torchvision.datasets

    calls = []
    monkeypatch.setattr(torchvision.datasets, "VOCDetection", lambda root, **kw: calls.append(kw["image_set"]))
    dm = VOC2007DataModule(data_dir=str(voc_tree), cache_dir=str(voc_tree / "cache"), download=True)
    dm.prepare_data()
    assert calls == []
    (voc_tree / "voc" / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "test.txt").unlink()
    dm.prepare_data()  # trainval present, test archive not yet fetched
    assert calls == ["test"]


# --- STL-10 (torchvision binary format) ---------------------------------------------------------
def test_stl10_binary_format_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    binary = tmp_path / "stl10" / "stl10_binary"
    train = rng.integers(0, 256, (20, 3, 96, 96), dtype=np.uint8)
    train[0, 0, 0, :] = 255  # first row red: a transposed reader would put it in the first column
    train[0, 0, 1:, :] = 0
    ytrain = np.tile(np.arange(10), 2)
    write_stl10_split(binary, train, ytrain, "train")
    write_stl10_split(binary, rng.integers(0, 256, (10, 3, 96, 96), dtype=np.uint8), np.arange(10), "test")
    dm = STL10DataModule(data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"), image_size=96, val_fraction=0.5)
    dm.setup()
    assert dm.num_classes == 10 and len(dm.train_set) == 10 and len(dm.val_set) == 10 and len(dm.test_set) == 10
    both = torch.cat([dm.train_set.images, dm.val_set.images])
    row_red = [(img[0, 0] == 255).all() and (img[0, 1:] == 0).all() for img in both]
    assert sum(bool(r) for r in row_red) == 1
    small = STL10DataModule(data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"), image_size=32)
    small.setup()
    assert small.test_set.images.shape == (10, 3, 32, 32)
    (binary / "train_y.bin").write_bytes(bytes([1, 2, 3]))
    with pytest.raises(ValueError, match="train_y.bin"):
        STL10DataModule(data_dir=str(tmp_path), cache_dir=str(tmp_path / "c2")).setup()


# --- every image dataset of a data root (the real one when present, else the fixtures) ---------------------
@pytest.mark.parametrize("folder, classes, own_split", [
    ("cifar10-jpeg", 10, True), ("cats-dogs", 2, True),  # ImageFolder trees with train/ and test/
    ("anime-faces/images", 0, False), ("anime-face-crops/images", 0, False),  # flat unlabelled: RGBA PNG, RGB JPEG
])
def test_each_image_folder_of_the_data_root_loads(config_data, tmp_path, folder, classes, own_split):
    dm = ImageFolderDataModule(folder=folder, data_dir=str(config_data), cache_dir=str(tmp_path), image_size=16,
                               limit_per_class=4, split_ratios=None if own_split else [0.5, 0.25, 0.25],
                               val_fraction=0.25, batch_size=64)
    assert dm.num_classes == classes
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape[1:] == (3, 16, 16) and 0.0 <= x.min() and x.max() <= 1.0
    if classes:
        per_split = 4 * classes  # limit_per_class applies per own split: 4 train and 4 test images per class
        assert len(dm.train_set) + len(dm.val_set) == per_split and len(dm.test_set) == per_split
        assert set(y.tolist()) <= set(range(classes)) and len(set(dm.test_set.labels.tolist())) == classes
    else:
        assert (y == -1).all() and (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (2, 1, 1)


def test_voc_and_stl10_of_the_fixture_data_root(_fixture_data_root, tmp_path):
    """The two datasets only ever downloaded (never in ../shared) load from the fixture root that
    ``ZOO_DATA_DIR`` points at on a fresh clone, with their default folder names."""
    voc = VOC2007DataModule(data_dir=str(_fixture_data_root), cache_dir=str(tmp_path), image_size=8)
    voc.setup()
    assert [len(s) for s in (voc.train_set, voc.val_set, voc.test_set)] == [len(VOC_FIXTURE_LABELS)] * 3
    stl = STL10DataModule(data_dir=str(_fixture_data_root), cache_dir=str(tmp_path), image_size=8, val_fraction=0.5)
    stl.setup()
    assert stl.class_names[0] == "airplane" and (len(stl.train_set), len(stl.val_set), len(stl.test_set)) == (10, 10, 10)
    x, y = next(iter(stl.test_dataloader()))
    assert x.shape == (10, 3, 8, 8) and sorted(y.tolist()) == list(range(10))
