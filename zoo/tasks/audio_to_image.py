"""AudioToImageVAE: a spoken digit in, a handwritten image of that digit out (``configs/audio2image_vae_fsdd.yaml``).

Data: :class:`~datamodules.audio_image_pairs.SpokenDigitImagePairs` pairs each clip with a random MNIST image
of the same digit, redrawn every epoch. The net (:class:`zoo.nets.audio_to_image.MFCCToImageVAE`) encodes the
clip to a Gaussian latent and decodes a 28x28 image; this task is a conditional generator in VAE form: the
ELBO scores the image against the paired one (Bernoulli likelihood, i.e. binary cross-entropy summed over
pixels) plus ``kl_weight`` x KL to N(0, I).

Judging without hand labels: a zoo-trained MNIST classifier (``judge_checkpoint``, e.g. the best checkpoint of
``configs/lenet_mnist.yaml``, loaded by :func:`zoo.metrics.load_judge` with the input normalisation its
DataModule recorded) labels the image generated from each test clip's latent mean, and ``test/acc`` is the
accuracy of those labels against the spoken digit.

Predicting (``python -m zoo predict --ckpt_path ... --data.predict_path RECORDINGS --run.predictions_file out.csv``):
:meth:`predict_step` returns the image generated for each recording, and the judge's digit for it when the judge
checkpoint is at hand; :class:`zoo.callbacks.PredictionWriter` saves one PNG per file and a contact sheet.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from zoo.figures import image_grid_figure, log_audio, log_figure
from zoo.metrics import Normalize, load_judge, to_model_input
from zoo.optim import configure_optimizers_from, default_optimizer
from zoo.tasks.base import save_task_hyperparameters

NUM_DIGITS = 10
JUDGE_HINT = ("set --model.judge_checkpoint to the checkpoint of a zoo MNIST classifier, e.g. the best checkpoint "
              "of `python -m zoo fit --config configs/lenet_mnist.yaml`")


class AudioToImageVAE(L.LightningModule):
    """ELBO training of an audio -> image VAE net, judged by a frozen MNIST classifier.

    Batches: ``(feats (B, T, n_mfcc), lengths (B,), images (B, 1, 28, 28) in [0, 1], digits (B,))``.
    Images are generated from the latent *mean* at validation and test time (deterministic, the model's best
    guess); :meth:`sample` draws from the posterior instead.

    Args:
        net: the VAE: ``encode(feats, lengths) -> (mu, logvar)``, ``decode_logits(z)`` (e.g.
            :class:`zoo.nets.audio_to_image.MFCCToImageVAE`).
        kl_weight: weight of the KL term in the ELBO loss (>= 0; 1 is the standard VAE).
        judge_checkpoint: zoo MNIST classifier checkpoint that labels generated images (val/acc, test/acc).
        judge_normalize: input normalisation of the judge; None: read from the judge checkpoint's data settings.
        n_show: number of generated test images (with their clips) in the logged figure, spread over the digits.
        optimizer: optimizer factory applied to the model parameters; default AdamW(lr=1e-3, weight_decay=1e-4).
        scheduler: optional learning-rate scheduler factory, stepped once per epoch; None keeps the rate constant.
    """

    monitor = ("val/loss", "min")

    def __init__(self, net: nn.Module, kl_weight: float = 1.0, judge_checkpoint: str | None = None,
                 judge_normalize: Normalize | None = None, n_show: int = 20,
                 optimizer: OptimizerCallable = default_optimizer,
                 scheduler: LRSchedulerCallable | None = None) -> None:
        super().__init__()
        save_task_hyperparameters(self)
        if kl_weight < 0:
            raise ValueError(f"AudioToImageVAE kl_weight must be >= 0, got {kl_weight}")
        self.net = net
        self.kl_weight, self.judge_checkpoint, self.judge_normalize, self.n_show = (
            kl_weight, judge_checkpoint, judge_normalize, n_show)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.val_acc = MulticlassAccuracy(NUM_DIGITS, average="micro")
        self.test_acc = MulticlassAccuracy(NUM_DIGITS, average="micro")
        # the judge is not a submodule: it must not be trained, saved in our checkpoints or counted as ours
        self.__dict__["_judge"] = None
        self._judge_normalize: Normalize = "zero_one"
        self._shown: dict | None = None
        self._seen = 0
        self._predict_judge = False

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
            self.set_judge(*load_judge(self.judge_checkpoint, self.judge_normalize,
                                       what="AudioToImageVAE: judge_checkpoint", hint=JUDGE_HINT))
        return self.judge.to(self.device)

    @torch.no_grad()
    def judge_images(self, images: torch.Tensor) -> torch.Tensor:
        """Judge logits ``(B, 10)`` for images in [0, 1]."""
        logits = self._ensure_judge()(to_model_input(images, self._judge_normalize))
        if logits.dim() != 2 or logits.shape[1] != NUM_DIGITS:
            raise ValueError(f"AudioToImageVAE: the judge must return (B, {NUM_DIGITS}) digit logits, got "
                             f"{tuple(logits.shape)}")
        return logits

    # --- model ------------------------------------------------------------------------------------
    def encode(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.encode(feats, lengths)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The image for each clip, from its latent mean, in [0, 1]."""
        mu, _ = self.encode(feats, lengths)
        return torch.sigmoid(self.net.decode_logits(mu))

    def sample(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """A random image for each clip, from a posterior sample of its latent."""
        mu, logvar = self.encode(feats, lengths)
        return torch.sigmoid(self.net.decode_logits(mu + torch.randn_like(mu) * (0.5 * logvar).exp()))

    def elbo_terms(self, feats, lengths, images) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loss, recon, kl, mu)``: per-clip sums over pixels / latent dims, averaged over the batch."""
        if images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28):
            raise ValueError(f"AudioToImageVAE expects paired images (B, 1, 28, 28), got {tuple(images.shape)}")
        mu, logvar = self.encode(feats, lengths)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        logits = self.net.decode_logits(z)
        recon = F.binary_cross_entropy_with_logits(logits, images, reduction="none").flatten(1).sum(1).mean()
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum(1).mean()
        return recon + self.kl_weight * kl, recon, kl, mu

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
        if self.judge is not None or self.judge_checkpoint:
            # judged accuracy during training too, when a judge is configured (informative, not monitored)
            self.val_acc(self.judge_images(torch.sigmoid(self.net.decode_logits(mu))), digits)
            self.log("val/acc", self.val_acc, prog_bar=True, batch_size=digits.shape[0])

    def on_test_epoch_start(self) -> None:
        self._ensure_judge()  # fail before the first batch if the judge is missing or broken
        self._shown = {"images": [], "digits": [], "judged": [], "index": []}
        self._seen = 0

    def test_step(self, batch, batch_idx: int) -> None:
        feats, lengths, images, digits = self._unpack(batch)
        loss, recon, kl, mu = self.elbo_terms(feats, lengths, images)
        self._log_terms("test", loss, recon, kl, digits.shape[0])
        generated = torch.sigmoid(self.net.decode_logits(mu))
        judged = self.judge_images(generated)
        self.test_acc(judged, digits)
        self.log("test/acc", self.test_acc, batch_size=digits.shape[0])
        self._keep_examples(generated, digits, judged.argmax(-1))

    def _keep_examples(self, generated, digits, judged) -> None:
        """Keep up to ``ceil(n_show / 10)`` examples per spoken digit (test sets are often sorted by digit),
        with their position in the test set so the matching audio can be fetched."""
        shown, per_digit = self._shown, -(-self.n_show // NUM_DIGITS)
        for k in range(digits.shape[0]):
            d = int(digits[k])
            if len(shown["index"]) < self.n_show and shown["digits"].count(d) < per_digit:
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

    # --- predict ----------------------------------------------------------------------------------
    def on_predict_start(self) -> None:
        """Label the generated images with the judge when it is at hand. The images are the output and the judge
        is a training-time artefact, so a judge file that is gone costs the digit column only, with a warning."""
        self._predict_judge = self.judge is not None
        if not self._predict_judge and self.judge_checkpoint:
            if Path(self.judge_checkpoint).is_file():
                self._ensure_judge()
                self._predict_judge = True
            else:
                rank_zero_warn(f"AudioToImageVAE: judge_checkpoint {self.judge_checkpoint} (saved with the model) not "
                               "found: the images are written without the judged digit; to add it, run from the "
                               "folder training ran in or put the judge checkpoint at that path")

    def predict_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        """``{"images": (B, 1, 28, 28) in [0, 1]}``, each from its clip's latent mean (as :meth:`forward`), plus
        ``"probs": (B, 10)``, the judge's digit probabilities for each image, when a judge is at hand.

        Batches: ``(feats, lengths, digits)`` from ``predict_path`` files, or the test split's
        ``(feats, lengths, images, digits)``; only the audio is used."""
        if len(batch) not in (3, 4):
            raise ValueError("AudioToImageVAE.predict_step expects (feats, lengths, digits) or (feats, lengths, "
                             f"images, digits) batches from SpokenDigitImagePairs, got {len(batch)} tensors")
        images = self(batch[0], batch[1])
        out = {"images": images}
        if self._predict_judge:
            out["probs"] = self.judge_images(images).softmax(-1)
        return out

    def configure_optimizers(self):
        return configure_optimizers_from(self, self.optimizer, self.scheduler)
