"""Load any checkpoint written by ``python -m zoo fit`` without knowing its class in advance.

LightningCLI records the model's class as the ``_class_path`` hyperparameter and the DataModule's
settings (e.g. how inputs were normalised) as ``datamodule_hyper_parameters``; a judge or feature
network for another experiment needs both.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import lightning as L
import torch

TRAIN_HINT = "e.g. the best checkpoint of `python -m zoo fit --config configs/lenet_mnist.yaml`"


def load_cli_checkpoint(path: str | Path, base: type = L.LightningModule, what: str = "checkpoint",
                        hint: str = TRAIN_HINT, map_location: str = "cpu") -> tuple[L.LightningModule, dict]:
    """Returns ``(model in eval mode, DataModule hyperparameters)``; every failure names ``path``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist: {hint}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ValueError(f"{what} {path} is not a readable checkpoint ({e}): {hint}") from e
    hp = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else {}
    class_path = hp.get("_class_path")
    if not class_path or "state_dict" not in ckpt:
        raise ValueError(f"{what} {path} does not record its model class (no '_class_path' hyperparameter or no "
                         f"state_dict); expected a checkpoint written by `python -m zoo fit`: {hint}")
    module_name, _, cls_name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{what} {path} names class {class_path!r}, which cannot be imported ({e})") from e
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(f"{what} {path} names {class_path!r}, which is not a {base.__name__}")
    try:
        model = cls.load_from_checkpoint(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{what} {path} failed to load as {class_path} ({e})") from e
    return model.eval(), dict(ckpt.get("datamodule_hyper_parameters") or {})
