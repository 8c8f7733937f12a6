"""What every task shares: saving hyperparameters when some arguments are nets."""

from __future__ import annotations

import inspect
import warnings

import lightning as L
from torch import nn


def save_task_hyperparameters(module: L.LightningModule) -> None:
    """``save_hyperparameters()`` for a task whose arguments include ``nn.Module`` s (its ``net``).

    Under LightningCLI the hyperparameters are the config, so a net is saved as its ``class_path`` and
    ``init_args`` and ``load_from_checkpoint`` rebuilds it. A net passed from Python is a live object:
    it is left out (its weights are in the state dict, and pickling it would make the checkpoint
    impossible to load weights-only); pass it again: ``Classifier.load_from_checkpoint(path, net=ConvNet())``.
    """
    frame = inspect.currentframe().f_back
    with warnings.catch_warnings():  # "Attribute 'net' is an instance of nn.Module": handled just below
        warnings.filterwarnings("ignore", message=r"Attribute '\w+' is an instance of `nn.Module`")
        module.save_hyperparameters(frame=frame)
    for hp in (module._hparams, getattr(module, "_hparams_initial", None)):
        if hp is None:
            continue
        for key in [k for k, v in hp.items() if isinstance(v, nn.Module)]:
            del hp[key]
