"""Spoken digit clips paired with MNIST images of the same digit (``configs/audio2image_vae_fsdd.yaml``).

Composes :class:`~datamodules.spoken_digits.SpokenDigits` (MFCC sequences) and
:class:`~datamodules.mnist.MNISTDataModule` (pixels in [0, 1]). Each clip is paired with a
*random* MNIST image of its digit, redrawn every training epoch: no clip is tied to one
handwriting, so a generator learns "what a 3 looks like" rather than memorising one picture.
The draw is made by :class:`PairSampler` from ``(data_seed, epoch)`` alone, so a run is reproducible
and worker processes need no shared state. Validation and test pairings are drawn once (epoch 0)
and stay fixed, so their losses are comparable across epochs.

Clip splits follow ``SpokenDigits`` (``split="official"`` or ``"speaker"`` + ``test_speaker``);
images come from the matching MNIST split: train clips get MNIST training images, validation
clips MNIST validation images, test clips MNIST test images.

Batches: ``(feats (B, T_max, n_mfcc) zero-padded, lengths (B,), images (B, 1, 28, 28), digits (B,))``.

Predicting on a user's recordings (``predict_path``) goes through the wrapped ``SpokenDigits``: the same
conversion as the training clips (any rate, depth and channel count; per-file errors in :attr:`predict_items`)
and the MFCC normalisation the checkpoint carries (:meth:`state_dict`), so it needs neither the clips nor
MNIST. Those batches have no image: ``(feats, lengths, digits)``, digits -1 where no class folder names one.
"""

from __future__ import annotations

from typing import Iterator, Literal, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from datamodules.audio import load_clips, pad_sequences
from datamodules.mnist import MNISTDataModule
from datamodules.paths import DatasetNotFoundError
from datamodules.predict import PredictItem
from datamodules.settings import LegacySettingsMixin, NonNegativeInt, OpenUnitInterval, PositiveInt, save_settings
from datamodules.splits import SplitLoadersMixin
from datamodules.spoken_digits import DIGIT_NAMES, SpokenDigits

NUM_DIGITS = 10


class PairSampler(Sampler[tuple[int, int]]):
    """Yields ``(clip index, image index)`` pairs; the image is a random one of the clip's digit.

    The pairing (and, with ``shuffle``, the clip order) depends only on ``seed`` and the epoch set by
    :meth:`set_epoch`, which Lightning calls at the start of every epoch, also for validation and
    test loaders; with ``redraw=False`` the epoch is ignored and the pairing stays fixed.
    """

    def __init__(self, clip_digits: torch.Tensor, image_digits: torch.Tensor, shuffle: bool, seed: int = 0,
                 redraw: bool = True) -> None:
        self.clip_digits = clip_digits.long()
        self.by_digit = [torch.nonzero(image_digits == d).flatten() for d in range(NUM_DIGITS)]
        needed = sorted({int(d) for d in self.clip_digits})
        empty = [d for d in needed if len(self.by_digit[d]) == 0]
        if empty:
            raise ValueError(f"PairSampler: no image of digit(s) {empty} to pair with the clips of those digits")
        self.shuffle, self.seed, self.redraw, self.epoch = shuffle, seed, redraw, 0

    def set_epoch(self, epoch: int) -> None:
        if self.redraw:
            self.epoch = epoch

    def pairs(self) -> list[tuple[int, int]]:
        """This epoch's pairs, in iteration order."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        n = len(self.clip_digits)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        draws = torch.rand(n, generator=g)  # one draw per clip index, independent of the order
        out = []
        for i in order.tolist():
            pool = self.by_digit[int(self.clip_digits[i])]
            out.append((i, int(pool[int(draws[i] * len(pool))])))
        return out

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self.pairs())

    def __len__(self) -> int:
        return len(self.clip_digits)


class ClipImagePairs(Dataset):
    """Indexed by ``(clip, image)`` pairs: returns ``(feats (T, n_mfcc), image (1, 28, 28), digit)``."""

    def __init__(self, clips: Dataset, images: torch.Tensor) -> None:
        self.clips, self.images = clips, images

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, pair: tuple[int, int]):
        i, j = pair
        feats, _, digit = self.clips[i]
        return feats, self.images[j], digit


def collate_pairs(items):
    feats, lengths = pad_sequences(f for f, _, _ in items)
    return feats, lengths, torch.stack([im for _, im, _ in items]), torch.stack([torch.as_tensor(y) for _, _, y in items])


class SpokenDigitImagePairs(LegacySettingsMixin, SplitLoadersMixin, L.LightningDataModule):
    """``SpokenDigits`` MFCC clips paired with same-digit MNIST images; see the module docstring.

    Args:
        source: where the clips come from: "fsdd", "audiomnist" or "tts" (as in SpokenDigits).
        split: "official" or "speaker" clip split (as in SpokenDigits).
        test_speaker: with split="speaker", the speaker whose clips form the test set.
        data_dir: data root folder with the audio dataset and ``MNIST/``; None: $ZOO_DATA_DIR, else ./data.
        cache_dir: where audio features are cached; None: $ZOO_CACHE_DIR, else ~/.cache/zoo.
        download: download the audio dataset and MNIST when missing.
        sample_rate: rate in Hz every clip is resampled to before MFCC extraction.
        n_mfcc: MFCC coefficients per frame; must match the model's n_mfcc.
        val_fraction: share of the clips held out for validation (as in SpokenDigits), in (0, 1).
        mnist_per_class: draw images from only this many MNIST training images per class; None: all of them.
        batch_size: batch size of all loaders.
        num_workers: DataLoader worker processes (0: load in the main process).
        split_seed: seed of the clip split and of the MNIST split.
        data_seed: seed of the clip-image pairing; None: split_seed.
        progress: show progress bars while reading audio and computing features.
        predict_path: recordings to generate images for: an audio file (WAV, FLAC, Ogg, MP3, AIFF), a folder (searched recursively) or a
            glob; None: predict on the test split. Needs no dataset: the MFCC normalisation comes from the checkpoint.
    """

    num_classes = NUM_DIGITS
    class_names = list(DIGIT_NAMES)

    def __init__(self, source: Literal["fsdd", "audiomnist", "tts"] = "fsdd",
                 split: Literal["official", "speaker"] = "official", test_speaker: str | None = None,
                 data_dir: str | None = None, cache_dir: str | None = None, download: bool = False,
                 sample_rate: PositiveInt = 8000, n_mfcc: PositiveInt = 13, val_fraction: OpenUnitInterval = 0.1,
                 mnist_per_class: PositiveInt | None = None, batch_size: PositiveInt = 64,
                 num_workers: NonNegativeInt = 0, split_seed: int = 0, data_seed: int | None = None,
                 progress: bool = True, predict_path: str | None = None) -> None:
        """
        Args:
            source, split, test_speaker, sample_rate, n_mfcc, val_fraction: as in ``SpokenDigits``.
            mnist_per_class: draw images from only this many MNIST training images per class
                (``None``: all 54k after the validation hold-out).
        """
        super().__init__()
        save_settings(self)
        self.data_seed = split_seed if data_seed is None else data_seed
        # The two wrapped DataModules are built on first use, not here: built inside our __init__, their
        # save_hyperparameters() would pick up *our* settings from LightningCLI's instantiation context.
        self._audio: SpokenDigits | None = None
        self._images: MNISTDataModule | None = None
        self._datasets: dict[str, ClipImagePairs] = {}
        self._samplers: dict[str, PairSampler] = {}

    @property
    def audio(self) -> SpokenDigits:
        """The wrapped MFCC ``SpokenDigits`` DataModule."""
        if self._audio is None:
            hp = self.hparams
            self._audio = SpokenDigits(source=hp.source, feature="mfcc", split=hp.split, test_speaker=hp.test_speaker,
                                       target="digit", data_dir=hp.data_dir, cache_dir=hp.cache_dir,
                                       download=hp.download, sample_rate=hp.sample_rate, n_mfcc=hp.n_mfcc,
                                       val_fraction=hp.val_fraction, batch_size=hp.batch_size,
                                       num_workers=hp.num_workers, split_seed=hp.split_seed, progress=hp.progress,
                                       predict_path=hp.predict_path)
        return self._audio

    @property
    def images(self) -> MNISTDataModule:
        """The wrapped ``MNISTDataModule`` (pixels in [0, 1])."""
        if self._images is None:
            hp = self.hparams
            self._images = MNISTDataModule(data_dir=hp.data_dir, download=hp.download, real_per_class=hp.mnist_per_class,
                                           normalization="zero_one", batch_size=hp.batch_size, split_seed=hp.split_seed)
        return self._images

    def _predicting_files(self) -> bool:
        trainer = self.trainer
        return bool(self.hparams.predict_path) and trainer is not None and trainer.state.fn == "predict"

    def prepare_data(self) -> None:
        if self._predicting_files():  # the user's recordings need neither the clips nor MNIST
            return
        self.audio.prepare_data()
        self.images.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        if self._datasets or (stage == "predict" and self._predicting_files()):
            return
        self.audio.setup(stage)
        self.images.setup(stage)
        for i, split in enumerate(("train", "val", "test")):
            clips = self.audio.dataset(split)
            images, image_digits = self.images.split(split)
            self._datasets[split] = ClipImagePairs(clips, images)
            train = split == "train"
            self._samplers[split] = PairSampler(clips.labels, image_digits, shuffle=train,
                                                seed=self.data_seed + i, redraw=train)

    def sampler(self, split: str) -> PairSampler:
        self.setup()
        return self._samplers[split]

    def dataset(self, split: str) -> ClipImagePairs:
        self.setup()
        return self._datasets[split]

    def waveforms(self, split: str, indices: Sequence[int]) -> tuple[list[torch.Tensor], int]:
        """Raw audio of clips ``indices`` of ``split`` (the order of its unshuffled loader), for logging."""
        meta = self.audio.metadata(split)
        sr = self.hparams.sample_rate
        return load_clips([meta[i]["path"] for i in indices], sr, progress=False), sr

    # --- predicting on a user's recordings ----------------------------------------------------------
    @property
    def predict_items(self) -> list[PredictItem]:
        """The files of the last ``predict_path`` run, with the reason for each one that could not be used."""
        return self.audio.predict_items

    def state_dict(self) -> dict:
        """The MFCC settings and training-set normalisation (saved in every checkpoint), so that predicting
        on new recordings converts them exactly as the training clips were."""
        return self.audio.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.audio.load_state_dict(state)

    def predict_dataloader(self) -> DataLoader:
        """The test pairs, or with ``predict_path`` the user's recordings as ``(feats, lengths, digits)`` (the
        failed files are in :attr:`predict_items` with their reason, and left out of the batches)."""
        if not self.hparams.predict_path:
            return self._loader("test")
        audio = self.audio
        if audio.hparams.normalization == "dataset" and audio.feature_stats is None:
            # a checkpoint written before this DataModule saved its state: the training split gives the statistics
            # back (the same clips and split_seed give the same numbers), if the clips are still there
            try:
                audio.setup("fit")
            except DatasetNotFoundError as e:
                raise RuntimeError("SpokenDigitImagePairs: predicting on files needs the training clips' MFCC "
                                   "normalisation; this checkpoint does not carry it (written before the DataModule "
                                   f"saved it) and the clips to recompute it are missing: {e}") from e
        return audio.predict_dataloader()

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        # order comes from the epoch-seeded sampler (it redraws the pairing), not from shuffle
        return DataLoader(self.dataset(split), batch_size=self.hparams.batch_size, sampler=self.sampler(split),
                          num_workers=self.hparams.num_workers, collate_fn=collate_pairs,
                          persistent_workers=False)
