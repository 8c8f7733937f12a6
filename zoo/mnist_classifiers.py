"""Small 28x28 grayscale digit classifiers for the ReducedMNIST study.

* :class:`LeNet5` -- LeCun et al. (1998): two 5x5 conv layers with average pooling and a fully
  connected head. Cheap enough to train a 36-run grid on a laptop CPU; its 84-d penultimate layer
  (:meth:`LeNet5.features`) doubles as a feature extractor (FID-style scores, CAS judges).
* :class:`MnistCNN` -- three 3x3 conv blocks (32/64/128, BN + ReLU) with max pooling after the
  first two, one hidden fully connected layer and dropout.
* :class:`SpatialAttentionCNN` -- :class:`MnistCNN` with a :class:`~zoo.layers.SpatialAttention`
  gate after each of the first two conv blocks; every other setting is shared, so an accuracy
  difference is the attention's doing.

All take ``(N, 1, 28, 28)`` inputs (any normalisation; the DataModule decides) and return logits.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from zoo.classifier import Classifier, conv_bn_relu, default_optimizer
from zoo.layers import SpatialAttention


def _check_input(x: torch.Tensor, model: str, in_channels: int) -> None:
    if x.ndim != 4 or x.shape[1] != in_channels or x.shape[2:] != (28, 28):
        raise ValueError(f"{model} expects images of shape (N, {in_channels}, 28, 28), got {tuple(x.shape)}")


class LeNet5(Classifier):
    """LeNet-5: conv(6, 5x5, pad 2) -> avgpool -> conv(16, 5x5) -> avgpool -> fc 120 -> fc 84 -> fc classes.

    ``activation="tanh"`` gives the 1998 network; ReLU (default) trains faster with the same capacity.

    Args:
        in_channels: number of input image channels (1 for grayscale digits).
        activation: nonlinearity after every conv and hidden fc layer: "relu" or "tanh" (the 1998 original).
        dropout: dropout probability after the 120-unit layer and before the output layer, in [0, 1); 0 disables it.
    """

    def __init__(self, in_channels: int = 1, activation: Literal["relu", "tanh"] = "relu", dropout: float = 0.0,
                 num_classes: int = 10, class_names: Sequence[str] | None = None, label_smoothing: float = 0.0,
                 optimizer: OptimizerCallable = default_optimizer,
                 scheduler: LRSchedulerCallable | None = None) -> None:
        super().__init__(num_classes, class_names, label_smoothing, optimizer, scheduler)
        self.save_hyperparameters()
        if activation not in ("relu", "tanh"):
            raise ValueError(f"LeNet5 activation must be 'relu' or 'tanh', got {activation!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"LeNet5 dropout must be in [0, 1), got {dropout}")
        self.in_channels = in_channels
        act = nn.ReLU if activation == "relu" else nn.Tanh
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2), act(), nn.AvgPool2d(2),  # 28 -> 14
            nn.Conv2d(6, 16, 5), act(), nn.AvgPool2d(2),                       # 14 -> 10 -> 5
            nn.Flatten(),
        )
        self.fc = nn.Sequential(nn.Linear(16 * 5 * 5, 120), act(), nn.Dropout(dropout),
                                nn.Linear(120, 84), act())
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(84, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 84-d penultimate activations (an embedding for feature-space metrics)."""
        _check_input(x, "LeNet5", self.in_channels)
        return self.fc(self.conv(x))

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x))


class MnistCNN(Classifier):
    """Three conv blocks (32/64/128; max pool after the first two: 28 -> 14 -> 7), then
    flatten -> dropout -> fc ``hidden`` -> ReLU -> dropout -> fc classes.

    Args:
        in_channels: number of input image channels (1 for grayscale digits).
        channels: output channels of the three conv blocks (exactly 3 entries).
        hidden: width of the hidden fully connected layer.
        dropout: dropout probability before each of the two fully connected layers, in [0, 1).
    """

    def __init__(self, in_channels: int = 1, channels: Sequence[int] = (32, 64, 128), hidden: int = 128,
                 dropout: float = 0.3, num_classes: int = 10, class_names: Sequence[str] | None = None,
                 label_smoothing: float = 0.0, optimizer: OptimizerCallable = default_optimizer,
                 scheduler: LRSchedulerCallable | None = None) -> None:
        super().__init__(num_classes, class_names, label_smoothing, optimizer, scheduler)
        self.save_hyperparameters()
        if len(channels) != 3:
            raise ValueError(f"{type(self).__name__} has three conv blocks: channels needs 3 entries, "
                             f"got {list(channels)}")
        if not 0 <= dropout < 1:
            raise ValueError(f"{type(self).__name__} dropout must be in [0, 1), got {dropout}")
        self.in_channels = in_channels
        c1, c2, c3 = channels
        self.block1 = nn.Sequential(conv_bn_relu(in_channels, c1), self.make_attention(0), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(conv_bn_relu(c1, c2), self.make_attention(1), nn.MaxPool2d(2))
        self.block3 = conv_bn_relu(c2, c3)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(c3 * 7 * 7, hidden),
                                  nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def make_attention(self, block: int) -> nn.Module:
        """The gate after conv block ``block`` (0 or 1); none in the plain CNN."""
        return nn.Identity()

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        _check_input(x, type(self).__name__, self.in_channels)
        return self.head(self.block3(self.block2(self.block1(x))))


class SpatialAttentionCNN(MnistCNN):
    """:class:`MnistCNN` with a spatial attention gate after each of the first two conv blocks.

    Args:
        in_channels: number of input image channels (1 for grayscale digits).
        channels: output channels of the three conv blocks (exactly 3 entries).
        hidden: width of the hidden fully connected layer.
        dropout: dropout probability before each of the two fully connected layers, in [0, 1).
        attention_kernel: kernel size of the spatial-attention conv (odd, keeps the map size).
    """

    def __init__(self, in_channels: int = 1, channels: Sequence[int] = (32, 64, 128), hidden: int = 128,
                 dropout: float = 0.3, num_classes: int = 10, class_names: Sequence[str] | None = None,
                 label_smoothing: float = 0.0, attention_kernel: int = 7,
                 optimizer: OptimizerCallable = default_optimizer,
                 scheduler: LRSchedulerCallable | None = None) -> None:
        self._attention_kernel = attention_kernel
        super().__init__(in_channels, channels, hidden, dropout, num_classes, class_names, label_smoothing,
                         optimizer, scheduler)

    def make_attention(self, block: int) -> nn.Module:
        return SpatialAttention(self._attention_kernel)

    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The two gates' ``(N, 1, H, W)`` maps for ``x`` (28x28 and 14x14), for inspection."""
        _check_input(x, type(self).__name__, self.in_channels)
        h1 = self.block1[0](x)
        g1 = self.block1[1].gate(h1)
        h2 = self.block2[0](self.block1[2](h1 * g1))
        return [g1, self.block2[1].gate(h2)]
