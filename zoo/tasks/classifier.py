"""Classifier: the task that trains any classification net with the zoo's metric-name contract.

The net (:mod:`zoo.nets`) maps a batch's input to logits; this task owns the loss, one torchmetrics
instance per stage, optional train-time batch augmentation, the optimizer wiring and the test-time
confusion-matrix figure and per-class table. Metric names are a contract across the zoo:
``train/loss``, ``train/acc``, ``val/loss``, ``val/acc``, ``test/loss``, ``test/acc``, ``test/f1``,
``test/balanced_acc``.
"""

from __future__ import annotations

from typing import Sequence

import lightning as L
import torch
import torch.nn.functional as F
from jsonargparse.typing import NonNegativeFloat, NonNegativeInt
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)

from zoo import compat
from zoo.figures import confusion_matrix_figure, log_figure, shown_class_names
from zoo.optim import configure_optimizers_from, default_optimizer
from zoo.tasks.base import save_task_hyperparameters


def step_is_shown(module: L.LightningModule) -> bool:
    """Whether a per-step value logged now would be seen: by the logger (every ``log_every_n_steps``,
    and on fast_dev_run), or by a progress bar.

    ``LightningModule.log`` costs about 1 ms per call (Lightning re-homes its result state each
    time), as much as a whole LeNet-5 step on one CPU core; skipping calls nobody reads is what keeps
    ``python -m zoo fit`` close to a hand-written loop (``benchmarks/bench_lenet_loop.py``).
    """
    trainer = compat.attached_trainer(module)
    if trainer is None or trainer.progress_bar_callback is not None or trainer.fast_dev_run:
        return True
    return compat.logger_updates_now(trainer)


class Classifier(L.LightningModule):
    """Cross-entropy classification of any net with the zoo's metrics and figures.

    Batches are tuples whose first element is the input and whose last is the target; anything in
    between (e.g. sequence lengths) is passed to the net as extra arguments.

    Args:
        net: the network, input -> ``(N, num_classes)`` logits (e.g. :class:`zoo.nets.convnet.ConvNet`).
        num_classes: number of classes; None: the net's ``num_classes`` attribute.
        class_names: class labels for the confusion-matrix figure and the per-class table; None: the
            DataModule's ``class_names`` when it has one per class (so a config that leaves them out still
            reports "female", "male"), else "0", "1", ...
        label_smoothing: label smoothing of the cross-entropy loss, in [0, 1); 0 disables it.
        augment: a module applied to each training batch's input only (e.g.
            :class:`datamodules.augment.BatchAugment`); None: no augmentation.
        optimizer: optimizer factory applied to the model parameters; default AdamW(lr=1e-3, weight_decay=1e-4).
        scheduler: optional learning-rate scheduler factory, stepped once per epoch; None keeps the rate constant.
        mixup: mixup's alpha (Zhang et al., 2018): each training input becomes ``lam * x + (1 - lam) * x'``
            with another input ``x'`` of the batch and ``lam ~ Beta(alpha, alpha)`` drawn per sample, and the
            loss mixes the two targets the same way; 0 disables it. For fixed-size inputs only (not
            variable-length sequences). Why: it keeps the net from memorising each training voice.
        extra_classes: outputs of the net after the first ``num_classes`` that only training labels use: classes
            another corpus adds to the training data to widen what the net hears (``SpokenDigits(add_corpus=...)``
            puts its words at labels 10-19). Validation, test and predict read the first ``num_classes`` logits
            only, so the extra classes are never predicted. 0: the net's outputs are the classes.
    """

    monitor = ("val/acc", "max")

    def __init__(self, net: nn.Module, num_classes: int | None = None, class_names: Sequence[str] | None = None,
                 label_smoothing: float = 0.0, augment: nn.Module | None = None,
                 optimizer: OptimizerCallable = default_optimizer, scheduler: LRSchedulerCallable | None = None,
                 mixup: NonNegativeFloat = 0.0, extra_classes: NonNegativeInt = 0) -> None:
        super().__init__()
        save_task_hyperparameters(self)
        if extra_classes < 0:
            raise ValueError(f"Classifier: extra_classes must be >= 0, got {extra_classes}")
        net_classes = getattr(net, "num_classes", None)
        if num_classes is None:
            if not isinstance(net_classes, int):
                raise ValueError(f"Classifier: set num_classes; the net {type(net).__name__} has no integer "
                                 "num_classes attribute to take it from")
            num_classes = net_classes - extra_classes
        elif isinstance(net_classes, int) and net_classes != num_classes + extra_classes:
            raise ValueError(f"Classifier: num_classes={num_classes} + extra_classes={extra_classes} but the net "
                             f"{type(net).__name__} has num_classes={net_classes} outputs; set the net's "
                             f"(--model.net.num_classes {num_classes + extra_classes})")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.net = net
        self.augment = augment
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        if len(self.class_names) != num_classes:
            raise ValueError(f"class_names has {len(self.class_names)} entries but num_classes={num_classes}")
        self.label_smoothing = label_smoothing
        if mixup < 0:  # the CLI checks the type; a script may not
            raise ValueError(f"Classifier: mixup is Beta's alpha and must be >= 0, got {mixup}")
        self.mixup = mixup
        self.extra_classes = extra_classes
        self.optimizer = optimizer
        self.scheduler = scheduler
        # no per-step input checks on the train metric (they cost as much as a small model's step);
        # val/test keep them, and a bad target still fails in cross_entropy first
        self.train_acc = MulticlassAccuracy(num_classes + extra_classes, average="micro", validate_args=False)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_metrics = MetricCollection({
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
            "balanced_acc": MulticlassAccuracy(num_classes, average="macro"),
        }, prefix="test/")
        self.test_confusion = MulticlassConfusionMatrix(num_classes)

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        return self.net(x, *extra)

    # --- shared steps ---------------------------------------------------------------------
    def _logits_and_target(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        x, *extra, y = batch
        return self(x, *extra), y

    def _eval_logits_and_target(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Validation, test and predict: the task's own classes only (not the training-only extra ones).

        An input that comes as a list holds views of the same samples (test-time augmentation by the data,
        e.g. ``SpokenDigits(test_warps=...)``): the result is the log of the mean of their class
        probabilities, so softmax, argmax and the loss read the averaged prediction."""
        x, *extra, y = batch
        if not isinstance(x, (list, tuple)):
            return self(x, *extra)[:, :self.num_classes], y
        views = len(x)  # one forward pass over all views: a batch V times as large, not V small ones
        logits = self(torch.cat(list(x)), *(torch.cat([e] * views) for e in extra))[:, :self.num_classes]
        probs = logits.float().softmax(-1).unflatten(0, (views, -1)).mean(0)
        return probs.clamp_min(torch.finfo(probs.dtype).tiny).log(), y

    def on_fit_start(self) -> None:
        """Catch a datamodule that adds training-only classes the task was not told about (or the reverse)
        before the first step fails on an out-of-range label."""
        added = getattr(self.trainer.datamodule, "extra_class_names", None)
        if added is not None and len(added) != self.extra_classes:
            raise ValueError(f"Classifier: the data adds {len(added)} training-only classes but extra_classes="
                             f"{self.extra_classes}; set --model.init_args.extra_classes {len(added)} and the net's "
                             f"num_classes to {self.num_classes + len(added)}")

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        if self.augment is not None:
            x, *rest = batch
            batch = (self.augment(x), *rest)
        if self.mixup > 0:
            loss, logits, y = self._mixup_loss(batch)
        else:
            logits, y = self._logits_and_target(batch)
            loss = self._loss(logits, y)
        self.train_acc.update(logits.detach(), y)  # epoch-level metric: computed once in on_train_epoch_end
        if step_is_shown(self):
            self.log("train/loss", loss.detach(), prog_bar=True, batch_size=y.shape[0])
        return loss

    def _mixup_loss(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss, logits and, per sample, the class of the larger share (for the train accuracy)."""
        x, *extra, y = batch
        if extra:
            raise ValueError(f"Classifier: mixup={self.mixup} mixes whole inputs; batches with extra inputs (e.g. "
                             f"sequence lengths) cannot be mixed: use mixup: 0 with this data")
        lam = torch.distributions.Beta(self.mixup, self.mixup).sample((x.shape[0],)).to(x.device)
        other = torch.randperm(x.shape[0], device=x.device)
        share = lam.view(-1, *[1] * (x.dim() - 1)).to(x.dtype)
        logits = self(share * x + (1 - share) * x[other])
        ce = lambda target: F.cross_entropy(logits, target, label_smoothing=self.label_smoothing, reduction="none")  # noqa: E731
        loss = (lam * ce(y) + (1 - lam) * ce(y[other])).mean()
        return loss, logits, torch.where(lam >= 0.5, y, y[other])

    def on_train_epoch_end(self) -> None:
        if self.train_acc.update_count:  # none in epochs that train no classifier (AE pretraining)
            self.log("train/acc", self.train_acc.compute())  # compute() syncs across DDP processes
            self.train_acc.reset()

    def validation_step(self, batch, batch_idx: int) -> None:
        logits, y = self._eval_logits_and_target(batch)
        self.val_acc(logits, y)
        self.log("val/loss", self._loss(logits, y), prog_bar=True, batch_size=y.shape[0], sync_dist=True)
        self.log("val/acc", self.val_acc, prog_bar=True, batch_size=y.shape[0])

    def test_step(self, batch, batch_idx: int) -> None:
        logits, y = self._eval_logits_and_target(batch)
        self.test_metrics(logits, y)
        self.test_confusion(logits, y)
        self.log("test/loss", self._loss(logits, y), batch_size=y.shape[0], sync_dist=True)
        self.log_dict(self.test_metrics, batch_size=y.shape[0])

    def on_test_epoch_end(self) -> None:
        cm = self.test_confusion.compute()
        self.last_test_confusion = cm.tolist()  # for the results file: per-fold matrices of a study
        names = self._report_names()
        self.last_test_per_class = per_class_report(cm, names)
        # the per-class table as logged values (test/precision/<class>, test/recall/..., test/f1/...): any
        # logger shows it, and W&B can compare a class across runs; a class never predicted has no precision
        self.log_dict({f"test/{key}/{name}": row[key] for name, row in self.last_test_per_class.items()
                       for key in ("precision", "recall", "f1") if row[key] is not None})
        log_figure(self.trainer, "test/confusion_matrix", confusion_matrix_figure(cm, names))
        self.test_confusion.reset()

    def _report_names(self) -> list[str]:
        """The class names results and figures use (:func:`zoo.figures.shown_class_names`)."""
        return shown_class_names(self.class_names, getattr(self.trainer.datamodule, "class_names", None),
                                 self.num_classes)

    def predict_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        logits, y = self._eval_logits_and_target(batch)
        return {"probs": logits.softmax(-1), "pred": logits.argmax(-1), "target": y}

    def configure_optimizers(self):
        return configure_optimizers_from(self, self.optimizer, self.scheduler)


def per_class_report(cm: torch.Tensor, class_names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support of each class from a confusion matrix (rows: true class), the
    table a results file carries next to the averages (None where a class was never predicted/present)."""
    cm = cm.double()
    tp, predicted, actual = cm.diag(), cm.sum(0), cm.sum(1)
    report = {}
    for i, name in enumerate(class_names):
        p = float(tp[i] / predicted[i]) if predicted[i] else None
        r = float(tp[i] / actual[i]) if actual[i] else None
        f1 = 2 * p * r / (p + r) if p is not None and r is not None and p + r > 0 else None
        report[str(name)] = {"precision": p, "recall": r, "f1": f1, "support": int(actual[i])}
    return report
