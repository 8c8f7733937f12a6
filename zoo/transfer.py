"""EncoderClassifier: classify with the encoder of a trained :class:`zoo.masked_ae.MaskedAE`.

Config ``configs/transfer_cifar.yaml``; label-fraction sweep ``configs/grids/transfer_label_fraction.yaml``;
results in ``docs/masked_ae.md``. Three modes measure different things:

* ``linear``: frozen encoder + one linear layer (a *probe*: how linearly separable the code is);
* ``mlp``: frozen encoder + an MLP head of ``mlp_layers`` hidden layers (3 or 5 as studied);
* ``finetune``: the encoder is trained too (optionally at ``encoder_lr_scale`` times the head's lr).

Frozen encoders stay in eval mode (their batch-norm statistics are those of pretraining).
Features are batch-normalised before the head (``feature_batchnorm``): the code's scale is
arbitrary, and without it a probe can sit at chance for many epochs. That normalisation is an
affine map, so ``linear`` remains a linear probe. Besides the base class's metrics, test reports
macro one-vs-rest ``test/auroc`` and draws the per-class ROC curves.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics.classification import MulticlassAUROC, MulticlassROC

from zoo.optim import configure_optimizers_from, default_optimizer
from zoo.tasks.classifier import Classifier
from zoo.figures import log_figure, plt
from datamodules.augment import BatchAugment
from zoo.masked_ae import MaskedAE
from zoo.safe_load import load_checkpoint

Mode = Literal["linear", "mlp", "finetune"]


def load_encoder(checkpoint: str | Path) -> tuple[nn.Module, dict]:
    """The ``encoder`` of a MaskedAE checkpoint (weights as trained) and the AE's hyperparameters."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"encoder_checkpoint: no MaskedAE checkpoint at {path} (train one with "
                                f"`python -m zoo fit --config configs/masked_ae_conv_cifar.yaml`)")
    ckpt = load_checkpoint(path, "encoder_checkpoint")  # weights-only: a crafted file cannot run code
    if not any(k.startswith("encoder.") for k in ckpt.get("state_dict", {})):
        raise ValueError(f"encoder_checkpoint {path} is not a MaskedAE checkpoint (no 'encoder.*' weights)")
    # Rebuilt by hand rather than with ``MaskedAE.load_from_checkpoint``: inside LightningCLI's
    # instantiation the nested module would record the *outer* module's hyperparameters.
    saved = ckpt.get("hyper_parameters", {})
    accepted = inspect.signature(MaskedAE.__init__).parameters
    hparams = {k: v for k, v in saved.items() if k in accepted and k not in ("optimizer", "scheduler")}
    ae = MaskedAE(**hparams)
    ae.load_state_dict(ckpt["state_dict"])
    return ae.encoder, {**{k: p.default for k, p in accepted.items() if k != "self"}, **hparams}


def mlp_head(in_dim: int, hidden: int, layers: int, num_classes: int, dropout: float) -> nn.Sequential:
    mods: list[nn.Module] = []
    for _ in range(layers):
        mods += [nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        in_dim = hidden
    return nn.Sequential(*mods, nn.Linear(in_dim, num_classes))


def roc_figure(fpr: Sequence[torch.Tensor], tpr: Sequence[torch.Tensor], class_names: Sequence[str],
               title: str = "One-vs-rest ROC") -> "plt.Figure":
    """One ROC curve per class with its AUC in the legend."""
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    for i, name in enumerate(class_names):
        f, t = fpr[i].detach().cpu().numpy(), tpr[i].detach().cpu().numpy()
        order = np.argsort(f, kind="stable")
        auc = float(np.trapezoid(t[order], f[order]))
        ax.plot(f[order], t[order], lw=1.2, color=plt.cm.tab10(i % 10), label=f"{name} ({auc:.2f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


class EncoderClassifier(Classifier):
    """Classifier on a pretrained MaskedAE encoder (``encoder_checkpoint``); see the module docstring.

    Args:
        encoder_checkpoint: path to a trained MaskedAE checkpoint whose encoder is loaded.
        mode: "linear" (frozen encoder + linear probe), "mlp" (frozen encoder + MLP head) or "finetune" (train both).
        mlp_hidden: width of each hidden layer of the MLP head ("mlp" and "finetune" modes).
        mlp_layers: number of hidden layers of the MLP head (>= 1; "mlp" and "finetune" modes).
        dropout: dropout probability after each hidden layer of the MLP head (unused in "linear" mode).
        feature_batchnorm: batch-normalise the encoder features (no affine) before the head; keeps probes trainable.
        encoder_lr_scale: encoder learning rate as a multiple of the head's ("finetune" mode only; >= 0).
        augment: apply random train-time augmentation (flip, contrast, shift) to each training batch.
        hflip: probability of mirroring each training image horizontally, in [0, 1].
        contrast: contrast jitter strength: deviation from the image mean scaled by U(1 - c, 1 + c), in [0, 1).
        translate: maximum random shift per axis as a fraction of the image size.
        augment_seed: seed of the augmentation random stream; None: derived from the run's seed.
        class_names: class labels for the test figures (num_classes entries); None: "0", "1", ...
        optimizer: optimizer factory applied to the trainable parameters; default AdamW(lr=1e-3, weight_decay=1e-4).
    """

    def __init__(self, encoder_checkpoint: str, mode: Mode = "linear", mlp_hidden: int = 512, mlp_layers: int = 3,
                 dropout: float = 0.2, feature_batchnorm: bool = True, encoder_lr_scale: float = 1.0,
                 augment: bool = False, hflip: float = 0.5, contrast: float = 0.2, translate: float = 0.1,
                 augment_seed: int | None = None, num_classes: int = 10, class_names: Sequence[str] | None = None,
                 label_smoothing: float = 0.0, optimizer: OptimizerCallable = default_optimizer,
                 scheduler: LRSchedulerCallable | None = None) -> None:
        super().__init__(num_classes, class_names, label_smoothing, optimizer, scheduler)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        if mode not in ("linear", "mlp", "finetune"):
            raise ValueError(f"mode must be 'linear', 'mlp' or 'finetune', got {mode!r}")
        if mlp_layers < 1:
            raise ValueError(f"mlp_layers must be >= 1, got {mlp_layers}")
        if encoder_lr_scale < 0:
            raise ValueError(f"encoder_lr_scale must be >= 0, got {encoder_lr_scale}")
        self.mode = mode
        self.encoder, ae_hparams = load_encoder(encoder_checkpoint)
        self.image_shape = (ae_hparams["channels"], ae_hparams["image_size"], ae_hparams["image_size"])
        self.frozen = mode != "finetune"
        if self.frozen:
            self.encoder.requires_grad_(False)
            self.encoder.eval()
        with torch.no_grad():
            was_training = self.encoder.training
            self.encoder.eval()
            feature_dim = self.encoder(torch.zeros(1, *self.image_shape)).flatten(1).shape[1]
            self.encoder.train(was_training)
        self.feature_dim = feature_dim
        self.feature_norm = nn.BatchNorm1d(feature_dim, affine=False) if feature_batchnorm else nn.Identity()
        if mode == "linear":
            self.head = nn.Linear(feature_dim, num_classes)
        else:
            self.head = mlp_head(feature_dim, mlp_hidden, mlp_layers, num_classes, dropout)
        self.augment = (BatchAugment(translate=translate, hflip=hflip, contrast=contrast, value_range=(0.0, 1.0),
                                     padding_mode="reflection", seed=augment_seed) if augment else None)
        self.test_metrics.add_metrics({"auroc": MulticlassAUROC(num_classes, average="macro")})
        self.test_roc = MulticlassROC(num_classes, thresholds=200)

    def train(self, mode: bool = True):
        """Keep a frozen encoder in eval mode: its batch-norm statistics must not drift."""
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"EncoderClassifier: the encoder was trained on images of shape {self.image_shape} "
                             f"(set data.image_size/channels to match), got {tuple(x.shape[1:])}")
        if self.frozen:
            with torch.no_grad():
                return self.encoder(x).flatten(1)
        return self.encoder(x).flatten(1)

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        return self.head(self.feature_norm(self.features(x)))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        if self.augment is not None:
            x, *rest = batch
            batch = (self.augment(x), *rest)
        return super().training_step(batch, batch_idx)

    def _logits_and_target(self, batch):
        logits, y = super()._logits_and_target(batch)
        if self._trainer is not None and self.trainer.testing:
            self.test_roc.update(logits.softmax(-1), y)
        return logits, y

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        fpr, tpr, _ = self.test_roc.compute()
        log_figure(self.trainer, "test/roc", roc_figure(fpr, tpr, self.class_names))
        self.test_roc.reset()

    def configure_optimizers(self):
        scale = self.hparams.encoder_lr_scale
        if self.frozen or scale == 1.0:
            return configure_optimizers_from(self, self.optimizer, self.scheduler,
                                             [p for p in self.parameters() if p.requires_grad])
        enc_ids = {id(p) for p in self.encoder.parameters()}
        groups = [{"params": [p for p in self.parameters() if id(p) not in enc_ids]},
                  {"params": list(self.encoder.parameters())}]

        def build(params):  # the encoder group trains at ``encoder_lr_scale`` x the configured lr
            opt = self.optimizer(params)
            opt.param_groups[1]["lr"] *= scale
            return opt

        return configure_optimizers_from(self, build, self.scheduler, groups)


def label_fraction_figure(curves: dict[str, dict[float, float]], title: str = "CIFAR-10 (JPEG copy), 32x32",
                          goals: dict[str, float] | None = None) -> "plt.Figure":
    """Test accuracy (%) vs share of training labels (%, log axis), one line per method, for results pages."""
    fig, ax = plt.subplots(figsize=(5.4, 3.8))
    for i, (name, points) in enumerate(curves.items()):
        xs = sorted(points)
        ax.plot([100 * x for x in xs], [100 * points[x] for x in xs], marker="o", lw=1.5, color=f"C{i}", label=name)
    for name, value in (goals or {}).items():
        ax.axhline(100 * value, ls=":", lw=0.8, color="grey")
        ax.text(1.02, 100 * value, name, fontsize=7, va="bottom", color="grey")
    ax.set_xscale("log")
    ax.set_xticks([1, 10, 20, 40, 60, 100], ["1", "10", "20", "40", "60", "100"])
    ax.set_xlabel("training labels used (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
