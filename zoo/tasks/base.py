"""What every task shares: saving hyperparameters when some arguments are nets."""

from __future__ import annotations

import inspect
import warnings

import lightning as L
from torch import nn

from zoo import compat


def save_task_hyperparameters(module: L.LightningModule) -> None:
    """``save_hyperparameters()`` for a task whose arguments include ``nn.Module`` s (its ``net``).

    Under LightningCLI the hyperparameters are the config, so a net is saved as its ``class_path`` and
    ``init_args`` and ``load_from_checkpoint`` rebuilds it. A net passed from Python is a live object:
    it is left out (its weights are in the state dict, and pickling it would make the checkpoint
    impossible to load weights-only); pass it again: ``Classifier.load_from_checkpoint(path, net=ConvNet())``.
    Only arguments of the module's own class are kept (call it once, from the base task's ``__init__``).
    """
    frame = inspect.currentframe().f_back
    with warnings.catch_warnings():  # "Attribute 'net' is an instance of nn.Module": handled just below
        warnings.filterwarnings("ignore", message=r"Attribute '\w+' is an instance of `nn.Module`")
        module.save_hyperparameters(frame=frame)
    # from Python, Lightning also records the arguments of every __init__ up the class chain; a subclass that
    # fixes or drops one of its base's arguments must not get it back from load_from_checkpoint
    params = inspect.signature(type(module).__init__).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    drop = [k for k, v in module.hparams.items() if isinstance(v, nn.Module)
            or (not takes_any and k not in params and not k.startswith("_"))]
    for key in drop:
        del module.hparams[key]
    compat.forget_initial_hparams(module, drop)
