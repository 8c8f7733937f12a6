"""Plain ``nn.Module`` building blocks, usable with or without Lightning."""

from zoo.layers.attention import CBAM, ChannelAttention, SpatialAttention

__all__ = ["CBAM", "ChannelAttention", "SpatialAttention"]
