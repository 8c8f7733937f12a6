"""transfer_cifar.yaml needs a MaskedAE checkpoint: build an untrained one with the config's encoder
architecture (conv, 32x32) in ``tmp_path``, and use a few real CIFAR-10 JPEGs per class."""

import lightning as L
import torch

from zoo.nets.masked_ae import MaskedAENet


def extra_args(tmp_path):
    args = {"architecture": "conv", "image_size": 32, "channels": 3, "conv_channels": [32, 64], "bottleneck": 64}
    net = MaskedAENet(**args)
    path = tmp_path / "masked_ae.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
                "hyper_parameters": {"_class_path": "zoo.tasks.masked_ae.MaskedAE", "mask_type": "patch",
                                     "net": {"class_path": "zoo.nets.masked_ae.MaskedAENet", "init_args": args}},
                "pytorch-lightning_version": L.__version__}, path)
    return ["--model.init_args.encoder_checkpoint", str(path), "--data.init_args.limit_per_class", "10"]
