"""transfer_cifar.yaml needs a MaskedAE checkpoint: build an untrained one with the config's encoder
architecture (conv, 32x32) in ``tmp_path``, and use a few real CIFAR-10 JPEGs per class."""

import lightning as L
import torch

from zoo.masked_ae import MaskedAE


def extra_args(tmp_path):
    ae = MaskedAE(architecture="conv", image_size=32, channels=3, conv_channels=[32, 64], bottleneck=64,
                  mask_type="patch", patch_size=4)
    path = tmp_path / "masked_ae.ckpt"
    torch.save({"state_dict": ae.state_dict(), "hyper_parameters": dict(ae.hparams),
                "pytorch-lightning_version": L.__version__}, path)
    return ["--model.init_args.encoder_checkpoint", str(path), "--data.init_args.limit_per_class", "10"]
