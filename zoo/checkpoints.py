"""Load any checkpoint written by ``python -m zoo fit`` without knowing its class in advance.

LightningCLI records the model's class as the ``_class_path`` hyperparameter and the DataModule's
settings (e.g. how inputs were normalised) as ``datamodule_hyper_parameters``; a judge or feature
network for another experiment needs both. Loading is weights-only (:mod:`zoo.safe_load`), and the
class must be the zoo's own (or already imported): a crafted file can neither run code on unpickling
nor make us import an arbitrary module.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import lightning as L

from zoo.safe_load import load_checkpoint, load_module

TRUSTED = ("zoo", "datamodules", "torch")
# classes of zoo < 0.2 (one LightningModule per network); zoo.tools.convert has their conversion rules
LEGACY_CLASSES = frozenset({
    "zoo.audio_cnn.CNN", "zoo.audio_cnn.CBAMNet", "zoo.image_classifier.ImageClassifier",
    "zoo.mnist_classifiers.LeNet5", "zoo.mnist_classifiers.MnistCNN", "zoo.mnist_classifiers.SpatialAttentionCNN",
    "zoo.transfer.EncoderClassifier", "zoo.dcgan.DCGAN", "zoo.autoencoders.ConvAE", "zoo.autoencoders.LSTMAE",
    "zoo.masked_ae.MaskedAE", "zoo.audio_to_image.AudioToImageVAE", "zoo.mfcc_repr.MeanMFCC",
    "zoo.mfcc_repr.FlatAE", "zoo.mfcc_repr.GreedyPairAE", "zoo.mfcc_repr.SequentialAE", "zoo.mfcc_repr.MFCCStatsSVM",
})
TRAIN_HINT = "e.g. the best checkpoint of `python -m zoo fit --config configs/lenet_mnist.yaml`"


def load_cli_checkpoint(path: str | Path, base: type = L.LightningModule, what: str = "checkpoint",
                        hint: str = TRAIN_HINT, map_location: str = "cpu") -> tuple[L.LightningModule, dict]:
    """Returns ``(model in eval mode, DataModule hyperparameters)``; every failure names ``path``."""
    ckpt = load_checkpoint(path, what, hint, map_location)
    hp = ckpt.get("hyper_parameters") or {}
    class_path = hp.get("_class_path") if isinstance(hp, dict) else None
    if not isinstance(class_path, str) or not class_path or "state_dict" not in ckpt:
        raise ValueError(f"{what} {path} does not record its model class (no '_class_path' hyperparameter or no "
                         f"state_dict); expected a checkpoint written by `python -m zoo fit`: {hint}")
    refuse_legacy(hp, path, what)
    check_class_paths(hp, path, what)
    module_name, _, cls_name = class_path.rpartition(".")
    if module_name.partition(".")[0] not in TRUSTED and module_name not in sys.modules:
        raise ValueError(f"{what} {path} names class {class_path!r}, which is neither a zoo class nor imported; "
                         f"import its module before loading if you trust it")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError(f"{what} {path} names class {class_path!r}, which cannot be imported ({e})") from e
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(f"{what} {path} names {class_path!r}, which is not a {base.__name__}")
    model = load_module(cls, path, what, hint, map_location)
    return model.eval(), dict(ckpt.get("datamodule_hyper_parameters") or {})


def check_class_paths(hparams, path, what: str = "checkpoint") -> None:
    """Refuse a checkpoint whose hyperparameters name a class (a net, an optimizer) outside the zoo,
    ``datamodules`` and torch that is not already imported: instantiating it would import any module."""
    if isinstance(hparams, dict):
        name = hparams.get("class_path")
        if isinstance(name, str) and name.partition(".")[0] not in TRUSTED \
                and name.rpartition(".")[0] not in sys.modules:
            raise ValueError(f"{what} {path} names class {name!r}, which is neither a zoo nor a torch class nor "
                             f"imported; import its module before loading if you trust it")
        for value in hparams.values():
            check_class_paths(value, path, what)
    elif isinstance(hparams, (list, tuple)):
        for value in hparams:
            check_class_paths(value, path, what)


def refuse_legacy(hparams, path, what: str = "checkpoint") -> None:
    """A checkpoint of zoo < 0.2 (one LightningModule per network) fails with the command that converts it;
    every loader (the CLI's ``--ckpt_path``, :func:`load_cli_checkpoint`, ``load_gan``) calls this."""
    old = hparams.get("_class_path") if isinstance(hparams, dict) else None
    if old in LEGACY_CLASSES:
        raise ValueError(f"{what} {path} was written before the zoo split networks from tasks (its class {old} "
                         f"no longer exists); convert it once with `python -m zoo.tools.convert_checkpoint --src "
                         f"{path} --dst NEW.ckpt` and use NEW.ckpt")
