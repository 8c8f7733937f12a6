"""DCGAN with manual optimization (``configs/dcgan_mnist*.yaml``, ``configs/dcgan_anime.yaml``).

Why manual optimization: a GAN step is two coupled updates with different losses, and the
discriminator must see *detached* fakes while the generator must see gradients through the
discriminator. Writing both updates out (``toggle_optimizer`` / ``manual_backward`` / ``step``,
gradients clipped in ``on_before_optimizer_step``) keeps that ordering explicit and testable.

Two architectures (``architecture``):

* ``mnist28``: the 28x28 gray net studied in the TensorFlow DCGAN tutorial. G: linear to 7x7x256,
  transposed 5x5 convs to 7x7x128, 14x14x64, 28x28xC, BN + LeakyReLU, tanh. D: two 5x5 stride-2
  convs (64, 128) with LeakyReLU and dropout, then a linear logit.
* ``dcgan64``: the DCGAN paper's 64x64 net. G: transposed 4x4 convs from 4x4 (8w, 4w, 2w, w
  channels) with BN + ReLU, tanh. D: mirrored stride-2 4x4 convs with BN + LeakyReLU(0.2).

``width`` scales every channel count (64 = the published sizes), so CPU runs can shrink the nets
without changing their shape. ``conditional=True`` feeds a one-hot label to both nets (appended
to the latent code of G, as constant extra image channels of D), so one model draws N samples of
each class. ``conditioning="auxiliary"`` is the AC-GAN variant instead (Odena et al., 2017): D is
not shown the label but has a second head that must classify real and fake images, and G is also
rewarded for fakes that D classifies as the requested class (weight ``aux_weight``).
``conditioning="projection"`` is the projection discriminator (Miyato & Koyama, 2018): D scores
"is this a real image *of this class*" as its unconditional logit plus the inner product of a class
embedding with its last features. ``spectral_norm=True`` constrains every layer of D to spectral norm 1
(Miyato et al., 2018) instead of batch-normalizing it: a D that cannot sharpen without bound, the
usual cure when D wins so fast that G's gradients vanish (what the 64x64 anime run did with BN).

Images are expected in [-1, 1] (the tanh range): ``--data.normalize minus_one_one`` (MNIST) or
``--data.normalization minus_one_one`` (image folders).
"""

from __future__ import annotations

import math
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from zoo.figures import image_grid_figure, log_figure
from zoo.optim import dcgan_adam
from zoo.safe_load import load_checkpoint, load_module

Architecture = Literal["mnist28", "dcgan64"]
IMAGE_SIZE = {"mnist28": 28, "dcgan64": 64}


def dcgan_init(module: nn.Module) -> None:
    """Weights from N(0, 0.02), BN scales from N(1, 0.02), as in the DCGAN paper."""
    if isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        weight = (module.parametrizations.weight.original if parametrize.is_parametrized(module, "weight")
                  else module.weight)
        nn.init.normal_(weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def _maybe_sn(layer: nn.Module, spectral: bool) -> nn.Module:
    return _spectral_norm(layer) if spectral else layer


def one_hot(labels: torch.Tensor | None, num_classes: int, dtype: torch.dtype) -> torch.Tensor | None:
    if num_classes == 0:
        return None
    if labels is None:
        raise ValueError("this is a class-conditional model: labels are required")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must be in 0..{num_classes - 1} for this conditional model, "
                         f"got {int(labels.min())}..{int(labels.max())}")
    return F.one_hot(labels.long(), num_classes).to(dtype)


# --- 28x28 ---------------------------------------------------------------------------------------
class DCGANGenerator28(nn.Module):
    """latent (+ one-hot label) -> 7x7x4w -> 7x7x2w -> 14x14xw -> 28x28xC (tanh)."""

    def __init__(self, latent_dim: int = 100, channels: int = 1, width: int = 64, num_classes: int = 0) -> None:
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.project = nn.Sequential(nn.Linear(latent_dim + num_classes, 7 * 7 * 4 * width, bias=False),
                                     nn.BatchNorm1d(7 * 7 * 4 * width), nn.LeakyReLU(0.2))
        self.width = width
        self.net = nn.Sequential(
            nn.ConvTranspose2d(4 * width, 2 * width, 5, 1, 2, bias=False), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(2 * width, width, 5, 2, 2, output_padding=1, bias=False), nn.BatchNorm2d(width),
            nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(width, channels, 5, 2, 2, output_padding=1), nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        c = one_hot(labels, self.num_classes, z.dtype)
        h = self.project(z if c is None else torch.cat([z, c], 1))
        return self.net(h.view(-1, 4 * self.width, 7, 7))


class DCGANDiscriminator28(nn.Module):
    """(image + one-hot label maps) -> conv 5x5/2 (w) -> conv 5x5/2 (2w) -> linear logit."""

    def __init__(self, channels: int = 1, width: int = 64, num_classes: int = 0, dropout: float = 0.3,
                 aux_classes: int = 0, proj_classes: int = 0, spectral: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.project = nn.Embedding(proj_classes, 2 * width * 7 * 7) if proj_classes else None
        self.net = nn.Sequential(
            _maybe_sn(nn.Conv2d(channels + num_classes, width, 5, 2, 2), spectral), nn.LeakyReLU(0.2), nn.Dropout(dropout),
            _maybe_sn(nn.Conv2d(width, 2 * width, 5, 2, 2), spectral), nn.LeakyReLU(0.2), nn.Dropout(dropout),
            nn.Flatten(), _maybe_sn(nn.Linear(2 * width * 7 * 7, 1), spectral),
        )
        self.classify = nn.Linear(2 * width * 7 * 7, aux_classes) if aux_classes else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return _discriminate(self, x, labels)

    def forward_with_classes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _adv_and_classes(self, x)


# --- 64x64 ---------------------------------------------------------------------------------------
class DCGANGenerator64(nn.Module):
    """The DCGAN paper's generator: latent as a 1x1 map -> 4x4x8w -> 8x8x4w -> 16x16x2w -> 32x32xw -> 64x64xC."""

    def __init__(self, latent_dim: int = 100, channels: int = 3, width: int = 64, num_classes: int = 0) -> None:
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        layers, cin = [], latent_dim + num_classes
        for i, mult in enumerate((8, 4, 2, 1)):
            stride, pad = (1, 0) if i == 0 else (2, 1)
            layers += [nn.ConvTranspose2d(cin, mult * width, 4, stride, pad, bias=False),
                       nn.BatchNorm2d(mult * width), nn.ReLU(True)]
            cin = mult * width
        layers += [nn.ConvTranspose2d(cin, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        c = one_hot(labels, self.num_classes, z.dtype)
        h = z if c is None else torch.cat([z, c], 1)
        return self.net(h[:, :, None, None])


class DCGANDiscriminator64(nn.Module):
    """64x64xC -> 32x32xw -> 16x16x2w -> 8x8x4w -> 4x4x8w -> logit (BN everywhere but the first layer,
    or spectral normalization of every layer instead of BN with ``spectral=True``)."""

    def __init__(self, channels: int = 3, width: int = 64, num_classes: int = 0, dropout: float = 0.0,
                 aux_classes: int = 0, proj_classes: int = 0, spectral: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.project = nn.Embedding(proj_classes, 8 * width * 4 * 4) if proj_classes else None
        layers, cin = [], channels + num_classes
        for i, mult in enumerate((1, 2, 4, 8)):
            layers.append(_maybe_sn(nn.Conv2d(cin, mult * width, 4, 2, 1, bias=False), spectral))
            if i > 0 and not spectral:
                layers.append(nn.BatchNorm2d(mult * width))
            layers.append(nn.LeakyReLU(0.2, True))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            cin = mult * width
        layers.append(_maybe_sn(nn.Conv2d(cin, 1, 4, 1, 0, bias=False), spectral))
        self.net = nn.Sequential(*layers)
        self.classify = nn.Sequential(nn.Conv2d(cin, aux_classes, 4, 1, 0), nn.Flatten()) if aux_classes else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return _discriminate(self, x, labels)

    def forward_with_classes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _adv_and_classes(self, x)


def _discriminate(d: nn.Module, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """The real/fake logit. A projection discriminator (Miyato & Koyama, 2018) adds the inner product
    of a learned class embedding with the last features: the class enters as a *match score* on what
    D has seen, so G is pushed to make the requested digit without AC-GAN's pull towards easy,
    prototypical samples."""
    if d.project is None:
        return d.net(_with_label_maps(x, labels, d.num_classes)).flatten()
    if labels is None:
        raise ValueError("this is a class-conditional (projection) discriminator: labels are required")
    h = d.net[:-1](x)
    return d.net[-1](h).flatten() + (d.project(labels.long()) * h.flatten(1)).sum(1)


def _adv_and_classes(d: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """AC-GAN discriminator: the real/fake logit and class logits from the same features."""
    if d.classify is None:
        raise ValueError("this discriminator has no auxiliary classifier (conditioning='auxiliary' builds one)")
    h = d.net[:-1](x)
    return d.net[-1](h).flatten(), d.classify(h)


def _with_label_maps(x: torch.Tensor, labels: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    c = one_hot(labels, num_classes, x.dtype)
    if c is None:
        return x
    return torch.cat([x, c[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])], 1)


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation: stays on the Gaussian shell where a linear path would cut through
    the low-norm interior that the generator never saw in training."""
    n0, n1 = z0 / z0.norm(dim=-1, keepdim=True), z1 / z1.norm(dim=-1, keepdim=True)
    omega = torch.acos((n0 * n1).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    t = t.view(-1, 1)
    return (torch.sin((1 - t) * omega) / so) * z0 + (torch.sin(t * omega) / so) * z1


# --- the LightningModule -------------------------------------------------------------------------
class DCGAN(L.LightningModule):
    """Generator + discriminator trained with the non-saturating GAN loss, one D then one G step per batch.

    ``fid_features`` (a zoo classifier checkpoint, e.g. LeNet5 on MNIST) turns on ``val/fid`` and
    ``test/fid`` with that classifier's penultimate-layer features (:mod:`zoo.tools.gan_eval`); without it
    the only held-out signal is ``val/d_loss`` (the discriminator's loss on real validation images vs
    fresh fakes), which measures D as much as G, so no "best" epoch is picked: only ``last.ckpt``
    is kept, and test-after-fit scores the final weights.

    Every evaluation and sample grid first re-estimates G's batch-norm statistics from
    ``standing_batches`` training-mode batches (:meth:`standing_statistics`), so ``val/fid`` and the
    grids show what G produces rather than what its lagging running averages make of it; the
    checkpoints then carry those statistics too. ``standing_batches=0`` keeps the running averages.

    Args:
        architecture: "mnist28" (28x28 TensorFlow-tutorial nets) or "dcgan64" (the DCGAN paper's 64x64 nets).
        latent_dim: size of the generator's Gaussian noise vector z.
        image_channels: channels of the generated and real images (1 gray, 3 RGB).
        width: channel-count multiplier of both nets (64 = the published sizes; smaller is cheaper).
        conditional: make G and D class-conditional (then batches must carry labels and grids get one row per class).
        num_classes: number of classes of a conditional model (>= 2); ignored when conditional is False.
        conditioning: how D uses the class: "concat" (one-hot label maps), "auxiliary" (AC-GAN) or "projection".
        aux_weight: weight of the AC-GAN class losses added to D's and G's losses ("auxiliary" only).
        dropout: D's dropout probability in [0, 1); None: 0.3 for "mnist28", 0 for "dcgan64".
        spectral_norm: spectral-normalise D's layers instead of batch-normalising them.
        real_label: target for real images in D's loss, in (0.5, 1]; below 1 is one-sided label smoothing.
        generator_optimizer: optimizer factory for G; default Adam(lr=2e-4, betas=(0.5, 0.999)).
        discriminator_optimizer: optimizer factory for D; default Adam(lr=2e-4, betas=(0.5, 0.999)).
        generator_scheduler: optional learning-rate scheduler factory for G, stepped once per epoch.
        discriminator_scheduler: optional learning-rate scheduler factory for D, stepped once per epoch.
        gradient_clip_val: clip G's and D's gradients at this norm/value before each step; None: no clipping.
        gradient_clip_algorithm: "norm" (clip the gradient norm) or "value" (clip each element).
        fid_features: zoo classifier checkpoint whose features score val/fid and test/fid; None: no FID, keep last only.
        sample_every_n_epochs: log the fixed-noise and interpolation grids every this many epochs (and at the end).
        samples_per_row: images per row of the fixed-noise grid (rows: classes if conditional, else this number).
        interpolation_steps: images per row of the latent interpolation figure.
        standing_batches: batches used to re-estimate G's batch-norm statistics before evaluation; 0: running averages.
        seed: seed of the fixed sample-grid noise, the evaluation latent codes and the standing-statistics draws.
    """

    monitor = ("val/fid", "min")

    def __init__(self, architecture: Architecture = "mnist28", latent_dim: int = 100, image_channels: int = 1,
                 width: int = 64, conditional: bool = False, num_classes: int = 10,
                 conditioning: Literal["concat", "auxiliary", "projection"] = "concat", aux_weight: float = 1.0,
                 dropout: float | None = None, spectral_norm: bool = False, real_label: float = 1.0,
                 generator_optimizer: OptimizerCallable = dcgan_adam,
                 discriminator_optimizer: OptimizerCallable = dcgan_adam,
                 generator_scheduler: LRSchedulerCallable | None = None,
                 discriminator_scheduler: LRSchedulerCallable | None = None,
                 gradient_clip_val: float | None = None, gradient_clip_algorithm: Literal["norm", "value"] = "norm",
                 fid_features: str | None = None, sample_every_n_epochs: int = 1, samples_per_row: int = 8,
                 interpolation_steps: int = 10, standing_batches: int = 50, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        if architecture not in IMAGE_SIZE:
            raise ValueError(f"DCGAN: architecture must be one of {sorted(IMAGE_SIZE)}, got {architecture!r}")
        if standing_batches < 0:
            raise ValueError(f"DCGAN: standing_batches must be >= 0 (0 = keep running averages), got {standing_batches}")
        for name, value in (("latent_dim", latent_dim), ("image_channels", image_channels), ("width", width),
                            ("sample_every_n_epochs", sample_every_n_epochs), ("samples_per_row", samples_per_row),
                            ("interpolation_steps", interpolation_steps)):
            if value < 1:
                raise ValueError(f"DCGAN: {name} must be >= 1, got {value}")
        if conditioning not in ("concat", "auxiliary", "projection"):
            raise ValueError(f"DCGAN: conditioning must be 'concat', 'auxiliary' or 'projection', got {conditioning!r}")
        if conditional and num_classes < 2:
            raise ValueError(f"DCGAN: a conditional model needs num_classes >= 2, got {num_classes}")
        if not 0.5 < real_label <= 1.0:
            raise ValueError(f"DCGAN: real_label (one-sided label smoothing) must be in (0.5, 1], got {real_label}")
        if gradient_clip_val is not None and gradient_clip_val <= 0:
            raise ValueError(f"DCGAN: gradient_clip_val must be positive or None, got {gradient_clip_val}")
        if dropout is None:  # each architecture's published D: the tutorial's dropout 0.3, the paper's none
            dropout = 0.3 if architecture == "mnist28" else 0.0
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"DCGAN: dropout must be in [0, 1), got {dropout}")
        self.automatic_optimization = False
        # the callables themselves (under the CLI, hparams hold their config, not the objects)
        self.generator_optimizer, self.discriminator_optimizer = generator_optimizer, discriminator_optimizer
        self.generator_scheduler, self.discriminator_scheduler = generator_scheduler, discriminator_scheduler
        self.image_size = IMAGE_SIZE[architecture]
        self.image_channels = image_channels
        self.num_classes = num_classes if conditional else 0
        self.auxiliary = bool(self.num_classes) and conditioning == "auxiliary"
        # AC-GAN: D must *infer* the class, so it is not given the label maps
        # projection: the label enters D only through the projection term
        projection = bool(self.num_classes) and conditioning == "projection"
        d_labels = 0 if (self.auxiliary or projection) else self.num_classes
        d_aux, d_proj = (self.num_classes if self.auxiliary else 0), (self.num_classes if projection else 0)
        if architecture == "mnist28":
            self.generator = DCGANGenerator28(latent_dim, image_channels, width, self.num_classes)
            self.discriminator = DCGANDiscriminator28(image_channels, width, d_labels, dropout, d_aux, d_proj,
                                                      spectral_norm)
        else:
            self.generator = DCGANGenerator64(latent_dim, image_channels, width, self.num_classes)
            self.discriminator = DCGANDiscriminator64(image_channels, width, d_labels, dropout, d_aux, d_proj,
                                                      spectral_norm)
        self.generator.apply(dcgan_init)
        self.discriminator.apply(dcgan_init)
        self.discriminator.latent_dim = latent_dim
        self.latent_dim = latent_dim

        # fixed noise (and labels) so that sample grids of different epochs are comparable
        g = torch.Generator().manual_seed(seed)
        rows = self.num_classes or samples_per_row
        self.register_buffer("fixed_z", torch.randn(rows * samples_per_row, latent_dim, generator=g))
        self.register_buffer("fixed_labels", torch.arange(rows).repeat_interleave(samples_per_row)
                             if self.num_classes else torch.zeros(0, dtype=torch.long))
        self.register_buffer("interp_z", torch.randn(2 * rows, latent_dim, generator=g))

        if fid_features is not None:
            from zoo.tools.gan_eval import classifier_fid

            self.val_fid = classifier_fid(fid_features)
            self.test_fid = classifier_fid(fid_features)
            self.monitor = ("val/fid", "min")
        else:
            # val/d_loss says how well D separates, not how good G is: no "best" epoch, keep the last
            self.val_fid = self.test_fid = None
            self.monitor = None
        self._checked_range = False
        self._bn_fresh_at: int | None = None  # global step of the last standing-statistics refresh

    # --- sampling --------------------------------------------------------------------------------
    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.generator(z, labels if self.num_classes else None)

    @torch.no_grad()
    def sample(self, n: int | None = None, labels: torch.Tensor | None = None, z: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Images in [-1, 1] from the generator in eval mode (BN running statistics, so a batch of a
        single class looks like it does inside a mixed batch). Give ``labels`` for a conditional model."""
        if self.num_classes and labels is None:
            raise ValueError("DCGAN.sample: this model is class-conditional; pass labels")
        if not self.num_classes and labels is not None:
            raise ValueError("DCGAN.sample: this model is unconditional (conditional=False); it cannot take labels")
        n = len(labels) if labels is not None else (len(z) if z is not None else n)
        if n is None:
            raise ValueError("DCGAN.sample: give n, labels or z")
        if z is None:
            z = torch.randn(n, self.latent_dim, generator=generator).to(self.device)
        was_training = self.generator.training
        self.generator.eval()
        try:
            return self.generator(z.to(self.device), None if labels is None else labels.to(self.device))
        finally:
            self.generator.train(was_training)

    @torch.no_grad()
    def standing_statistics(self, batches: int = 100, batch_size: int = 128, seed: int = 0) -> None:
        """Re-estimate the generator's batch-norm running statistics as the plain average over
        ``batches`` training-mode batches of random codes (and random labels): "standing
        statistics" (Brock et al., 2019).

        G only ever runs on batch statistics while it trains; its running averages (momentum 0.1)
        trail a network that changes every step, so eval-mode samples drift from what D was shown.
        On MNIST this moved the Classification Accuracy Score by 3 points (docs/dcgan.md).
        """
        if batches < 1 or batch_size < 2:
            raise ValueError(f"standing_statistics: need batches >= 1 and batch_size >= 2, got {batches}, {batch_size}")
        norms = [m for m in self.generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return
        g = torch.Generator().manual_seed(seed)
        saved = [m.momentum for m in norms]
        was_training = self.generator.training
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average: every batch counts the same
        self.generator.train()
        try:
            for _ in range(batches):
                z = torch.randn(batch_size, self.latent_dim, generator=g).to(self.device)
                labels = (torch.randint(0, self.num_classes, (batch_size,), generator=g).to(self.device)
                          if self.num_classes else None)
                self.generator(z, labels)
        finally:
            for m, momentum in zip(norms, saved):
                m.momentum = momentum
            self.generator.train(was_training)

    # --- training ------------------------------------------------------------------------------
    def _unpack(self, batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        if isinstance(batch, torch.Tensor):
            x, y = batch, None
        else:
            x, y = batch[0], (batch[-1] if len(batch) > 1 else None)
        expected = (self.image_channels, self.image_size, self.image_size)
        if tuple(x.shape[1:]) != expected:
            raise ValueError(f"DCGAN(architecture={self.hparams.architecture!r}, image_channels={self.image_channels}) "
                             f"expects images of shape (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}; "
                             "set --model.architecture / --model.image_channels or the data's image size")
        if self.num_classes:
            if y is None or y.dtype not in (torch.int64, torch.int32) or (y < 0).any():
                raise ValueError("DCGAN(conditional=True) needs labelled batches (x, y) with y >= 0; "
                                 "this data has no labels (use conditional=False)")
        else:
            y = None
        if not self._checked_range:
            lo, hi = float(x.min()), float(x.max())
            if lo < -1.001 or hi > 1.001 or (lo >= 0 and x.numel() > 1000):
                raise ValueError(f"DCGAN: training images must lie in [-1, 1] (the generator's tanh range), "
                                 f"got [{lo:.3g}, {hi:.3g}]; set --data.normalize minus_one_one (MNIST) or "
                                 "--data.normalization minus_one_one (image folders)")
            self._checked_range = True
        return x, y

    def _noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, device=self.device)

    def _backward_and_step(self, opt, loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt.step()  # clips in on_before_optimizer_step

    def on_before_optimizer_step(self, optimizer) -> None:
        # Lightning calls this inside opt.step(), after 16-mixed has unscaled the gradients: clipping
        # before opt.step() would bound the loss-scaled gradients (Lightning issue #18089)
        if self.hparams.gradient_clip_val is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams.gradient_clip_val,
                                gradient_clip_algorithm=self.hparams.gradient_clip_algorithm)

    def training_step(self, batch, batch_idx: int) -> None:
        x, y = self._unpack(batch)
        opt_d, opt_g = self.optimizers()
        b = x.shape[0]
        # one forward pass of G serves both steps: D sees it detached, G backpropagates through it
        fake = self.generator(self._noise(b), y)
        ones, zeros = torch.ones(b, device=self.device), torch.zeros(b, device=self.device)

        w = self.hparams.aux_weight

        self.toggle_optimizer(opt_d)
        if self.auxiliary:
            (d_real, c_real), (d_fake, c_fake) = (self.discriminator.forward_with_classes(x),
                                                  self.discriminator.forward_with_classes(fake.detach()))
            d_cls = F.cross_entropy(c_real, y) + F.cross_entropy(c_fake, y)
        else:
            d_real, d_fake = self.discriminator(x, y), self.discriminator(fake.detach(), y)
        d_loss = (F.binary_cross_entropy_with_logits(d_real, ones * self.hparams.real_label)
                  + F.binary_cross_entropy_with_logits(d_fake, zeros))
        self._backward_and_step(opt_d, d_loss + w * d_cls if self.auxiliary else d_loss)
        self.untoggle_optimizer(opt_d)

        self.toggle_optimizer(opt_g)
        if self.auxiliary:
            g_adv, g_cls_logits = self.discriminator.forward_with_classes(fake)
            g_cls = F.cross_entropy(g_cls_logits, y)
        else:
            g_adv = self.discriminator(fake, y)
        g_loss = F.binary_cross_entropy_with_logits(g_adv, ones)  # non-saturating loss
        self._backward_and_step(opt_g, g_loss + w * g_cls if self.auxiliary else g_loss)
        self.untoggle_optimizer(opt_g)
        if self.auxiliary:
            self.log_dict({"train/d_cls_loss": d_cls.detach(), "train/g_cls_loss": g_cls.detach()}, batch_size=b)

        self.log_dict({"train/d_loss": d_loss.detach(), "train/g_loss": g_loss.detach(),
                       "train/d_real": torch.sigmoid(d_real.detach()).mean(),
                       "train/d_fake": torch.sigmoid(d_fake.detach()).mean()}, prog_bar=False, batch_size=b)
        self.log("train/loss", d_loss.detach() + g_loss.detach(), prog_bar=True, batch_size=b)

    def on_train_epoch_end(self) -> None:
        for sched in self._schedulers():
            if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                if self.monitor is None:
                    raise ValueError("DCGAN: ReduceLROnPlateau needs a metric; set --model.fid_features")
                metric = self.trainer.callback_metrics.get(self.monitor[0])
                if metric is not None:
                    sched.step(metric)
            else:
                sched.step()
        epoch = self.current_epoch + 1
        if epoch % self.hparams.sample_every_n_epochs == 0 or epoch == self.trainer.max_epochs:
            self.log_samples()

    def _schedulers(self) -> list:
        s = self.lr_schedulers()
        return [] if s is None else (s if isinstance(s, list) else [s])

    # --- evaluation ----------------------------------------------------------------------------
    def _eval_step(self, batch, batch_idx: int, stage: str) -> None:
        x, y = self._unpack(batch)
        b = x.shape[0]
        # the same latent codes at every evaluation, so epoch-to-epoch changes are the model's
        g = torch.Generator().manual_seed(self.hparams.seed * 1_000_003 + batch_idx)
        z = torch.randn(b, self.latent_dim, generator=g).to(self.device)
        fake = self.sample(labels=y, z=z)
        with torch.no_grad():
            d_real, d_fake = self.discriminator(x, y), self.discriminator(fake, y)  # labels unused if auxiliary
        d_loss = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                  + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
        self.log(f"{stage}/d_loss", d_loss, batch_size=b, sync_dist=True)
        fid = self.val_fid if stage == "val" else self.test_fid
        if fid is not None:
            fid.update((x + 1) / 2, real=True)
            fid.update((fake + 1) / 2, real=False)

    def _eval_epoch_end(self, stage: str) -> None:
        fid = self.val_fid if stage == "val" else self.test_fid
        if fid is None or self.trainer.sanity_checking:
            if fid is not None:
                fid.reset()
            return
        if int(fid.real_features_num_samples) < 2:
            return
        self.log(f"{stage}/fid", fid.compute(), prog_bar=True)
        fid.reset()

    def _refresh_bn(self) -> None:
        """Standing statistics before every evaluation and sample grid (once per training step)."""
        if self.hparams.standing_batches and self._bn_fresh_at != self.global_step:
            self.standing_statistics(batches=self.hparams.standing_batches, seed=self.hparams.seed)
            self._bn_fresh_at = self.global_step

    def on_validation_epoch_start(self) -> None:
        self._refresh_bn()

    def on_test_epoch_start(self) -> None:
        self._refresh_bn()

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    # --- figures ---------------------------------------------------------------------------------
    def sample_grid_figure(self, title: str | None = None):
        """The fixed-noise grid: one row per class for a conditional model."""
        labels = self.fixed_labels if self.num_classes else None
        imgs = self.sample(labels=labels, z=self.fixed_z)
        captions = None
        return image_grid_figure(imgs, captions, ncol=self.hparams.samples_per_row, value_range=(-1.0, 1.0),
                                 title=title or f"epoch {self.current_epoch + 1}")

    def interpolation_figure(self):
        """Rows of spherical interpolations between two fixed latent codes (class fixed per row)."""
        steps = self.hparams.interpolation_steps
        rows = len(self.interp_z) // 2
        t = torch.linspace(0, 1, steps, device=self.device)
        z = torch.cat([slerp(self.interp_z[2 * r].expand(steps, -1), self.interp_z[2 * r + 1].expand(steps, -1), t)
                       for r in range(rows)])
        labels = torch.arange(rows, device=self.device).repeat_interleave(steps) if self.num_classes else None
        imgs = self.sample(labels=labels, z=z)
        return image_grid_figure(imgs, ncol=steps, value_range=(-1.0, 1.0), title="latent interpolation (slerp)")

    def log_samples(self) -> None:
        self._refresh_bn()
        log_figure(self.trainer, "samples/fixed_noise", self.sample_grid_figure())
        log_figure(self.trainer, "samples/interpolation", self.interpolation_figure())

    # --- optimizers and checkpoints ------------------------------------------------------------
    def configure_optimizers(self):
        opt_d = self.discriminator_optimizer(self.discriminator.parameters())
        opt_g = self.generator_optimizer(self.generator.parameters())
        # named, so the learning-rate monitor logs lr-discriminator / lr-generator instead of lr-Adam / lr-Adam-1
        # (an optimizer without a scheduler keeps Lightning's name: D's is the first, G's the second)
        scheds = [{"scheduler": s(o), "name": f"lr-{who}"}
                  for s, o, who in ((self.discriminator_scheduler, opt_d, "discriminator"),
                                    (self.generator_scheduler, opt_g, "generator")) if s is not None]
        return ([opt_d, opt_g], scheds) if scheds else [opt_d, opt_g]

    _FID_PREFIXES = ("val_fid.", "test_fid.")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # the FID feature network is rebuilt from ``fid_features``; it is not part of the GAN
        sd = checkpoint["state_dict"]
        for k in [k for k in sd if k.startswith(self._FID_PREFIXES)]:
            del sd[k]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        own = self.state_dict()
        checkpoint["state_dict"].update({k: v for k, v in own.items() if k.startswith(self._FID_PREFIXES)})


def load_dcgan(checkpoint: str, map_location: str = "cpu") -> DCGAN:
    """A trained DCGAN for sampling, without rebuilding its FID feature network.

    Weights-only (:mod:`zoo.safe_load`): a crafted file is refused with its name and runs nothing.
    """
    what = "DCGAN checkpoint"
    if "state_dict" not in load_checkpoint(checkpoint, what, map_location=map_location):
        raise ValueError(f"{what} {checkpoint} has no state_dict: expected a checkpoint of a DCGAN run")
    return load_module(DCGAN, checkpoint, what, map_location=map_location, fid_features=None).eval()
