"""CNN / CBAMNet: shapes, the only difference is attention, and both learn a tiny fixed batch."""

import pytest
import torch

from zoo.audio_cnn import CBAMNet, CNN
from zoo.layers import CBAM


@pytest.mark.parametrize("cls", [CNN, CBAMNet])
def test_logits_shape(cls):
    model = cls(num_classes=10)
    assert model(torch.randn(3, 1, 64, 64)).shape == (3, 10)
    assert model(torch.randn(2, 1, 40, 100)).shape == (2, 10)  # any spectrogram size


def test_cbamnet_differs_from_cnn_only_by_cbam():
    cnn, cbam = CNN(), CBAMNet()
    n_cbam = sum(isinstance(m, CBAM) for m in cbam.modules())
    assert n_cbam == 4 and not any(isinstance(m, CBAM) for m in cnn.modules())
    attn = sum(p.numel() for m in cbam.modules() if isinstance(m, CBAM) for p in m.parameters())
    assert sum(p.numel() for p in cbam.parameters()) - attn == sum(p.numel() for p in cnn.parameters())


def test_wrong_number_of_blocks_is_rejected():
    with pytest.raises(ValueError, match="four conv blocks"):
        CNN(channels=(8, 16))


@pytest.mark.parametrize("cls", [CNN, CBAMNet])
def test_learns_a_tiny_fixed_batch(cls):
    torch.manual_seed(0)
    model = cls(channels=(8, 16, 16, 32), hidden=32, dropout=0.0, num_classes=4)
    x = torch.randn(16, 1, 32, 32)
    y = torch.arange(16) % 4
    x[torch.arange(16), 0, y * 4, y * 4] += 4.0  # class-dependent bump
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    with torch.no_grad():  # batch statistics: 40 steps are too few for BN running averages
        assert (model(x).argmax(-1) == y).float().mean() >= 0.9


def test_per_class_report_from_a_confusion_matrix():
    from zoo.classifier import per_class_report

    cm = torch.tensor([[8, 2, 0], [1, 9, 0], [0, 0, 0]])  # rows: true class
    report = per_class_report(cm, ["a", "b", "c"])
    assert report["a"] == {"precision": 8 / 9, "recall": 0.8, "f1": 2 * (8 / 9) * 0.8 / (8 / 9 + 0.8), "support": 10}
    assert report["b"]["precision"] == 9 / 11 and report["b"]["recall"] == 0.9
    assert report["c"] == {"precision": None, "recall": None, "f1": None, "support": 0}
