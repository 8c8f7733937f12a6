"""Autoencoder nets: :class:`ConvAutoencoder` for small gray images and :class:`LSTMAutoencoder` for sequences.

Both expose ``encode(x)`` (the code a probe or a scatter plot reads) and ``forward(x)`` (the decoder's
raw output); :class:`zoo.tasks.autoencoder.Autoencoder` trains either. They are plain ``nn.Module`` s,
usable without Lightning.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class ConvAutoencoder(nn.Module):
    """Conv encoder to a ``latent_dim`` code and a transposed-conv decoder; ``forward`` returns *logits*.

    ``encoder``: conv ``c1`` -> max pool -> conv ``c2`` -> max pool -> conv ``c3`` -> linear to the code.
    ``decoder``: linear back to ``c3 x S/4 x S/4``, two stride-2 transposed convs and a 3x3 conv to
    ``in_channels``. The output is left as logits so the task can use binary cross-entropy with logits
    (numerically stable); ``torch.sigmoid(net(x))`` is the reconstruction in [0, 1].

    Args:
        latent_dim: size of the code.
        channels: channels of the encoder's three conv layers (mirrored by the decoder; exactly 3 entries).
        in_channels: channels of the input images (1 for MNIST).
        image_size: side of the square input images; divisible by 4 (two poolings).
    """

    def __init__(self, latent_dim: int = 32, channels: Sequence[int] = (32, 64, 128), in_channels: int = 1,
                 image_size: int = 28) -> None:
        super().__init__()
        if len(channels) != 3:
            raise ValueError(f"ConvAutoencoder has three conv layers: channels needs 3 entries, got {list(channels)}")
        if latent_dim < 1:
            raise ValueError(f"ConvAutoencoder latent_dim must be >= 1, got {latent_dim}")
        if image_size < 4 or image_size % 4:
            raise ValueError(f"ConvAutoencoder image_size must be a positive multiple of 4 (two 2x poolings), "
                             f"got {image_size}")
        self.latent_dim, self.in_channels, self.image_size = latent_dim, in_channels, image_size
        c1, c2, c3 = channels
        s = image_size // 4
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(inplace=True),
            nn.Flatten(), nn.Linear(c3 * s * s, latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, c3 * s * s), nn.ReLU(inplace=True), nn.Unflatten(1, (c3, s, s)),
            nn.ConvTranspose2d(c3, c2, 4, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c1, in_channels, 3, padding=1),
        )

    def _check(self, x: torch.Tensor) -> None:
        expected = (self.in_channels, self.image_size, self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"ConvAutoencoder expects images of shape (B, {', '.join(map(str, expected))}), "
                             f"got {tuple(x.shape)}")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Logits of the reconstruction."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class LSTMAutoencoder(nn.Module):
    """LSTM encoder -> last hidden state -> linear ``latent_size`` code; the code is repeated at every time
    step into an LSTM decoder with a *linear* output layer. Input and output ``(B, T, input_size)``.

    The output is linear on purpose: a sigmoid output cannot produce the negative half of a sine and
    plateaus (a published run stalled at loss 0.5 that way).

    Args:
        input_size: number of channels C per time step of the input sequences (B, T, C).
        hidden_size: hidden state size of the encoder and decoder LSTMs.
        latent_size: size of the code that summarises a whole sequence.
        num_layers: number of stacked layers in each of the encoder and decoder LSTMs.
    """

    def __init__(self, input_size: int = 1, hidden_size: int = 64, latent_size: int = 8, num_layers: int = 1) -> None:
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size),
                            ("latent_size", latent_size), ("num_layers", num_layers)):
            if value < 1:
                raise ValueError(f"LSTMAutoencoder {name} must be >= 1, got {value}")
        self.input_size, self.latent_size = input_size, latent_size
        self.encoder = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True)
        self.to_latent = nn.Linear(hidden_size, latent_size)
        self.decoder = nn.LSTM(latent_size, hidden_size, num_layers, batch_first=True)
        self.output = nn.Linear(hidden_size, input_size)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"LSTMAutoencoder expects sequences of shape (B, T, input_size={self.input_size}), "
                             f"got {tuple(x.shape)}")
        _, (h, _) = self.encoder(x)
        return self.to_latent(h[-1])

    def decode(self, z: torch.Tensor, length: int) -> torch.Tensor:
        out, _ = self.decoder(z.unsqueeze(1).expand(-1, length, -1))
        return self.output(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), x.shape[1])
