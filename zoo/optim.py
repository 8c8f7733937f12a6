"""Default optimizers and the one place that turns CLI-injected optimizer/scheduler factories into
Lightning's ``configure_optimizers`` value. Low in the stack: weights-only loading allowlists these
factories (:mod:`zoo.safe_load`), and every task uses them."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable


def default_optimizer(params) -> torch.optim.Optimizer:
    """AdamW(lr=1e-3, weight_decay=1e-4): the default of every task whose config names none."""
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)


def dcgan_adam(params) -> torch.optim.Optimizer:
    """The DCGAN paper's optimizer: Adam, lr 2e-4, beta1 0.5 (beta1 0.9 makes GAN training oscillate)."""
    return torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999))


def configure_optimizers_from(module: L.LightningModule, optimizer: OptimizerCallable,
                              scheduler: LRSchedulerCallable | None, params=None) -> Any:
    """Build the optimizer (and an optional per-epoch scheduler) from CLI-injected callables.

    A ``ReduceLROnPlateau`` watches the module's ``monitor`` metric."""
    opt = optimizer(module.parameters() if params is None else params)
    if scheduler is None:
        return opt
    sched = scheduler(opt)
    config = {"scheduler": sched, "interval": "epoch"}
    if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
        config["monitor"] = module.monitor[0]
    return {"optimizer": opt, "lr_scheduler": config}
