"""Every dataset the configs read, tiny, in its real on-disk format, for a clone without ``../shared``.

``write_all(root)`` makes a data root that ``ZOO_DATA_DIR`` can point at, with the folder names of
``../shared/data``: FSDD and AudioMNIST(-AZ) WAV trees, MNIST IDX files, the CIFAR-10 JPEG class folders,
the flat RGBA sprite folder (``anime-faces``), the flat JPEG face crops (``anime-face-crops``), the
cats-dogs ImageFolder tree, and the two datasets only downloaded for real: PASCAL VOC 2007
(torchvision's ``VOCDetection`` layout, under ``voc``) and STL-10 (torchvision's binary format, under
``stl10``). Sizes are the least each config's fast_dev_run needs (ReducedMNIST configs ask for 1,000
training and 200 test images per class).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from audio_fixtures import write_audiomnist, write_fsdd

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_mnist_idx(root: Path, per_class: int, test_per_class: int) -> None:
    """``<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``: a digit-dependent bright block."""
    rng = np.random.default_rng(0)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", per_class), ("t10k", test_per_class)):
        labels = np.tile(np.arange(10, dtype=np.uint8), n)
        images = rng.integers(0, 60, (len(labels), 28, 28), dtype=np.uint8)
        for d in range(10):
            images[labels == d, 2 * d:2 * d + 8, 4:12] = 250
        for kind, arr in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            header = bytes([0, 0, 8, arr.ndim]) + b"".join(s.to_bytes(4, "big") for s in arr.shape)
            (raw / f"{prefix}-{kind}").write_bytes(header + arr.tobytes())


def write_all(root: Path) -> Path:
    root = Path(root)
    write_fsdd(root, speakers=("alice", "bob", "carol"), takes=range(8))
    genders = {f"{i:02d}": ("female" if i % 2 else "male") for i in range(1, 11)}
    staging = write_audiomnist(root / "az", genders=genders, takes=range(2), sample_rate=8000)
    shutil.move(str(staging / "AudioMNIST"), str(root / "AudioMNIST-AZ"))
    shutil.rmtree(staging)
    write_mnist_idx(root, per_class=1100, test_per_class=220)
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 4)):
        for c, name in enumerate(CIFAR_CLASSES):
            folder = root / "cifar10-jpeg" / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = np.clip(rng.normal(25 * c, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / f"{i:04d}.jpg", quality=90)
    sprites = root / "anime-faces" / "images"
    sprites.mkdir(parents=True)
    for i in range(80):
        Image.fromarray(rng.integers(0, 256, (64, 64, 4), dtype=np.uint8), "RGBA").save(sprites / f"{i}.png")
    write_face_crops(root, n=40)
    write_cats_dogs(root, per_class=6)
    write_voc(root)
    write_stl10(root)
    return root



def _jpeg(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=90)
    return path


def write_face_crops(root: Path, n: int = 40, size: int = 64) -> Path:
    """``<root>/anime-face-crops/images/<id>_<year>.jpg``: a flat, unlabelled folder of RGB JPEGs named
    as upstream; returns the folder."""
    rng = np.random.default_rng(1)
    folder = Path(root) / "anime-face-crops" / "images"
    for i in range(n):
        _jpeg(folder / f"{1000 + 7 * i}_{2000 + i % 19}.jpg", rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    return folder


def write_cats_dogs(root: Path, per_class: int = 6, size: int = 96) -> Path:
    """``<root>/cats-dogs/{train,test}/{cats,dogs}/{cat,dog}.N.jpg`` (ImageFolder layout, upstream names);
    cats dark, dogs bright, so a classifier can learn them. Returns the dataset folder."""
    rng = np.random.default_rng(2)
    folder = Path(root) / "cats-dogs"
    n = 0
    for split in ("train", "test"):
        for c, name in enumerate(("cats", "dogs")):
            for _ in range(per_class):
                img = np.clip(rng.normal(70 + 110 * c, 25, (size, size, 3)), 0, 255).astype(np.uint8)
                _jpeg(folder / split / name / f"{name[:-1]}.{n}.jpg", img)
                n += 1
    return folder


VOC_FIXTURE_LABELS = ("dog", "cat", "car")  # the class of each split's images' largest object, in id order


def voc_annotation(objects: list[tuple[str, tuple[int, int, int, int]]]) -> str:
    """A VOC annotation XML with ``(class name, (xmin, ymin, xmax, ymax))`` objects."""
    objs = "".join(f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
                   f"<xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>" for n, (a, b, c, d) in objects)
    return f"<annotation><folder>VOC2007</folder><size><width>20</width><height>16</height></size>{objs}</annotation>"


def write_voc(root: Path, labels: tuple[str, ...] = VOC_FIXTURE_LABELS, folder: str = "voc") -> Path:
    """``<root>/<folder>/VOCdevkit/VOC2007/{JPEGImages,Annotations,ImageSets/Main/{train,val,test}.txt}``
    (torchvision's VOCDetection layout): per split one 20x16 image per entry of ``labels``, each annotated
    with a small ``person`` and a large object of that class. Returns the VOC2007 folder."""
    voc = Path(root) / folder / "VOCdevkit" / "VOC2007"
    rng = np.random.default_rng(3)
    (voc / "Annotations").mkdir(parents=True, exist_ok=True)
    (voc / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    i = 0
    for split in ("train", "val", "test"):
        ids = []
        for name in labels:
            img_id = f"{i:06d}"
            _jpeg(voc / "JPEGImages" / f"{img_id}.jpg", rng.integers(0, 256, (16, 20, 3), dtype=np.uint8))
            (voc / "Annotations" / f"{img_id}.xml").write_text(
                voc_annotation([("person", (1, 1, 4, 4)), (name, (2, 2, 18, 15))]))
            ids.append(img_id)
            i += 1
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return voc


def write_stl10_split(binary: Path, images: np.ndarray, labels: np.ndarray, split: str) -> None:
    """``{split}_X.bin`` (uint8 ``(N, 3, 96, 96)`` stored column-major) and ``{split}_y.bin`` (labels 1..10)
    in torchvision's ``stl10_binary`` format; ``labels`` are 0-based."""
    binary.mkdir(parents=True, exist_ok=True)
    images.transpose(0, 1, 3, 2).astype(np.uint8).tofile(binary / f"{split}_X.bin")
    (np.asarray(labels) + 1).astype(np.uint8).tofile(binary / f"{split}_y.bin")


def write_stl10(root: Path, train_per_class: int = 2, test_per_class: int = 1, folder: str = "stl10") -> Path:
    """``<root>/<folder>/stl10_binary/`` with train and test splits and ``class_names.txt``; returns it."""
    from datamodules.voc_stl import STL10_CLASSES

    rng = np.random.default_rng(4)
    binary = Path(root) / folder / "stl10_binary"
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        labels = np.tile(np.arange(10), n)
        write_stl10_split(binary, rng.integers(0, 256, (len(labels), 3, 96, 96), dtype=np.uint8), labels, split)
    (binary / "class_names.txt").write_text("\n".join(STL10_CLASSES) + "\n")
    return binary


def mnist_data_dir(tmp_path_factory):
    """Body of a module-scoped ``mnist_data`` fixture (``yield from mnist_data_dir(tmp_path_factory)``): the
    real MNIST under ``../shared`` when it is used, else the IDX fixture of :func:`write_mnist_idx` (1,100
    training and 220 test images per class) with ``ZOO_DATA_DIR`` pointing at it until the module's tests end."""
    import os

    from conftest import HAVE_SHARED, SHARED_DATA

    if HAVE_SHARED:
        yield SHARED_DATA
        return
    root = tmp_path_factory.mktemp("mnist_fixture")
    write_mnist_idx(root, per_class=1100, test_per_class=220)
    before = os.environ.get("ZOO_DATA_DIR")
    os.environ["ZOO_DATA_DIR"] = str(root)
    try:
        yield root
    finally:
        if before is None:
            os.environ.pop("ZOO_DATA_DIR", None)
        else:
            os.environ["ZOO_DATA_DIR"] = before
