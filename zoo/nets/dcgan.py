"""DCGAN generator and discriminator: plain ``nn.Module`` s, usable without Lightning
(:class:`zoo.tasks.gan.GAN` trains them).

Two architectures (``architecture``, the same for both nets of a GAN):

* ``mnist28``: the 28x28 net studied in the TensorFlow DCGAN tutorial. G: linear to 7x7x4w,
  transposed 5x5 convs to 7x7x2w, 14x14xw, 28x28xC, BN + LeakyReLU, tanh. D: two 5x5 stride-2
  convs (w, 2w) with LeakyReLU and dropout, then a linear logit.
* ``dcgan64``: the DCGAN paper's 64x64 net. G: transposed 4x4 convs from 4x4 (8w, 4w, 2w, w
  channels) with BN + ReLU, tanh. D: mirrored stride-2 4x4 convs with BN + LeakyReLU(0.2).

``width`` scales every channel count (64 = the published sizes), so CPU runs can shrink the nets
without changing their shape. ``num_classes > 0`` makes a net class-conditional: G appends a one-hot
label to its latent code, so one model draws N samples of each class; D's ``conditioning`` says how
the label reaches it: ``"concat"`` (one-hot label maps as extra image channels), ``"auxiliary"``
(AC-GAN, Odena et al., 2017: D is not shown the label but has a second head that classifies real
and fake images) or ``"projection"`` (Miyato & Koyama, 2018: the unconditional logit plus the
inner product of a class embedding with D's last features). ``spectral_norm=True`` constrains
every layer of D to spectral norm 1 (Miyato et al., 2018) instead of batch-normalizing it: a D that
cannot sharpen without bound, the usual cure when D wins so fast that G's gradients vanish.

Weights start at PyTorch's defaults; ``net.apply(dcgan_init)`` gives the DCGAN paper's
initialisation (the GAN task applies it to G, then D, once both are built: the order seeded runs
have always used). Images are in [-1, 1] (the tanh range).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

Architecture = Literal["mnist28", "dcgan64"]
Conditioning = Literal["concat", "auxiliary", "projection"]
IMAGE_SIZE = {"mnist28": 28, "dcgan64": 64}


def dcgan_init(module: nn.Module) -> None:
    """Weights from N(0, 0.02), BN scales from N(1, 0.02), as in the DCGAN paper (use with ``net.apply``)."""
    if isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        weight = (module.parametrizations.weight.original if parametrize.is_parametrized(module, "weight")
                  else module.weight)
        nn.init.normal_(weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation: stays on the Gaussian shell where a linear path would cut through
    the low-norm interior that the generator never saw in training."""
    n0, n1 = z0 / z0.norm(dim=-1, keepdim=True), z1 / z1.norm(dim=-1, keepdim=True)
    omega = torch.acos((n0 * n1).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    t = t.view(-1, 1)
    return (torch.sin((1 - t) * omega) / so) * z0 + (torch.sin(t * omega) / so) * z1


def one_hot(labels: torch.Tensor | None, num_classes: int, dtype: torch.dtype) -> torch.Tensor | None:
    """The one-hot code of ``labels``; None for an unconditional net (``num_classes == 0``)."""
    if num_classes == 0:
        return None
    if labels is None:
        raise ValueError("this is a class-conditional model: labels are required")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must be in 0..{num_classes - 1} for this conditional model, "
                         f"got {int(labels.min())}..{int(labels.max())}")
    return F.one_hot(labels.long(), num_classes).to(dtype)


def _check_args(net: str, architecture: str, num_classes: int, **positive: int) -> int:
    """The image size of ``architecture``; plain-Python callers get the errors jsonargparse's types give the CLI."""
    if architecture not in IMAGE_SIZE:
        raise ValueError(f"{net}: architecture must be one of {sorted(IMAGE_SIZE)}, got {architecture!r}")
    for name, value in positive.items():
        if value < 1:
            raise ValueError(f"{net}: {name} must be >= 1, got {value}")
    if num_classes < 0 or num_classes == 1:
        raise ValueError(f"{net}: num_classes must be 0 (unconditional) or >= 2, got {num_classes}")
    return IMAGE_SIZE[architecture]


def _maybe_sn(layer: nn.Module, spectral: bool) -> nn.Module:
    return _spectral_norm(layer) if spectral else layer


class Generator(nn.Module):
    """Latent code (+ one-hot label) -> image in [-1, 1].

    ``mnist28``: latent -> linear 7x7x4w -> 7x7x2w -> 14x14xw -> 28x28xC (tanh).
    ``dcgan64``: latent as a 1x1 map -> 4x4x8w -> 8x8x4w -> 16x16x2w -> 32x32xw -> 64x64xC (tanh).

    Args:
        architecture: "mnist28" (TensorFlow-tutorial 28x28 net) or "dcgan64" (the DCGAN paper's 64x64 net).
        latent_dim: size of the Gaussian noise vector z.
        channels: channels of the generated images (1 gray, 3 RGB).
        width: channel-count multiplier (64 = the published sizes; smaller is cheaper).
        num_classes: classes of a class-conditional generator (>= 2); 0: unconditional.
    """

    def __init__(self, architecture: Architecture = "mnist28", latent_dim: int = 100, channels: int = 1,
                 width: int = 64, num_classes: int = 0) -> None:
        super().__init__()
        self.image_size = _check_args("Generator", architecture, num_classes, latent_dim=latent_dim,
                                      channels=channels, width=width)
        self.architecture, self.latent_dim, self.channels = architecture, latent_dim, channels
        self.width, self.num_classes = width, num_classes
        cin = latent_dim + num_classes
        if architecture == "mnist28":
            self.project = nn.Sequential(nn.Linear(cin, 7 * 7 * 4 * width, bias=False),
                                         nn.BatchNorm1d(7 * 7 * 4 * width), nn.LeakyReLU(0.2))
            self.net = nn.Sequential(
                nn.ConvTranspose2d(4 * width, 2 * width, 5, 1, 2, bias=False), nn.BatchNorm2d(2 * width),
                nn.LeakyReLU(0.2),
                nn.ConvTranspose2d(2 * width, width, 5, 2, 2, output_padding=1, bias=False), nn.BatchNorm2d(width),
                nn.LeakyReLU(0.2),
                nn.ConvTranspose2d(width, channels, 5, 2, 2, output_padding=1), nn.Tanh(),
            )
        else:
            self.project = None
            layers = []
            for i, mult in enumerate((8, 4, 2, 1)):
                stride, pad = (1, 0) if i == 0 else (2, 1)
                layers += [nn.ConvTranspose2d(cin, mult * width, 4, stride, pad, bias=False),
                           nn.BatchNorm2d(mult * width), nn.ReLU(True)]
                cin = mult * width
            layers += [nn.ConvTranspose2d(cin, channels, 4, 2, 1, bias=False), nn.Tanh()]
            self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"Generator expects latent codes of shape (N, {self.latent_dim}), got {tuple(z.shape)}")
        if labels is not None and not self.num_classes:
            raise ValueError("Generator: this generator is unconditional (num_classes=0); it takes no labels")
        c = one_hot(labels, self.num_classes, z.dtype)
        h = z if c is None else torch.cat([z, c], 1)
        if self.project is not None:
            return self.net(self.project(h).view(-1, 4 * self.width, 7, 7))
        return self.net(h[:, :, None, None])


class Discriminator(nn.Module):
    """Image (+ class) -> real/fake logit, one per image.

    ``mnist28``: conv 5x5/2 (w) -> conv 5x5/2 (2w), LeakyReLU and dropout after each -> linear logit.
    ``dcgan64``: 64x64xC -> 32x32xw -> 16x16x2w -> 8x8x4w -> 4x4x8w -> logit, BN everywhere but the first
    layer (no BN with ``spectral_norm``).

    A class-conditional D (``num_classes > 0``) needs labels in ``forward`` for "concat" and
    "projection"; an "auxiliary" D ignores them and adds :meth:`forward_with_classes`.

    Args:
        architecture: "mnist28" or "dcgan64" (the generator's).
        channels: channels of the images judged (the generator's).
        width: channel-count multiplier (64 = the published sizes).
        num_classes: classes of a class-conditional GAN (>= 2, the generator's); 0: unconditional.
        conditioning: how the class reaches D: "concat" (label maps), "auxiliary" (AC-GAN) or "projection".
        dropout: dropout probability after each conv block, in [0, 1); None: each architecture's
            published D (0.3 for "mnist28", none for "dcgan64").
        spectral_norm: spectral-normalise every layer instead of batch-normalising.
    """

    def __init__(self, architecture: Architecture = "mnist28", channels: int = 1, width: int = 64,
                 num_classes: int = 0, conditioning: Conditioning = "concat", dropout: float | None = None,
                 spectral_norm: bool = False) -> None:
        super().__init__()
        self.image_size = _check_args("Discriminator", architecture, num_classes, channels=channels, width=width)
        if conditioning not in ("concat", "auxiliary", "projection"):
            raise ValueError(f"Discriminator: conditioning must be 'concat', 'auxiliary' or 'projection', "
                             f"got {conditioning!r}")
        if dropout is None:
            dropout = 0.3 if architecture == "mnist28" else 0.0
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"Discriminator: dropout must be in [0, 1), got {dropout}")
        self.architecture, self.channels, self.width, self.num_classes = architecture, channels, width, num_classes
        self.conditioning = conditioning
        # AC-GAN: D must *infer* the class, so it is not given the label maps;
        # projection: the label enters D only through the projection term
        self.label_maps = num_classes if conditioning == "concat" else 0
        aux = num_classes if conditioning == "auxiliary" else 0
        proj = num_classes if conditioning == "projection" else 0
        s = spectral_norm
        if architecture == "mnist28":
            features = 2 * width * 7 * 7
            self.project = nn.Embedding(proj, features) if proj else None
            self.net = nn.Sequential(
                _maybe_sn(nn.Conv2d(channels + self.label_maps, width, 5, 2, 2), s), nn.LeakyReLU(0.2),
                nn.Dropout(dropout),
                _maybe_sn(nn.Conv2d(width, 2 * width, 5, 2, 2), s), nn.LeakyReLU(0.2), nn.Dropout(dropout),
                nn.Flatten(), _maybe_sn(nn.Linear(features, 1), s),
            )
            self.classify = nn.Linear(features, aux) if aux else None
        else:
            self.project = nn.Embedding(proj, 8 * width * 4 * 4) if proj else None
            layers, cin = [], channels + self.label_maps
            for i, mult in enumerate((1, 2, 4, 8)):
                layers.append(_maybe_sn(nn.Conv2d(cin, mult * width, 4, 2, 1, bias=False), s))
                if i > 0 and not s:
                    layers.append(nn.BatchNorm2d(mult * width))
                layers.append(nn.LeakyReLU(0.2, True))
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
                cin = mult * width
            layers.append(_maybe_sn(nn.Conv2d(cin, 1, 4, 1, 0, bias=False), s))
            self.net = nn.Sequential(*layers)
            self.classify = nn.Sequential(nn.Conv2d(cin, aux, 4, 1, 0), nn.Flatten()) if aux else None

    def _check_input(self, x: torch.Tensor) -> None:
        expected = (self.channels, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"Discriminator({self.architecture!r}, channels={self.channels}) expects images of "
                             f"shape (N, {', '.join(map(str, expected))}), got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The real/fake logit. A projection D adds the inner product of a learned class embedding with
        the last features: the class enters as a *match score* on what D has seen, so G is pushed to
        make the requested class without AC-GAN's pull towards easy, prototypical samples."""
        self._check_input(x)
        if self.project is None:
            c = one_hot(labels, self.label_maps, x.dtype)
            if c is not None:
                x = torch.cat([x, c[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])], 1)
            return self.net(x).flatten()
        if labels is None:
            raise ValueError("this is a class-conditional (projection) discriminator: labels are required")
        h = self.net[:-1](x)
        return self.net[-1](h).flatten() + (self.project(labels.long()) * h.flatten(1)).sum(1)

    def forward_with_classes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """AC-GAN: the real/fake logit and class logits from the same features."""
        if self.classify is None:
            raise ValueError("this discriminator has no auxiliary classifier (conditioning='auxiliary' with "
                             "num_classes > 0 builds one)")
        self._check_input(x)
        h = self.net[:-1](x)
        return self.net[-1](h).flatten(), self.classify(h)
