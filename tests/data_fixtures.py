"""Every dataset the configs read, tiny, in its real on-disk format, for a clone without ``../shared``.

``write_all(root)`` makes a data root that ``ZOO_DATA_DIR`` can point at: FSDD and AudioMNIST(-AZ) WAV
trees, MNIST IDX files, the CIFAR-10 JPEG class folders and the flat RGBA sprite folder. Sizes are the
least each config's fast_dev_run needs (ReducedMNIST configs ask for 1,000 training and 200 test images
per class).
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
    return root
