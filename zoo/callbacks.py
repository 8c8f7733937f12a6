"""Callbacks the CLI attaches by default."""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint


class BestCheckpoint(ModelCheckpoint):
    """Keeps the best checkpoint on the module's own metric, plus ``last.ckpt`` (nothing lost on a crash).

    Each LightningModule declares what "best" means with a ``monitor = ("val/acc", "max")`` class
    attribute, so one default callback serves classifiers and autoencoders alike; ``monitor = None``
    means "no metric to select on" and keeps ``last.ckpt`` only. An explicit ``monitor`` argument wins.

    Args:
        monitor: metric that picks the best checkpoint; None (default): the module's own ``monitor``.
        mode: "min" or "max" for an explicit ``monitor``; otherwise the module's own mode is used.
        save_last: also keep ``last.ckpt``, rewritten every epoch.
        save_top_k: how many best checkpoints to keep.
        filename: name pattern of the best checkpoint.
    """

    def __init__(self, monitor: str | None = None, mode: str = "min", save_last: bool = True,
                 save_top_k: int = 1, filename: str = "best-epoch{epoch:02d}", **kwargs) -> None:
        super().__init__(monitor=monitor, mode=mode, save_last=save_last, save_top_k=save_top_k,
                         filename=filename, auto_insert_metric_name=False, **kwargs)
        self._explicit = monitor is not None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if not self._explicit and getattr(pl_module, "monitor", ()) is None:
            # the module has no held-out metric worth selecting on: keep last.ckpt only
            self.monitor, self.save_top_k = None, 0
        elif not self._explicit and hasattr(pl_module, "monitor"):
            metric, mode = pl_module.monitor
            if mode not in ("min", "max"):
                raise ValueError(f"{type(pl_module).__name__}.monitor mode must be 'min' or 'max', got {mode!r}")
            self.monitor, self.mode = metric, mode
            self.kth_value = torch.tensor(float("inf") if mode == "min" else -float("inf"))
            self.best_model_score = None
        super().setup(trainer, pl_module, stage)

    # Lightning 2.6 writes last.ckpt only in a step that also wrote a top-k checkpoint, so after the
    # best epoch (or always, in last-only mode) last.ckpt would stop moving. Write it here, at the
    # same point of every epoch, unless this step already saved: a crash loses at most one epoch.
    def _ensure_last(self, trainer, at_train_epoch_end: bool) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer) \
                and self._should_save_on_train_epoch_end(trainer) == at_train_epoch_end:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._ensure_last(trainer, at_train_epoch_end=True)

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        self._ensure_last(trainer, at_train_epoch_end=False)

    def on_train_end(self, trainer, pl_module) -> None:
        # Lightning 2.6 writes last.ckpt here even under fast_dev_run ("checkpointing is suppressed"),
        # which let a smoke test replace the last.ckpt of a real run in the same folder
        if not trainer.fast_dev_run:
            super().on_train_end(trainer, pl_module)


class SafeLearningRateMonitor(LearningRateMonitor):
    """LearningRateMonitor that stays quiet (instead of raising) when logging is turned off."""

    def on_train_start(self, trainer, *args, **kwargs) -> None:
        self._disabled = not trainer.loggers
        if not self._disabled:
            super().on_train_start(trainer, *args, **kwargs)

    def on_train_batch_start(self, trainer, *args, **kwargs) -> None:
        if not getattr(self, "_disabled", False):
            super().on_train_batch_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer, *args, **kwargs) -> None:
        if not getattr(self, "_disabled", False):
            super().on_train_epoch_start(trainer, *args, **kwargs)
