"""ConvNet: the four-block CNN of the spoken-digit attention study and the image-folder baseline.

One network, attention as an argument (``none`` / ``spatial`` / ``cbam``), as timm's ``attn_layer``:
the CNN vs CBAM comparison differs only in that argument, so a gap in accuracy is the attention's doing.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import nn

from zoo.layers import CBAM, SpatialAttention, conv_bn_relu

Attention = Literal["none", "spatial", "cbam"]


def attention_layer(kind: Attention, channels: int, reduction: int = 8, kernel_size: int = 7) -> nn.Module:
    """The gate after a conv block: ``nn.Identity`` (none), :class:`SpatialAttention` or :class:`CBAM`."""
    if kind == "none":
        return nn.Identity()
    if kind == "spatial":
        return SpatialAttention(kernel_size)
    if kind == "cbam":
        return CBAM(channels, reduction, kernel_size)
    raise ValueError(f"attention must be 'none', 'spatial' or 'cbam', got {kind!r}")


class ConvNet(nn.Module):
    """Four conv blocks (conv, BN, ReLU, optional attention gate, then max pool; the last block
    average-pools) and a two-layer head with dropout. Input ``(N, C, H, W)``; output logits.

    Args:
        in_channels: input channels (1 for a spectrogram, 3 for RGB).
        channels: output channels of the four conv blocks (exactly 4 entries).
        hidden: width of the hidden fully connected layer of the head.
        dropout: dropout probability before each of the two head layers.
        num_classes: size of the output layer.
        attention: gate after every conv block: none, spatial, or cbam (channel then spatial).
        reduction: CBAM channel-MLP reduction ratio (hidden size = max(4, channels // reduction)).
        attention_kernel: kernel size of the spatial-attention conv (odd, keeps the map size).
        channels_last: run convolutions in NHWC memory layout (~1.8x faster on CPU oneDNN; tensor cores on GPU).
        pool_height: rows the last block's average pool keeps. 1 (default): a global average pool, blind to
            where in the image a pattern sits. k > 1: the height axis (a spectrogram's frequency axis) is pooled
            to k bands and only the width (time) is averaged out, so the head knows where in frequency a pattern
            sits (a voice's pitch and formants, the cues of its sex); the head's input grows k-fold.
    """

    def __init__(self, in_channels: int = 1, channels: Sequence[int] = (32, 64, 128, 256), hidden: int = 128,
                 dropout: float = 0.3, num_classes: int = 10, attention: Attention = "none", reduction: int = 8,
                 attention_kernel: int = 7, channels_last: bool = True, pool_height: int = 1) -> None:
        super().__init__()
        if len(channels) != 4:
            raise ValueError(f"ConvNet has four conv blocks: channels needs 4 entries, got {list(channels)}")
        if pool_height < 1:
            raise ValueError(f"ConvNet: pool_height is the number of rows the last pool keeps (>= 1), got {pool_height}")
        self.num_classes = num_classes
        blocks, cin = [], in_channels
        for i, cout in enumerate(channels):
            layers = [conv_bn_relu(cin, cout), attention_layer(attention, cout, reduction, attention_kernel)]
            layers.append(nn.AdaptiveAvgPool2d((pool_height, 1)) if i == len(channels) - 1 else nn.MaxPool2d(2))
            blocks.append(nn.Sequential(*layers))
            cin = cout
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin * pool_height, hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(hidden, num_classes),
        )
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.head(self.features(x))
