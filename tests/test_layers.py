"""CBAM building blocks: shapes, gate ranges, that the gates actually gate, and gradient flow."""

import pytest
import torch

from zoo.layers import CBAM, ChannelAttention, SpatialAttention


@pytest.fixture
def x():
    return torch.randn(4, 16, 9, 7, generator=torch.Generator().manual_seed(0))


def test_channel_attention_gate_shape_and_range(x):
    ca = ChannelAttention(16, reduction=4)
    g = ca.gate(x)
    assert g.shape == (4, 16, 1, 1)
    assert torch.all((g > 0) & (g < 1))
    assert ca(x).shape == x.shape
    torch.testing.assert_close(ca(x), x * g)


def test_spatial_attention_gate_shape_and_range(x):
    sa = SpatialAttention(7)
    g = sa.gate(x)
    assert g.shape == (4, 1, 9, 7)
    assert torch.all((g > 0) & (g < 1))
    torch.testing.assert_close(sa(x), x * g)


def test_channel_attention_uses_max_descriptor():
    """Two inputs with equal channel means but different maxima must be gated differently."""
    ca = ChannelAttention(2, reduction=1, min_hidden=2)
    with torch.no_grad():  # identity MLP, so the expected gates are known exactly
        for conv in (ca.mlp[0], ca.mlp[2]):
            conv.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
    a = torch.zeros(1, 2, 4, 4)
    b = torch.zeros(1, 2, 4, 4)
    b[0, :, 0, 0], b[0, :, 0, 1] = 1.0, -1.0  # same mean (0), larger max
    torch.testing.assert_close(ca.gate(a), torch.full((1, 2, 1, 1), 0.5))  # avg 0, max 0
    torch.testing.assert_close(ca.gate(b), torch.sigmoid(torch.ones(1, 2, 1, 1)))  # avg 0, max 1


def test_spatial_attention_is_position_dependent():
    sa = SpatialAttention(3)
    x = torch.zeros(1, 4, 5, 5)
    x[0, :, 2, 2] = 5.0
    g = sa.gate(x)[0, 0]
    assert not torch.allclose(g, g[0, 0].expand_as(g))


def test_spatial_attention_uses_mean_and_max_maps():
    """With a 1x1 conv reading only one of the two maps, the gate is sigmoid of that map."""
    sa = SpatialAttention(1)
    x = torch.zeros(1, 2, 2, 2)
    x[0, 0, 0, 0], x[0, 1, 0, 0] = 1.0, -1.0  # mean 0 everywhere; max 1 at (0, 0), 0 elsewhere
    expected = torch.sigmoid(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    with torch.no_grad():
        sa.conv.weight.copy_(torch.tensor([0.0, 1.0]).view(1, 2, 1, 1))  # the max map only
    torch.testing.assert_close(sa.gate(x)[0, 0], expected)
    with torch.no_grad():
        sa.conv.weight.copy_(torch.tensor([1.0, 0.0]).view(1, 2, 1, 1))  # the mean map only
    torch.testing.assert_close(sa.gate(x)[0, 0], torch.full((2, 2), 0.5))


def test_cbam_applies_channel_then_spatial_attention(x):
    cbam = CBAM(16, reduction=4)
    torch.testing.assert_close(cbam(x), cbam.spatial(cbam.channel(x)))
    assert not torch.allclose(cbam(x), cbam.channel(cbam.spatial(x)))


def test_cbam_preserves_shape_and_gradients_reach_every_parameter(x):
    cbam = CBAM(16, reduction=4)
    x = x.clone().requires_grad_(True)
    out = cbam(x)
    assert out.shape == x.shape
    out.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in cbam.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="odd"):
        SpatialAttention(4)
    with pytest.raises(ValueError, match="channels"):
        ChannelAttention(0)
