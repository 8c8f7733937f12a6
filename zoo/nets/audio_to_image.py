"""A spoken digit's MFCC sequence -> a Gaussian latent -> a 28x28 image: the net of the audio-to-image VAE
(:class:`zoo.tasks.audio_to_image.AudioToImageVAE` owns the ELBO and the judge).

Audio input: MFCC sequences, linearly resampled along time to ``audio_frames`` frames and flattened
(13 x 32 = 416 numbers by default). Why: FSDD clips last 0.1-2.3 s, an MLP needs a fixed size, and digits
differ by the *order* of their sounds ("six" vs "seven"), which per-coefficient statistics (mean/std over
time) would throw away; resampling keeps the order and normalises the speaking rate, which the digit does
not depend on. ``audio_input="mean"`` is the original study's input instead: each coefficient averaged
over the clip's valid frames (13 numbers), kept as an option so the two can be compared.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import nn


def resample_frames(feats: torch.Tensor, lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """Linearly resample each zero-padded sequence ``(B, T_max, C)`` over its own valid ``lengths`` to
    ``(B, frames, C)``; the first and last valid frames are kept exactly."""
    if feats.dim() != 3:
        raise ValueError(f"resample_frames expects (B, T, C) features, got shape {tuple(feats.shape)}")
    if lengths.shape != feats.shape[:1] or (lengths < 1).any() or (lengths > feats.shape[1]).any():
        raise ValueError(f"lengths must be (B,) in 1..{feats.shape[1]}, got {lengths.tolist()}")
    last = (lengths.to(feats.device) - 1).to(feats.dtype)
    pos = torch.linspace(0, 1, frames, device=feats.device, dtype=feats.dtype)[None, :] * last[:, None]
    lo = pos.floor().long()
    hi = torch.minimum(lo + 1, last.long()[:, None])
    w = (pos - lo.to(feats.dtype)).unsqueeze(-1)
    c = feats.shape[-1]
    take = lambda idx: feats.gather(1, idx.unsqueeze(-1).expand(-1, -1, c))  # noqa: E731
    return take(lo) * (1 - w) + take(hi) * w


class MFCCToImageVAE(nn.Module):
    """MLP encoder on resampled MFCCs -> Gaussian latent -> transposed-conv decoder -> 28x28 image logits.

    ``forward(feats, lengths)`` is the image from the latent *mean*, in [0, 1] (deterministic, the model's best
    guess); :meth:`sample` draws from the posterior instead; :meth:`encode` and :meth:`decode_logits` are the
    two halves the ELBO needs.

    Args:
        n_mfcc: MFCC coefficients per frame; must match the data's n_mfcc.
        audio_frames: frames each clip's MFCC sequence is linearly resampled to before flattening (fixed MLP input).
        hidden: widths of the MLP encoder's hidden layers (at least one).
        latent_dim: dimension of the Gaussian latent between encoder and image decoder.
        dropout: dropout probability after each hidden layer of the MLP encoder.
        decoder_channels: base channel count of the transposed-conv decoder (its first upsampling outputs this many).
        audio_input: "resampled" (the sequence resampled to ``audio_frames`` frames, order kept) or "mean" (the
            time-averaged MFCC vector of the original study; ``audio_frames`` is then unused).
    """

    def __init__(self, n_mfcc: int = 13, audio_frames: int = 32, hidden: Sequence[int] = (512, 256),
                 latent_dim: int = 16, dropout: float = 0.2, decoder_channels: int = 64,
                 audio_input: Literal["resampled", "mean"] = "resampled") -> None:
        super().__init__()
        if min(n_mfcc, audio_frames, latent_dim, decoder_channels) < 1 or not hidden:
            raise ValueError("MFCCToImageVAE n_mfcc, audio_frames, latent_dim, decoder_channels must be >= 1 and "
                             f"hidden non-empty, got {n_mfcc}, {audio_frames}, {latent_dim}, {decoder_channels}, "
                             f"{list(hidden)}")
        self.n_mfcc, self.audio_frames, self.latent_dim = n_mfcc, audio_frames, latent_dim
        self.input_kind = audio_input
        layers, width = [nn.Flatten()], n_mfcc * (audio_frames if audio_input == "resampled" else 1)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = h
        self.encoder = nn.Sequential(*layers)
        self.to_mu = nn.Linear(width, latent_dim)
        self.to_logvar = nn.Linear(width, latent_dim)
        c = decoder_channels
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 2 * c * 7 * 7), nn.ReLU(inplace=True), nn.Unflatten(1, (2 * c, 7, 7)),
            nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True),  # 14
            nn.ConvTranspose2d(c, c // 2 or 1, 4, stride=2, padding=1), nn.BatchNorm2d(c // 2 or 1),
            nn.ReLU(inplace=True),  # 28
            nn.Conv2d(c // 2 or 1, 1, 3, padding=1),
        )

    def audio_input(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if feats.dim() != 3 or feats.shape[-1] != self.n_mfcc:
            raise ValueError(f"MFCCToImageVAE expects MFCC batches (B, T, n_mfcc={self.n_mfcc}), got "
                             f"{tuple(feats.shape)}: use SpokenDigitImagePairs (or SpokenDigits feature='mfcc')")
        if self.input_kind == "mean":  # over each clip's valid frames only: padding must not dilute it
            valid = torch.arange(feats.shape[1], device=feats.device)[None, :] < lengths.to(feats.device)[:, None]
            return (feats * valid[..., None]).sum(1) / lengths.to(feats.device, feats.dtype)[:, None]
        return resample_frames(feats, lengths, self.audio_frames)

    def encode(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` of the latent, each ``(B, latent_dim)``; logvar clamped to [-10, 10]."""
        h = self.encoder(self.audio_input(feats, lengths))
        return self.to_mu(h), self.to_logvar(h).clamp(-10, 10)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel logits ``(B, 1, 28, 28)``."""
        return self.decoder(z)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The image for each clip, from its latent mean, in [0, 1]."""
        mu, _ = self.encode(feats, lengths)
        return torch.sigmoid(self.decode_logits(mu))

    def sample(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """A random image for each clip, from a posterior sample of its latent."""
        mu, logvar = self.encode(feats, lengths)
        return torch.sigmoid(self.decode_logits(mu + torch.randn_like(mu) * (0.5 * logvar).exp()))
