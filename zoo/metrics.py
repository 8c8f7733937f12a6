"""Metrics several tasks and tools share, written once, low in the stack: a frozen zoo classifier as a
judge, its penultimate layer as FID features (no downloaded Inception weights needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric
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
    model, normalize, _ = _load_judge_with_data(path, normalize, what, hint)
    return model, normalize


def _load_judge_with_data(path, normalize, what, hint) -> tuple[nn.Module, Normalize, dict]:
    if not path:
        raise ValueError(f"{what} is not set: {hint}")
    model, data_hparams = load_cli_checkpoint(path, what=what, hint=hint)
    normalize = normalize or saved_normalization(data_hparams)
    if normalize is None:
        raise ValueError(f"{what} {path} does not say how its inputs were normalised (no DataModule "
                         "'normalization' setting saved); pass the normalisation explicitly")
    model.eval().requires_grad_(False)
    return model, normalize, data_hparams


class ClassifierFeatures(nn.Module):
    """Penultimate-layer embedding of a frozen classifier, as a torchmetrics FID feature extractor.

    Input: ``(N, C, H, W)`` float images in [0, 1] (the FID convention here); they are brought to the
    classifier's ``input_shape`` first (bilinear, antialiased resize; gray <-> RGB by repeating / averaging
    channels), so a CIFAR-10 ConvNet can judge 64x64 faces, then mapped to the classifier's own input
    normalisation. Uses the net's ``features`` method when it has one (LeNet-5), else the input of its
    last ``nn.Linear``.
    """

    def __init__(self, classifier: nn.Module, normalize: Normalize,
                 input_shape: tuple[int, int, int] = (1, 28, 28)) -> None:
        super().__init__()
        to_model_input(torch.zeros(1), normalize)  # validates the name
        if len(input_shape) != 3 or input_shape[0] not in (1, 3) or min(input_shape) < 1:
            raise ValueError(f"ClassifierFeatures: input_shape must be (channels 1 or 3, height, width), got {input_shape}")
        self.input_shape = tuple(int(v) for v in input_shape)
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
            self.num_features = int(self(torch.zeros(1, *self.input_shape)).shape[-1])

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, normalize: Normalize | None = None) -> "ClassifierFeatures":
        """The judge and the input shape its DataModule trained it on (``image_channels`` / ``image_size``
        of an image-folder run; 1x28x28 for MNIST runs, which record neither)."""
        model, normalize, data = _load_judge_with_data(checkpoint, normalize, "FID feature checkpoint", TRAIN_HINT)
        size = int(data.get("image_size") or 28)
        channels = int(data.get("image_channels") or (3 if data.get("image_size") else 1))
        return cls(model, normalize, (channels, size, size))

    def _to_input_shape(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"ClassifierFeatures expects images (N, 1 or 3, H, W) in [0, 1], got {tuple(x.shape)}")
        c, h, w = self.input_shape
        if x.shape[1] != c:
            x = x.expand(-1, 3, -1, -1) if c == 3 else x.mean(1, keepdim=True)
        if tuple(x.shape[2:]) != (h, w):
            x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
        return x

    def train(self, mode: bool = True) -> "ClassifierFeatures":
        return super().train(False)  # a frozen judge: dropout/BN stay in eval mode inside any trainer

    @torch.no_grad()
    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        x = to_model_input(self._to_input_shape(x01.float()), self.input_normalize)
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


class SampleDiversity(Metric):
    """Mean pairwise L2 distance between generated images, over the same for real images (pairs within
    each batch): about 1 when a generator's samples vary as much as the data, towards 0 when it collapses
    to one image or a flat colour. A cheap collapse alarm that needs no feature network; noise-like
    samples still score high, which FID catches instead.

    ``update(images, real)`` takes real or generated batches of any shape ``(N, ...)``, in one range.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in ("real_sum", "real_pairs", "fake_sum", "fake_pairs"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, images: torch.Tensor, real: bool) -> None:
        if images.shape[0] < 2:
            return
        d = torch.pdist(images.detach().flatten(1).double())
        if real:
            self.real_sum += d.sum()
            self.real_pairs += d.numel()
        else:
            self.fake_sum += d.sum()
            self.fake_pairs += d.numel()

    def compute(self) -> torch.Tensor:
        if self.real_pairs == 0 or self.fake_pairs == 0:
            raise ValueError("SampleDiversity: needs batches of >= 2 real and >= 2 generated images")
        return ((self.fake_sum / self.fake_pairs) / (self.real_sum / self.real_pairs).clamp_min(1e-12)).float()
