"""Image DataModules: class folders (ImageFolder layout) and flat unlabelled folders.

Images are decoded **once** (with a progress bar), resized to ``image_size`` x ``image_size`` and
cached as one ``uint8`` tensor in the cache dir, keyed by the file list and the decode settings;
later runs load the tensor in a second. Batches are ``(x, y)``: ``x`` float ``(B, C, H, W)`` in
``[0, 1]`` (``normalization: zero_one``) or ``[-1, 1]`` (``minus_one_one``), ``y`` int64 class
indices, and **``y == -1`` for every image of an unlabelled folder** (so every batch has the same
structure and a GAN or autoencoder simply ignores ``y``).

Splits are either the dataset's own (``<folder>/train`` + ``<folder>/test``; validation is a stratified
``val_fraction`` of train) or ``split_ratios`` (e.g. ``[0.8, 0.1, 0.1]`` or ``[0.7, 0.2, 0.1]``) over
all images, stratified by class and seeded by ``split_seed``. ``label_fraction`` keeps that share of the
*training* labels with the same count per class (seeded), for label-efficiency curves. The rules live
in :mod:`datamodules.splits`.

:class:`ImageTensorDataModule` is the shared machinery (splits, label fraction, loaders); the
VOC 2007 and STL-10 modules in :mod:`datamodules.voc_stl` reuse it and only say how to decode.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import warnings
from pathlib import Path
from typing import Literal, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from datamodules.batches import DeviceBatches, check_device_resident, device_batches, resident
from datamodules.paths import cache_root, data_root, missing_dataset
from datamodules.settings import (LegacySettingsMixin, NonNegativeInt, OpenUnitInterval, PositiveInt, UnitFraction,
                                  save_settings, upgrade_settings)
from datamodules.splits import balanced_subset, limit_per_class, stratified_split

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")
CACHE_VERSION = 1
Normalization = Literal["zero_one", "minus_one_one"]
Channels = Literal[1, 3]


# --- decoding ------------------------------------------------------------------------------------
# where the image folders of the zoo's studies come from; they sit behind a login (Kaggle), so they cannot
# be fetched with --data.download: the error for a missing folder says where to get it instead
SOURCES = {
    "anime-face-crops": "Get it from the Kaggle 'Anime Face Dataset' (splcher; bchao1/Anime-Face-Dataset): put "
                        "its 64x64 JPEG face crops, flat, in anime-face-crops/images/.",
    "cats-dogs": "Get it from Kaggle 'Dogs vs. Cats': ImageFolder layout cats-dogs/{train,test}/{cats,dogs}/.",
}


def decode_image(path: str | os.PathLike, image_size: int, channels: int = 3) -> torch.Tensor:
    """Decode one image file to a ``uint8`` ``(C, S, S)`` tensor; RGBA/palette/gray become RGB (or L).

    16-bit grayscale (PNG ``I;16``) is scaled to 0-255 (65535 -> 255); 32-bit integer or float images
    are refused, as their range is unknown.

    Raises ``ValueError`` naming the file when it cannot be read: a corrupt image must never be
    silently skipped (it would change the dataset without anyone noticing).
    """
    from PIL import Image, UnidentifiedImageError

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode.startswith("I;16"):  # 16-bit gray: PIL's convert() would clip it to 255 (all white)
                im = Image.fromarray(np.round(np.asarray(im, dtype=np.float64) / 257.0).astype(np.uint8), "L")
            elif im.mode in ("I", "F"):  # 32-bit: no known range to scale from
                raise ValueError(f"{im.mode!r} (32-bit {'integer' if im.mode == 'I' else 'float'}) pixels have "
                                 "no known range; convert it to an 8- or 16-bit image")
            im = im.convert("RGB" if channels == 3 else "L")
            if im.size != (image_size, image_size):
                im = im.resize((image_size, image_size), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot decode image file {path}: {err}") from err
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def predict_images(pattern: str, class_names: Sequence[str], image_size: int,
                   channels: int) -> tuple[list, torch.Tensor, torch.Tensor]:
    """A user's images for ``predict``: their :class:`~datamodules.predict.PredictItem` records, the
    usable ones decoded as training images are (``uint8 (N, C, S, S)``) and their folder labels (-1: none)."""
    from datamodules.predict import find_files, good_labels, load_items

    items, images = load_items(pattern, find_files(pattern, IMAGE_EXTENSIONS), class_names,
                               lambda p: decode_image(p, image_size, channels), (ValueError,))
    return items, torch.stack(images), torch.tensor(good_labels(items), dtype=torch.int64)


def decode_images(paths: Sequence[Path], image_size: int, channels: int, desc: str = "decoding images") -> torch.Tensor:
    """Decode many files into one ``uint8`` ``(N, C, S, S)`` tensor, with a progress bar."""
    out = torch.empty((len(paths), channels, image_size, image_size), dtype=torch.uint8)
    for i, p in enumerate(tqdm(paths, desc=desc, unit="img", mininterval=2.0, disable=len(paths) < 500)):
        out[i] = decode_image(p, image_size, channels)
    return out


def file_stamps(files: Sequence[Path]) -> list[list[int]]:
    """``[size, mtime_ns]`` of each file: part of a cache key, so a file edited in place (same name,
    even the same size) invalidates the cache."""
    return [[st.st_size, st.st_mtime_ns] for st in (os.stat(f) for f in files)]


def read_cache(path: Path) -> dict | None:
    """The dict of tensors cached at ``path``, or ``None`` (with a warning naming the file) when it is
    truncated, empty, corrupt or holds anything else: the caller rebuilds it. Weights-only, so a
    crafted cache file is refused, not executed."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        if not (isinstance(data, dict) and data and all(isinstance(v, torch.Tensor) for v in data.values())):
            raise ValueError(f"expected a dict of tensors, found {type(data).__name__}")
        return data
    except Exception as err:  # noqa: BLE001 - any unreadable cache is rebuilt, never trusted
        if isinstance(err, pickle.UnpicklingError):  # torch's text suggests the unsafe mode: not repeated
            why = ("refused: it asks for Python objects, which could run code" if "GLOBAL" in str(err)
                   else "not a tensor file")
        else:
            first = (str(err).strip().splitlines() or ["empty or truncated file"])[0].split(". ")[0]
            why = f"{type(err).__name__}: {first}"
    warnings.warn(f"image cache {path} is damaged or not a plain tensor file ({why}); rebuilding it",
                  RuntimeWarning, stacklevel=3)
    return None


def cached(key_parts: dict, build, cache_dir: str | os.PathLike | None, name: str,
           files: Sequence[Path] = ()) -> dict:
    """Load ``build()``'s dict of tensors from the cache, building and saving it on a miss.

    The key is a hash of ``key_parts`` (file list and decode settings) and of the size and
    modification time of ``files``, so a changed file list, file or setting never reuses a stale
    cache. A damaged cache file is rebuilt (:func:`read_cache`).
    """
    key = {**key_parts, "v": CACHE_VERSION, **({"stamps": file_stamps(files)} if files else {})}
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_root(cache_dir) / "images" / f"{name}-{digest}.pt"
    if path.exists() and (data := read_cache(path)) is not None:
        return data
    data = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(data, tmp)
    tmp.replace(path)  # atomic: a concurrent reader never sees half a file
    return data


def to_float(x: torch.Tensor, normalization: Normalization) -> torch.Tensor:
    """``uint8`` images (one or a batch) as float in the ``normalization`` range: the one conversion of
    both the DataLoader path (:class:`ImageTensorDataset`) and device-resident batches."""
    x = x.float().div_(255.0)
    return x.mul_(2.0).sub_(1.0) if normalization == "minus_one_one" else x


class ImageTensorDataset(Dataset):
    """``uint8`` images + labels held in memory; converts to float with the chosen normalisation."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, normalization: Normalization = "zero_one"):
        self.images, self.labels, self.normalization = images, labels, normalization

    def __len__(self) -> int:
        return len(self.images)

    def _convert(self, x: torch.Tensor) -> torch.Tensor:
        return to_float(x, self.normalization)

    def __getitem__(self, i: int):
        return self._convert(self.images[i]), self.labels[i]

    def __getitems__(self, indices: list[int]):
        # batched conversion: one float op per batch instead of one per image
        idx = torch.as_tensor(indices, dtype=torch.long)
        return list(zip(self._convert(self.images[idx]), self.labels[idx]))


# --- shared DataModule machinery -----------------------------------------------------------------
class ImageTensorDataModule(LegacySettingsMixin, L.LightningDataModule):
    """Splits, label fraction and loaders over a decoded ``uint8`` image tensor.

    Subclasses implement :meth:`load` returning ``images (N, C, S, S) uint8``, ``labels (N,)``
    (``-1`` = unlabelled), ``own_split (N,)`` (0 train, 1 val, 2 test, or ``None`` when the dataset
    has no split of its own; without 1s, validation is ``val_fraction`` of train) and the class
    names, with :meth:`limit_indices` already applied.

    Args:
        data_dir: data root folder; None: $ZOO_DATA_DIR, else ./data.
        cache_dir: where the decoded image tensor is cached; None: $ZOO_CACHE_DIR, else ~/.cache/zoo.
        image_size: side length in pixels every image is resized to (square; the aspect ratio is not kept).
        image_channels: 3 (RGB) or 1 (grayscale); images are converted on decoding.
        normalization: pixel range of the batches: "zero_one" [0, 1] or "minus_one_one" [-1, 1] (for tanh GANs).
        split_ratios: seeded, stratified [train, val, test] fractions of all images; None: the dataset's own split.
        val_fraction: share of the own training split held out for validation when there is no own val split, in (0, 1).
        label_fraction: share of the training images kept (same count per class), for label-efficiency curves.
        limit_per_class: keep at most this many images per class (and per own split) before decoding; for quick runs.
        batch_size: batch size of all loaders.
        num_workers: DataLoader worker processes (0: load in the main process; must be 0 with device_resident).
        split_seed: seed of the splits, label fraction and per-class limit (and of the device-resident epoch
            order outside a seeded run).
        predict_path: images to predict on (a file, a folder searched recursively, or a glob), converted as
            the training images are; None: the test split. Class names come from the checkpoint.
        device_resident: keep the decoded ``uint8`` splits on the trainer's device and serve batches by
            slicing them (no DataLoader), converted to float there exactly as the DataLoader path converts
            them; each epoch's order is a function of the run's seed and the epoch only, and each DDP process
            takes its own shard (that of Lightning's DistributedSampler). Predict always uses a DataLoader.
    """

    def __init__(self, data_dir: str | None = None, cache_dir: str | None = None, image_size: PositiveInt = 64,
                 image_channels: Channels = 3, normalization: Normalization = "zero_one",
                 split_ratios: list[float] | None = None, val_fraction: OpenUnitInterval = 0.1,
                 label_fraction: UnitFraction = 1.0, limit_per_class: PositiveInt | None = None,
                 batch_size: PositiveInt = 128, num_workers: NonNegativeInt = 0, split_seed: int = 0,
                 predict_path: str | None = None, device_resident: bool = False) -> None:
        """Subclasses call this, then :func:`~datamodules.settings.save_settings`, which checks the ranges
        and Literals of their (same-named) arguments."""
        super().__init__()
        if split_ratios is not None and len(split_ratios) != 3:
            raise ValueError(f"{type(self).__name__}: split_ratios must be [train, val, test], got {split_ratios}")
        self.data_dir, self.cache_dir = data_dir, cache_dir
        self.image_size, self.channels, self.normalization = int(image_size), int(image_channels), normalization
        self.split_ratios = None if split_ratios is None else [float(r) for r in split_ratios]
        self.val_fraction, self.label_fraction = float(val_fraction), float(label_fraction)
        self.limit_per_class = None if limit_per_class is None else int(limit_per_class)
        self.batch_size, self.num_workers, self.split_seed = int(batch_size), int(num_workers), split_seed
        self._class_names: list[str] | None = None
        self.train_set = self.val_set = self.test_set = None
        self.predict_path = predict_path
        self.predict_items: list = []
        if device_resident:
            check_device_resident(type(self).__name__, self.num_workers)
        self.device_resident = bool(device_resident)
        #: per split: the (uint8 images, labels) on the trainer's device (device_resident)
        self._on_device: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    # subclasses -------------------------------------------------------------------------------
    def load(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, list[str]]:  # pragma: no cover
        raise NotImplementedError

    def scan_class_names(self) -> list[str]:
        """Class names without decoding anything (so models can be configured before ``setup``)."""
        return self.load()[3]

    # public attributes ------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        if self._class_names is None:
            self._class_names = self.scan_class_names()
        return self._class_names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    # splits -----------------------------------------------------------------------------------
    def limit_indices(self, labels: np.ndarray, own_split: np.ndarray | None) -> np.ndarray:
        """Indices kept by ``limit_per_class`` (per class and per own split), chosen *before* decoding
        so that quick runs never decode the whole dataset."""
        if self.limit_per_class is None:
            return np.arange(len(labels))
        groups = own_split if own_split is not None else np.zeros(len(labels), dtype=int)
        keep = []
        for g in np.unique(groups):
            sel = np.flatnonzero(groups == g)
            keep.append(sel[limit_per_class(labels[sel], self.limit_per_class, self.split_seed)])
        return np.sort(np.concatenate(keep))

    def split_indices(self, labels: np.ndarray, own_split: np.ndarray | None) -> tuple[np.ndarray, ...]:
        """Train / val / test indices (after ``limit_per_class``, which :meth:`load` applies)."""
        if self.split_ratios is not None or own_split is None:
            ratios = self.split_ratios or [0.8, 0.1, 0.1]
            train, val, test = stratified_split(labels, ratios, self.split_seed)
        else:
            pool, test = np.flatnonzero(own_split == 0), np.flatnonzero(own_split == 2)
            if len(pool) == 0 or len(test) == 0:
                raise ValueError(f"{type(self).__name__}: the dataset's own split needs both train and test images "
                                 "(or set split_ratios)")
            if (own_split == 1).any():  # the dataset has its own validation split
                train, val = pool, np.flatnonzero(own_split == 1)
            else:
                tr, va = stratified_split(labels[pool], [1.0 - self.val_fraction, self.val_fraction], self.split_seed)
                train, val = pool[tr], pool[va]
        if self.label_fraction != 1.0:
            if (labels[train] < 0).any():
                raise ValueError("label_fraction < 1 needs labelled images, but this folder is unlabelled")
            train = train[balanced_subset(labels[train], self.label_fraction, self.split_seed)]
        return train, val, test

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None or (stage == "predict" and self.predict_path):  # no dataset for predict
            return
        images, labels, own_split, names = self.load()
        self._class_names = names
        lab = labels.numpy()
        own = None if own_split is None else own_split.numpy()
        train, val, test = self.split_indices(lab, own)

        def subset(idx: np.ndarray) -> ImageTensorDataset:
            idx = torch.as_tensor(idx, dtype=torch.long)
            return ImageTensorDataset(images[idx], labels[idx], self.normalization)

        self.train_set, self.val_set, self.test_set = subset(train), subset(val), subset(test)
        self._on_device = {}

    def _loader(self, ds, shuffle: bool, name: str, resident: bool = False) -> DataLoader | DeviceBatches:
        if ds is None:
            self.setup()
            ds = getattr(self, f"{name}_set")
        if len(ds) == 0:
            raise ValueError(f"{type(self).__name__}: the {name} split is empty (check split_ratios / limit_per_class)")
        if resident and self.device_resident:
            return self._device_batches(ds, shuffle, name)
        return DataLoader(ds, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, drop_last=False)

    def _device_batches(self, ds: ImageTensorDataset, shuffle: bool, name: str) -> DeviceBatches:
        """The split's uint8 tensors on the trainer's device (copied once), sliced per batch and converted
        there by :func:`to_float`, as :class:`ImageTensorDataset` converts the same batch."""
        images, labels = resident(self, self._on_device, name, lambda: (ds.images, ds.labels))
        normalization = self.normalization

        def convert(batch: tuple[torch.Tensor, torch.Tensor], _index) -> tuple[torch.Tensor, torch.Tensor]:
            return to_float(batch[0], normalization), batch[1]

        return device_batches(self, images, labels, self.batch_size, shuffle, seed=self.split_seed, transform=convert)

    def train_dataloader(self) -> DataLoader | DeviceBatches:
        return self._loader(self.train_set, True, "train", resident=True)

    def val_dataloader(self) -> DataLoader | DeviceBatches:
        return self._loader(self.val_set, False, "val", resident=True)

    def test_dataloader(self) -> DataLoader | DeviceBatches:
        return self._loader(self.test_set, False, "test", resident=True)

    def predict_dataloader(self) -> DataLoader:
        """Always a DataLoader: under DDP Lightning then predicts every test image exactly once."""
        if not self.predict_path:
            return self._loader(self.test_set, False, "test")
        self.predict_items, images, labels = predict_images(self.predict_path, self.class_names, self.image_size,
                                                            self.channels)
        return self._loader(ImageTensorDataset(images, labels, self.normalization), False, "predict")

    # --- what a checkpoint carries: predicting needs no dataset ---------------------------------------
    def state_dict(self) -> dict:
        """Class names and the image conversion, saved in every checkpoint by Lightning."""
        return {"class_names": self._class_names, "image_size": self.image_size, "channels": self.channels,
                "normalization": self.normalization}

    def load_state_dict(self, state: dict) -> None:
        mine = {"image_size": self.image_size, "channels": self.channels, "normalization": self.normalization}
        from datamodules.predict import check_saved_settings

        check_saved_settings(type(self).__name__, upgrade_settings(type(self).__name__, state), mine)
        if state.get("class_names") is not None:
            self._class_names = list(state["class_names"])


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


class ImageFolderDataModule(ImageTensorDataModule):
    """Images from a folder under the data root, in one of three layouts (detected):

    * ``<folder>/train/<class>/*`` + ``<folder>/test/<class>/*``: labelled, with the dataset's own split
      (e.g. ``folder: cifar10-jpeg``); ``split_ratios`` pools both and re-splits instead.
    * ``<folder>/<class>/*``: labelled class folders, split by ``split_ratios`` (default 80/10/10).
    * ``<folder>/*.png``: a flat unlabelled folder (e.g. ``folder: anime-faces/images``); ``y == -1``.

    ``folder`` is relative to ``data_dir`` / ``$ZOO_DATA_DIR`` (an absolute path also works).

    Args:
        folder: dataset folder, relative to data_dir (an absolute path also works); its layout is detected.
        split_ratios: seeded, stratified [train, val, test] fractions of all images; None: own train/test or 80/10/10.
        device_resident: keep the decoded splits on the trainer's device and slice batches there (no DataLoader);
            the same batches as the DataLoader path for the same epoch order (see ImageTensorDataModule).
    """

    def __init__(self, folder: str = "cifar10-jpeg", data_dir: str | None = None, cache_dir: str | None = None,
                 image_size: PositiveInt = 64, image_channels: Channels = 3, normalization: Normalization = "zero_one",
                 split_ratios: list[float] | None = None, val_fraction: OpenUnitInterval = 0.1,
                 label_fraction: UnitFraction = 1.0, limit_per_class: PositiveInt | None = None,
                 batch_size: PositiveInt = 128, num_workers: NonNegativeInt = 0, split_seed: int = 0,
                 predict_path: str | None = None, device_resident: bool = False) -> None:
        super().__init__(data_dir, cache_dir, image_size, image_channels, normalization, split_ratios, val_fraction,
                         label_fraction, limit_per_class, batch_size, num_workers, split_seed, predict_path,
                         device_resident)
        save_settings(self)
        self.folder = folder

    @property
    def dataset_dir(self) -> Path:
        """The dataset's folder: ``folder`` under the data root."""
        return data_root(self.data_dir) / self.folder

    def _scan(self) -> tuple[list[Path], list[int], list[int] | None, list[str]]:
        """File list, labels, own split (or None) and class names; decoding nothing."""
        folder = self.dataset_dir
        if not folder.is_dir():
            raise missing_dataset(f"image folder '{self.folder}' (--data.folder, relative to the data directory)",
                                  folder, None, hint=SOURCES.get(Path(self.folder).parts[0]) if self.folder else None)
        subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        if {"train", "test"} <= {p.name for p in subdirs}:
            names = sorted(p.name for p in (folder / "train").iterdir() if p.is_dir())
            test_names = sorted(p.name for p in (folder / "test").iterdir() if p.is_dir())
            if names != test_names:
                raise ValueError(f"{folder}: train/ and test/ must hold the same class folders, got "
                                 f"{names} vs {test_names}")
            files, labels, split = [], [], []
            for s, sub in ((0, "train"), (2, "test")):
                for c, name in enumerate(names):
                    found = list_images(folder / sub / name)
                    files += found
                    labels += [c] * len(found)
                    split += [s] * len(found)
            own = split
        elif subdirs:
            names = [p.name for p in subdirs]
            files, labels = [], []
            for c, d in enumerate(subdirs):
                found = list_images(d)
                files += found
                labels += [c] * len(found)
            own = None
        else:
            files = list_images(folder)
            labels, own, names = [-1] * len(files), None, []
        if not files:
            raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found under {folder}")
        return files, labels, own, names

    def scan_class_names(self) -> list[str]:
        return self._scan()[3]

    def load(self):
        files, labels, own, names = self._scan()
        keep = self.limit_indices(np.asarray(labels), None if own is None else np.asarray(own))
        files, labels = [files[i] for i in keep], [labels[i] for i in keep]
        own = None if own is None else [own[i] for i in keep]
        folder = self.dataset_dir
        rel = [str(p.relative_to(folder)) for p in files]
        key = {"root": str(folder.resolve()), "files": rel, "size": self.image_size, "channels": self.channels}
        data = cached(key, lambda: {"images": decode_images(files, self.image_size, self.channels,
                                                            f"decoding {self.folder}")},
                      self.cache_dir, Path(self.folder).name, files=files)
        return (data["images"], torch.tensor(labels, dtype=torch.long),
                None if own is None else torch.tensor(own, dtype=torch.long), names)
