"""Legacy checkpoint rules: the GAN family (``zoo.dcgan.DCGAN`` became :class:`zoo.tasks.gan.GAN` around a
:class:`zoo.nets.dcgan.Generator` and a :class:`zoo.nets.dcgan.Discriminator`).

The nets kept their sub-module names (``generator.project``, ``discriminator.net``, ...), so the state dict
is unchanged; the old flat arguments are split between the nets and the task.
"""

from __future__ import annotations

from typing import Any

GAN = "zoo.tasks.gan.GAN"
GENERATOR = "zoo.nets.dcgan.Generator"
DISCRIMINATOR = "zoo.nets.dcgan.Discriminator"
# old DCGAN arguments that now belong to the nets (and are gone from the task)
NET_ARGS = ("architecture", "latent_dim", "image_channels", "width", "conditional", "num_classes", "conditioning",
            "dropout", "spectral_norm")
# callables old checkpoints name by their pre-split dotted path
RENAMED = {"zoo.dcgan.dcgan_adam": "zoo.optim.dcgan_adam"}


def _renamed(value: Any) -> Any:
    if isinstance(value, str):
        return RENAMED.get(value, value)
    if isinstance(value, dict):
        return {k: _renamed(v) for k, v in value.items()}
    return value


def dcgan(hparams: dict[str, Any], state_dict: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``DCGAN(architecture, latent_dim, image_channels, width, conditional, num_classes, conditioning,
    dropout, spectral_norm, ...)`` -> ``GAN(generator=Generator(...), discriminator=Discriminator(...), ...)``."""
    arch = hparams.get("architecture", "mnist28")
    channels, width = hparams.get("image_channels", 1), hparams.get("width", 64)
    classes = hparams.get("num_classes", 10) if hparams.get("conditional", False) else 0
    generator = {"architecture": arch, "latent_dim": hparams.get("latent_dim", 100), "channels": channels,
                 "width": width, "num_classes": classes}
    discriminator = {"architecture": arch, "channels": channels, "width": width, "num_classes": classes,
                     "conditioning": hparams.get("conditioning", "concat"), "dropout": hparams.get("dropout"),
                     "spectral_norm": hparams.get("spectral_norm", False)}
    task = {k: _renamed(v) for k, v in hparams.items() if k not in NET_ARGS}
    return ({"_class_path": GAN, "generator": {"class_path": GENERATOR, "init_args": generator},
             "discriminator": {"class_path": DISCRIMINATOR, "init_args": discriminator}, **task},
            dict(state_dict))


RULES = {"zoo.dcgan.DCGAN": dcgan}
