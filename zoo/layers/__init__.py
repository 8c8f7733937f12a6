"""Plain ``nn.Module`` building blocks, usable with or without Lightning (the lowest layer of the zoo)."""

from zoo.layers.attention import CBAM, ChannelAttention, SpatialAttention
from zoo.layers.blocks import conv_bn_relu, mlp_head

__all__ = ["CBAM", "ChannelAttention", "SpatialAttention", "conv_bn_relu", "mlp_head"]
