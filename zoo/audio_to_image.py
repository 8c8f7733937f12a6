"""AudioToImageVAE: a spoken digit in, a handwritten image of that digit out (``configs/audio2image_vae_fsdd.yaml``).

Data: :class:`~datamodules.audio_image_pairs.SpokenDigitImagePairs` pairs each clip with a random
MNIST image of the same digit, redrawn every epoch. The model is a conditional generator in VAE
form: an MLP encodes the clip to a Gaussian latent, a transposed-conv decoder draws a 28x28
image, and the ELBO scores the image against the paired one (Bernoulli likelihood, i.e. binary
cross-entropy summed over pixels) plus ``kl_weight`` x KL to N(0, I).

Audio input: MFCC sequences, linearly resampled along time to ``audio_frames`` frames and
flattened (13 x 32 = 416 numbers by default). Why: FSDD clips last 0.1-2.3 s, an MLP needs a fixed
size, and digits differ by the *order* of their sounds ("six" vs "seven"), which per-coefficient
statistics (mean/std over time) would throw away; resampling keeps the order and normalises the
speaking rate, which the digit does not depend on.

Judging without hand labels: at test time a zoo-trained MNIST classifier (``judge_checkpoint``,
e.g. the best checkpoint of ``configs/lenet_mnist.yaml``) labels the image generated from each
test clip's latent mean, and ``test/acc`` is the accuracy of those labels against the spoken digit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from datamodules.mnist import normalize as mnist_normalize
from zoo.checkpoints import load_cli_checkpoint
from zoo.optim import configure_optimizers_from, default_optimizer
from zoo.figures import image_grid_figure, log_audio, log_figure

Normalize = Literal["zero_one", "minus_one_one", "standard"]
NUM_DIGITS = 10


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


def load_judge(path: str | Path | None, normalize: Normalize | None = None) -> tuple[nn.Module, Normalize]:
    """Load a zoo MNIST classifier checkpoint as a frozen judge; returns ``(model, input normalisation)``.

    The class comes from the checkpoint's ``_class_path`` (written by ``python -m zoo fit``); the input
    normalisation from its ``MNISTDataModule`` settings unless ``normalize`` overrides it.
    """
    hint = ("set --model.judge_checkpoint to the checkpoint of a zoo MNIST classifier, e.g. the best checkpoint "
            "of `python -m zoo fit --config configs/lenet_mnist.yaml`")
    if not path:
        raise ValueError(f"AudioToImageVAE: test/acc needs a judge, but judge_checkpoint is not set: {hint}")
    model, data_hparams = load_cli_checkpoint(path, what="AudioToImageVAE: judge_checkpoint", hint=hint)
    if normalize is None:
        normalize = data_hparams.get("normalize")
        if normalize is None:
            raise ValueError(f"AudioToImageVAE: judge_checkpoint {path} does not say how its inputs were normalised "
                             "(no MNISTDataModule 'normalize' setting saved): set --model.judge_normalize")
    model.eval().requires_grad_(False)
    return model, normalize


class AudioToImageVAE(L.LightningModule):
    """MLP encoder on resampled MFCCs -> Gaussian latent -> transposed-conv decoder -> 28x28 image.

    Batches: ``(feats (B, T, n_mfcc), lengths (B,), images (B, 1, 28, 28) in [0, 1], digits (B,))``.
    Images are generated from the latent *mean* at test time (deterministic, the model's best guess);
    :meth:`sample` draws from the posterior instead.

    Args:
        n_mfcc: MFCC coefficients per frame; must match the data's n_mfcc.
        audio_frames: frames each clip's MFCC sequence is linearly resampled to before flattening (fixed MLP input).
        hidden: widths of the MLP encoder's hidden layers (at least one).
        latent_dim: dimension of the Gaussian latent between encoder and image decoder.
        dropout: dropout probability after each hidden layer of the MLP encoder.
        kl_weight: weight of the KL term in the ELBO loss (>= 0; 1 is the standard VAE).
        decoder_channels: base channel count of the transposed-conv decoder (its first upsampling outputs this many).
        judge_checkpoint: zoo MNIST classifier checkpoint that labels generated images (val/acc, test/acc).
        judge_normalize: input normalisation of the judge; None: read from the judge checkpoint's data settings.
        n_show: number of generated test images (with their clips) in the logged figure, spread over the digits.
        optimizer: optimizer factory applied to the model parameters; default AdamW(lr=1e-3, weight_decay=1e-4).
        scheduler: optional learning-rate scheduler factory, stepped once per epoch; None keeps the rate constant.
    """

    monitor = ("val/loss", "min")

    def __init__(self, n_mfcc: int = 13, audio_frames: int = 32, hidden: Sequence[int] = (512, 256),
                 latent_dim: int = 16, dropout: float = 0.2, kl_weight: float = 1.0, decoder_channels: int = 64,
                 judge_checkpoint: str | None = None, judge_normalize: Normalize | None = None,
                 n_show: int = 20, optimizer: OptimizerCallable = default_optimizer,
                 scheduler: LRSchedulerCallable | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        if kl_weight < 0:
            raise ValueError(f"AudioToImageVAE kl_weight must be >= 0, got {kl_weight}")
        if min(n_mfcc, audio_frames, latent_dim, decoder_channels) < 1 or not hidden:
            raise ValueError("AudioToImageVAE n_mfcc, audio_frames, latent_dim, decoder_channels must be >= 1 and "
                             f"hidden non-empty, got {n_mfcc}, {audio_frames}, {latent_dim}, {decoder_channels}, "
                             f"{list(hidden)}")
        layers, width = [nn.Flatten()], n_mfcc * audio_frames
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
        self.optimizer, self.scheduler = optimizer, scheduler
        self.val_acc = MulticlassAccuracy(NUM_DIGITS, average="micro")
        self.test_acc = MulticlassAccuracy(NUM_DIGITS, average="micro")
        # the judge is not a submodule: it must not be trained, saved in our checkpoints or counted as ours
        self.__dict__["_judge"] = None
        self._judge_normalize: Normalize = "zero_one"
        self._shown: dict | None = None
        self._seen = 0

    # --- judge ------------------------------------------------------------------------------------
    def set_judge(self, judge: nn.Module, normalize: Normalize = "zero_one") -> None:
        """Use ``judge`` (images in the ``normalize`` range -> 10 digit logits) instead of ``judge_checkpoint``."""
        self.__dict__["_judge"] = judge.eval().requires_grad_(False)
        self._judge_normalize = normalize

    @property
    def judge(self) -> nn.Module | None:
        return self.__dict__["_judge"]

    def _ensure_judge(self) -> nn.Module:
        if self.judge is None:
            self.set_judge(*load_judge(self.hparams.judge_checkpoint, self.hparams.judge_normalize))
        return self.judge.to(self.device)

    @torch.no_grad()
    def judge_images(self, images: torch.Tensor) -> torch.Tensor:
        """Judge logits ``(B, 10)`` for images in [0, 1]."""
        logits = self._ensure_judge()(mnist_normalize(images, self._judge_normalize))
        if logits.dim() != 2 or logits.shape[1] != NUM_DIGITS:
            raise ValueError(f"AudioToImageVAE: the judge must return (B, {NUM_DIGITS}) digit logits, got "
                             f"{tuple(logits.shape)}")
        return logits

    # --- model ------------------------------------------------------------------------------------
    def audio_input(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if feats.dim() != 3 or feats.shape[-1] != self.hparams.n_mfcc:
            raise ValueError(f"AudioToImageVAE expects MFCC batches (B, T, n_mfcc={self.hparams.n_mfcc}), got "
                             f"{tuple(feats.shape)}: use SpokenDigitImagePairs (or SpokenDigits feature='mfcc')")
        return resample_frames(feats, lengths, self.hparams.audio_frames)

    def encode(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(self.audio_input(feats, lengths))
        return self.to_mu(h), self.to_logvar(h).clamp(-10, 10)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The image for each clip, from its latent mean, in [0, 1]."""
        mu, _ = self.encode(feats, lengths)
        return torch.sigmoid(self.decode_logits(mu))

    def sample(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """A random image for each clip, from a posterior sample of its latent."""
        mu, logvar = self.encode(feats, lengths)
        return torch.sigmoid(self.decode_logits(mu + torch.randn_like(mu) * (0.5 * logvar).exp()))

    def elbo_terms(self, feats, lengths, images) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loss, recon, kl, mu)``: per-clip sums over pixels / latent dims, averaged over the batch."""
        if images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28):
            raise ValueError(f"AudioToImageVAE expects paired images (B, 1, 28, 28), got {tuple(images.shape)}")
        mu, logvar = self.encode(feats, lengths)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        logits = self.decode_logits(z)
        recon = F.binary_cross_entropy_with_logits(logits, images, reduction="none").flatten(1).sum(1).mean()
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum(1).mean()
        return recon + self.hparams.kl_weight * kl, recon, kl, mu

    @staticmethod
    def _unpack(batch):
        if len(batch) != 4:
            raise ValueError("AudioToImageVAE expects batches (feats, lengths, images, digits) from "
                             f"SpokenDigitImagePairs, got {len(batch)} tensors")
        return batch

    def _log_terms(self, stage: str, loss, recon, kl, n: int) -> None:
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=n, sync_dist=stage != "train")
        self.log(f"{stage}/recon", recon, batch_size=n, sync_dist=stage != "train")
        self.log(f"{stage}/kl", kl, batch_size=n, sync_dist=stage != "train")

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        feats, lengths, images, digits = self._unpack(batch)
        loss, recon, kl, _ = self.elbo_terms(feats, lengths, images)
        self._log_terms("train", loss, recon, kl, digits.shape[0])
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        feats, lengths, images, digits = self._unpack(batch)
        loss, recon, kl, mu = self.elbo_terms(feats, lengths, images)
        self._log_terms("val", loss, recon, kl, digits.shape[0])
        if self.judge is not None or self.hparams.judge_checkpoint:
            # judged accuracy during training too, when a judge is configured (informative, not monitored)
            self.val_acc(self.judge_images(torch.sigmoid(self.decode_logits(mu))), digits)
            self.log("val/acc", self.val_acc, prog_bar=True, batch_size=digits.shape[0])

    def on_test_epoch_start(self) -> None:
        self._ensure_judge()  # fail before the first batch if the judge is missing or broken
        self._shown = {"images": [], "digits": [], "judged": [], "index": []}
        self._seen = 0

    def test_step(self, batch, batch_idx: int) -> None:
        feats, lengths, images, digits = self._unpack(batch)
        loss, recon, kl, mu = self.elbo_terms(feats, lengths, images)
        self._log_terms("test", loss, recon, kl, digits.shape[0])
        generated = torch.sigmoid(self.decode_logits(mu))
        judged = self.judge_images(generated)
        self.test_acc(judged, digits)
        self.log("test/acc", self.test_acc, batch_size=digits.shape[0])
        self._keep_examples(generated, digits, judged.argmax(-1))

    def _keep_examples(self, generated, digits, judged) -> None:
        """Keep up to ``ceil(n_show / 10)`` examples per spoken digit (test sets are often sorted by digit),
        with their position in the test set so the matching audio can be fetched."""
        shown, per_digit = self._shown, -(-self.hparams.n_show // NUM_DIGITS)
        for k in range(digits.shape[0]):
            d = int(digits[k])
            if len(shown["index"]) < self.hparams.n_show and shown["digits"].count(d) < per_digit:
                shown["images"].append(generated[k].detach().cpu())
                shown["digits"].append(d)
                shown["judged"].append(int(judged[k]))
                shown["index"].append(self._seen + k)
        self._seen += digits.shape[0]

    def on_test_epoch_end(self) -> None:
        shown, self._shown = self._shown, None
        if not shown or not shown["index"]:
            return
        order = sorted(range(len(shown["index"])), key=lambda i: (shown["digits"][i], shown["index"][i]))
        captions = [f"said {shown['digits'][i]} / judged {shown['judged'][i]}" for i in order]
        images = torch.stack([shown["images"][i] for i in order])
        fig = image_grid_figure(images, captions, ncol=10, title="generated from test clips")
        log_figure(self.trainer, "test/generated", fig)
        dm = getattr(self.trainer, "datamodule", None)
        if hasattr(dm, "waveforms"):  # the test loader is unshuffled: positions are test-set indices
            clips, sr = dm.waveforms("test", [shown["index"][i] for i in order])
            log_audio(self.trainer, "test/clips", clips, sr, captions=captions)

    def configure_optimizers(self):
        return configure_optimizers_from(self, self.optimizer, self.scheduler)
