"""Nets of the masked-autoencoder family: :class:`MaskedAENet` (the image autoencoder that
:class:`zoo.tasks.masked_ae.MaskedAE` pretrains on corrupted inputs) and :class:`EncoderWithHead` (a
pretrained encoder plus a classification head, what :class:`zoo.tasks.transfer.TransferClassifier` trains).

The variants are arguments: ``architecture="dense"`` (fully connected, three hidden layers) or ``"conv"``
(strided conv encoder, transposed-conv decoder). The corruption (masking, noise) is the task's, so the
same net also serves as a plain autoencoder.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import nn

from zoo.layers import mlp_head


def dense_autoencoder(channels: int, image_size: int, hidden: int, bottleneck: int) -> tuple[nn.Module, nn.Module]:
    """The studied dense AE: three hidden layers (``hidden``, ``bottleneck``, ``hidden``).

    The code is linear (no ReLU): a rectified narrow bottleneck can lose whole units, and the code
    is what a downstream probe sees."""
    dim = channels * image_size * image_size
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(dim, hidden), nn.ReLU(inplace=True),
                            nn.Linear(hidden, bottleneck))
    decoder = nn.Sequential(nn.Linear(bottleneck, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim),
                            nn.Sigmoid(), nn.Unflatten(1, (channels, image_size, image_size)))
    return encoder, decoder


def conv_autoencoder(channels: int, image_size: int, conv_channels: Sequence[int],
                     bottleneck: int) -> tuple[nn.Module, nn.Module]:
    """Strided conv encoder (each block: stride-2 conv + conv, halving the size) ending in a 1x1 conv to a
    ``bottleneck``-channel map (linear, like the dense code); a mirrored transposed-conv decoder. The code
    is spatial, ``(bottleneck, S / 2^k, S / 2^k)``."""
    k = len(conv_channels)
    if k < 1 or image_size % (2 ** k):
        raise ValueError(f"conv MaskedAENet: image_size={image_size} must be divisible by 2^{k} "
                         f"(one halving per conv_channels entry {list(conv_channels)})")
    enc, cin = [], channels
    for cout in conv_channels:
        enc += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        cin = cout
    enc += [nn.Conv2d(cin, bottleneck, 1)]
    dec = [nn.Conv2d(bottleneck, conv_channels[-1], 1), nn.BatchNorm2d(conv_channels[-1]), nn.ReLU(inplace=True)]
    outs = list(conv_channels[::-1][1:])
    for cin, cout in zip(conv_channels[::-1], outs):
        dec += [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True)]
    # the last upsampling goes straight to pixels: a full-resolution conv would dominate the cost
    dec += [nn.ConvTranspose2d(conv_channels[0], channels, 4, stride=2, padding=1), nn.Sigmoid()]
    return nn.Sequential(*enc), nn.Sequential(*dec)


class MaskedAENet(nn.Module):
    """Image autoencoder for ``(B, C, S, S)`` inputs in ``[0, 1]``; ``encoder``/``decoder`` attributes.

    The decoder ends in a sigmoid, so ``forward`` returns a reconstruction in ``[0, 1]``.

    Args:
        architecture: "dense" (fully connected AE) or "conv" (strided conv encoder, transposed-conv decoder).
        image_size: side length S of the square input images in pixels; must match the data.
        channels: number of image channels (3 for RGB); must match the data.
        bottleneck: code size: units of the dense code, or channels of the conv code map.
        hidden: width of the dense AE's hidden layers on either side of the code ("dense" only).
        conv_channels: channels of the conv encoder's blocks, each halving the size ("conv" only; S divisible
            by 2^len).
    """

    def __init__(self, architecture: Literal["dense", "conv"] = "dense", image_size: int = 32, channels: int = 3,
                 bottleneck: int = 128, hidden: int = 1024, conv_channels: Sequence[int] = (32, 64)) -> None:
        super().__init__()
        self.architecture, self.image_size, self.channels = architecture, image_size, channels
        if architecture == "dense":
            self.encoder, self.decoder = dense_autoencoder(channels, image_size, hidden, bottleneck)
        elif architecture == "conv":
            self.encoder, self.decoder = conv_autoencoder(channels, image_size, conv_channels, bottleneck)
        else:
            raise ValueError(f"architecture must be 'dense' or 'conv', got {architecture!r}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.channels, self.image_size, self.image_size

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            c, s, _ = self.input_shape
            raise ValueError(f"MaskedAENet expects images of shape (B, {c}, {s}, {s}) (the net's image_size/channels "
                             f"must match the data's image_size/channels), got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.decoder(self.encoder(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Flat features ``(B, D)`` of the encoder, what a classifier on top sees."""
        self.check_input(x)
        return self.encoder(x).flatten(1)


class EncoderWithHead(nn.Module):
    """Classify with an ``encoder`` (e.g. a pretrained :class:`MaskedAENet` 's): features -> optional batch norm ->
    head. Input ``(B, *input_shape)``; output logits.

    A frozen encoder (``freeze_encoder``) gets no gradients and stays in eval mode whatever ``train()`` is
    called with: its batch-norm statistics are those of pretraining. The features are batch-normalised
    (``feature_batchnorm``, no affine) because a code's scale is arbitrary and without it a probe can sit at
    chance for many epochs; that normalisation is affine, so a linear head remains a linear probe.

    Args:
        encoder: maps ``(B, *input_shape)`` to features of any shape (flattened to ``(B, D)``).
        input_shape: the shape of one input the encoder was trained on, e.g. ``(3, 32, 32)``.
        num_classes: size of the output layer.
        hidden: width of the head's hidden layers; 0: a linear head.
        layers: number of hidden layers (Linear, BatchNorm1d, ReLU, Dropout) of the head; 0: a linear head.
        dropout: dropout probability after each hidden layer of the head.
        feature_batchnorm: batch-normalise the encoder features (no affine) before the head.
        freeze_encoder: keep the encoder's weights and batch-norm statistics as they are.
    """

    def __init__(self, encoder: nn.Module, input_shape: Sequence[int], num_classes: int = 10, hidden: int = 0,
                 layers: int = 0, dropout: float = 0.0, feature_batchnorm: bool = True,
                 freeze_encoder: bool = True) -> None:
        super().__init__()
        self.encoder = encoder
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_classes = num_classes
        self.frozen = freeze_encoder
        if freeze_encoder:
            encoder.requires_grad_(False)
        was_training = encoder.training
        with torch.no_grad():
            encoder.eval()
            self.feature_dim = encoder(torch.zeros(1, *self.input_shape)).flatten(1).shape[1]
        encoder.train(was_training and not freeze_encoder)
        self.feature_norm = nn.BatchNorm1d(self.feature_dim, affine=False) if feature_batchnorm else nn.Identity()
        self.head = mlp_head(self.feature_dim, num_classes, hidden, layers, dropout, batch_norm=True)

    def train(self, mode: bool = True) -> "EncoderWithHead":
        """Keep a frozen encoder in eval mode: its batch-norm statistics must not drift."""
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"EncoderWithHead: the encoder was trained on inputs of shape {self.input_shape} "
                             f"(set data.image_size/channels to match), got {tuple(x.shape[1:])}")
        if self.frozen:
            with torch.no_grad():
                return self.encoder(x).flatten(1)
        return self.encoder(x).flatten(1)

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        return self.head(self.feature_norm(self.features(x)))
