"""ImageClassifier: the from-scratch reference CNN for RGB image folders (``configs/image_classifier_cifar.yaml``).

It is the baseline of the label-fraction curve in ``docs/masked_ae.md``: a pretrained encoder is
only worth something if it beats this network trained on the same labels. The network is the
zoo's four-block CNN (:class:`zoo.audio_cnn.CNN`: conv, batch norm, ReLU, max pooling, dropout
head); L2 weight decay comes from the optimizer (``AdamW(weight_decay=...)`` in the config).
Train-time augmentation (per-sample flips, contrast, small shifts) is
:class:`datamodules.augment.BatchAugment`, applied to the batch inside ``training_step`` only.
"""

from __future__ import annotations

from typing import Sequence

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from datamodules.augment import BatchAugment
from zoo.audio_cnn import CNN
from zoo.classifier import default_optimizer


def make_augment(augment: bool, hflip: float, contrast: float, translate: float,
                 seed: int | None) -> nn.Module | None:
    """The image augmentation shared by :class:`ImageClassifier` and fine-tuning; ``None`` when off.

    ``seed=None`` takes the run's seed (``seed_everything`` / ``torch.manual_seed``), so runs of a
    multi-seed grid draw different augmentations; an explicit seed pins the stream.
    """
    if not augment:
        return None
    if seed is None:
        seed = torch.initial_seed()
    return BatchAugment(translate=translate, hflip=hflip, contrast=contrast, value_range=(0.0, 1.0),
                        padding_mode="reflection", seed=seed)


class ImageClassifier(CNN):
    """Four conv blocks with batch norm and max pooling, dropout head, optional train-time augmentation.

    Input: ``(B, in_channels, H, W)`` images in ``[0, 1]`` (``normalization: zero_one``).

    Args:
        in_channels: number of input image channels (3 for RGB).
        channels: output channels of the four conv blocks (exactly 4 entries).
        hidden: width of the hidden fully connected layer of the head.
        dropout: dropout probability before each of the two head layers.
        augment: apply random train-time augmentation (flip, contrast, shift) to each training batch.
        hflip: probability of mirroring each training image horizontally, in [0, 1].
        contrast: contrast jitter strength: deviation from the image mean scaled by U(1 - c, 1 + c), in [0, 1).
        translate: maximum random shift per axis as a fraction of the image size.
        augment_seed: seed of the augmentation random stream; None: derived from the run's seed.
        channels_last: run convolutions in NHWC memory layout (faster on CPU oneDNN and GPU tensor cores).
    """

    def __init__(self, in_channels: int = 3, channels: Sequence[int] = (32, 64, 128, 256), hidden: int = 256,
                 dropout: float = 0.3, augment: bool = True, hflip: float = 0.5, contrast: float = 0.2,
                 translate: float = 0.1, augment_seed: int | None = None, num_classes: int = 10,
                 class_names: Sequence[str] | None = None, label_smoothing: float = 0.0, channels_last: bool = True,
                 optimizer: OptimizerCallable = default_optimizer,
                 scheduler: LRSchedulerCallable | None = None) -> None:
        super().__init__(in_channels=in_channels, channels=channels, hidden=hidden, dropout=dropout,
                         num_classes=num_classes, class_names=class_names, label_smoothing=label_smoothing,
                         channels_last=channels_last, optimizer=optimizer, scheduler=scheduler)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.augment = make_augment(augment, hflip, contrast, translate, augment_seed)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        if self.augment is not None:
            x, *rest = batch
            batch = (self.augment(x), *rest)
        return super().training_step(batch, batch_idx)
