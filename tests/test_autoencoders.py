"""Autoencoder nets (ConvAutoencoder, LSTMAutoencoder), the Autoencoder task, legacy ConvAE/LSTMAE checkpoint
conversion and the SineWaves DataModule: shapes, determinism, learning, probe, figures, errors."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from datamodules.sines import SineWaves, make_sines
from zoo.nets.autoencoders import ConvAutoencoder, LSTMAutoencoder
from zoo.safe_load import load_checkpoint, load_module
from zoo.tasks.autoencoder import Autoencoder, probe_accuracy
from zoo.tools.convert_checkpoint import convert_checkpoint


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
                   noise=0.0, batch_size=8, data_seed=3)
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
                      noise=0.0, data_seed=3)
    torch.testing.assert_close(again.dataset("train").tensors[0], dm.dataset("train").tensors[0])
    other = SineWaves(n_train=20, length=32, data_seed=4)
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


# --- LSTMAutoencoder ----------------------------------------------------------------------------
def test_lstm_net_shapes_and_negative_outputs():
    net = LSTMAutoencoder(input_size=2, hidden_size=16, latent_size=3)
    x = torch.randn(4, 11, 2)
    assert net.encode(x).shape == (4, 3)
    assert net(x).shape == (4, 11, 2)
    assert net.decode(torch.randn(4, 3), 7).shape == (4, 7, 2)
    # linear output: a large negative bias must come through (a sigmoid could not go below 0)
    with torch.no_grad():
        net.output.bias.fill_(-5.0)
    assert (net(x) < 0).all()


def test_lstm_net_rejects_wrong_input_and_settings():
    with pytest.raises(ValueError, match="input_size=1"):
        LSTMAutoencoder(input_size=1)(torch.randn(4, 10, 3))
    with pytest.raises(ValueError, match="latent_size must be >= 1"):
        LSTMAutoencoder(latent_size=0)


def test_lstm_net_learns_without_lightning():
    """A plain torch loop: the net needs no task."""
    torch.manual_seed(0)
    x, _ = make_sines(16, 16, (1, 3), (0.5, 1.5), 0.0, torch.Generator().manual_seed(0))
    net = LSTMAutoencoder(hidden_size=32, latent_size=4)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(120):
        loss = torch.nn.functional.mse_loss(net(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # 0.5 is the signal variance, i.e. what predicting zero costs (where a sigmoid-output AE plateaus)
    assert losses[-1] < 0.4 * losses[0], losses[::10]


def test_autoencoder_task_learns_sines_on_a_fixed_batch():
    torch.manual_seed(0)
    x, params = make_sines(16, 16, (1, 3), (0.5, 1.5), 0.0, torch.Generator().manual_seed(0))
    model = Autoencoder(LSTMAutoencoder(hidden_size=32, latent_size=4), loss="mse")
    losses = _fit_steps(model, (x, params), steps=120, lr=1e-2)
    assert losses[-1] < 0.4 * losses[0], losses[::10]
    with torch.no_grad():  # mse: the task's output is the net's, unsquashed
        torch.testing.assert_close(model(x), model.net(x))


def test_lstm_task_trainer_logs_metrics_and_figure(tmp_path):
    dm = SineWaves(n_train=32, n_val=16, n_test=16, length=16, batch_size=16)
    model = Autoencoder(LSTMAutoencoder(hidden_size=8, latent_size=2), num_figure_samples=4, probe_folds=2,
                        factor_names=["frequency", "phase", "amplitude"])
    trainer = L.Trainer(max_epochs=1, logger=CSVLogger(tmp_path), enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(model, dm)
    assert {"val/mse", "val/loss", "train/mse"} <= set(trainer.callback_metrics)
    res = trainer.test(model, dm, verbose=False)[0]
    assert res["test/mse"] > 0 and res["test/mse"] == pytest.approx(res["test/loss"], rel=1e-5)
    # the sine parameters are continuous factors, not class labels: no class probe, but a linear R^2 per
    # factor and a PCA of the codes coloured by each factor
    assert "test/probe_acc" not in res
    assert {"test/probe_r2/frequency", "test/probe_r2/phase", "test/probe_r2/amplitude"} <= set(res)
    # logged as numbers an R^2 can be (finite, at most 1; it may be negative after one epoch); that the probe
    # finds a coded factor is test_factor_r2_finds_a_linearly_coded_factor's job
    assert all(math.isfinite(r2) and r2 <= 1.0 for k, r2 in res.items() if "probe_r2" in k), res
    names = {p.name.split("_step")[0] for p in tmp_path.rglob("*.png")}
    assert names == {"test_reconstructions", "test_latent_pca"}, names


def test_factor_r2_finds_a_linearly_coded_factor():
    from zoo.tasks.autoencoder import factor_r2

    g = torch.Generator().manual_seed(0)
    codes = torch.randn(200, 4, generator=g).numpy()
    factors = torch.stack([torch.from_numpy(codes[:, 0] * 2 + 1), torch.randn(200, generator=g).double()], 1).numpy()
    held, noise = factor_r2(codes, factors, folds=5)
    assert held > 0.99 and noise < 0.1


# --- ConvAutoencoder ---------------------------------------------------------------------------
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


def test_conv_net_shapes_and_attributes():
    net = ConvAutoencoder(latent_dim=5)
    x = torch.rand(3, 1, 28, 28)
    assert net.encode(x).shape == (3, 5)
    logits = net(x)
    assert logits.shape == (3, 1, 28, 28)
    out = Autoencoder(net, loss="bce")(x)
    assert out.min() >= 0 and out.max() <= 1 and torch.allclose(out, torch.sigmoid(logits))
    assert isinstance(net.encoder, torch.nn.Module) and isinstance(net.decoder, torch.nn.Module)
    rgb = ConvAutoencoder(latent_dim=4, channels=(4, 4, 4), in_channels=3, image_size=16)
    assert rgb(torch.rand(2, 3, 16, 16)).shape == (2, 3, 16, 16)


@pytest.mark.parametrize("kwargs, match", [
    ({"channels": (8, 8)}, "3 entries"), ({"latent_dim": 0}, "latent_dim"), ({"image_size": 30}, "multiple of 4"),
])
def test_conv_net_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ConvAutoencoder(**kwargs)


@pytest.mark.parametrize("x, match", [
    (torch.rand(2, 1, 32, 32), r"\(B, 1, 28, 28\)"),
    (torch.randn(2, 1, 28, 28), "zero_one"),
])
def test_conv_task_rejects_bad_input(x, match):
    with pytest.raises(ValueError, match=match):
        Autoencoder(ConvAutoencoder(), loss="bce").training_step((x, torch.zeros(2, dtype=torch.long)), 0)


def test_conv_task_loss_decreases_on_fixed_batch():
    torch.manual_seed(0)
    x, y = _blobs(4)
    model = Autoencoder(ConvAutoencoder(latent_dim=8, channels=(8, 8, 8)), loss="bce")
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


def test_conv_task_test_logs_probe_and_figures(tmp_path):
    torch.manual_seed(0)
    x, y = _blobs(10)
    loader = DataLoader(TensorDataset(x, y), batch_size=15)
    model = Autoencoder(ConvAutoencoder(latent_dim=4, channels=(4, 4, 4)), loss="bce", tsne_samples=20,
                        num_figure_samples=4, optimizer=lambda p: torch.optim.Adam(p, lr=1e-2))
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


def test_task_checkpoint_reloads_with_the_net_passed_again(tmp_path):
    """From Python the live net is not pickled into the checkpoint (it loads weights-only); pass it again."""
    torch.manual_seed(0)
    x, y = _blobs(2)
    model = Autoencoder(ConvAutoencoder(latent_dim=4, channels=(4, 4, 4)), loss="bce", tsne_samples=0)
    trainer = L.Trainer(max_steps=2, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                        enable_model_summary=False, accelerator="cpu")
    trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=3))
    trainer.save_checkpoint(tmp_path / "ae.ckpt")
    assert "net" not in load_checkpoint(tmp_path / "ae.ckpt")["hyper_parameters"]
    again = load_module(Autoencoder, tmp_path / "ae.ckpt", net=ConvAutoencoder(latent_dim=4, channels=(4, 4, 4)))
    assert again.loss_type == "bce" and again.tsne_samples == 0
    model.eval(), again.eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))


# --- checkpoints written before the nets/tasks split --------------------------------------------
LEGACY_OPTIMIZER = {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.001}}


def _legacy(path, class_path: str, hparams: dict, net: torch.nn.Module):
    """An old-format checkpoint as ``python -m zoo fit`` wrote it for ConvAE/LSTMAE: flat hyperparameters, the
    weights at the top level (old ConvAE/LSTMAE held encoder/decoder/... themselves)."""
    torch.save({"state_dict": dict(net.state_dict()), "pytorch-lightning_version": L.__version__, "epoch": 3,
                "hyper_parameters": {"_class_path": class_path, **hparams, "optimizer": LEGACY_OPTIMIZER,
                                     "scheduler": None, "_instantiator": "lightning.pytorch.cli.instantiate_module"}},
               path)
    return path


@pytest.mark.parametrize("class_path, hparams, net_cls, net_args, loss, x", [
    ("zoo.autoencoders.ConvAE", {"latent_dim": 6, "channels": [4, 8, 8], "probe_folds": 3, "tsne_samples": 50,
                                 "n_images": 5},
     ConvAutoencoder, {"latent_dim": 6, "channels": [4, 8, 8]}, "bce", torch.rand(2, 1, 28, 28)),
    ("zoo.autoencoders.LSTMAE", {"input_size": 2, "hidden_size": 8, "latent_size": 3, "num_layers": 2, "n_plot": 5},
     LSTMAutoencoder, {"input_size": 2, "hidden_size": 8, "latent_size": 3, "num_layers": 2}, "mse",
     torch.randn(2, 9, 2)),
])
def test_legacy_checkpoint_converts_to_the_same_model(tmp_path, class_path, hparams, net_cls, net_args, loss, x):
    from zoo.checkpoints import load_cli_checkpoint

    torch.manual_seed(0)
    old_net = net_cls(**net_args)  # the old class built the same modules in the same order
    src = _legacy(tmp_path / "old.ckpt", class_path, hparams, old_net)
    with pytest.raises(ValueError, match="zoo.tools.convert_checkpoint --src"):
        load_cli_checkpoint(src)
    dst = convert_checkpoint(src=str(src), dst=str(tmp_path / "new.ckpt"))
    model, _ = load_cli_checkpoint(dst)
    assert isinstance(model, Autoencoder) and isinstance(model.net, net_cls) and model.loss_type == loss
    assert model.num_figure_samples == 5
    opt = model.optimizer([torch.nn.Parameter(torch.zeros(1))])  # the run's optimizer came along
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["lr"] == 0.001
    new = torch.load(dst, weights_only=True)
    assert new["epoch"] == 3 and set(new["state_dict"]) == {f"net.{k}" for k in old_net.state_dict()}
    with torch.no_grad():
        expected = old_net(x)
        torch.testing.assert_close(model(x), torch.sigmoid(expected) if loss == "bce" else expected)


def test_configs_build_the_nets_of_the_studies():
    """conv_ae_mnist / lstm_ae_sines configs: the nets as studied (docs/autoencoders.md)."""
    from conftest import CONFIGS

    conv = yaml.safe_load((CONFIGS / "conv_ae_mnist.yaml").read_text())["model"]
    assert conv["class_path"] == "zoo.tasks.autoencoder.Autoencoder" and conv["init_args"]["loss"] == "bce"
    assert conv["init_args"]["net"]["class_path"] == "zoo.nets.autoencoders.ConvAutoencoder"
    lstm = yaml.safe_load((CONFIGS / "lstm_ae_sines.yaml").read_text())["model"]
    assert lstm["init_args"]["loss"] == "mse"
    assert lstm["init_args"]["net"] == {"class_path": "zoo.nets.autoencoders.LSTMAutoencoder",
                                        "init_args": {"input_size": 1, "hidden_size": 64, "latent_size": 8}}
