"""TransferClassifier: classify with the encoder of a trained :class:`zoo.tasks.masked_ae.MaskedAE`.

Config ``configs/transfer_cifar.yaml``; label-fraction sweep ``configs/grids/transfer_label_fraction.yaml``;
results in ``docs/masked_ae.md``. Three modes measure different things:

* ``linear``: frozen encoder + one linear layer (a *probe*: how linearly separable the code is);
* ``mlp``: frozen encoder + an MLP head of ``mlp_layers`` hidden layers (3 or 5 as studied);
* ``finetune``: the encoder is trained too (optionally at ``encoder_lr_scale`` times the head's lr).

The task builds the net, :class:`zoo.nets.masked_ae.EncoderWithHead` (encoder, feature batch norm,
head), from the checkpoint and the mode, and is a :class:`~zoo.tasks.classifier.Classifier` for the
rest (loss, metrics, confusion matrix). Besides those metrics, test reports macro one-vs-rest
``test/auroc`` and draws the per-class ROC curves.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics.classification import MulticlassAUROC, MulticlassROC

from datamodules.augment import BatchAugment
from zoo import compat
from zoo.checkpoints import check_class_paths
from zoo.figures import log_figure, plt
from zoo.nets.masked_ae import EncoderWithHead, MaskedAENet
from zoo.optim import configure_optimizers_from, default_optimizer
from zoo.safe_load import load_checkpoint
from zoo.tasks.classifier import Classifier

Mode = Literal["linear", "mlp", "finetune"]
TRAIN_HINT = "train one with `python -m zoo fit --config configs/masked_ae_conv_cifar.yaml`"


def load_pretrained_net(checkpoint: str | Path) -> nn.Module:
    """The autoencoder net of a MaskedAE checkpoint, with its weights as trained (loaded weights-only).

    Accepts today's checkpoints (the net recorded as ``class_path``/``init_args``, weights under ``net.``)
    and those written before the nets/tasks split (``zoo.masked_ae.MaskedAE``: flat hyperparameters,
    weights under ``encoder.``/``decoder.``), so the encoders of earlier studies stay usable unconverted.
    """
    path = Path(checkpoint)
    ckpt = load_checkpoint(path, "encoder_checkpoint", TRAIN_HINT)  # weights-only: a crafted file cannot run code
    hp = ckpt.get("hyper_parameters") or {}
    state = ckpt.get("state_dict") or {}
    config = hp.get("net") if isinstance(hp, dict) else None
    if any(k.startswith("net.") for k in state):
        if not (isinstance(config, dict) and isinstance(config.get("class_path"), str)):
            raise ValueError(f"encoder_checkpoint {path} does not record its net (no 'net' class_path among its "
                             "hyperparameters, as when the MaskedAE task is built from Python): write it with "
                             f"`python -m zoo fit`, e.g. {TRAIN_HINT[len('train one with '):]}")
        check_class_paths(config, path, "encoder_checkpoint")  # a zoo/torch class, or one already imported
        module_name, _, cls_name = config["class_path"].rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), cls_name)
        except (ImportError, AttributeError, ValueError) as e:
            raise ValueError(f"encoder_checkpoint {path}: its net {config['class_path']!r} cannot be imported "
                             f"({e})") from e
        net = cls(**(config.get("init_args") or {}))
        weights = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
    elif any(k.startswith("encoder.") for k in state):  # zoo.masked_ae.MaskedAE, before the split
        accepted = inspect.signature(MaskedAENet).parameters
        net = MaskedAENet(**{k: v for k, v in hp.items() if k in accepted})
        weights = {k: v for k, v in state.items() if k.startswith(("encoder.", "decoder."))}
    else:
        raise ValueError(f"encoder_checkpoint {path} is not a MaskedAE checkpoint (no 'net.encoder.*' or "
                         f"'encoder.*' weights): {TRAIN_HINT}")
    if not isinstance(getattr(net, "encoder", None), nn.Module):
        raise ValueError(f"encoder_checkpoint {path}: its net {type(net).__name__} has no 'encoder' module")
    try:
        net.load_state_dict(weights)
    except RuntimeError as e:
        raise ValueError(f"encoder_checkpoint {path}: the weights do not fit the recorded net ({e})") from e
    return net


def input_shape_of(net: nn.Module, path: str | Path = "encoder_checkpoint") -> tuple[int, ...]:
    shape = getattr(net, "input_shape", None)
    if shape is None and hasattr(net, "channels") and hasattr(net, "image_size"):
        shape = (net.channels, net.image_size, net.image_size)
    if shape is None:
        raise ValueError(f"{path}: the net {type(net).__name__} does not say its input shape (no input_shape, "
                         "or channels and image_size, attribute)")
    return tuple(int(s) for s in shape)


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


def default_augment() -> BatchAugment:
    """The fine-tuning augmentation of the studies: flips (0.5), contrast (0.2), shifts (0.1); the run's seed."""
    return BatchAugment(translate=0.1, hflip=0.5, contrast=0.2, value_range=(0.0, 1.0), padding_mode="reflection")


class TransferClassifier(Classifier):
    """Classifier on a pretrained MaskedAE encoder (``encoder_checkpoint``); see the module docstring.

    Args:
        encoder_checkpoint: path to a trained MaskedAE checkpoint whose encoder is loaded (also one written
            before the nets/tasks split).
        mode: "linear" (frozen encoder + linear probe), "mlp" (frozen encoder + MLP head) or "finetune" (train both).
        mlp_hidden: width of each hidden layer of the MLP head ("mlp" and "finetune" modes).
        mlp_layers: number of hidden layers of the MLP head (>= 1; "mlp" and "finetune" modes).
        dropout: dropout probability after each hidden layer of the MLP head (unused in "linear" mode).
        feature_batchnorm: batch-normalise the encoder features (no affine) before the head; keeps probes trainable.
        encoder_lr_scale: encoder learning rate as a multiple of the head's ("finetune" mode only; >= 0).
        augment: a module applied to each training batch's input (e.g. :class:`datamodules.augment.BatchAugment`);
            true: the studies' flips/contrast/shifts (:func:`default_augment`, built after the head so seeded
            runs of earlier versions reproduce); false/None: none.
        num_classes: number of classes.
        class_names: class labels for the test figures (num_classes entries); None: "0", "1", ...
        label_smoothing: label smoothing of the cross-entropy loss, in [0, 1).
        optimizer: optimizer factory applied to the trainable parameters; default AdamW(lr=1e-3, weight_decay=1e-4).
        scheduler: optional learning-rate scheduler factory, stepped once per epoch; None keeps the rate constant.
    """

    def __init__(self, encoder_checkpoint: str, mode: Mode = "linear", mlp_hidden: int = 512, mlp_layers: int = 3,
                 dropout: float = 0.2, feature_batchnorm: bool = True, encoder_lr_scale: float = 1.0,
                 augment: nn.Module | bool | None = None, num_classes: int = 10,
                 class_names: Sequence[str] | None = None, label_smoothing: float = 0.0,
                 optimizer: OptimizerCallable = default_optimizer,
                 scheduler: LRSchedulerCallable | None = None) -> None:
        if mlp_layers < 1:
            raise ValueError(f"mlp_layers must be >= 1, got {mlp_layers}")
        if encoder_lr_scale < 0:
            raise ValueError(f"encoder_lr_scale must be >= 0, got {encoder_lr_scale}")
        pretrained = load_pretrained_net(encoder_checkpoint)
        head = {"hidden": 0, "layers": 0} if mode == "linear" else {"hidden": mlp_hidden, "layers": mlp_layers}
        net = EncoderWithHead(pretrained.encoder, input_shape_of(pretrained, encoder_checkpoint), num_classes,
                              dropout=dropout, feature_batchnorm=feature_batchnorm,
                              freeze_encoder=mode != "finetune", **head)
        super().__init__(net, num_classes, class_names, label_smoothing,
                         augment if isinstance(augment, nn.Module) else None,
                         optimizer=optimizer, scheduler=scheduler)
        self.mode = mode
        self.encoder_lr_scale = encoder_lr_scale
        if augment is True:
            self.augment = default_augment()
        self.test_metrics.add_metrics({"auroc": MulticlassAUROC(num_classes, average="macro")})
        self.test_roc = MulticlassROC(num_classes, thresholds=200)

    @property
    def encoder(self) -> nn.Module:
        return self.net.encoder

    @property
    def frozen(self) -> bool:
        return self.net.frozen

    def _logits_and_target(self, batch):
        logits, y = super()._logits_and_target(batch)
        if compat.attached_trainer(self) is not None and self.trainer.testing:
            self.test_roc.update(logits.softmax(-1), y)
        return logits, y

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        fpr, tpr, _ = self.test_roc.compute()
        log_figure(self.trainer, "test/roc", roc_figure(fpr, tpr, self._report_names()))
        self.test_roc.reset()

    def configure_optimizers(self):
        scale = self.encoder_lr_scale
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
