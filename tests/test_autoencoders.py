"""ConvAE, LSTMAE and the SineWaves DataModule: shapes, determinism, learning, probe, figures, errors."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from datamodules.sines import SineWaves, make_sines
from zoo.autoencoders import ConvAE, LSTMAE, probe_accuracy


def _fit_steps(model: L.LightningModule, batch, steps: int, lr: float) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = model.training_step(batch, 0)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


# --- SineWaves ---------------------------------------------------------------------------------
def test_sines_shapes_parameters_and_seeding():
    dm = SineWaves(n_train=20, n_val=5, n_test=7, length=32, freq_range=(1.0, 3.0), amp_range=(0.5, 2.0),
                   noise=0.0, batch_size=8, seed=3)
    dm.setup("fit")
    x, params = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 32, 1) and params.shape == (8, 3)
    freq, phase, amp = params.T
    assert ((freq >= 1.0) & (freq <= 3.0)).all() and ((amp >= 0.5) & (amp <= 2.0)).all()
    # noise=0: each sequence is exactly its parameters' sine
    t = torch.arange(32) / 32
    expected = amp[:, None] * torch.sin(2 * math.pi * freq[:, None] * t + phase[:, None])
    torch.testing.assert_close(x[..., 0], expected)
    # sequences differ from each other (random parameters per sequence), the three splits differ,
    # and the same seed reproduces the data
    assert not torch.allclose(x[0], x[1])
    assert len(dm.dataset("test")) == 7
    assert not torch.allclose(dm.dataset("train").tensors[0][:5], dm.dataset("val").tensors[0][:5])
    again = SineWaves(n_train=20, n_val=5, n_test=7, length=32, freq_range=(1.0, 3.0), amp_range=(0.5, 2.0),
                      noise=0.0, seed=3)
    torch.testing.assert_close(again.dataset("train").tensors[0], dm.dataset("train").tensors[0])
    other = SineWaves(n_train=20, length=32, seed=4)
    assert not torch.allclose(other.dataset("train").tensors[0], dm.dataset("train").tensors[0])


def test_sines_noise_level():
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    clean, _ = make_sines(200, 50, (1, 2), (1, 1), 0.0, gen())
    noisy, _ = make_sines(200, 50, (1, 2), (1, 1), 0.3, gen())
    # same draw of parameters, so the difference is the noise alone
    assert abs(float((noisy - clean).std()) - 0.3) < 0.02


@pytest.mark.parametrize("kwargs, match", [
    ({"noise": -0.1}, "noise"),
    ({"freq_range": (2.0, 1.0)}, "freq_range"),
    ({"length": 0}, "length"),
])
def test_sines_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SineWaves(**kwargs)


def test_sines_bad_split():
    with pytest.raises(ValueError, match="split"):
        SineWaves().dataset("train2")


# --- LSTMAE ------------------------------------------------------------------------------------
def test_lstmae_shapes_and_negative_outputs():
    model = LSTMAE(input_size=2, hidden_size=16, latent_size=3)
    x = torch.randn(4, 11, 2)
    assert model.encode(x).shape == (4, 3)
    assert model(x).shape == (4, 11, 2)
    assert model.decode(torch.randn(4, 3), 7).shape == (4, 7, 2)
    # linear output: a large negative bias must come through (a sigmoid could not go below 0)
    with torch.no_grad():
        model.output.bias.fill_(-5.0)
    assert (model(x) < 0).all()


def test_lstmae_rejects_wrong_input():
    model = LSTMAE(input_size=1)
    with pytest.raises(ValueError, match="input_size=1"):
        model.training_step((torch.randn(4, 10, 3),), 0)


def test_lstmae_loss_decreases_on_fixed_batch():
    torch.manual_seed(0)
    x, params = make_sines(16, 16, (1, 3), (0.5, 1.5), 0.0, torch.Generator().manual_seed(0))
    model = LSTMAE(hidden_size=32, latent_size=4)
    losses = _fit_steps(model, (x, params), steps=120, lr=1e-2)
    # 0.5 is the signal variance, i.e. what predicting zero costs (where a sigmoid-output AE plateaus)
    assert losses[-1] < 0.4 * losses[0], losses[::10]


def test_lstmae_trainer_logs_metrics_and_figure(tmp_path):
    dm = SineWaves(n_train=32, n_val=16, n_test=16, length=16, batch_size=16)
    model = LSTMAE(hidden_size=8, latent_size=2)
    trainer = L.Trainer(max_epochs=1, logger=CSVLogger(tmp_path), enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(model, dm)
    assert "val/mse" in trainer.callback_metrics and "train/mse" in trainer.callback_metrics
    res = trainer.test(model, dm, verbose=False)[0]
    assert res["test/mse"] > 0
    assert list(tmp_path.rglob("test_reconstructions_*.png")), "reconstruction figure not written"


# --- ConvAE ------------------------------------------------------------------------------------
def _blobs(n_per_class: int = 8, classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Tiny images: class k is a bright square at a class-specific place, plus noise."""
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for k in range(classes):
        img = torch.zeros(n_per_class, 1, 28, 28)
        img[:, :, 4 + 7 * k: 11 + 7 * k, 4 + 7 * k: 11 + 7 * k] = 1.0
        xs.append((img + 0.1 * torch.rand(img.shape, generator=g)).clamp(0, 1))
        ys.append(torch.full((n_per_class,), k))
    return torch.cat(xs), torch.cat(ys)


def test_convae_shapes_and_attributes():
    model = ConvAE(latent_dim=5)
    x = torch.rand(3, 1, 28, 28)
    assert model.encode(x).shape == (3, 5)
    out = model(x)
    assert out.shape == (3, 1, 28, 28) and out.min() >= 0 and out.max() <= 1
    assert isinstance(model.encoder, torch.nn.Module) and isinstance(model.decoder, torch.nn.Module)


@pytest.mark.parametrize("x, match", [
    (torch.rand(2, 1, 32, 32), r"\(B, 1, 28, 28\)"),
    (torch.randn(2, 1, 28, 28), "zero_one"),
])
def test_convae_rejects_bad_input(x, match):
    with pytest.raises(ValueError, match=match):
        ConvAE().training_step((x, torch.zeros(2, dtype=torch.long)), 0)


def test_convae_loss_decreases_on_fixed_batch():
    torch.manual_seed(0)
    x, y = _blobs(4)
    model = ConvAE(latent_dim=8, channels=(8, 8, 8))
    losses = _fit_steps(model, (x, y), steps=40, lr=3e-3)
    assert losses[-1] < 0.6 * losses[0], losses[::10]


def test_probe_accuracy_separable_and_random():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    separable = np.eye(3)[labels] * 5 + rng.normal(size=(60, 3)) * 0.1
    assert probe_accuracy(separable, labels) == 1.0
    noise = rng.normal(size=(60, 3))
    assert probe_accuracy(noise, labels) < 0.7
    with pytest.warns(UserWarning, match="probe skipped"):
        assert probe_accuracy(noise[:4], np.array([0, 1, 2, 2])) is None


def test_convae_test_logs_probe_and_figures(tmp_path):
    torch.manual_seed(0)
    x, y = _blobs(10)
    loader = DataLoader(TensorDataset(x, y), batch_size=15)
    model = ConvAE(latent_dim=4, channels=(4, 4, 4), tsne_samples=20, n_images=4,
                   optimizer=lambda p: torch.optim.Adam(p, lr=1e-2))
    with torch.no_grad():
        untrained = torch.nn.functional.mse_loss(model(x), x).item()
    trainer = L.Trainer(max_epochs=4, logger=CSVLogger(tmp_path), enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(model, loader, loader)
    res = trainer.test(model, loader, verbose=False)[0]
    assert 0 <= res["test/mse"] < 0.85 * untrained, (res["test/mse"], untrained)
    assert 0 <= res["test/probe_acc"] <= 1
    names = {p.name.split("_step")[0] for p in tmp_path.rglob("*.png")}
    assert {"test_reconstructions", "test_latent_pca", "test_latent_tsne"} <= names, names
