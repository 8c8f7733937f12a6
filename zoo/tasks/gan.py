"""GAN: adversarial training of an injected generator and discriminator with manual optimization
(``configs/dcgan_mnist*.yaml``, ``configs/dcgan_anime.yaml``; the nets are :mod:`zoo.nets.dcgan`)::

    model:
      class_path: zoo.tasks.gan.GAN
      init_args:
        generator: {class_path: zoo.nets.dcgan.Generator, init_args: {architecture: mnist28, num_classes: 10}}
        discriminator: {class_path: zoo.nets.dcgan.Discriminator, init_args: {architecture: mnist28, num_classes: 10}}

Why manual optimization: a GAN step is two coupled updates with different losses, and the
discriminator must see *detached* fakes while the generator must see gradients through the
discriminator. Writing both updates out (``toggle_optimizer`` / ``manual_backward`` / ``step``,
gradients clipped in ``on_before_optimizer_step``) keeps that ordering explicit and testable.

Images are expected in [-1, 1] (the tanh range): ``--data.normalization minus_one_one``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from zoo.checkpoints import check_class_paths, refuse_legacy
from zoo.figures import image_grid_figure, log_figure
from zoo.metrics import SampleDiversity, classifier_fid
from zoo.nets.dcgan import dcgan_init, slerp
from zoo.optim import dcgan_adam
from zoo.safe_load import load_checkpoint, load_module
from zoo.tasks.base import save_task_hyperparameters


def check_pair(generator: nn.Module, discriminator: nn.Module) -> None:
    """G and D must agree on what passes between them: images of one size and channel count, and the
    classes. Each net states them as attributes (``image_size``, ``channels``, ``num_classes``; G also
    ``latent_dim``), as :mod:`zoo.nets.dcgan` does."""
    needs = {"generator": (generator, ("latent_dim", "num_classes", "image_size", "channels")),
             "discriminator": (discriminator, ("num_classes", "image_size", "channels"))}
    for role, (net, names) in needs.items():
        missing = [n for n in names if not isinstance(getattr(net, n, None), int)]
        if missing:
            raise ValueError(f"GAN: the {role} {type(net).__name__} has no integer attribute(s) {missing}; the task "
                             "reads them from the nets (see zoo.nets.dcgan)")
    for name, hint in (("image_size", "architecture"), ("channels", "channels"), ("num_classes", "num_classes")):
        g, d = getattr(generator, name), getattr(discriminator, name)
        if g != d:
            arch = (f" (architecture {getattr(generator, 'architecture', '?')!r} vs "
                    f"{getattr(discriminator, 'architecture', '?')!r})" if name == "image_size" else "")
            raise ValueError(f"GAN: the generator and the discriminator disagree on {name}: generator {g}, "
                             f"discriminator {d}{arch}; set the same {hint} in --model.generator.init_args and "
                             f"--model.discriminator.init_args")


class GAN(L.LightningModule):
    """Generator + discriminator trained with the non-saturating GAN loss, one D then one G step per batch.

    ``fid_features`` (a zoo classifier checkpoint, e.g. LeNet5 on MNIST) turns on ``val/fid`` and
    ``test/fid`` with that classifier's penultimate-layer features (:func:`zoo.metrics.classifier_fid`);
    ``val/diversity`` / ``test/diversity`` (:class:`zoo.metrics.SampleDiversity`) are logged on every run:
    the samples' mean pairwise distance over the real images', near 0 when G collapses to one image.
    Without ``fid_features`` the only other held-out signal is ``val/d_loss`` (the discriminator's loss on real validation
    images vs fresh fakes), which measures D as much as G, so no "best" epoch is picked: only
    ``last.ckpt`` is kept, and test-after-fit scores the final weights.

    Every evaluation and sample grid first re-estimates G's batch-norm statistics from
    ``standing_batches`` training-mode batches (:meth:`standing_statistics`), so ``val/fid`` and the
    grids show what G produces rather than what its lagging running averages make of it; the
    checkpoints then carry those statistics too. ``standing_batches=0`` keeps the running averages.

    A class-conditional GAN is one whose nets have ``num_classes > 0`` (batches must then carry
    labels, and grids get one row per class); with an AC-GAN discriminator (``conditioning:
    auxiliary``) D's and G's losses add ``aux_weight`` times the class cross-entropy.

    Args:
        generator: latent code (+ labels) -> images in [-1, 1] (e.g. :class:`zoo.nets.dcgan.Generator`).
        discriminator: images (+ labels) -> one logit per image (e.g. :class:`zoo.nets.dcgan.Discriminator`);
            it must agree with the generator on image size, channels and classes.
        aux_weight: weight of the AC-GAN class losses added to D's and G's losses (auxiliary D only).
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
        init_weights: initialise both nets as the DCGAN paper does (:func:`zoo.nets.dcgan.dcgan_init`, G then D);
            false keeps the weights they come with (e.g. a pretrained generator).
    """

    monitor = ("val/fid", "min")

    def __init__(self, generator: nn.Module, discriminator: nn.Module, aux_weight: float = 1.0,
                 real_label: float = 1.0, generator_optimizer: OptimizerCallable = dcgan_adam,
                 discriminator_optimizer: OptimizerCallable = dcgan_adam,
                 generator_scheduler: LRSchedulerCallable | None = None,
                 discriminator_scheduler: LRSchedulerCallable | None = None,
                 gradient_clip_val: float | None = None, gradient_clip_algorithm: Literal["norm", "value"] = "norm",
                 fid_features: str | None = None, sample_every_n_epochs: int = 1, samples_per_row: int = 8,
                 interpolation_steps: int = 10, standing_batches: int = 50, seed: int = 0,
                 init_weights: bool = True) -> None:
        super().__init__()
        save_task_hyperparameters(self)
        check_pair(generator, discriminator)
        if standing_batches < 0:
            raise ValueError(f"GAN: standing_batches must be >= 0 (0 = keep running averages), got {standing_batches}")
        for name, value in (("sample_every_n_epochs", sample_every_n_epochs), ("samples_per_row", samples_per_row),
                            ("interpolation_steps", interpolation_steps)):
            if value < 1:
                raise ValueError(f"GAN: {name} must be >= 1, got {value}")
        if not 0.5 < real_label <= 1.0:
            raise ValueError(f"GAN: real_label (one-sided label smoothing) must be in (0.5, 1], got {real_label}")
        if gradient_clip_val is not None and gradient_clip_val <= 0:
            raise ValueError(f"GAN: gradient_clip_val must be positive or None, got {gradient_clip_val}")
        self.automatic_optimization = False
        # read from attributes, not self.hparams: a CLI run's hparams are its config, whatever it left out
        self.aux_weight, self.real_label, self.seed = aux_weight, real_label, seed
        self.gradient_clip_val, self.gradient_clip_algorithm = gradient_clip_val, gradient_clip_algorithm
        self.sample_every_n_epochs, self.samples_per_row = sample_every_n_epochs, samples_per_row
        self.interpolation_steps, self.standing_batches = interpolation_steps, standing_batches
        # the callables themselves (under the CLI, hparams hold their config, not the objects)
        self.generator_optimizer, self.discriminator_optimizer = generator_optimizer, discriminator_optimizer
        self.generator_scheduler, self.discriminator_scheduler = generator_scheduler, discriminator_scheduler
        self.image_size, self.image_channels = generator.image_size, generator.channels
        self.num_classes, self.latent_dim = generator.num_classes, generator.latent_dim
        self.auxiliary = bool(self.num_classes) and getattr(discriminator, "conditioning", None) == "auxiliary"
        self.generator, self.discriminator = generator, discriminator
        if init_weights:  # after both nets are built, G first: the random stream seeded runs have always used
            self.generator.apply(dcgan_init)
            self.discriminator.apply(dcgan_init)

        # fixed noise (and labels) so that sample grids of different epochs are comparable
        g = torch.Generator().manual_seed(seed)
        rows = self.num_classes or samples_per_row
        self.register_buffer("fixed_z", torch.randn(rows * samples_per_row, self.latent_dim, generator=g))
        self.register_buffer("fixed_labels", torch.arange(rows).repeat_interleave(samples_per_row)
                             if self.num_classes else torch.zeros(0, dtype=torch.long))
        self.register_buffer("interp_z", torch.randn(2 * rows, self.latent_dim, generator=g))

        if fid_features is not None:
            self.val_fid = classifier_fid(fid_features)
            self.test_fid = classifier_fid(fid_features)
            self.monitor = ("val/fid", "min")
        else:
            # val/d_loss says how well D separates, not how good G is: no "best" epoch, keep the last
            self.val_fid = self.test_fid = None
            self.monitor = None
        # collapse alarm on every run, FID or not: ~1 when samples vary like the data, -> 0 when they collapse
        self.val_diversity, self.test_diversity = SampleDiversity(), SampleDiversity()
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
            raise ValueError("GAN.sample: this model is class-conditional; pass labels")
        if not self.num_classes and labels is not None:
            raise ValueError("GAN.sample: this model is unconditional (its generator has num_classes=0); "
                             "it cannot take labels")
        n = len(labels) if labels is not None else (len(z) if z is not None else n)
        if n is None:
            raise ValueError("GAN.sample: give n, labels or z")
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
            raise ValueError(f"GAN: its nets ({getattr(self.generator, 'architecture', type(self.generator).__name__)}"
                             f", channels={self.image_channels}) expect images of shape "
                             f"(B, {', '.join(map(str, expected))}), got {tuple(x.shape)}; set the nets' "
                             "architecture / channels (--model.generator.init_args, --model.discriminator.init_args) "
                             "or the data's image size")
        if self.num_classes:
            if y is None or y.dtype not in (torch.int64, torch.int32) or (y < 0).any():
                raise ValueError(f"GAN: a class-conditional model (num_classes={self.num_classes}) needs labelled "
                                 "batches (x, y) with y >= 0; this data has no labels (set num_classes 0 in both nets)")
        else:
            y = None
        if not self._checked_range:
            lo, hi = float(x.min()), float(x.max())
            if lo < -1.001 or hi > 1.001 or (lo >= 0 and x.numel() > 1000):
                raise ValueError(f"GAN: training images must lie in [-1, 1] (the generator's tanh range), "
                                 f"got [{lo:.3g}, {hi:.3g}]; set --data.normalization minus_one_one")
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
        if self.gradient_clip_val is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip_val,
                                gradient_clip_algorithm=self.gradient_clip_algorithm)

    def training_step(self, batch, batch_idx: int) -> None:
        x, y = self._unpack(batch)
        opt_d, opt_g = self.optimizers()
        b = x.shape[0]
        # one forward pass of G serves both steps: D sees it detached, G backpropagates through it
        fake = self.generator(self._noise(b), y)
        ones, zeros = torch.ones(b, device=self.device), torch.zeros(b, device=self.device)

        w = self.aux_weight

        self.toggle_optimizer(opt_d)
        if self.auxiliary:
            (d_real, c_real), (d_fake, c_fake) = (self.discriminator.forward_with_classes(x),
                                                  self.discriminator.forward_with_classes(fake.detach()))
            d_cls = F.cross_entropy(c_real, y) + F.cross_entropy(c_fake, y)
        else:
            d_real, d_fake = self.discriminator(x, y), self.discriminator(fake.detach(), y)
        d_loss = (F.binary_cross_entropy_with_logits(d_real, ones * self.real_label)
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
                    raise ValueError("GAN: ReduceLROnPlateau needs a metric; set --model.fid_features")
                metric = self.trainer.callback_metrics.get(self.monitor[0])
                if metric is not None:
                    sched.step(metric)
            else:
                sched.step()
        epoch = self.current_epoch + 1
        if epoch % self.sample_every_n_epochs == 0 or epoch == self.trainer.max_epochs:
            self.log_samples()

    def _schedulers(self) -> list:
        s = self.lr_schedulers()
        return [] if s is None else (s if isinstance(s, list) else [s])

    # --- evaluation ----------------------------------------------------------------------------
    def _eval_step(self, batch, batch_idx: int, stage: str) -> None:
        x, y = self._unpack(batch)
        b = x.shape[0]
        # the same latent codes at every evaluation, so epoch-to-epoch changes are the model's
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + batch_idx)
        z = torch.randn(b, self.latent_dim, generator=g).to(self.device)
        fake = self.sample(labels=y, z=z)
        with torch.no_grad():
            d_real, d_fake = self.discriminator(x, y), self.discriminator(fake, y)  # labels unused if auxiliary
        d_loss = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                  + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
        self.log(f"{stage}/d_loss", d_loss, batch_size=b, sync_dist=True)
        diversity = self.val_diversity if stage == "val" else self.test_diversity
        diversity.update(x, real=True)
        diversity.update(fake, real=False)
        self.log(f"{stage}/diversity", diversity, batch_size=b)
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
        if self.standing_batches and self._bn_fresh_at != self.global_step:
            self.standing_statistics(batches=self.standing_batches, seed=self.seed)
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
        return image_grid_figure(imgs, None, ncol=self.samples_per_row, value_range=(-1.0, 1.0),
                                 title=title or f"epoch {self.current_epoch + 1}")

    def interpolation_figure(self):
        """Rows of spherical interpolations between two fixed latent codes (class fixed per row)."""
        steps = self.interpolation_steps
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


def load_gan(checkpoint: str | Path, map_location: str = "cpu", generator: nn.Module | None = None,
             discriminator: nn.Module | None = None) -> GAN:
    """A trained GAN in eval mode for sampling, without rebuilding its FID feature network.

    A ``python -m zoo fit`` checkpoint records its nets' ``class_path`` configs; one saved from Python
    does not, so pass ``generator`` and ``discriminator`` built as for training. Weights-only
    (:mod:`zoo.safe_load`): a crafted file is refused with its name and runs nothing.
    """
    what = "GAN checkpoint"
    ckpt = load_checkpoint(checkpoint, what, map_location=map_location)
    if "state_dict" not in ckpt:
        raise ValueError(f"{what} {checkpoint} has no state_dict: expected a checkpoint of a GAN run "
                         "(python -m zoo fit --config configs/dcgan_mnist.yaml)")
    hp = ckpt.get("hyper_parameters") or {}
    refuse_legacy(hp, checkpoint, what)
    check_class_paths(hp, checkpoint, what)
    nets = {k: v for k, v in (("generator", generator), ("discriminator", discriminator)) if v is not None}
    missing = [k for k in ("generator", "discriminator") if k not in nets and k not in hp]
    if missing:
        raise ValueError(f"{what} {checkpoint} does not record its {' and '.join(missing)} (it was saved from "
                         "Python, not by `python -m zoo fit`); pass them, built as for training: "
                         "load_gan(path, generator=Generator(...), discriminator=Discriminator(...))")
    return load_module(GAN, checkpoint, what, map_location=map_location, fid_features=None, **nets).eval()
