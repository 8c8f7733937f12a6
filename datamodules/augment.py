"""Batched, per-sample random augmentation of image tensors ``(N, C, H, W)`` on any device.

Why not torchvision's per-image transforms: augmenting thousands of images one PIL image at a
time dominates a small model's epoch. Here every geometric change of a batch (rotation,
translation, resized crop, horizontal flip) is folded into one affine matrix per sample and
applied with a single ``affine_grid`` + ``grid_sample`` call. Random parameters are drawn on the
CPU from an explicit ``torch.Generator``, so a seed gives the same augmentation on CPU and GPU.

All functions expect values in a known range (e.g. ``[0, 1]``) and keep the input's dtype/device.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator | None) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)


def _check_batch(x: torch.Tensor, name: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} expects a batch of shape (N, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} expects a floating-point tensor (convert uint8 images to float first), got {x.dtype}")


def random_affine_matrices(n: int, height: int, width: int, degrees: float = 0.0, translate: float = 0.0,
                           crop_scale: Sequence[float] = (1.0, 1.0), crop_ratio: Sequence[float] = (1.0, 1.0),
                           hflip: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample ``(n, 2, 3)`` matrices for :func:`torch.nn.functional.affine_grid` (float64, CPU).

    Each matrix maps output coordinates to input coordinates (normalised to ``[-1, 1]``):
    a random resized crop (area fraction in ``crop_scale``, aspect ratio in ``crop_ratio``, placed
    uniformly inside the image), a rotation by ``U(-degrees, degrees)``, a translation by
    ``U(-translate, translate)`` of the image size per axis and, with probability ``hflip``, a
    horizontal mirror. Rotation is done in pixel units so non-square images are not sheared.
    """
    if degrees < 0 or translate < 0:
        raise ValueError(f"degrees and translate must be >= 0, got degrees={degrees}, translate={translate}")
    lo, hi = float(crop_scale[0]), float(crop_scale[1])
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1 (area fraction), got {tuple(crop_scale)}")
    rlo, rhi = float(crop_ratio[0]), float(crop_ratio[1])
    if not 0 < rlo <= rhi:
        raise ValueError(f"crop_ratio must satisfy 0 < min <= max, got {tuple(crop_ratio)}")
    if not 0 <= hflip <= 1:
        raise ValueError(f"hflip is a probability in [0, 1], got {hflip}")

    angle = _uniform(n, -degrees, degrees, generator) * math.pi / 180
    shift = _uniform(2 * n, -translate, translate, generator).view(n, 2) * 2  # normalised units span 2
    area = _uniform(n, lo, hi, generator)
    ratio = torch.exp(_uniform(n, math.log(rlo), math.log(rhi), generator))
    cw = torch.sqrt(area * ratio).clamp(max=1.0)  # crop width / image width
    ch = torch.sqrt(area / ratio).clamp(max=1.0)
    # crop centre, uniform over positions that keep the crop inside the image
    cx = _uniform(n, -1, 1, generator) * (1 - cw)
    cy = _uniform(n, -1, 1, generator) * (1 - ch)
    flip = torch.where(torch.rand(n, generator=generator, dtype=torch.float64) < hflip, -1.0, 1.0).to(torch.float64)

    cos, sin = torch.cos(angle), torch.sin(angle)
    aspect = width / height  # rotate in pixel space: R_norm = S^-1 R S with S = diag(W, H)
    rot = torch.stack([torch.stack([cos, -sin / aspect], -1), torch.stack([sin * aspect, cos], -1)], -2)
    crop = torch.diag_embed(torch.stack([cw * flip, ch], -1))
    linear = crop @ rot  # (n, 2, 2)
    offset = torch.stack([cx, cy], -1) - (linear @ shift.unsqueeze(-1)).squeeze(-1)
    return torch.cat([linear, offset.unsqueeze(-1)], dim=-1)


def apply_affine(x: torch.Tensor, theta: torch.Tensor, padding_mode: str = "zeros",
                 mode: str = "bilinear") -> torch.Tensor:
    """Warp a batch with per-sample matrices from :func:`random_affine_matrices` (one grid_sample call)."""
    _check_batch(x, "apply_affine")
    if theta.shape != (x.shape[0], 2, 3):
        raise ValueError(f"theta must have shape ({x.shape[0]}, 2, 3) for this batch, got {tuple(theta.shape)}")
    grid = F.affine_grid(theta.to(device=x.device, dtype=x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=False)


def random_geometric(x: torch.Tensor, degrees: float = 0.0, translate: float = 0.0,
                     crop_scale: Sequence[float] = (1.0, 1.0), crop_ratio: Sequence[float] = (1.0, 1.0),
                     hflip: float = 0.0, generator: torch.Generator | None = None,
                     padding_mode: str = "zeros") -> torch.Tensor:
    """Random rotation, translation, resized crop and horizontal flip, drawn independently per sample."""
    _check_batch(x, "random_geometric")
    theta = random_affine_matrices(x.shape[0], x.shape[2], x.shape[3], degrees, translate, crop_scale,
                                   crop_ratio, hflip, generator)
    return apply_affine(x, theta, padding_mode=padding_mode)


def random_hflip(x: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each sample left-right with probability ``p`` (exact pixel copy, no resampling)."""
    _check_batch(x, "random_hflip")
    if not 0 <= p <= 1:
        raise ValueError(f"random_hflip: p is a probability in [0, 1], got {p}")
    flip = (torch.rand(x.shape[0], generator=generator) < p).to(x.device).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(-1), x)


def random_contrast(x: torch.Tensor, strength: float = 0.2, generator: torch.Generator | None = None,
                    value_range: tuple[float, float] | None = (0.0, 1.0)) -> torch.Tensor:
    """Scale each sample's deviation from its own mean by ``U(1 - strength, 1 + strength)``.

    The per-image mean is kept, so brightness does not drift; results are clamped to
    ``value_range`` (``None`` = no clamping, e.g. for already standardised inputs).
    """
    _check_batch(x, "random_contrast")
    if not 0 <= strength < 1:
        raise ValueError(f"random_contrast: strength must be in [0, 1), got {strength}")
    factor = _uniform(x.shape[0], 1 - strength, 1 + strength, generator).to(device=x.device, dtype=x.dtype)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    out = mean + factor.view(-1, 1, 1, 1) * (x - mean)
    return out if value_range is None else out.clamp(*value_range)


class BatchAugment(nn.Module):
    """Module form of the random augmentations with its own seeded generator.

    Use it as a classifier task's ``augment`` (applied to training batches only) or on a data tensor
    once. The generator lives on the CPU, so results do not depend on the device. ``seed=None`` takes
    the run's seed (``seed_everything`` / ``torch.initial_seed()``), so the runs of a multi-seed grid
    draw different augmentations; an explicit seed pins the stream.
    """

    def __init__(self, degrees: float = 0.0, translate: float = 0.0, crop_scale: Sequence[float] = (1.0, 1.0),
                 crop_ratio: Sequence[float] = (1.0, 1.0), hflip: float = 0.0, contrast: float = 0.0,
                 value_range: tuple[float, float] | None = (0.0, 1.0),
                 padding_mode: Literal["zeros", "border", "reflection"] = "zeros", seed: int | None = None) -> None:
        super().__init__()
        self.degrees, self.translate, self.hflip, self.contrast = degrees, translate, hflip, contrast
        self.crop_scale, self.crop_ratio = tuple(crop_scale), tuple(crop_ratio)
        self.value_range, self.padding_mode = value_range, padding_mode
        # validate once, at construction, rather than on the first batch
        # a throwaway generator: building the module must not draw from the global stream, or a seeded run's
        # net (built after it by the CLI) would start from other weights
        random_affine_matrices(1, 2, 2, degrees, translate, self.crop_scale, self.crop_ratio, hflip,
                               generator=torch.Generator())
        if not 0 <= contrast < 1:
            raise ValueError(f"BatchAugment: contrast must be in [0, 1), got {contrast}")
        self.generator = torch.Generator().manual_seed(torch.initial_seed() if seed is None else seed)

    @property
    def is_geometric(self) -> bool:
        return bool(self.degrees or self.translate or self.hflip or self.crop_scale != (1.0, 1.0)
                    or self.crop_ratio != (1.0, 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_geometric:
            x = random_geometric(x, self.degrees, self.translate, self.crop_scale, self.crop_ratio, self.hflip,
                                 self.generator, self.padding_mode)
        if self.contrast:
            x = random_contrast(x, self.contrast, self.generator, self.value_range)
        return x

    def extra_repr(self) -> str:
        return (f"degrees={self.degrees}, translate={self.translate}, crop_scale={self.crop_scale}, "
                f"crop_ratio={self.crop_ratio}, hflip={self.hflip}, contrast={self.contrast}")
