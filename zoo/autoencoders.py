"""Autoencoders: :class:`ConvAE` on MNIST images and :class:`LSTMAE` on sequences.

Configs: ``configs/conv_ae_mnist.yaml``, ``configs/lstm_ae_sines.yaml``; latent-size sweep in
``configs/grids/lstm_ae_latent.yaml``; results in ``docs/autoencoders.md``.

An autoencoder has no accuracy, so both modules monitor reconstruction error (``val/mse``).
ConvAE additionally measures what its code is *worth*: at test time a linear probe (logistic
regression) is cross-validated on the frozen test-set codes (``test/probe_acc``), and the codes are
drawn in 2-D with PCA and t-SNE coloured by digit. The labels never reach the encoder.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MeanSquaredError

from zoo.optim import configure_optimizers_from, default_optimizer
from zoo.figures import image_grid_figure, log_figure, plt


# --- figures and probes, reusable by results scripts -------------------------------------------
def sequence_reconstruction_figure(x: torch.Tensor, recon: torch.Tensor, n: int = 6,
                                   title: str | None = None) -> "plt.Figure":
    """Original (solid) vs reconstruction (dashed) for the first ``n`` sequences of ``(B, T, C)`` tensors."""
    x, recon = x.detach().float().cpu(), recon.detach().float().cpu()
    n = max(1, min(n, x.shape[0]))
    ncol = min(3, n)
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.0 * nrow), squeeze=False, sharex=True)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        for c in range(x.shape[-1]):
            ax.plot(x[i, :, c].numpy(), color=f"C{c}", lw=1.2, label="original" if c == 0 else None)
            ax.plot(recon[i, :, c].numpy(), color=f"C{c}", lw=1.2, ls="--", label="reconstruction" if c == 0 else None)
        ax.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def latent_scatter_figure(points: np.ndarray, labels: np.ndarray, title: str) -> "plt.Figure":
    """2-D points coloured by integer label, one legend entry per label."""
    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    for lab in np.unique(labels):
        sel = labels == lab
        ax.scatter(points[sel, 0], points[sel, 1], s=4, alpha=0.7, color=plt.cm.tab10(int(lab) % 10), label=str(lab))
    ax.legend(markerscale=3, fontsize=7, loc="best", ncol=2)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return fig


def probe_accuracy(codes: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0) -> float | None:
    """Mean accuracy of a stratified ``folds``-fold cross-validated logistic regression on frozen codes.

    Returns ``None`` (and warns) when some class has fewer than 2 samples, where no split is possible;
    the number of folds shrinks to the smallest class count otherwise.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    _, counts = np.unique(labels, return_counts=True)
    k = int(min(folds, counts.min())) if len(counts) > 1 else 0
    if k < 2:
        warnings.warn(f"linear probe skipped: need >= 2 classes with >= 2 samples each, got counts {counts.tolist()}")
        return None
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return float(cross_val_score(probe, codes, labels, cv=cv).mean())


def _batch_input(batch) -> torch.Tensor:
    return batch[0] if isinstance(batch, (list, tuple)) else batch


# --- ConvAE ------------------------------------------------------------------------------------
class ConvAE(L.LightningModule):
    """Convolutional autoencoder for 28x28 gray images in [0, 1].

    ``encoder``: conv 32 -> max pool -> conv 64 -> max pool -> conv 128 (7x7) -> linear to a
    ``latent_dim`` code (the bottleneck the probe reads). ``decoder``: linear back to 128x7x7,
    two stride-2 transposed convs (7 -> 14 -> 28) and a 3x3 conv to one channel; sigmoid output
    trained with binary cross-entropy, the likelihood that matches pixel intensities in [0, 1].

    Args:
        latent_dim: size of the code (the bottleneck the linear probe and the PCA/t-SNE figures read).
        channels: channels of the encoder's three conv layers (mirrored by the decoder; exactly 3 entries).
        probe_folds: folds of the cross-validated logistic-regression probe on the test codes (test/probe_acc).
        tsne_samples: number of test codes (seeded subsample) embedded in the t-SNE figure.
        n_images: number of test images shown next to their reconstructions in the logged figure.
        optimizer: optimizer factory applied to the model parameters; default AdamW(lr=1e-3, weight_decay=1e-4).
        scheduler: optional learning-rate scheduler factory, stepped once per epoch; None keeps the rate constant.
    """

    monitor = ("val/mse", "min")

    def __init__(self, latent_dim: int = 32, channels: Sequence[int] = (32, 64, 128), probe_folds: int = 5,
                 tsne_samples: int = 1000, n_images: int = 16,
                 optimizer: OptimizerCallable = default_optimizer,
                 scheduler: LRSchedulerCallable | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        if len(channels) != 3:
            raise ValueError(f"ConvAE has three conv layers: channels needs 3 entries, got {list(channels)}")
        if latent_dim < 1:
            raise ValueError(f"ConvAE latent_dim must be >= 1, got {latent_dim}")
        c1, c2, c3 = channels
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(inplace=True),
            nn.Flatten(), nn.Linear(c3 * 7 * 7, latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, c3 * 7 * 7), nn.ReLU(inplace=True), nn.Unflatten(1, (c3, 7, 7)),
            nn.ConvTranspose2d(c3, c2, 4, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c1, 1, 3, padding=1),
        )
        self.optimizer, self.scheduler = optimizer, scheduler
        self.val_mse = MeanSquaredError()
        self.test_mse = MeanSquaredError()
        self._test_codes: list[torch.Tensor] = []
        self._test_labels: list[torch.Tensor] = []
        self._test_images: tuple[torch.Tensor, torch.Tensor] | None = None

    @staticmethod
    def _check(x: torch.Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise ValueError(f"ConvAE expects images of shape (B, 1, 28, 28), got {tuple(x.shape)}")
        if x.min() < 0 or x.max() > 1:
            raise ValueError(f"ConvAE trains with binary cross-entropy and needs pixels in [0, 1], got range "
                             f"[{float(x.min()):.3f}, {float(x.max()):.3f}]: set data.normalize to 'zero_one'")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction in [0, 1]."""
        return torch.sigmoid(self.decode_logits(self.encode(x)))

    def _step(self, batch):
        x = _batch_input(batch)
        self._check(x)
        z = self.encode(x)
        logits = self.decode_logits(z)
        return x, z, logits, F.binary_cross_entropy_with_logits(logits, x)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, _, _, loss = self._step(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=x.shape[0])
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, _, logits, loss = self._step(batch)
        self.val_mse(torch.sigmoid(logits), x)
        self.log("val/loss", loss, batch_size=x.shape[0], sync_dist=True)
        self.log("val/mse", self.val_mse, prog_bar=True, batch_size=x.shape[0])

    def on_test_epoch_start(self) -> None:
        self._test_codes, self._test_labels, self._test_images = [], [], None

    def test_step(self, batch, batch_idx: int) -> None:
        x, z, logits, loss = self._step(batch)
        recon = torch.sigmoid(logits)
        self.test_mse(recon, x)
        self.log("test/loss", loss, batch_size=x.shape[0], sync_dist=True)
        self.log("test/mse", self.test_mse, batch_size=x.shape[0])
        self._test_codes.append(z.detach().cpu())
        if isinstance(batch, (list, tuple)) and len(batch) > 1:
            self._test_labels.append(batch[-1].detach().cpu())
        if self._test_images is None:
            n = self.hparams.n_images
            self._test_images = (x[:n].detach().cpu(), recon[:n].detach().cpu())

    def on_test_epoch_end(self) -> None:
        if self._test_images is not None:
            originals, recons = self._test_images
            n = originals.shape[0]
            grid = torch.cat([originals, recons])
            captions = ["original"] * n + ["reconstruction"] * n
            log_figure(self.trainer, "test/reconstructions", image_grid_figure(grid, captions, ncol=min(8, n)))
        if not self._test_codes or not self._test_labels:
            return
        codes = torch.cat(self._test_codes).float().numpy()
        labels = torch.cat(self._test_labels).numpy()
        acc = probe_accuracy(codes, labels, self.hparams.probe_folds)
        if acc is not None:
            self.log("test/probe_acc", acc)
        for key, fig in self.latent_figures(codes, labels).items():
            log_figure(self.trainer, key, fig)
        self._test_codes, self._test_labels = [], []

    def latent_figures(self, codes: np.ndarray, labels: np.ndarray) -> dict[str, "plt.Figure"]:
        """PCA of all codes and t-SNE of a seeded subsample (``tsne_samples``) so it stays quick."""
        from sklearn.decomposition import PCA
        from sklearn.manifold import TSNE

        figs = {}
        if codes.shape[0] >= 2 and codes.shape[1] >= 2:
            pca = PCA(n_components=2).fit(codes)
            ev = pca.explained_variance_ratio_.sum()
            figs["test/latent_pca"] = latent_scatter_figure(
                pca.transform(codes), labels, f"PCA of {codes.shape[0]} test codes ({100 * ev:.0f}% variance)")
        idx = np.random.default_rng(0).permutation(codes.shape[0])[: self.hparams.tsne_samples]
        if len(idx) >= 5:
            perplexity = float(min(30.0, (len(idx) - 1) / 3))
            emb = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=0).fit_transform(codes[idx])
            figs["test/latent_tsne"] = latent_scatter_figure(emb, labels[idx], f"t-SNE of {len(idx)} test codes")
        return figs

    def configure_optimizers(self):
        return configure_optimizers_from(self, self.optimizer, self.scheduler)


# --- LSTMAE ------------------------------------------------------------------------------------
class LSTMAE(L.LightningModule):
    """Sequence autoencoder: LSTM encoder -> last hidden state -> linear ``latent_size`` code; the code is
    repeated at every time step into an LSTM decoder with a *linear* output layer.

    The output is linear on purpose: a sigmoid output cannot produce the negative half of a sine
    and plateaus (a published run stalled at loss 0.5 that way). Batches are ``(x (B, T, C), ...)``.

    Args:
        input_size: number of channels C per time step of the input sequences (B, T, C).
        hidden_size: hidden state size of the encoder and decoder LSTMs.
        latent_size: size of the code that summarises a whole sequence.
        num_layers: number of stacked layers in each of the encoder and decoder LSTMs.
        n_plot: number of test sequences drawn in the original-vs-reconstruction figure.
        optimizer: optimizer factory applied to the model parameters; default AdamW(lr=1e-3, weight_decay=1e-4).
        scheduler: optional learning-rate scheduler factory, stepped once per epoch; None keeps the rate constant.
    """

    monitor = ("val/mse", "min")

    def __init__(self, input_size: int = 1, hidden_size: int = 64, latent_size: int = 8, num_layers: int = 1,
                 n_plot: int = 6, optimizer: OptimizerCallable = default_optimizer,
                 scheduler: LRSchedulerCallable | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size),
                            ("latent_size", latent_size), ("num_layers", num_layers)):
            if value < 1:
                raise ValueError(f"LSTMAE {name} must be >= 1, got {value}")
        self.encoder = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True)
        self.to_latent = nn.Linear(hidden_size, latent_size)
        self.decoder = nn.LSTM(latent_size, hidden_size, num_layers, batch_first=True)
        self.output = nn.Linear(hidden_size, input_size)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.train_mse = MeanSquaredError()
        self.val_mse = MeanSquaredError()
        self.test_mse = MeanSquaredError()
        self._plot: tuple[torch.Tensor, torch.Tensor] | None = None

    def _input(self, batch) -> torch.Tensor:
        x = _batch_input(batch)
        if x.dim() != 3 or x.shape[-1] != self.hparams.input_size:
            raise ValueError(f"LSTMAE expects sequences of shape (B, T, input_size={self.hparams.input_size}), "
                             f"got {tuple(x.shape)}")
        return x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.encoder(x)
        return self.to_latent(h[-1])

    def decode(self, z: torch.Tensor, length: int) -> torch.Tensor:
        out, _ = self.decoder(z.unsqueeze(1).expand(-1, length, -1))
        return self.output(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), x.shape[1])

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x = self._input(batch)
        recon = self(x)
        loss = F.mse_loss(recon, x)
        self.train_mse(recon.detach(), x)
        self.log("train/loss", loss, prog_bar=True, batch_size=x.shape[0])
        self.log("train/mse", self.train_mse, on_step=False, on_epoch=True, batch_size=x.shape[0])
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x = self._input(batch)
        self.val_mse(self(x), x)
        self.log("val/mse", self.val_mse, prog_bar=True, batch_size=x.shape[0])

    def on_test_epoch_start(self) -> None:
        self._plot = None

    def test_step(self, batch, batch_idx: int) -> None:
        x = self._input(batch)
        recon = self(x)
        self.test_mse(recon, x)
        self.log("test/mse", self.test_mse, batch_size=x.shape[0])
        if self._plot is None:
            self._plot = (x.detach().cpu(), recon.detach().cpu())

    def on_test_epoch_end(self) -> None:
        if self._plot is not None:
            fig = sequence_reconstruction_figure(*self._plot, n=self.hparams.n_plot,
                                                 title=f"LSTMAE latent_size={self.hparams.latent_size}")
            log_figure(self.trainer, "test/reconstructions", fig)
            self._plot = None

    def configure_optimizers(self):
        return configure_optimizers_from(self, self.optimizer, self.scheduler)
