"""Digit classifiers for 28x28 images: LeNet-5 and the small CNN of the ReducedMNIST study, whose
spatial-attention variant is ``MnistCNN(attention="spatial")``."""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import nn

from zoo.layers import conv_bn_relu
from zoo.nets.convnet import Attention, attention_layer


def _check_input(x: torch.Tensor, model: str, in_channels: int) -> None:
    if x.ndim != 4 or x.shape[1] != in_channels or x.shape[2:] != (28, 28):
        raise ValueError(f"{model} expects images of shape (N, {in_channels}, 28, 28), got {tuple(x.shape)}")


class LeNet5(nn.Module):
    """LeNet-5: conv(6, 5x5, pad 2) -> avgpool -> conv(16, 5x5) -> avgpool -> fc 120 -> fc 84 -> fc classes.

    ``activation="tanh"`` gives the 1998 network; ReLU (default) trains faster with the same capacity.

    Args:
        in_channels: number of input image channels (1 for grayscale digits).
        activation: nonlinearity after every conv and hidden fc layer: "relu" or "tanh" (the 1998 original).
        dropout: dropout probability after the 120-unit layer and before the output layer, in [0, 1); 0 disables it.
        num_classes: size of the output layer.
    """

    def __init__(self, in_channels: int = 1, activation: Literal["relu", "tanh"] = "relu", dropout: float = 0.0,
                 num_classes: int = 10) -> None:
        super().__init__()
        if not 0 <= dropout < 1:
            raise ValueError(f"LeNet5 dropout must be in [0, 1), got {dropout}")
        self.in_channels, self.num_classes = in_channels, num_classes
        act = {"relu": nn.ReLU, "tanh": nn.Tanh}[activation]
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2), act(), nn.AvgPool2d(2),  # 28 -> 14
            nn.Conv2d(6, 16, 5), act(), nn.AvgPool2d(2),                       # 14 -> 10 -> 5
            nn.Flatten(),
        )
        self.fc = nn.Sequential(nn.Linear(16 * 5 * 5, 120), act(), nn.Dropout(dropout),
                                nn.Linear(120, 84), act())
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(84, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 84-d penultimate activations (an embedding for feature-space metrics such as FID)."""
        _check_input(x, "LeNet5", self.in_channels)
        return self.fc(self.conv(x))

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x))


class MnistCNN(nn.Module):
    """Three conv blocks (32/64/128; max pool after the first two: 28 -> 14 -> 7), an optional attention
    gate after each of the first two, then flatten -> dropout -> fc ``hidden`` -> ReLU -> dropout -> fc classes.

    Args:
        in_channels: number of input image channels (1 for grayscale digits).
        channels: output channels of the three conv blocks (exactly 3 entries).
        hidden: width of the hidden fully connected layer.
        dropout: dropout probability before each of the two fully connected layers, in [0, 1).
        num_classes: size of the output layer.
        attention: gate after the first two conv blocks: none, spatial (the SA-CNN of the study), or cbam.
        attention_kernel: kernel size of the spatial-attention conv (odd, keeps the map size).
        reduction: CBAM channel-MLP reduction ratio.
    """

    def __init__(self, in_channels: int = 1, channels: Sequence[int] = (32, 64, 128), hidden: int = 128,
                 dropout: float = 0.3, num_classes: int = 10, attention: Attention = "none",
                 attention_kernel: int = 7, reduction: int = 8) -> None:
        super().__init__()
        if len(channels) != 3:
            raise ValueError(f"MnistCNN has three conv blocks: channels needs 3 entries, got {list(channels)}")
        if not 0 <= dropout < 1:
            raise ValueError(f"MnistCNN dropout must be in [0, 1), got {dropout}")
        self.in_channels, self.num_classes = in_channels, num_classes
        c1, c2, c3 = channels
        self.block1 = nn.Sequential(conv_bn_relu(in_channels, c1),
                                    attention_layer(attention, c1, reduction, attention_kernel), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(conv_bn_relu(c1, c2),
                                    attention_layer(attention, c2, reduction, attention_kernel), nn.MaxPool2d(2))
        self.block3 = conv_bn_relu(c2, c3)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(c3 * 7 * 7, hidden),
                                  nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        _check_input(x, type(self).__name__, self.in_channels)
        return self.head(self.block3(self.block2(self.block1(x))))

    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The two spatial gates' ``(N, 1, H, W)`` maps for ``x`` (28x28 and 14x14), for inspection."""
        _check_input(x, type(self).__name__, self.in_channels)
        gate1, gate2 = self.block1[1], self.block2[1]
        if not hasattr(gate1, "gate"):
            raise ValueError("attention_maps needs MnistCNN(attention='spatial')")
        h1 = self.block1[0](x)
        g1 = gate1.gate(h1)
        h2 = self.block2[0](self.block1[2](h1 * g1))
        return [g1, gate2.gate(h2)]
