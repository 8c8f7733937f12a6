"""Autoencoder: the reconstruction task for any autoencoder net (:mod:`zoo.nets.autoencoders`).

Configs: ``configs/conv_ae_mnist.yaml`` (:class:`~zoo.nets.autoencoders.ConvAutoencoder`, ``loss: bce``),
``configs/lstm_ae_sines.yaml`` (:class:`~zoo.nets.autoencoders.LSTMAutoencoder`, ``loss: mse``); latent-size
sweep in ``configs/grids/lstm_ae_latent.yaml``; results in ``docs/autoencoders.md``.

An autoencoder has no accuracy, so the task monitors reconstruction error (``val/mse``). When test
batches carry integer class labels (``(x, y)`` with ``y`` of shape ``(B,)``), it also measures what the
code is *worth*: a linear probe (logistic regression) cross-validated on the frozen test-set codes
(``test/probe_acc``), and the codes drawn in 2-D with PCA and t-SNE coloured by class. When they carry
continuous generating factors instead (``y`` of shape ``(B, k)``, e.g. a sine's frequency, phase and
amplitude), the PCA of the codes is drawn once per factor, coloured by it, and a cross-validated linear
regression from code to each factor gives ``test/probe_r2/<factor>``: how linearly the code holds it.
The labels never reach the encoder. Metrics: ``train/loss``, ``train/mse``, ``val/loss``, ``val/mse``,
``test/loss``, ``test/mse`` (and ``test/probe_acc`` or ``test/probe_r2/...``).
"""

from __future__ import annotations

import warnings
from typing import Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MeanSquaredError

from zoo.figures import image_grid_figure, log_figure, plt
from zoo.optim import configure_optimizers_from, default_optimizer
from zoo.tasks.base import save_task_hyperparameters


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


def latent_figures(codes: np.ndarray, labels: np.ndarray, tsne_samples: int = 1000) -> dict[str, "plt.Figure"]:
    """PCA of all codes and t-SNE of a seeded subsample (``tsne_samples``, 0: none) so it stays quick."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    figs = {}
    if codes.shape[0] >= 2 and codes.shape[1] >= 2:
        pca = PCA(n_components=2).fit(codes)
        ev = pca.explained_variance_ratio_.sum()
        figs["test/latent_pca"] = latent_scatter_figure(
            pca.transform(codes), labels, f"PCA of {codes.shape[0]} test codes ({100 * ev:.0f}% variance)")
    idx = np.random.default_rng(0).permutation(codes.shape[0])[:tsne_samples]
    if len(idx) >= 5:
        perplexity = float(min(30.0, (len(idx) - 1) / 3))
        emb = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=0).fit_transform(codes[idx])
        figs["test/latent_tsne"] = latent_scatter_figure(emb, labels[idx], f"t-SNE of {len(idx)} test codes")
    return figs


def _input(batch) -> torch.Tensor:
    return batch[0] if isinstance(batch, (list, tuple)) else batch


def _factors(batch, n: int) -> torch.Tensor | None:
    """The batch's last element when it is a ``(B, k)`` float tensor of generating factors."""
    if not isinstance(batch, (list, tuple)) or len(batch) < 2:
        return None
    y = batch[-1]
    return y if isinstance(y, torch.Tensor) and y.dim() == 2 and y.shape[0] == n and y.is_floating_point() else None


def factor_r2(codes: np.ndarray, factors: np.ndarray, folds: int = 5) -> list[float]:
    """Cross-validated R^2 of a linear regression from the codes to each factor."""
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import KFold, cross_val_score

    cv = KFold(folds, shuffle=True, random_state=0)
    return [float(cross_val_score(LinearRegression(), codes, factors[:, j], cv=cv, scoring="r2").mean())
            for j in range(factors.shape[1])]


def factor_pca_figure(codes: np.ndarray, factors: np.ndarray, names: list[str]) -> "plt.Figure":
    """The codes' first two principal components, one panel per factor, coloured by its value."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2).fit(codes)
    points = pca.transform(codes)
    k = factors.shape[1]
    fig, axes = plt.subplots(1, k, figsize=(3.6 * k, 3.4), squeeze=False)
    for j, ax in enumerate(axes[0]):
        sc = ax.scatter(points[:, 0], points[:, 1], c=factors[:, j], s=6, cmap="viridis")
        fig.colorbar(sc, ax=ax, fraction=0.046)
        ax.set_title(f"coloured by {names[j]}", fontsize=9)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
    fig.suptitle(f"PCA of {codes.shape[0]} test codes ({100 * pca.explained_variance_ratio_.sum():.0f}% variance)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def _class_labels(batch, n: int) -> torch.Tensor | None:
    """The batch's last element when it is a vector of integer class labels (not, e.g., sine parameters)."""
    if not isinstance(batch, (list, tuple)) or len(batch) < 2:
        return None
    y = batch[-1]
    if isinstance(y, torch.Tensor) and y.shape == (n,) and not y.is_floating_point() and not y.is_complex():
        return y
    return None


class Autoencoder(L.LightningModule):
    """Trains ``net`` to reproduce its input; see the module docstring for metrics and figures.

    The net maps a batch's input ``x`` (images ``(B, C, H, W)`` or sequences ``(B, T, C)``) to an output
    of the same shape and has ``encode(x)`` returning the code. Batches are ``x`` or ``(x, ...)``.

    Args:
        net: the autoencoder (e.g. :class:`zoo.nets.autoencoders.ConvAutoencoder`).
        loss: "bce": the net returns logits and is trained with binary cross-entropy against inputs in
            [0, 1] (the likelihood that matches pixel intensities; reconstruction = sigmoid of the output);
            "mse": the net returns the reconstruction itself, trained with mean squared error.
        probe_folds: folds of the cross-validated logistic-regression probe on the test codes (test/probe_acc);
            0 skips the probe.
        tsne_samples: number of test codes (seeded subsample) embedded in the t-SNE figure; 0 skips it.
        factor_names: names of the continuous generating factors test batches may carry (``(B, k)``), for
            the per-factor PCA panels and ``test/probe_r2/<name>``; None: "factor0", "factor1", ...
        num_figure_samples: number of test images/sequences drawn next to their reconstructions.
        optimizer: optimizer factory applied to the model parameters; default AdamW(lr=1e-3, weight_decay=1e-4).
        scheduler: optional learning-rate scheduler factory, stepped once per epoch; None keeps the rate constant.
    """

    monitor = ("val/mse", "min")

    def __init__(self, net: nn.Module, loss: Literal["mse", "bce"] = "mse", probe_folds: int = 5,
                 tsne_samples: int = 1000, num_figure_samples: int = 16, factor_names: list[str] | None = None,
                 optimizer: OptimizerCallable = default_optimizer,
                 scheduler: LRSchedulerCallable | None = None) -> None:
        super().__init__()
        save_task_hyperparameters(self)
        if probe_folds < 0 or tsne_samples < 0 or num_figure_samples < 1:
            raise ValueError(f"Autoencoder: probe_folds and tsne_samples must be >= 0 and num_figure_samples >= 1, "
                             f"got {probe_folds}, {tsne_samples}, {num_figure_samples}")
        self.net = net
        self.loss_type = loss
        self.probe_folds, self.tsne_samples, self.num_figure_samples = probe_folds, tsne_samples, num_figure_samples
        self.optimizer, self.scheduler = optimizer, scheduler
        self.train_mse = MeanSquaredError()
        self.val_mse = MeanSquaredError()
        self.test_mse = MeanSquaredError()
        self._test_codes: list[torch.Tensor] = []
        self._test_labels: list[torch.Tensor] = []
        self.factor_names = list(factor_names) if factor_names is not None else None
        self._test_factors: list[torch.Tensor] = []
        self._test_factor_codes: list[torch.Tensor] = []
        self._test_sample: tuple[torch.Tensor, torch.Tensor, int | None] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction (in [0, 1] for ``loss='bce'``)."""
        out = self.net(x)
        return torch.sigmoid(out) if self.loss_type == "bce" else out

    def _step(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x, reconstruction, loss)``."""
        x = _input(batch)
        out = self.net(x)
        if self.loss_type == "bce":
            if x.min() < 0 or x.max() > 1:
                raise ValueError(f"Autoencoder(loss='bce') needs inputs in [0, 1], got range [{float(x.min()):.3f}, "
                                 f"{float(x.max()):.3f}]: set the data's normalization to 'zero_one' "
                                 "(or use loss: mse)")
            return x, torch.sigmoid(out), F.binary_cross_entropy_with_logits(out, x)
        return x, out, F.mse_loss(out, x)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, recon, loss = self._step(batch)
        self.train_mse(recon.detach(), x)
        self.log("train/loss", loss, prog_bar=True, batch_size=x.shape[0])
        self.log("train/mse", self.train_mse, on_step=False, on_epoch=True, batch_size=x.shape[0])
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, recon, loss = self._step(batch)
        self.val_mse(recon, x)
        self.log("val/loss", loss, batch_size=x.shape[0], sync_dist=True)
        self.log("val/mse", self.val_mse, prog_bar=True, batch_size=x.shape[0])

    def on_test_epoch_start(self) -> None:
        self._test_codes, self._test_labels, self._test_sample = [], [], None
        self._test_factors, self._test_factor_codes = [], []

    def test_step(self, batch, batch_idx: int) -> None:
        x, recon, loss = self._step(batch)
        self.test_mse(recon, x)
        self.log("test/loss", loss, batch_size=x.shape[0], sync_dist=True)
        self.log("test/mse", self.test_mse, batch_size=x.shape[0])
        labels = _class_labels(batch, x.shape[0])
        encode = getattr(self.net, "encode", None)
        if labels is not None and encode is not None:
            self._test_codes.append(encode(x).detach().flatten(1).cpu())
            self._test_labels.append(labels.detach().cpu())
        factors = _factors(batch, x.shape[0])
        if factors is not None and encode is not None:
            self._test_factor_codes.append(encode(x).detach().flatten(1).cpu())
            self._test_factors.append(factors.detach().cpu())
        if self._test_sample is None:
            n = self.num_figure_samples
            code_size = encode(x[:1]).flatten(1).shape[1] if encode is not None else None
            self._test_sample = (x[:n].detach().cpu(), recon[:n].detach().cpu(), code_size)

    def on_test_epoch_end(self) -> None:
        if self._test_sample is not None:
            originals, recons, code_size = self._test_sample
            if originals.dim() == 4:
                n = originals.shape[0]
                fig = image_grid_figure(torch.cat([originals, recons]), ["original"] * n + ["reconstruction"] * n,
                                        ncol=min(8, n))
            else:
                code = f", code size {code_size}" if code_size is not None else ""
                fig = sequence_reconstruction_figure(originals, recons, n=self.num_figure_samples,
                                                     title=f"{type(self.net).__name__}{code}")
            log_figure(self.trainer, "test/reconstructions", fig)
            self._test_sample = None
        if self._test_factors:
            self._factor_figures(torch.cat(self._test_factor_codes).float().numpy(),
                                 torch.cat(self._test_factors).float().numpy())
            self._test_factors, self._test_factor_codes = [], []
        if not self._test_codes:
            return
        codes = torch.cat(self._test_codes).float().numpy()
        labels = torch.cat(self._test_labels).numpy()
        self._test_codes, self._test_labels = [], []
        if self.probe_folds:
            acc = probe_accuracy(codes, labels, self.probe_folds)
            if acc is not None:
                self.log("test/probe_acc", acc)
        for key, fig in latent_figures(codes, labels, self.tsne_samples).items():
            log_figure(self.trainer, key, fig)

    def _factor_figures(self, codes: np.ndarray, factors: np.ndarray) -> None:
        names = self.factor_names or [f"factor{j}" for j in range(factors.shape[1])]
        if len(names) != factors.shape[1]:
            raise ValueError(f"Autoencoder: factor_names has {len(names)} names but the test batches carry "
                             f"{factors.shape[1]} factors")
        if codes.shape[0] >= 10 and self.probe_folds:
            for name, r2 in zip(names, factor_r2(codes, factors, self.probe_folds)):
                self.log(f"test/probe_r2/{name}", r2)
        if codes.shape[0] >= 3 and codes.shape[1] >= 2:
            log_figure(self.trainer, "test/latent_pca", factor_pca_figure(codes, factors, names))

    def configure_optimizers(self):
        return configure_optimizers_from(self, self.optimizer, self.scheduler)
