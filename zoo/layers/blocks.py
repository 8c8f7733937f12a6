"""Small building blocks several nets share."""

from __future__ import annotations

from torch import nn


def conv_bn_relu(cin: int, cout: int, kernel_size: int = 3) -> nn.Sequential:
    """Conv (same padding, no bias: BN has one), batch norm, ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def mlp_head(in_dim: int, num_classes: int, hidden: int = 0, layers: int = 1, dropout: float = 0.0,
             batch_norm: bool = False) -> nn.Module:
    """``layers`` hidden blocks (Linear, [BatchNorm1d], ReLU, Dropout) of width ``hidden``, then the output
    Linear; ``hidden=0`` or ``layers=0`` is a linear head."""
    if hidden <= 0 or layers <= 0:
        return nn.Linear(in_dim, num_classes)
    mods: list[nn.Module] = []
    for _ in range(layers):
        mods += [nn.Linear(in_dim, hidden), *([nn.BatchNorm1d(hidden)] if batch_norm else []),
                 nn.ReLU(inplace=True), nn.Dropout(dropout)]
        in_dim = hidden
    return nn.Sequential(*mods, nn.Linear(in_dim, num_classes))
