"""Legacy checkpoint rules: the autoencoder family (see :mod:`zoo.tools.convert`).

``zoo.autoencoders.ConvAE`` / ``LSTMAE`` became :class:`zoo.tasks.autoencoder.Autoencoder` around
:class:`zoo.nets.autoencoders.ConvAutoencoder` (``loss: bce``) / ``LSTMAutoencoder`` (``loss: mse``);
``zoo.masked_ae.MaskedAE`` became :class:`zoo.tasks.masked_ae.MaskedAE` around
:class:`zoo.nets.masked_ae.MaskedAENet`; ``zoo.transfer.EncoderClassifier`` became
:class:`zoo.tasks.transfer.TransferClassifier`, whose net (encoder, feature norm, head) is
:class:`zoo.nets.masked_ae.EncoderWithHead`. Every weight moves under ``net.`` unchanged.
"""

from __future__ import annotations

import inspect
from typing import Any

from zoo.nets.autoencoders import ConvAutoencoder, LSTMAutoencoder
from zoo.nets.masked_ae import MaskedAENet
from zoo.tools.convert import prefix_keys, split_args


def _args(cls: type) -> list[str]:
    return [k for k in inspect.signature(cls).parameters if k != "self"]


def _autoencoder(net_cls: type, loss: str, renames: dict[str, str]):
    def rule(hparams: dict[str, Any], state_dict: dict[str, Any]):
        net, task = split_args(hparams, _args(net_cls))
        task = {renames.get(k, k): v for k, v in task.items()}
        return ({"_class_path": "zoo.tasks.autoencoder.Autoencoder",
                 "net": {"class_path": f"{net_cls.__module__}.{net_cls.__name__}", "init_args": net},
                 "loss": loss, **task}, prefix_keys(state_dict, "net."))
    return rule


def masked_ae(hparams: dict[str, Any], state_dict: dict[str, Any]):
    net, task = split_args(hparams, _args(MaskedAENet))
    return ({"_class_path": "zoo.tasks.masked_ae.MaskedAE",
             "net": {"class_path": "zoo.nets.masked_ae.MaskedAENet", "init_args": net}, **task},
            prefix_keys(state_dict, "net."))


AUGMENT_ARGS = ("hflip", "contrast", "translate", "augment_seed")


def encoder_classifier(hparams: dict[str, Any], state_dict: dict[str, Any]):
    """The augmentation flags become ``augment: true`` when they are the studies' defaults (built after the
    head, as before, so a seeded run reproduces), else an explicit BatchAugment."""
    task = {k: v for k, v in hparams.items() if k not in AUGMENT_ARGS}
    flags = {"hflip": hparams.get("hflip", 0.5), "contrast": hparams.get("contrast", 0.2),
             "translate": hparams.get("translate", 0.1), "seed": hparams.get("augment_seed")}
    if not hparams.get("augment"):
        task["augment"] = None
    elif flags == {"hflip": 0.5, "contrast": 0.2, "translate": 0.1, "seed": None}:
        task["augment"] = True
    else:
        task["augment"] = {"class_path": "datamodules.augment.BatchAugment", "init_args": {
            **flags, "value_range": [0.0, 1.0], "padding_mode": "reflection"}}
    return {"_class_path": "zoo.tasks.transfer.TransferClassifier", **task}, prefix_keys(state_dict, "net.")


RULES = {
    "zoo.autoencoders.ConvAE": _autoencoder(ConvAutoencoder, "bce", {"n_images": "num_figure_samples"}),
    "zoo.autoencoders.LSTMAE": _autoencoder(LSTMAutoencoder, "mse", {"n_plot": "num_figure_samples"}),
    "zoo.masked_ae.MaskedAE": masked_ae,
    "zoo.transfer.EncoderClassifier": encoder_classifier,
}
