"""Speed options any config can switch on from the command line, without touching a model's code.

* :class:`TorchCompile` -- ``torch.compile`` the module's ``forward`` (or named sub-networks) in place::

      python -m zoo fit --config configs/lenet_reduced_mnist.yaml --trainer.callbacks+=zoo.compile.TorchCompile
      python -m zoo fit --config configs/dcgan_mnist.yaml --trainer.callbacks+=zoo.compile.TorchCompile \\
          --trainer.callbacks.submodules='[generator, discriminator]'

* :class:`ChannelsLast` -- NHWC memory layout for the convolutional nets that have no ``channels_last``
  option of their own (tensor-core convolutions on GPUs prefer it).

Both act in ``setup``, before Lightning moves the module to its device and builds the optimizers, and
change neither the parameters nor the checkpoint keys: a run with them saves checkpoints that load
without them.
"""

from __future__ import annotations

from typing import Literal

import torch
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_info
from lightning_utilities.core.apply_func import apply_to_collection
from torch import nn


class TorchCompile(Callback):
    """Compile the LightningModule's ``forward`` (``nn.Module.compile``: in place, so ``state_dict`` keys and
    checkpoints stay those of the eager module), or each of ``submodules`` instead.

    Why a callback, not a model option: every model gets it the same way, from any config. The zoo's
    steps call ``self(x)``, so compiling ``forward`` covers training, validation and test; a module whose
    steps call its sub-networks directly (the DCGAN's generator and discriminator) names them in
    ``submodules``. The first step of each mode (train / eval) and batch shape pays the compilation.

    Args:
        mode: ``torch.compile`` mode: "default", "reduce-overhead" (CUDA graphs) or "max-autotune".
        backend: compiler backend ("inductor"; "eager" or "aot_eager" to debug graph capture without compiling).
        fullgraph: fail on a graph break instead of falling back to Python for that part.
        dynamic: compile for dynamic shapes (None: torch decides, after a shape first changes).
        submodules: names of child modules to compile instead of the whole module's ``forward``.
    """

    def __init__(self, mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
                 = "default", backend: str = "inductor", fullgraph: bool = False, dynamic: bool | None = None,
                 submodules: list[str] | None = None) -> None:
        self.kwargs = dict(mode=mode, backend=backend, fullgraph=fullgraph, dynamic=dynamic)
        self.submodules = list(submodules or [])
        self.compiled: list[str] = []

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.compiled:  # fit then test: compiled once
            return
        targets = {name: getattr(pl_module, name, None) for name in self.submodules} or {"forward": pl_module}
        bad = [name for name, m in targets.items() if not isinstance(m, nn.Module)]
        if bad:
            raise ValueError(f"TorchCompile: {type(pl_module).__name__} has no sub-module(s) {bad}; children: "
                             f"{[n for n, _ in pl_module.named_children()]}")
        for module in targets.values():
            module.compile(**self.kwargs)
        self.compiled = list(targets)
        rank_zero_info(f"TorchCompile: compiled {type(pl_module).__name__} {', '.join(self.compiled)} ({self.kwargs})")


def has_conv2d(module: nn.Module) -> bool:
    return any(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in module.modules())


def _standard_layout(module: nn.Module, args, output):
    return apply_to_collection(output, torch.Tensor, lambda t: t.contiguous() if t.dim() == 4 else t)


class ChannelsLast(Callback):
    """Convert a convolutional module's 4-d parameters to channels-last (NHWC) memory format.

    Convolutions then run, and hand on, channels-last activations whatever the input's layout, so the
    model's code is untouched; what the module's ``forward`` returns is made contiguous again, because
    code after it (losses, torchmetrics' ``view(-1)``) may assume the standard layout. Models with their
    own ``channels_last`` option (:class:`zoo.nets.convnet.ConvNet`, also as a task's ``net``) are left to it, and nets
    without 2-d convolutions are left alone. ``applied`` says what was done: "native" (the model's
    option), "callback", or "no conv".
    """

    def __init__(self) -> None:
        self.applied: str | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        own = getattr(pl_module, "channels_last", getattr(getattr(pl_module, "net", None), "channels_last", None))
        if own is not None:
            self.applied = "native" if own else "native option off"
        elif has_conv2d(pl_module):
            pl_module.to(memory_format=torch.channels_last)
            pl_module.register_forward_hook(_standard_layout)
            self.applied = "callback"
        else:
            self.applied = "no conv"
