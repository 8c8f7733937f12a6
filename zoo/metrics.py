"""Metrics several tasks and tools share, written once, low in the stack: a frozen zoo classifier as a
judge, its penultimate layer as FID features (no downloaded Inception weights needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from datamodules.mnist import normalize as to_model_input
from zoo.checkpoints import TRAIN_HINT, load_cli_checkpoint

Normalize = Literal["zero_one", "minus_one_one", "standard"]


def saved_normalization(data_hparams: dict) -> str | None:
    """How a checkpoint's DataModule normalised its inputs (``normalization``; ``normalize`` in older ones)."""
    value = data_hparams.get("normalization", data_hparams.get("normalize"))
    return value if isinstance(value, str) else None


def load_judge(path: str | Path | None, normalize: Normalize | None = None, what: str = "judge checkpoint",
               hint: str = TRAIN_HINT) -> tuple[nn.Module, Normalize]:
    """A frozen zoo classifier from a ``python -m zoo fit`` checkpoint (weights-only) and the input
    normalisation it was trained with: ``(model in eval mode without gradients, normalisation)``.

    ``normalize`` overrides the one the checkpoint's DataModule settings record; every failure names
    ``path`` and says what was expected.
    """
    if not path:
        raise ValueError(f"{what} is not set: {hint}")
    model, data_hparams = load_cli_checkpoint(path, what=what, hint=hint)
    normalize = normalize or saved_normalization(data_hparams)
    if normalize is None:
        raise ValueError(f"{what} {path} does not say how its inputs were normalised (no DataModule "
                         "'normalization' setting saved); pass the normalisation explicitly")
    model.eval().requires_grad_(False)
    return model, normalize


class ClassifierFeatures(nn.Module):
    """Penultimate-layer embedding of a frozen classifier, as a torchmetrics FID feature extractor.

    Input: ``(N, 1, 28, 28)`` float images in [0, 1] (the FID convention here); they are mapped to the
    classifier's own input normalisation first. Uses the net's ``features`` method when it has one
    (LeNet-5), else the input of its last ``nn.Linear``.
    """

    def __init__(self, classifier: nn.Module, normalize: Normalize) -> None:
        super().__init__()
        to_model_input(torch.zeros(1), normalize)  # validates the name
        self.classifier = classifier.eval()
        self.classifier.requires_grad_(False)
        self.input_normalize = normalize
        net = getattr(classifier, "net", classifier)  # a task wraps its net
        self._features = getattr(net, "features", None) if callable(getattr(net, "features", None)) else None
        linears = [m for m in classifier.modules() if isinstance(m, nn.Linear)]
        if self._features is None and not linears:
            raise ValueError(f"{type(net).__name__} has neither a features() method nor an nn.Linear "
                             "layer whose input could serve as the embedding")
        self._last_linear = linears[-1] if linears else None
        with torch.no_grad():
            self.num_features = int(self(torch.zeros(1, 1, 28, 28)).shape[-1])

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, normalize: Normalize | None = None) -> "ClassifierFeatures":
        return cls(*load_judge(checkpoint, normalize, what="FID feature checkpoint"))

    def train(self, mode: bool = True) -> "ClassifierFeatures":
        return super().train(False)  # a frozen judge: dropout/BN stay in eval mode inside any trainer

    @torch.no_grad()
    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        x = to_model_input(x01.float(), self.input_normalize)
        if self._features is not None:
            return self._features(x).flatten(1)
        captured = []
        handle = self._last_linear.register_forward_hook(lambda m, inp, out: captured.append(inp[0]))
        try:
            self.classifier(x)
        finally:
            handle.remove()
        return captured[0].flatten(1)


def classifier_fid(checkpoint: str | Path, normalize: Normalize | None = None) -> FrechetInceptionDistance:
    """FID whose features come from a zoo classifier checkpoint; ``update`` takes images in [0, 1]."""
    return FrechetInceptionDistance(feature=ClassifierFeatures.from_checkpoint(checkpoint, normalize),
                                    reset_real_features=True)
