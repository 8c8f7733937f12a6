"""ConvNet, the four-block CNN of the spoken-digit attention study: shapes, the attention variants differ only
by their gates, each learns a tiny fixed batch, and the net needs no Lightning."""

import subprocess
import sys

import pytest
import torch

from conftest import REPO
from zoo.layers import CBAM, SpatialAttention
from zoo.nets.convnet import ConvNet, attention_layer


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("attention", ["none", "spatial", "cbam"])
def test_logits_shape(attention):
    net = ConvNet(num_classes=10, attention=attention)
    assert net(torch.randn(3, 1, 64, 64)).shape == (3, 10)
    assert net(torch.randn(2, 1, 40, 100)).shape == (2, 10)  # any spectrogram size
    assert ConvNet(in_channels=3, num_classes=4, attention=attention)(torch.randn(2, 3, 32, 32)).shape == (2, 4)


SPATIAL = 2 * 7 * 7  # a gate's 7x7 conv over the (mean, max) maps, no bias
# CBAM, reduction 4: a shared channel MLP C -> max(4, C // 4) -> C without biases, then the spatial gate
CBAM_4 = sum(2 * c * max(4, c // 4) + SPATIAL for c in (32, 64, 128, 256))


@pytest.mark.parametrize("attention, gate, extra", [("spatial", SpatialAttention, 4 * SPATIAL), ("cbam", CBAM, CBAM_4)])
def test_attention_variants_differ_from_the_plain_net_only_by_their_gates(attention, gate, extra):
    plain, gated = ConvNet(), ConvNet(attention=attention, reduction=4)
    gates = [m for m in gated.modules() if isinstance(m, gate)]
    assert len(gates) == 4 and not any(isinstance(m, (SpatialAttention, CBAM)) for m in plain.modules())
    assert sum(n_params(g) for g in gates) == extra
    assert n_params(gated) - extra == n_params(plain)
    # the gate sits between the conv block and the pooling of each block, on that block's channels
    assert all(isinstance(block[1], gate) for block in gated.features)
    x = torch.randn(2, 1, 32, 32)
    assert gated.eval()(x).shape == plain.eval()(x).shape == (2, 10)


def test_cbam_reduction_sets_the_channel_mlp_size():
    small, large = (ConvNet(attention="cbam", reduction=r) for r in (16, 4))
    assert n_params(large) > n_params(small)
    assert n_params(ConvNet(attention="spatial", reduction=4)) == n_params(ConvNet(attention="spatial", reduction=16))


def test_attention_layer_names_the_bad_kind():
    assert isinstance(attention_layer("none", 8), torch.nn.Identity)
    with pytest.raises(ValueError, match="'none', 'spatial' or 'cbam', got 'se'"):
        attention_layer("se", 8)  # type: ignore[arg-type]


def test_kept_rows_tell_the_head_where_in_frequency_a_pattern_sits():
    """A bump moved 16 rows (two strides of the last map), far enough from the edges that no receptive field (38
    rows) reaching it reaches the padding: the global pool's logits stay the same (it cannot tell a low voice from a
    high one by where its harmonics sit); with 8 kept rows they change."""
    torch.manual_seed(0)
    low, high = torch.zeros(1, 1, 128, 64), torch.zeros(1, 1, 128, 64)
    low[..., 56:60, 30:34], high[..., 72:76, 30:34] = 1.0, 1.0
    pooled, kept = ConvNet(hidden=16).eval(), ConvNet(hidden=16, pool_height=8).eval()
    with torch.no_grad():
        assert torch.allclose(pooled(low), pooled(high), atol=1e-6)
        bands_low, bands_high = kept.features(low)[..., 0], kept.features(high)[..., 0]  # (1, 256, 8 bands)
        assert torch.allclose(bands_low[..., 1:6], bands_high[..., 2:7], atol=1e-6)  # the pattern, one band up
        assert (bands_low - bands_high).abs().max() > 0.01
        assert (kept(low) - kept(high)).abs().max() > 1e-4
        assert kept(torch.randn(2, 1, 40, 100)).shape == (2, 10)  # any spectrogram size, as before
    assert kept.head[2].in_features == 8 * 256
    with pytest.raises(ValueError, match=r"pool_height .* \(>= 1\), got 0"):
        ConvNet(pool_height=0)


def test_wrong_number_of_blocks_is_rejected():
    with pytest.raises(ValueError, match="four conv blocks"):
        ConvNet(channels=(8, 16))


@pytest.mark.parametrize("channels_last", [True, False])
def test_memory_layout_does_not_change_the_function(channels_last):
    torch.manual_seed(0)
    a = ConvNet(channels=(4, 8, 8, 16), hidden=8, attention="cbam", channels_last=channels_last).eval()
    b = ConvNet(channels=(4, 8, 8, 16), hidden=8, attention="cbam", channels_last=not channels_last).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 1, 24, 24)
    assert torch.allclose(a(x), b(x), atol=1e-5)
    assert a.features[1][0][0].weight.is_contiguous(memory_format=torch.channels_last) == channels_last


@pytest.mark.parametrize("attention", ["none", "spatial", "cbam"])
def test_learns_a_tiny_fixed_batch(attention):
    torch.manual_seed(0)
    net = ConvNet(channels=(8, 16, 16, 32), hidden=32, dropout=0.0, num_classes=4, attention=attention)
    x = torch.randn(16, 1, 32, 32)
    y = torch.arange(16) % 4
    x[torch.arange(16), 0, y * 4, y * 4] += 4.0  # class-dependent bump
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    with torch.no_grad():  # batch statistics: 40 steps are too few for BN running averages
        assert (net(x).argmax(-1) == y).float().mean() >= 0.9


def test_nets_are_usable_without_lightning():
    """Importing, building and running a net must not import Lightning (a net is a plain nn.Module)."""
    code = ("import sys, torch\n"
            "from zoo.nets.convnet import ConvNet\nfrom zoo.nets.lenet import LeNet5, MnistCNN\n"
            "ConvNet(attention='cbam')(torch.randn(1, 1, 32, 32)); LeNet5()(torch.randn(1, 1, 28, 28))\n"
            "MnistCNN(attention='spatial')(torch.randn(1, 1, 28, 28))\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_per_class_report_from_a_confusion_matrix():
    from zoo.tasks.classifier import per_class_report

    cm = torch.tensor([[8, 2, 0], [1, 9, 0], [0, 0, 0]])  # rows: true class
    report = per_class_report(cm, ["a", "b", "c"])
    assert report["a"] == {"precision": 8 / 9, "recall": 0.8, "f1": 2 * (8 / 9) * 0.8 / (8 / 9 + 0.8), "support": 10}
    assert report["b"]["precision"] == 9 / 11 and report["b"]["recall"] == 0.9
    assert report["c"] == {"precision": None, "recall": None, "f1": None, "support": 0}
