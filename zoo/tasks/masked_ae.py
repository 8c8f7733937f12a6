"""MaskedAE: denoising / masked-autoencoder pretraining of an image autoencoder net, whose encoder is
later reused for classification (:class:`zoo.tasks.transfer.TransferClassifier`).

Configs: ``configs/masked_ae_cifar.yaml`` (dense net), ``configs/masked_ae_conv_cifar.yaml`` (conv net);
sweeps ``configs/grids/masked_ae_bottleneck.yaml`` and ``configs/grids/masked_ae_mask_ratio.yaml``;
results in ``docs/masked_ae.md``. The net is :class:`zoo.nets.masked_ae.MaskedAENet`.

Why corrupt the input: an autoencoder that only copies its input learns little; hiding pixels
(``mask_type: pixel``), whole square patches (``patch``) or adding Gaussian noise (``noise_sigma``)
forces it to model image structure. The loss covers all pixels or only the hidden ones
(``loss_on: masked``, the masked-autoencoder objective). Inputs are expected in ``[0, 1]``
(``normalization: zero_one``); the net's decoder ends in a sigmoid and the metrics use ``data_range=1``.
"""

from __future__ import annotations

from typing import Literal, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import (
    MeanAbsoluteError,
    MeanMetric,
    MeanSquaredError,
    MetricCollection,
)
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from zoo.figures import image_grid_figure, log_figure
from zoo.optim import configure_optimizers_from, default_optimizer
from zoo.tasks.base import save_task_hyperparameters

MaskType = Literal["none", "pixel", "patch"]


# --- corruption ------------------------------------------------------------------------------
def mask_grid(h: int, w: int, mask_type: MaskType, patch_size: int = 4) -> tuple[int, int, int]:
    """``(rows, columns, cell size)`` of the cells a mask hides: pixels (``none`` hides none of them),
    or ``patch_size`` squares."""
    if mask_type in ("none", "pixel"):
        return h, w, 1
    if mask_type == "patch":
        if patch_size < 1 or h % patch_size or w % patch_size:
            raise ValueError(f"patch masking needs the image size ({h}x{w}) divisible by patch_size={patch_size}")
        return h // patch_size, w // patch_size, patch_size
    raise ValueError(f"mask_type must be 'none', 'pixel' or 'patch', got {mask_type!r}")


def make_mask(shape: Sequence[int], mask_ratio: float, mask_type: MaskType = "pixel", patch_size: int = 4,
              generator: torch.Generator | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean ``(N, 1, H, W)`` mask, ``True`` = hidden, shared across channels.

    Exactly ``round(mask_ratio * cells)`` cells are hidden in *every* sample (cells are pixels,
    or a grid of ``patch_size`` squares), so the hidden fraction is the requested one, not just
    on average. Random draws come from ``generator`` (on the CPU): same seed, same mask.
    """
    n, _, h, w = shape
    if not 0.0 <= mask_ratio <= 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1], got {mask_ratio}")
    if mask_type == "none":
        return torch.zeros((n, 1, h, w), dtype=torch.bool, device=device)
    gh, gw, p = mask_grid(h, w, mask_type, patch_size)
    cells = gh * gw
    k = int(round(mask_ratio * cells))
    ranks = torch.rand((n, cells), generator=generator).argsort(dim=1).argsort(dim=1)
    mask = (ranks < k).view(n, 1, gh, gw)
    if p > 1:
        mask = mask.repeat_interleave(p, dim=2).repeat_interleave(p, dim=3)
    return mask.to(device)


def corrupt(x: torch.Tensor, mask: torch.Tensor, noise_sigma: float = 0.0, mask_value: float = 0.0,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Hidden pixels become ``mask_value``; then Gaussian noise of std ``noise_sigma`` on every pixel."""
    out = torch.where(mask, torch.full_like(x, mask_value), x)
    if noise_sigma > 0:
        noise = torch.randn(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)
        out = out + noise_sigma * noise
    return out


def pixel_accuracy(recon: torch.Tensor, x: torch.Tensor, tol: float = 0.1) -> torch.Tensor:
    """The studied pixel accuracy: share of values within ``tol`` of the original (per element)."""
    return ((recon - x).abs() <= tol).float()


def reconstruction_figure(x: torch.Tensor, corrupted: torch.Tensor, recon: torch.Tensor, title: str | None = None):
    """Three rows: original, corrupted input (clamped for display), reconstruction."""
    n = x.shape[0]
    images = torch.cat([x, corrupted.clamp(0, 1), recon.clamp(0, 1)]).float().cpu()
    captions = ["original"] * n + ["corrupted"] * n + ["reconstructed"] * n
    captions = [c if i % n == 0 else "" for i, c in enumerate(captions)]
    return image_grid_figure(images, captions, ncol=n, title=title)


class MaskedAE(L.LightningModule):
    """Trains ``net`` to reconstruct clean ``(B, C, S, S)`` images in ``[0, 1]`` from corrupted ones.

    Metrics per stage on the reconstruction of the *clean* image: ``mse``, ``mae``, ``psnr``,
    ``ssim`` and ``pixel_acc`` (share of pixels within 0.1); ``loss`` is the training objective.
    Validation/test corruption uses a generator seeded with ``mask_seed`` (0 if unset) and the batch
    index, so every epoch and every run sees the same masks; training draws fresh masks from a
    generator seeded with ``mask_seed``, or with the run's seed (``seed_everything``) when unset, so
    the runs of a multi-seed grid see different training masks.

    Args:
        net: the autoencoder, images -> reconstructions in [0, 1] (e.g. :class:`zoo.nets.masked_ae.MaskedAENet`);
            an ``image_size`` attribute lets the mask settings be checked at construction.
        mask_type: what is hidden: "none", single pixels ("pixel") or square patches ("patch").
        mask_ratio: fraction of pixels/patches hidden in every image, in [0, 1].
        patch_size: side of the square patches in pixels for mask_type "patch" (must divide image_size).
        noise_sigma: standard deviation of Gaussian noise added to every input pixel after masking; 0: none.
        mask_value: value written into the hidden pixels.
        loss_on: reconstruction MSE over "all" pixels or only the "masked" (hidden) ones.
        mask_seed: seed of the corruption random streams; None: training uses the run's seed, evaluation uses 0.
        num_figure_images: number of images in the logged original/corrupted/reconstructed figure.
        optimizer: optimizer factory applied to the model parameters; default AdamW(lr=1e-3, weight_decay=1e-4).
        scheduler: optional learning-rate scheduler factory, stepped once per epoch; None keeps the rate constant.
    """

    monitor = ("val/mse", "min")

    def __init__(self, net: nn.Module, mask_type: MaskType = "pixel", mask_ratio: float = 0.5, patch_size: int = 4,
                 noise_sigma: float = 0.0, mask_value: float = 0.0, loss_on: Literal["all", "masked"] = "all",
                 mask_seed: int | None = None, num_figure_images: int = 8,
                 optimizer: OptimizerCallable = default_optimizer,
                 scheduler: LRSchedulerCallable | None = None) -> None:
        super().__init__()
        save_task_hyperparameters(self)
        if noise_sigma < 0:
            raise ValueError(f"noise_sigma must be >= 0, got {noise_sigma}")
        if not 0.0 <= mask_ratio <= 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1], got {mask_ratio}")
        size = getattr(net, "image_size", None)
        if isinstance(size, int):
            gh, gw, _ = mask_grid(size, size, mask_type, patch_size)  # checks patch_size divides image_size
            cells = gh * gw
            if loss_on == "masked" and (mask_type == "none" or round(mask_ratio * cells) < 1):
                raise ValueError(f"loss_on='masked' needs hidden pixels, but mask_type={mask_type!r} with "
                                 f"mask_ratio={mask_ratio} hides none of the {cells} cells: raise mask_ratio "
                                 "(or use loss_on='all')")
        self.net = net
        self.mask_type, self.mask_ratio, self.patch_size = mask_type, mask_ratio, patch_size
        self.noise_sigma, self.mask_value, self.loss_on = noise_sigma, mask_value, loss_on
        self.mask_seed, self.num_figure_images = mask_seed, num_figure_images
        self.optimizer, self.scheduler = optimizer, scheduler
        self.train_mse = MeanSquaredError()
        self.metrics = nn.ModuleDict({stage: MetricCollection({
            "mse": MeanSquaredError(), "mae": MeanAbsoluteError(),
            "psnr": PeakSignalNoiseRatio(data_range=1.0), "ssim": StructuralSimilarityIndexMeasure(data_range=1.0),
            "pixel_acc": MeanMetric(),
        }, prefix=f"{stage}/", compute_groups=False) for stage in ("val", "test")})
        self._train_gen: torch.Generator | None = None
        self._figure_batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    # --- model -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def corrupt_batch(self, x: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        mask = make_mask(x.shape, self.mask_ratio, self.mask_type, self.patch_size, generator, x.device)
        return corrupt(x, mask, self.noise_sigma, self.mask_value, generator), mask

    def _loss(self, recon: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.loss_on == "masked":
            m = mask.expand_as(x)
            return F.mse_loss(recon[m], x[m])
        return F.mse_loss(recon, x)

    def _check_input(self, x: torch.Tensor) -> None:
        """Before corrupting: a wrong shape should name the net's setting, not fail inside the mask."""
        check = getattr(self.net, "check_input", None)
        if check is not None:
            check(x)

    # --- steps -------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x = batch[0]
        self._check_input(x)
        if self._train_gen is None:
            seed = self.mask_seed
            self._train_gen = torch.Generator().manual_seed(torch.initial_seed() if seed is None else seed)
        corrupted, mask = self.corrupt_batch(x, self._train_gen)
        recon = self(corrupted)
        loss = self._loss(recon, x, mask)
        self.train_mse(recon.detach(), x)
        self.log("train/loss", loss, prog_bar=True, batch_size=x.shape[0])
        self.log("train/mse", self.train_mse, on_step=False, on_epoch=True, batch_size=x.shape[0])
        return loss

    def _eval_step(self, stage: str, batch, batch_idx: int) -> None:
        x = batch[0]
        self._check_input(x)
        gen = torch.Generator().manual_seed((self.mask_seed or 0) + 1_000_003 * (1 + batch_idx))
        corrupted, mask = self.corrupt_batch(x, gen)
        recon = self(corrupted)
        metrics = self.metrics[stage]
        for name, metric in metrics.items():
            if name.endswith("pixel_acc"):
                metric.update(pixel_accuracy(recon, x))
            else:
                metric.update(recon, x)
        self.log(f"{stage}/loss", self._loss(recon, x, mask), batch_size=x.shape[0], prog_bar=stage == "val")
        self.log_dict(metrics, batch_size=x.shape[0])
        if batch_idx == 0:
            n = self.num_figure_images
            self._figure_batch = (x[:n].detach(), corrupted[:n].detach(), recon[:n].detach())

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step("val", batch, batch_idx)

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step("test", batch, batch_idx)

    def _log_reconstructions(self, key: str) -> None:
        if self._figure_batch is None or self.trainer.sanity_checking:
            return
        log_figure(self.trainer, key, reconstruction_figure(*self._figure_batch))
        self._figure_batch = None

    def on_validation_epoch_end(self) -> None:
        self._log_reconstructions("val/reconstructions")

    def on_test_epoch_end(self) -> None:
        self._log_reconstructions("test/reconstructions")

    def configure_optimizers(self):
        return configure_optimizers_from(self, self.optimizer, self.scheduler)
