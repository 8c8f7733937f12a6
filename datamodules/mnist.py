"""MNIST and ReducedMNIST, served from in-memory tensors (the zoo's one MNIST DataModule).

Why tensors instead of a torchvision ``Dataset``: MNIST fits in memory many times over, and
indexing a tensor with a whole batch of indices costs microseconds where a per-image PIL
pipeline costs most of a small model's epoch. The loader below yields whole batches per index
list, so a LeNet epoch is spent in the model, not in Python data plumbing.

Splits (all stratified and seeded by ``split_seed``, so "the last 10%" of a sorted set can never
become a single-class validation set; the rules live in :mod:`datamodules.splits`):

* ``real_per_class=None``: the 60,000 training images, minus ``val_fraction`` of each class for
  validation.
* ``real_per_class=k`` (ReducedMNIST): ``k`` training images per class, plus a disjoint
  validation set of ``round(val_fraction * k)`` per class, both drawn from the 60,000.
* ``test_per_class=m``: ``m`` test images per class from the official 10,000 (ReducedMNIST: 200).
* ``augmented_per_class``: extra images per class made once per run from that class's real
  training images by random rotation, translation and resized crop (:mod:`datamodules.augment`),
  drawn from ``data_seed``.
* ``synthetic_per_class``: extra images per class from a ``.npz`` sample file (keys ``images``
  ``(N, 28, 28)`` or ``(N, 1, 28, 28)``, uint8 0-255 or float in [0, 1], and ``labels`` ``(N,)``),
  e.g. the samples exported by a DCGAN.

Only training data is augmented or mixed; validation and test are always real images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from datamodules.augment import random_affine_matrices, random_geometric
from datamodules.batches import DeviceBatches, check_device_resident, device_batches, trainer_device  # re-exports DeviceBatches
from datamodules.paths import data_root, missing_dataset
from datamodules.settings import (LegacySettingsMixin, NonNegativeFloat, NonNegativeInt, OpenUnitInterval, PositiveInt,
                                  save_settings, upgrade_settings)
from datamodules.splits import holdout_per_class, take_per_class

NUM_CLASSES = 10
CLASS_NAMES = [str(i) for i in range(NUM_CLASSES)]
IMAGE_SHAPE = (1, 28, 28)
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # of the 60k training images in [0, 1]
RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

Normalization = Literal["zero_one", "minus_one_one", "standard"]


# --- value ranges ------------------------------------------------------------------------------
def normalize(x01: torch.Tensor, mode: Normalization) -> torch.Tensor:
    """Map images in ``[0, 1]`` to the model's input range (``minus_one_one`` suits a tanh GAN)."""
    if mode == "zero_one":
        return x01
    if mode == "minus_one_one":
        return x01 * 2 - 1
    if mode == "standard":
        return (x01 - MNIST_MEAN) / MNIST_STD
    raise ValueError(f"normalization must be one of 'zero_one', 'minus_one_one', 'standard', got {mode!r}")


def denormalize(x: torch.Tensor, mode: Normalization) -> torch.Tensor:
    """Inverse of :func:`normalize`: back to ``[0, 1]`` (for plotting or exporting samples)."""
    if mode == "zero_one":
        return x
    if mode == "minus_one_one":
        return (x + 1) / 2
    if mode == "standard":
        return x * MNIST_STD + MNIST_MEAN
    raise ValueError(f"normalization must be one of 'zero_one', 'minus_one_one', 'standard', got {mode!r}")


# --- loading ------------------------------------------------------------------------------------
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (MNIST's format) as an array, checked against its own header first.

    Why: a truncated download or copy otherwise fails deep inside the reader with a bare reshape or
    assertion error; here the error names the file and the size its header promises.
    """
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 4:
        raise ValueError(f"{path}: {'empty' if not data else 'truncated'} IDX file: expected at least a 4-byte "
                         f"header, got {len(data)} bytes (re-download or re-copy the dataset)")
    zero, code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(f"{path}: not an IDX file (header bytes {data[:4].hex()})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX file: expected a {header}-byte header, got {len(data)} bytes")
    dims = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"{path}: {'truncated' if len(data) < expected else 'oversized'} IDX file: its header "
                         f"says {'x'.join(map(str, dims))} {dtype.name} values, expected {expected} bytes, got "
                         f"{len(data)} (re-download or re-copy the dataset)")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` (uint8, e.g. images ``(N, 28, 28)`` or labels ``(N,)``) as an IDX file (test fixtures)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
                     + array.tobytes())
    return path


def load_mnist(data_dir: str | Path | None = None, train: bool = True,
               download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The official train (60k) or test (10k) split as ``uint8 (N, 28, 28)`` images and ``int64`` labels.

    Reads ``<data_root>/MNIST/raw`` (torchvision's layout); downloads there (with torchvision) only if allowed.
    """
    root = data_root(data_dir)
    raw = root / "MNIST" / "raw"
    if download and not all((raw / f).is_file() for f in RAW_FILES):
        from torchvision.datasets import MNIST

        MNIST(root=str(root), train=train, download=True)
    missing = [f for f in RAW_FILES if not (raw / f).is_file()]
    if missing:
        raise missing_dataset(f"MNIST (missing {', '.join(missing)})", raw)
    images_file, labels_file = (raw / f for f in (RAW_FILES[:2] if train else RAW_FILES[2:]))
    images, labels = read_idx(images_file), read_idx(labels_file)
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE[1:] or images.dtype != np.uint8:
        raise ValueError(f"{images_file}: expected uint8 images of shape (N, 28, 28), got {images.dtype} "
                         f"{images.shape}")
    if labels.shape != images.shape[:1]:
        raise ValueError(f"{labels_file}: expected {len(images)} labels to match {images_file.name}, "
                         f"got shape {labels.shape}")
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def load_synthetic(path: str | Path, per_class: int, generator: torch.Generator | None = None,
                   num_classes: int = NUM_CLASSES) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` random samples of every class from a sample file, as float ``(N, 1, 28, 28)`` in [0, 1].

    Validates everything a wrong export could get wrong and names the file in each error.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"synthetic sample file {path} does not exist (set --data.synthetic_path)")
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            if not {"images", "labels"} <= keys:
                raise ValueError(f"{path}: expected arrays 'images' and 'labels', found {sorted(keys)}")
            images, labels = f["images"], f["labels"]
    except (OSError, ValueError) as e:
        if str(path) in str(e):
            raise
        raise ValueError(f"{path}: not a readable .npz sample file ({e})") from e
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE[1:]:
        raise ValueError(f"{path}: 'images' must have shape (N, 28, 28) or (N, 1, 28, 28), got {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{path}: 'labels' must have shape ({len(images)},) to match 'images', got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: 'labels' must be integers, got dtype {labels.dtype}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{path}: labels must be in 0..{num_classes - 1}, got range {labels.min()}..{labels.max()}")
    if images.dtype == np.uint8:
        x = torch.from_numpy(images.astype(np.float32) / 255.0)
    elif np.issubdtype(images.dtype, np.floating):
        if not np.isfinite(images).all():
            raise ValueError(f"{path}: 'images' contains NaN or inf")
        lo, hi = float(images.min()), float(images.max())
        if lo < 0 or hi > 1:
            raise ValueError(f"{path}: float 'images' must lie in [0, 1], got range [{lo:.3g}, {hi:.3g}] "
                             "(export uint8 0-255 or rescale, e.g. (x + 1) / 2 for tanh outputs)")
        x = torch.from_numpy(images.astype(np.float32))
    else:
        raise ValueError(f"{path}: 'images' must be uint8 (0-255) or float in [0, 1], got dtype {images.dtype}")
    y = torch.from_numpy(labels.astype(np.int64))
    counts = torch.bincount(y, minlength=num_classes)
    short = {c: int(n) for c, n in enumerate(counts) if n < per_class}
    if short:
        raise ValueError(f"{path}: synthetic_per_class={per_class} but some classes have fewer samples "
                         f"(class: count) {short}")
    (idx,) = take_per_class(y, [per_class], generator or torch.Generator().manual_seed(0), num_classes,
                            what=str(path))
    return x[idx].unsqueeze(1), y[idx]


def augment_per_class(images01: torch.Tensor, labels: torch.Tensor, per_class: int, generator: torch.Generator,
                      degrees: float = 15.0, translate: float = 0.1, crop_scale: tuple[float, float] = (0.75, 1.0),
                      crop_ratio: tuple[float, float] = (0.85, 1.0 / 0.85), chunk: int = 4096,
                      num_classes: int = NUM_CLASSES, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` new images per class, each a random warp of a random real image of that class.

    Runs on ``images01``'s device (batched ``grid_sample``); the random draws are on the CPU, so a seed
    picks the same sources and warps on any device.
    """
    from tqdm.auto import tqdm

    sources = []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c).flatten()
        if len(idx) == 0:
            raise ValueError(f"cannot augment class {c}: it has no real training images")
        sources.append(idx[torch.randint(len(idx), (per_class,), generator=generator)])
    src = torch.cat(sources)
    out = torch.empty((len(src), *images01.shape[1:]), dtype=images01.dtype, device=images01.device)
    for start in tqdm(range(0, len(src), chunk), desc="augmenting MNIST", disable=not progress, leave=False):
        part = src[start:start + chunk]
        out[start:start + len(part)] = random_geometric(images01[part], degrees, translate, crop_scale, crop_ratio,
                                                        generator=generator).clamp_(0, 1)
    return out, labels[src]


# --- serving ------------------------------------------------------------------------------------
class TensorBatches(Dataset):
    """Images and labels held as two tensors; a whole batch is one tensor gather (``__getitems__``)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if len(x) != len(y):
            raise ValueError(f"TensorBatches: {len(x)} images but {len(y)} labels")
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]

    def __getitems__(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(idx).to(self.x.device)
        return self.x[idx], self.y[idx]


class IndexBatchSampler(BatchSampler):
    """A :class:`BatchSampler` whose batches are index *tensors*: the sampler's order is read once per
    epoch and sliced, instead of 64 Python ints gathered and converted per step.

    It keeps BatchSampler's constructor, so under DDP Lightning rebuilds it around a DistributedSampler
    and every process still gets whole batches of its own shard.
    """

    def __iter__(self):
        order = torch.as_tensor(list(self.sampler), dtype=torch.long)
        if self.drop_last:
            order = order[:len(order) // self.batch_size * self.batch_size]
        return iter(order.split(self.batch_size))


def _as_is(batch):
    """``collate_fn`` for :class:`TensorBatches`: ``__getitems__`` already returns the stacked batch."""
    return batch


def batch_loader(x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool, num_workers: int = 0,
                 drop_last: bool = False, pin_memory: bool = False) -> DataLoader:
    ds = TensorBatches(x, y)
    sampler = RandomSampler(ds) if shuffle else SequentialSampler(ds)
    return DataLoader(ds, batch_sampler=IndexBatchSampler(sampler, batch_size, drop_last=drop_last),
                      collate_fn=_as_is, num_workers=num_workers, pin_memory=pin_memory and x.device.type == "cpu",
                      persistent_workers=num_workers > 0)


class MNISTDataModule(LegacySettingsMixin, L.LightningDataModule):
    """MNIST / ReducedMNIST with optional augmented and GAN-synthetic training images.

    Batches are ``(x, y)``: ``x`` float32 ``(B, 1, 28, 28)`` in the ``normalization`` range, ``y`` int64.
    ``on_device`` keeps every tensor on the trainer's device (a GPU) so no batch is copied per step;
    ``device_resident`` also replaces the DataLoaders by :class:`DeviceBatches`: each epoch is one
    permutation, a function of the run's seed (``seed_everything``; ``data_seed`` when none is set) and the
    epoch, sliced into batches; each DDP process takes its own shard. Either way the augmented images
    are made on that device. The two paths serve the same splits and identical validation and test
    batches. Training differs on one device only in order: the DataLoader path draws each epoch's order
    from the global torch RNG (``RandomSampler``), which model initialisation and dropout also use, so
    it is not a function of seed and epoch. Under DDP Lightning gives the DataLoader path a
    ``DistributedSampler`` seeded with ``seed_everything``, and the two paths train identically (tested).

    Args:
        data_dir: folder that contains ``MNIST/``; None: $ZOO_DATA_DIR, else ./data.
        download: download MNIST into data_dir when it is missing.
        real_per_class: real training images per class (ReducedMNIST); None: all 60,000 minus validation.
        test_per_class: test images per class drawn from the official 10,000; None: the whole test set.
        val_fraction: share of each class held out for validation, in (0, 1) (of real_per_class when that is set).
        augmented_per_class: extra training images per class, random warps of that class's real training images.
        synthetic_per_class: extra training images per class drawn from synthetic_path (e.g. DCGAN samples).
        synthetic_path: ``.npz`` sample file with ``images`` and ``labels``; required when synthetic_per_class > 0.
        normalization: pixel range of the batches: "zero_one" [0, 1], "minus_one_one" [-1, 1], "standard"
            (MNIST mean/std).
        batch_size: training batch size.
        eval_batch_size: batch size of the validation, test and predict loaders.
        num_workers: DataLoader worker processes (0: load in the main process; must be 0 with on_device or
            device_resident).
        split_seed: seed of the train/validation split and of the test subset.
        data_seed: seed of the augmentation and synthetic-sample draws (and of the device-resident epoch
            order outside a seeded run); None: split_seed.
        on_device: keep all split tensors on the trainer's device (e.g. GPU) so no batch is copied per step.
        device_resident: as on_device, and serve batches by slicing the device tensors (no DataLoader); the
            training order of every epoch is a function of the run's seed and the epoch only.
        drop_last: drop the last incomplete training batch.
        aug_degrees: maximum rotation of the augmented images in degrees.
        aug_translate: maximum shift of the augmented images per axis, as a fraction of the image size.
        aug_crop_scale: (min, max) area fraction of the random resized crop of the augmented images.
        aug_crop_ratio: (min, max) aspect ratio of the random resized crop of the augmented images.
        predict_path: images to predict on (a file, a folder searched recursively, or a glob); None: the test split.
    """

    num_classes = NUM_CLASSES
    class_names = CLASS_NAMES

    def __init__(self, data_dir: str | None = None, download: bool = False,
                 real_per_class: PositiveInt | None = None, test_per_class: PositiveInt | None = None,
                 val_fraction: OpenUnitInterval = 0.1,
                 augmented_per_class: NonNegativeInt = 0, synthetic_per_class: NonNegativeInt = 0,
                 synthetic_path: str | None = None, normalization: Normalization = "standard",
                 batch_size: PositiveInt = 128, eval_batch_size: PositiveInt = 1000, num_workers: NonNegativeInt = 0,
                 split_seed: int = 0, data_seed: int | None = None,
                 on_device: bool = False, device_resident: bool = False, drop_last: bool = False,
                 aug_degrees: NonNegativeFloat = 12.0, aug_translate: NonNegativeFloat = 0.08,
                 aug_crop_scale: tuple[float, float] = (0.8, 1.0),
                 aug_crop_ratio: tuple[float, float] = (0.85, 1.0 / 0.85),
                 predict_path: str | None = None) -> None:
        super().__init__()
        save_settings(self)
        if synthetic_per_class > 0 and not synthetic_path:
            raise ValueError(f"MNISTDataModule: synthetic_per_class={synthetic_per_class} needs --data.synthetic_path "
                             "(an .npz with 'images' and 'labels')")
        random_affine_matrices(1, 28, 28, aug_degrees, aug_translate, aug_crop_scale, aug_crop_ratio)  # validates
        if on_device or device_resident:
            check_device_resident("MNISTDataModule", num_workers, "device_resident" if device_resident else "on_device")
        hp = self.hparams
        self.data_dir, self.download = data_dir, download
        self.real_per_class, self.test_per_class, self.val_fraction = hp.real_per_class, hp.test_per_class, hp.val_fraction
        self.augmented_per_class, self.synthetic_per_class = hp.augmented_per_class, hp.synthetic_per_class
        self.synthetic_path, self.normalization = synthetic_path, normalization
        self.batch_size, self.eval_batch_size, self.num_workers = hp.batch_size, hp.eval_batch_size, hp.num_workers
        self.split_seed = split_seed
        self.data_seed = split_seed if data_seed is None else data_seed
        self.on_device, self.device_resident, self.drop_last = on_device, device_resident, drop_last
        self.aug_degrees, self.aug_translate = hp.aug_degrees, hp.aug_translate
        self.aug_crop_scale, self.aug_crop_ratio = tuple(aug_crop_scale), tuple(aug_crop_ratio)
        self._splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        #: indices into the official train (train/val) and test sets of the real images of each split
        self.indices: dict[str, torch.Tensor] = {}
        self._sources: torch.Tensor | None = None  # per training image: 0 real, 1 augmented, 2 synthetic
        self.predict_path = predict_path
        self.predict_items: list = []

    def prepare_data(self) -> None:
        if self.download:
            load_mnist(self.data_dir, train=True, download=True)
            load_mnist(self.data_dir, train=False, download=True)

    # --- building the splits ----------------------------------------------------------------------
    def _build(self, device: torch.device | None = None) -> None:
        # one generator per purpose, so e.g. the test subset is identical whatever the augmentation setting
        g, g_test = (torch.Generator().manual_seed(self.split_seed + k * 1_000_003) for k in range(2))
        g_aug, g_syn = (torch.Generator().manual_seed(self.data_seed + k * 1_000_003) for k in (2, 3))
        x, y = load_mnist(self.data_dir, train=True, download=False)
        x01 = x.unsqueeze(1).to(device).float().div_(255)  # on the training device: augmentation runs there
        if self.real_per_class is None:
            train_idx, val_idx = holdout_per_class(y, self.val_fraction, g, NUM_CLASSES)
        else:
            n_val = max(1, round(self.val_fraction * self.real_per_class))
            train_idx, val_idx = take_per_class(
                y, [self.real_per_class, n_val], g, NUM_CLASSES, what=f"MNISTDataModule(real_per_class="
                f"{self.real_per_class}, val_fraction={self.val_fraction})")
        parts_x, parts_y, sources = [x01[train_idx]], [y[train_idx]], [torch.zeros(len(train_idx), dtype=torch.uint8)]
        if self.augmented_per_class:
            ax, ay = augment_per_class(parts_x[0], parts_y[0], self.augmented_per_class, g_aug, self.aug_degrees,
                                       self.aug_translate, self.aug_crop_scale, self.aug_crop_ratio)
            parts_x.append(ax), parts_y.append(ay), sources.append(torch.ones(len(ay), dtype=torch.uint8))
        if self.synthetic_per_class:
            sx, sy = load_synthetic(self.synthetic_path, self.synthetic_per_class, g_syn)
            parts_x.append(sx.to(x01.device)), parts_y.append(sy)
            sources.append(torch.full((len(sy),), 2, dtype=torch.uint8))
        tx, ty, src = torch.cat(parts_x), torch.cat(parts_y), torch.cat(sources)
        self._splits["train"] = (normalize(tx, self.normalization), ty)
        self._sources = src
        self._splits["val"] = (normalize(x01[val_idx], self.normalization), y[val_idx])

        xt, yt = load_mnist(self.data_dir, train=False, download=False)
        if self.test_per_class is not None:
            (test_idx,) = take_per_class(yt, [self.test_per_class], g_test, NUM_CLASSES,
                                         what=f"MNISTDataModule(test_per_class={self.test_per_class})")
            xt, yt = xt[test_idx], yt[test_idx]
        else:
            test_idx = torch.arange(len(yt))
        self._splits["test"] = (normalize(xt.unsqueeze(1).to(device).float().div_(255), self.normalization), yt)
        self.indices = {"train": train_idx, "val": val_idx, "test": test_idx}
        made = [f"{int((src == k).sum())} {what}" for k, what in ((1, "augmented"), (2, "synthetic")) if (src == k).any()]
        rank_zero_info(f"MNISTDataModule: train {len(ty)} ({', '.join([f'{len(train_idx)} real', *made])}), "
                       f"val {len(val_idx)}, test {len(yt)}")

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict" and self.predict_path:  # the user's images need no dataset
            return
        device = self._device()
        if not self._splits:
            self._build(device)
        if device is not None:
            self._splits = {k: (x.to(device), y.to(device)) for k, (x, y) in self._splits.items()}

    def _device(self) -> torch.device | None:
        return trainer_device(self) if self.on_device or self.device_resident else None

    def split(self, name: Literal["train", "val", "test"]) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``(images, labels)`` tensors of a split, in the ``normalization`` range (calls :meth:`setup`)."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"MNISTDataModule.split: name must be 'train', 'val' or 'test', got {name!r}")
        if not self._splits:
            self.setup()
        return self._splits[name]

    @property
    def train_sources(self) -> torch.Tensor:
        """Per training image: 0 real, 1 augmented, 2 synthetic."""
        self.split("train")
        return self._sources

    # --- loaders ------------------------------------------------------------------------------------
    def _loader(self, name: str, batch_size: int, shuffle: bool,
                drop_last: bool = False) -> DataLoader | DeviceBatches:
        x, y = self.split(name)
        if not self.device_resident:
            return batch_loader(x, y, batch_size, shuffle=shuffle, num_workers=self.num_workers, drop_last=drop_last)
        # the run's seed, as Lightning seeds its DistributedSampler; the data seed outside a seeded run
        return device_batches(self, x, y, batch_size, shuffle, seed=self.data_seed, drop_last=drop_last)

    def train_dataloader(self) -> DataLoader | DeviceBatches:
        return self._loader("train", self.batch_size, shuffle=True, drop_last=self.drop_last)

    def val_dataloader(self) -> DataLoader | DeviceBatches:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader | DeviceBatches:
        return self._loader("test", self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """Always a DataLoader: under DDP Lightning then predicts every test image exactly once. With
        ``predict_path``: the user's images (PNG/JPEG, gray or RGB, any size) converted as MNIST is: one
        gray channel, 28x28, the ``normalization`` range; unreadable files are in :attr:`predict_items`."""
        if self.predict_path:
            from datamodules.images import predict_images

            self.predict_items, x, y = predict_images(self.predict_path, CLASS_NAMES, 28, 1)
            return batch_loader(normalize(x.float() / 255.0, self.normalization), y, self.eval_batch_size,
                                shuffle=False)
        x, y = self.split("test")
        return batch_loader(x, y, self.eval_batch_size, shuffle=False, num_workers=self.num_workers)

    # --- what a checkpoint carries ------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The input range, saved in every checkpoint by Lightning: predicting or resuming with another one
        would feed the model inputs it never saw."""
        return {"normalization": self.normalization}

    def load_state_dict(self, state: dict) -> None:
        from datamodules.predict import check_saved_settings

        check_saved_settings("MNISTDataModule", upgrade_settings("MNISTDataModule", state),
                             {"normalization": self.normalization})
