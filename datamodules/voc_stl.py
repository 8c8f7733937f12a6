"""PASCAL VOC 2007 and STL-10 as image-classification DataModules (same batches as ImageFolderDataModule).

Both read the on-disk formats torchvision writes, so ``download: true`` uses torchvision's own
downloaders (never in tests; the tests write tiny fixtures in these exact formats):

* :class:`VOC2007DataModule`: ``<data_root>/<folder>/VOCdevkit/VOC2007/{JPEGImages,Annotations,ImageSets/Main}``
  (``torchvision.datasets.VOCDetection`` layout). VOC is a detection dataset; for classification each
  image is labelled with **the class of its largest object** (largest bounding-box area, ties broken
  by file order), over the 20 VOC classes. Own split: ``ImageSets/Main/{train,val,test}.txt``.
* :class:`STL10DataModule`: ``<data_root>/<folder>/stl10_binary/{train,test}_{X,y}.bin`` (torchvision's
  STL-10 binary format: uint8 images ``3x96x96`` stored column-major, labels 1..10). Own split:
  train / test; the unlabelled 100k images are not used.

Images are resized (squashed) to ``image_size`` and cached like every image DataModule here.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from datamodules.images import Channels, ImageTensorDataModule, Normalization, cached, decode_images
from datamodules.paths import data_root, missing_dataset
from datamodules.settings import NonNegativeInt, OpenUnitInterval, PositiveInt, UnitFraction, save_settings

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
STL10_SIZE = 96


def voc_largest_object(xml_path: Path) -> str:
    """Class name of the largest (bounding-box area) object in a VOC annotation file."""
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as err:
        raise ValueError(f"cannot parse VOC annotation {xml_path}: {err}") from err
    best, best_area = None, -1.0
    for obj in root.iter("object"):
        name, box = obj.findtext("name"), obj.find("bndbox")
        if name is None or box is None:
            raise ValueError(f"VOC annotation {xml_path}: an <object> lacks <name> or <bndbox>")
        try:
            x0, y0, x1, y1 = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError) as err:
            raise ValueError(f"VOC annotation {xml_path}: bad <bndbox> coordinates") from err
        area = max(0.0, x1 - x0) * max(0.0, y1 - y0)
        if area > best_area:
            best, best_area = name.strip(), area
    if best is None:
        raise ValueError(f"VOC annotation {xml_path} has no <object>")
    if best not in VOC_CLASSES:
        raise ValueError(f"VOC annotation {xml_path}: unknown class {best!r} (expected one of the 20 VOC classes)")
    return best


class VOC2007DataModule(ImageTensorDataModule):
    """PASCAL VOC 2007, one label per image (the largest object's class); see the module docstring.

    ``download: true`` fetches trainval and test with ``torchvision.datasets.VOCDetection``.

    Args:
        folder: folder that contains ``VOCdevkit``, relative to data_dir.
        download: fetch the missing trainval/test archives with torchvision when preparing data.
        split_ratios: seeded, stratified [train, val, test] fractions over all images; None: the own id lists.
    """

    def __init__(self, folder: str = "voc", download: bool = False, data_dir: str | None = None,
                 cache_dir: str | None = None, image_size: PositiveInt = 64, image_channels: Channels = 3,
                 normalization: Normalization = "zero_one", split_ratios: list[float] | None = None,
                 val_fraction: OpenUnitInterval = 0.1, label_fraction: UnitFraction = 1.0,
                 limit_per_class: PositiveInt | None = None, batch_size: PositiveInt = 128,
                 num_workers: NonNegativeInt = 0, split_seed: int = 0) -> None:
        super().__init__(data_dir, cache_dir, image_size, image_channels, normalization, split_ratios, val_fraction,
                         label_fraction, limit_per_class, batch_size, num_workers, split_seed)
        save_settings(self)
        self.folder, self.download = folder, download

    @property
    def dataset_dir(self) -> Path:
        """torchvision's ``root``: the folder that contains ``VOCdevkit``."""
        return data_root(self.data_dir) / self.folder

    @property
    def voc_dir(self) -> Path:
        return self.dataset_dir / "VOCdevkit" / "VOC2007"

    def prepare_data(self) -> None:
        """Fetches each of trainval and test whose id list is missing (the two come as separate archives)."""
        if not self.download:
            return
        main = self.voc_dir / "ImageSets" / "Main"
        lists = {"trainval": ("train.txt", "val.txt"), "test": ("test.txt",)}  # the id lists _ids() reads
        missing = [s for s, names in lists.items() if not all((main / n).is_file() for n in names)]
        if not missing:
            return
        from torchvision.datasets import VOCDetection

        for image_set in missing:
            VOCDetection(str(self.dataset_dir), year="2007", image_set=image_set, download=True)

    def scan_class_names(self) -> list[str]:
        return list(VOC_CLASSES)

    def _ids(self) -> tuple[list[str], list[int]]:
        main = self.voc_dir / "ImageSets" / "Main"
        if not self.voc_dir.is_dir():
            raise missing_dataset("PASCAL VOC 2007", self.voc_dir)
        ids, split = [], []
        for code, name in ((0, "train"), (1, "val"), (2, "test")):
            f = main / f"{name}.txt"
            if f.exists():
                found = [line.split()[0] for line in f.read_text().splitlines() if line.strip()]
                ids += found
                split += [code] * len(found)
        if not ids:
            raise ValueError(f"no image ids: expected ImageSets/Main/train.txt, val.txt and/or test.txt under {self.voc_dir}")
        return ids, split

    def load(self):
        ids, split = self._ids()
        labels = [VOC_CLASSES.index(voc_largest_object(self.voc_dir / "Annotations" / f"{i}.xml")) for i in ids]
        own = np.asarray(split)
        keep = self.limit_indices(np.asarray(labels), own)
        ids, labels, own = [ids[i] for i in keep], [labels[i] for i in keep], own[keep]
        files = [self.voc_dir / "JPEGImages" / f"{i}.jpg" for i in ids]
        for f in files:
            if not f.is_file():
                raise FileNotFoundError(f"VOC 2007: image {f} listed in ImageSets/Main is missing")
        key = {"root": str(self.voc_dir.resolve()), "ids": ids, "size": self.image_size, "channels": self.channels}
        data = cached(key, lambda: {"images": decode_images(files, self.image_size, self.channels, "decoding VOC2007")},
                      self.cache_dir, "voc2007", files=files)  # a file changed in place (size, mtime) is decoded again
        if not (own == 2).any() and self.split_ratios is None:
            raise ValueError(f"VOC 2007 test split not found ({self.voc_dir}/ImageSets/Main/test.txt): download it "
                             "(download: true) or set split_ratios to split trainval")
        return data["images"], torch.tensor(labels, dtype=torch.long), torch.as_tensor(own), list(VOC_CLASSES)


def read_stl10_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's STL-10 binary format: ``(N, 3, 96, 96)`` uint8 images and 0-based labels."""
    x_path, y_path = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
    for p in (x_path, y_path):
        if not p.is_file():
            raise FileNotFoundError(f"STL-10: expected {p} (torchvision's stl10_binary layout)")
    raw = np.fromfile(x_path, dtype=np.uint8)
    per_image = 3 * STL10_SIZE * STL10_SIZE
    if raw.size % per_image:
        raise ValueError(f"STL-10: {x_path} has {raw.size} bytes, not a multiple of 3*96*96={per_image}")
    images = raw.reshape(-1, 3, STL10_SIZE, STL10_SIZE).transpose(0, 1, 3, 2)  # stored column-major
    labels = np.fromfile(y_path, dtype=np.uint8).astype(np.int64) - 1
    if len(labels) != len(images):
        raise ValueError(f"STL-10: {y_path} has {len(labels)} labels but {x_path} has {len(images)} images")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"STL-10: labels in {y_path} must be 1..10, got {labels.min() + 1}..{labels.max() + 1}")
    return np.ascontiguousarray(images), labels


class STL10DataModule(ImageTensorDataModule):
    """STL-10 (labelled train 5,000 / test 8,000, 96x96), resized to ``image_size``; see the module docstring.

    ``download: true`` fetches it with ``torchvision.datasets.STL10``.

    Args:
        folder: folder that contains ``stl10_binary``, relative to data_dir.
        download: fetch STL-10 with torchvision when it is missing.
        split_ratios: seeded, stratified [train, val, test] fractions over all images; None: the own train/test split.
    """

    def __init__(self, folder: str = "stl10", download: bool = False, data_dir: str | None = None,
                 cache_dir: str | None = None, image_size: PositiveInt = 64, image_channels: Channels = 3,
                 normalization: Normalization = "zero_one", split_ratios: list[float] | None = None,
                 val_fraction: OpenUnitInterval = 0.1, label_fraction: UnitFraction = 1.0,
                 limit_per_class: PositiveInt | None = None, batch_size: PositiveInt = 128,
                 num_workers: NonNegativeInt = 0, split_seed: int = 0) -> None:
        super().__init__(data_dir, cache_dir, image_size, image_channels, normalization, split_ratios, val_fraction,
                         label_fraction, limit_per_class, batch_size, num_workers, split_seed)
        save_settings(self)
        self.folder, self.download = folder, download

    @property
    def dataset_dir(self) -> Path:
        """torchvision's ``root``: the folder that contains ``stl10_binary``."""
        return data_root(self.data_dir) / self.folder

    @property
    def binary_dir(self) -> Path:
        return self.dataset_dir / "stl10_binary"

    def prepare_data(self) -> None:
        if self.binary_dir.is_dir() or not self.download:
            return
        from torchvision.datasets import STL10

        STL10(str(self.dataset_dir), split="train", download=True)

    def scan_class_names(self) -> list[str]:
        names = self.binary_dir / "class_names.txt"
        if names.is_file():
            found = [n.strip() for n in names.read_text().splitlines() if n.strip()]
            if len(found) != 10:
                raise ValueError(f"STL-10: {names} should list 10 classes, got {len(found)}")
            return found
        return list(STL10_CLASSES)

    def load(self):
        if not self.binary_dir.is_dir():
            raise missing_dataset("STL-10", self.binary_dir)
        (xtr, ytr), (xte, yte) = read_stl10_split(self.binary_dir, "train"), read_stl10_split(self.binary_dir, "test")
        labels = np.concatenate([ytr, yte])
        own = np.concatenate([np.zeros(len(ytr), dtype=np.int64), np.full(len(yte), 2, dtype=np.int64)])
        keep = self.limit_indices(labels, own)
        files = [self.binary_dir / f"{s}_X.bin" for s in ("train", "test")]

        def build():
            images = torch.from_numpy(np.concatenate([xtr, xte])[keep])
            if self.channels == 1:  # ITU-R 601 luma, as PIL's convert("L")
                luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
                images = (images.float() * luma).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
            if self.image_size != STL10_SIZE:
                images = F.interpolate(images.float(), size=(self.image_size, self.image_size), mode="bilinear",
                                       antialias=True, align_corners=False).round().clamp(0, 255).to(torch.uint8)
            return {"images": images.contiguous()}

        key = {"root": str(self.binary_dir.resolve()), "keep": keep.tolist(), "size": self.image_size,
               "channels": self.channels}
        data = cached(key, build, self.cache_dir, "stl10", files=files)
        return (data["images"], torch.as_tensor(labels[keep]), torch.as_tensor(own[keep]), self.scan_class_names())
