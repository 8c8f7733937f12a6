"""Spoken digits (0-9) from FSDD, AudioMNIST or offline espeak-ng speech, as MFCC sequences or log-mel images.

One DataModule, three ``source`` settings, so every audio experiment swaps data with one flag:

* ``fsdd``: Free Spoken Digit Dataset, ``<data_root>/fsdd/recordings/{digit}_{speaker}_{take}.wav``
  (6 male speakers x 10 digits x 50 takes, 8 kHz). ``split="official"``: takes 0-4 are test.
* ``audiomnist``: ``<data_root>/AudioMNIST/data/NN/{digit}_{NN}_{take}.wav`` (60 speakers, 48 kHz)
  plus ``data/audioMNIST_meta.txt`` (JSON with each speaker's gender). Splits are speaker-disjoint.
* ``tts``: digits spoken by espeak-ng (:mod:`datamodules.tts`); voices x rates x pitches are the
  speakers. Needs no dataset and no network: the README's offline main command uses it.

Features are computed once per (file list, feature settings), in batches, and cached under
``<cache_root>/spoken_digits/``; a second run only loads the cache. Dataset folders are never
written to. Splits (:mod:`datamodules.splits`, seeded by ``split_seed``) and train-set normalisation are
cheap and recomputed at every set-up.

Batches: ``feature="mfcc"`` -> ``(feats (B, T_max, n_mfcc) zero-padded, lengths (B,), y (B,))``, with 2 more
columns per frame under ``pitch_features`` and 3 more under ``formant_features``;
``feature="logmel"`` -> ``(x (B, 1, n_mels, frames), y (B,))``.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal, Sequence

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets.utils import download_and_extract_archive
from tqdm.auto import tqdm

from datamodules.audio import (
    AUDIO_SUFFIXES,
    MAX_WINDOW_S,
    AudioFileError,
    Clip,
    FeatureExtractor,
    FeatureSettings,
    add_noise,
    add_reverb,
    load_clips,
    load_recording,
    pad_sequences,
    random_channel,
    random_time_crop,
    shift_pitch,
    smooth_envelope,
    spec_augment,
    utterance_normalize,
    vtlp,
    warn_clipped,
    warp_frequency,
)
from datamodules.batches import DeviceBatches, check_device_resident, device_batches, resident
from datamodules.paths import cache_root, data_root, missing_dataset
from datamodules.predict import (
    PredictItem,
    check_saved_settings,
    find_files,
    good_labels,
    load_items,
)
from datamodules.settings import (
    ClosedUnitInterval,
    LegacySettingsMixin,
    NonNegativeInt,
    OpenUnitInterval,
    PositiveFloat,
    PositiveInt,
    UnitFraction,
    number_range,
    save_settings,
    upgrade_settings,
)
from datamodules.splits import SplitLoadersMixin, share_count, stratified_chunks

log = logging.getLogger(__name__)

STAGES = ("train", "val", "test")
DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
GENDERS = ["female", "male"]
FSDD_TEST_TAKES = range(5)  # upstream convention: takes 0-4 of every speaker and digit are the test set

DEFAULT_VOICES = ["en-us+m3", "en+m1", "en-gb-scotland+m4", "en-029+m7",
                  "en-us+f2", "en+f3", "en-gb-scotland+f4", "en-029+f1"]
DEFAULT_RATES = [130, 175, 220]
DEFAULT_PITCHES = [35, 50, 65]
Normalization = Literal["dataset", "utterance", "none"]
#: the largest vocal-tract-length warp: [0, 0.5)
WarpFraction = number_range("WarpFraction", float, [(">=", 0), ("<", 0.5)])
#: the longest reverberation time (s) of a simulated room: [0, 2]
ReverbTime = number_range("ReverbTime", float, [(">=", 0), ("<=", 2)])
#: a test-time frequency warp factor: (0.5, 2)
WarpFactor = number_range("WarpFactor", float, [(">", 0.5), ("<", 2.0)])
#: a factor on a voice's pitch: (0.25, 4), two octaves either way
PitchFactor = number_range("PitchFactor", float, [(">", 0.25), ("<", 4.0)])
#: an analysis window (s): (0, MAX_WINDOW_S], FeatureSettings' own bound
WindowSeconds = number_range("WindowSeconds", float, [(">", 0), ("<=", MAX_WINDOW_S)])


@dataclass(frozen=True)
class Archive:
    """Where a downloadable source lives: ``<data_root>/<folder>/<check>`` must exist when present."""

    name: str
    folder: str
    check: str
    url: str
    top: str  # the archive's top-level directory


ARCHIVES = {
    "fsdd": Archive("FSDD (Free Spoken Digit Dataset)", "fsdd", "recordings",
                    "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.tar.gz",
                    "free-spoken-digit-dataset-1.0.10"),
    "audiomnist": Archive("AudioMNIST", "AudioMNIST", "data",
                          "https://github.com/soerenab/AudioMNIST/archive/refs/heads/master.zip",
                          "AudioMNIST-master"),
}
#: corpora in a source's format under another folder name (``folder=`` / ``add_corpus=``), by that name: a
#: download must fetch the corpus the folder names, never the source's own. Pinned to a commit (upstream has
#: no releases); it holds the clips at 16 kHz (the shared copy is resampled to 8 kHz; features resample anyway).
FOLDER_ARCHIVES = {
    "AudioMNIST-AZ": Archive(
        "AudioMNIST-AZ (digits spoken in Azerbaijani)", "AudioMNIST-AZ", "data",
        "https://github.com/Natavan-A/AudioMNIST_AZ/archive/11dbeadb674eea4bf834494dd8e19686d61efd44.zip",
        "AudioMNIST_AZ-11dbeadb674eea4bf834494dd8e19686d61efd44"),
}


# --- locating / downloading the data ------------------------------------------------------------

def ensure_dataset(source: str, root: Path, download: bool, folder: str | None = None) -> Path:
    """Return ``<root>/<folder>`` (the source's own folder name unless ``folder`` is given); download and
    extract the upstream archive when allowed.

    Extraction goes to a staging folder first and is moved into place only once complete, so an
    interrupted download never looks like a dataset.
    """
    arc = ARCHIVES[source]
    if folder is not None and folder != arc.folder:
        arc = FOLDER_ARCHIVES.get(folder) or Archive(f"{arc.name}-format corpus {folder!r}", folder, arc.check, "", "")
    target = root / (folder or arc.folder)
    if (target / arc.check).is_dir():
        return target
    if not download:
        raise missing_dataset(arc.name, target / arc.check)
    if not arc.url:
        raise missing_dataset(arc.name, target / arc.check, setting=None,
                              hint=f"No download is known for the folder {folder!r} (known: "
                                   f"{sorted(FOLDER_ARCHIVES)}); put the corpus there yourself.")
    staging = root / f".{target.name}.download"
    if staging.exists():
        shutil.rmtree(staging)
    rank_zero_info(f"downloading {arc.name} from {arc.url} into {root}")
    download_and_extract_archive(arc.url, download_root=str(staging), extract_root=str(staging / "x"))
    extracted = staging / "x" / arc.top
    if not (extracted / arc.check).is_dir():
        raise RuntimeError(f"the {arc.name} archive from {arc.url} has no {arc.top}/{arc.check} folder; "
                           f"upstream layout changed? (extracted to {staging})")
    target.mkdir(parents=True, exist_ok=True)
    for item in extracted.iterdir():
        if not (target / item.name).exists():
            shutil.move(str(item), str(target / item.name))
    shutil.rmtree(staging)
    return target


_FSDD_NAME = re.compile(r"^(\d)_([A-Za-z0-9-]+)_(\d+)\.wav$")
_AUDIOMNIST_NAME = re.compile(r"^(\d)_(\d+)_(\d+)\.wav$")
_NOT_AUDIO = {".yaml", ".yml", ".txt", ".md", ".json"}  # notes and configs beside the clips: not clips


def _visible(folder: Path):
    return sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)


def fsdd_clips(root: Path) -> list[Clip]:
    """Parse ``<root>/recordings/{digit}_{speaker}_{take}.wav``; genders from ``metadata.py`` if present."""
    rec = root / "recordings"
    genders = _fsdd_genders(root / "metadata.py")
    clips = []
    for p in _visible(rec):
        m = _FSDD_NAME.match(p.name)
        if not m or not p.is_file():
            raise ValueError(f"{p}: unexpected entry in the FSDD recordings folder; expected files named "
                             "{digit}_{speaker}_{take}.wav, e.g. 3_theo_12.wav")
        clips.append(Clip(f"recordings/{p.name}", m[2], int(m[1]), int(m[3]), genders.get(m[2])))
    if not clips:
        raise ValueError(f"{rec}: no recordings found; expected {{digit}}_{{speaker}}_{{take}}.wav files")
    return clips


def _fsdd_genders(meta: Path) -> dict[str, str]:
    """Read the ``metadata = {...}`` literal of FSDD's ``metadata.py`` without executing it."""
    if not meta.is_file():
        return {}
    try:
        tree = ast.parse(meta.read_text())
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "metadata" for t in node.targets):
                data = ast.literal_eval(node.value)
                return {k: str(v["gender"]).lower() for k, v in data.items() if "gender" in v}
    except (SyntaxError, ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{meta}: could not read the speaker metadata ({e}); expected `metadata = {{...}}`") from e
    return {}


def audiomnist_clips(root: Path) -> list[Clip]:
    """Parse ``<root>/data/NN/{digit}_{NN}_{take}.wav`` and genders from ``data/audioMNIST_meta.txt``."""
    data = root / "data"
    meta = _audiomnist_meta(data / "audioMNIST_meta.txt")
    clips = []
    for folder in _visible(data):
        if folder.is_file():
            if folder.name == "audioMNIST_meta.txt":
                continue
            raise ValueError(f"{folder}: unexpected file in the AudioMNIST data folder; expected speaker "
                             "folders NN/ and audioMNIST_meta.txt")
        for p in _visible(folder):
            if p.is_file() and p.suffix.lower() in _NOT_AUDIO:  # upstream AudioMNIST-AZ keeps a yaml in data/01
                continue
            m = _AUDIOMNIST_NAME.match(p.name)
            if not m or not p.is_file() or m[2] != folder.name:
                raise ValueError(f"{p}: unexpected entry; expected files named {{digit}}_{folder.name}_{{take}}.wav "
                                 f"in speaker folder {folder.name}/")
            gender = meta.get(folder.name, {}).get("gender")
            clips.append(Clip(f"data/{folder.name}/{p.name}", folder.name, int(m[1]), int(m[3]),
                              str(gender).lower() if gender else None))
    if not clips:
        raise ValueError(f"{data}: no recordings found; expected data/NN/{{digit}}_NN_{{take}}.wav files")
    return clips


def _audiomnist_meta(path: Path) -> dict:
    if not path.is_file():
        log.warning("%s not found: speaker genders unknown (needed only for target='gender')", path)
        return {}
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e}); expected an object keyed by speaker id") from e
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object keyed by speaker id, got {type(meta).__name__}")
    return meta


# --- datasets -------------------------------------------------------------------------------------

class SpokenDigitDataset(Dataset):
    """Per-clip items: ``(x (1, n_mels, frames), y)`` for log-mel, ``(feats (T, n_mfcc), length, y)`` for MFCC."""

    def __init__(self, feats: torch.Tensor | list[torch.Tensor], labels: torch.Tensor, sequence: bool):
        self.feats, self.labels, self.sequence = feats, labels, sequence

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        if self.sequence:
            f = self.feats[i]
            return f, torch.tensor(f.shape[0], dtype=torch.int64), self.labels[i]
        return self.feats[i], self.labels[i]


def collate_sequences(items):
    """Zero-pad MFCC sequences to the longest in the batch; keep their true lengths."""
    feats, lengths = pad_sequences(f for f, _, _ in items)
    return feats, lengths, torch.stack([y for _, _, y in items])


def _trim_padding(cpu_lengths: torch.Tensor):
    """The transform that cuts a device-resident MFCC batch to its own longest clip, as
    :func:`collate_sequences` pads it; the length is read from the CPU copy (no device sync per batch)."""
    def trim(batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], index: torch.Tensor):
        feats, lengths, y = batch
        return feats[:, :int(cpu_lengths[index].max())], lengths, y
    return trim


class SpokenDigits(LegacySettingsMixin, SplitLoadersMixin, L.LightningDataModule):
    """Spoken digits from ``source`` as ``feature`` batches; see the module docstring for layouts.

    Splits (validation is always disjoint from test and seeded by ``split_seed``):

    * ``fsdd``, ``split="official"``: test = takes 0-4 of every speaker and digit (300 clips);
      validation = ``val_fraction`` of the rest, stratified by speaker and digit.
    * ``fsdd``, ``split="speaker"``: test = every clip of ``test_speaker``; validation as above from
      the other speakers (FSDD has only six, so validation is not held out by speaker).
    * ``audiomnist`` / ``tts``: speaker-disjoint. ``"official"``: a seeded partition of speakers
      (``test_fraction`` test, ``val_fraction`` validation, stratified by gender);
      ``"speaker"``: test = ``test_speaker``, validation speakers drawn from the rest.

    ``target="gender"`` needs speakers of both genders (FSDD's six speakers are all male, so it is
    refused); AudioMNIST speakers without a meta entry are then left out, with a warning.

    Args:
        source: where the clips come from: "fsdd", "audiomnist" or "tts" (offline espeak-ng speech).
        feature: "mfcc" (variable-length (T, n_mfcc) sequences) or "logmel" (fixed (1, n_mels, frames) images).
        split: "official" (FSDD takes 0-4 / seeded speaker partition) or "speaker" (test = test_speaker's clips).
        test_speaker: with split="speaker", the speaker whose clips form the test set.
        target: label to predict: "digit" (10 classes) or "gender" (2 classes; not with fsdd).
        data_dir: data root folder with the dataset folders; None: $ZOO_DATA_DIR, else ./data.
        cache_dir: where features (and TTS clips) are cached; None: $ZOO_CACHE_DIR, else ~/.cache/zoo.
        download: download the FSDD / AudioMNIST archive when the dataset folder is missing (for ``folder`` /
            ``add_corpus``: the archive of the corpus that folder names, ``FOLDER_ARCHIVES``; others are refused).
        sample_rate: rate in Hz every clip is resampled to before feature extraction.
        n_mfcc: MFCC coefficients per frame (feature="mfcc").
        n_mels: mel bands of the log-mel image (feature="logmel").
        frames: time columns every log-mel image is resized to (feature="logmel").
        normalization: "dataset": standardise each MFCC coefficient / mel band with the training split's mean
            and std; "utterance": per clip, remove the image's mean level and scale it to unit std (logmel only;
            a recording's gain does not matter); "none".
        val_fraction: share held out for validation (clips for FSDD, speakers otherwise), in (0, 1).
        test_fraction: share of speakers in the test set for speaker-disjoint "official" splits, in (0, 1).
        batch_size: batch size of all loaders.
        num_workers: DataLoader worker processes (0: load in the main process; must be 0 with device_resident).
        split_seed: seed of the validation (and speaker-partition) draws (and of the device-resident epoch
            order outside a seeded run).
        voices: tts only: espeak-ng voice names (+fN/+mN set the gender); None: 8 default voices.
        rates: tts only: speaking rates in words per minute; None: 130, 175, 220.
        pitches: tts only: espeak-ng pitches (0-99); None: 35, 50, 65.
        progress: show progress bars while reading audio and computing features.
        spec_augment: mask random frequency and time bands of logmel training batches (SpecAugment).
        num_masks: number of frequency and of time bands masked per sample with spec_augment.
        mask_width: maximum width in rows/columns of each spec_augment band.
        time_crop: logmel training batches keep a random share in [time_crop, 1] of the time axis; 1.0: off.
        trim_db: cut leading/trailing silence quieter than this many dB below the loudest frame before
            features (train, test and predict alike); None: keep clips whole.
        trim_gap: with trim_db, sounds separated by a pause longer than this many seconds are separate, and
            only the one with the most energy (the word) is kept: a click, cough or door before or after the
            word is dropped with the silence around it. None: keep from the first sound to the last.
        vtlp: logmel training batches get vocal-tract-length perturbation, a random frequency warp in
            [1 - vtlp, 1 + vtlp] per sample; 0: off.
        channel_eq: the share of logmel training samples given a random microphone / telephone response (a
            high-pass at 50-600 Hz, a low-pass at 1.5-4 kHz, a tilt; ``datamodules.audio.random_channel``),
            before the noise; 0: off.
        reverb: logmel training batches get a room's reverberation, a reverberation time drawn per sample in
            [0, reverb] s (``datamodules.audio.add_reverb``), before the channel and the noise; 0: off.
        noise_snr: logmel training batches get background noise at a random SNR in [lo, hi] dB; None: off.
        pitch_shift: [lo, hi]: every training clip of the source (not the added espeak-ng or add_corpus clips) is
            heard twice, as recorded and with its voice's pitch scaled by a factor drawn log-uniformly from
            [lo, hi] (one per clip, fixed: seed 0), its formants kept (``datamodules.audio.shift_pitch``,
            TD-PSOLA, on the waveform before features; cached). For FSDD's six men: women's and children's
            pitch, which no image warp can make. Validation and test are untouched. None: off.
        add_tts: add the espeak-ng speakers (voices x rates x pitches) to the training split of a real source;
            validation and test stay real recordings (no effect with source="tts", which is all espeak-ng).
            With ``target="gender"`` each clip is labelled with its voice's sex (``+fN`` / ``+mN``).
        folder: the dataset's folder under data_dir when it is not the source's usual name (e.g.
            "AudioMNIST-AZ" for an AudioMNIST-format corpus).
        train_per_class: keep this many real training clips of each class (digit, or gender), chosen seeded
            (``split_seed``) and spread over the speakers; validation, test and added espeak-ng clips are
            unchanged. The original CBAM study trained on 50 clips per digit. None: every training clip.
        predict_path: files to predict on: an audio file (WAV, FLAC, Ogg, MP3, AIFF), a folder (searched
            recursively) or a glob;
            None: predict on the test split. Needs no dataset: features and normalisation come from
            the checkpoint.
        device_resident: keep the cached features of every split on the trainer's device (MFCC: zero-padded
            to the split's longest clip, each batch cut to its own longest as the DataLoader path pads it)
            and serve batches by slicing them (no DataLoader); each epoch's order is a function of the run's
            seed and the epoch only, and each DDP process takes its own shard (that of Lightning's
            DistributedSampler). The training augmentation and per-utterance normalisation run batched on
            the device after transfer on both paths, so nothing changes there. Predict uses a DataLoader.
        pitch_features: ``mfcc`` only: 2 pitch columns (log F0, voiced flag) per frame, for gender.
        formant_features: ``mfcc`` only: 3 formant columns (log F1-F3) per frame after those, for gender.
        window: analysis window in seconds, at most 0.25; None: 15 ms for MFCC, 25 ms for log-mel. Longer windows
            (0.05-0.064) resolve a low voice's harmonics, i.e. its pitch (``FeatureSettings``).
        add_corpus: an AudioMNIST-format folder whose clips join training as 10 classes of their own
            (labels 10-19; e.g. ``AudioMNIST-AZ``): more voices, never mixed with the digits' labels.
        train_gender: train and validate on speakers of this gender only (every training source); None: all.
            FSDD's six speakers are all male: this asks what a one-sex training set does to the other sex.
        test_gender: test on speakers of this gender only; None: all. With one checkpoint, ``test`` once per
            gender gives each sex's accuracy.
        test_warps: ``logmel`` only: test and predict batches come as one view per frequency warp factor (1.0:
            as recorded; 0.9: every frequency scaled by 0.9, a longer vocal tract), and the classifier takes
            the mean of its probabilities over the views (test-time VTLP, as Jaitly & Hinton averaged). None:
            one view, as recorded. Validation (checkpoint choice) stays one view.
        lifter: ``logmel`` only: every image (all stages, predict too, after the training augmentation and any
            test warp) keeps only the first ``lifter`` cepstral terms of each frame's spectrum
            (``datamodules.audio.smooth_envelope``): the vocal tract's envelope without the pitch's harmonics,
            which FSDD's six men show only at 100-140 Hz. At most ``n_mels``. None: off.
    """

    def __init__(self, source: Literal["fsdd", "audiomnist", "tts"] = "fsdd",
                 feature: Literal["mfcc", "logmel"] = "logmel",
                 split: Literal["official", "speaker"] = "official",
                 test_speaker: str | None = None,
                 target: Literal["digit", "gender"] = "digit",
                 data_dir: str | None = None, cache_dir: str | None = None, download: bool = False,
                 sample_rate: PositiveInt = 8000, n_mfcc: PositiveInt = 13, n_mels: PositiveInt = 64,
                 frames: PositiveInt = 64, normalization: Normalization = "dataset",
                 val_fraction: OpenUnitInterval = 0.1, test_fraction: OpenUnitInterval = 0.2,
                 batch_size: PositiveInt = 64, num_workers: NonNegativeInt = 0, split_seed: int = 0,
                 voices: list[str] | None = None, rates: list[int] | None = None,
                 pitches: list[int] | None = None, progress: bool = True,
                 spec_augment: bool = False, num_masks: NonNegativeInt = 2, mask_width: NonNegativeInt = 8,
                 time_crop: UnitFraction = 1.0, trim_db: PositiveFloat | None = None,
                 trim_gap: PositiveFloat | None = None, vtlp: WarpFraction = 0.0, channel_eq: ClosedUnitInterval = 0.0,
                 reverb: ReverbTime = 0.0,
                 noise_snr: tuple[float, float] | None = None, add_tts: bool = False, folder: str | None = None,
                 train_per_class: PositiveInt | None = None, predict_path: str | None = None,
                 device_resident: bool = False, pitch_features: bool = False,
                 add_corpus: str | None = None, train_gender: Literal["female", "male"] | None = None,
                 test_gender: Literal["female", "male"] | None = None,
                 test_warps: list[WarpFactor] | None = None,
                 pitch_shift: tuple[PitchFactor, PitchFactor] | None = None,
                 lifter: PositiveInt | None = None, formant_features: bool = False,
                 window: WindowSeconds | None = None) -> None:
        """
        Args:
            test_speaker: with ``split="speaker"``, the speaker whose clips form the test set.
            test_fraction: share of speakers in the test set for speaker-disjoint ``"official"``
                splits (AudioMNIST, TTS); FSDD's official split is fixed by take number.
            voices, rates, pitches: ``tts`` only: espeak-ng voice names (``+fN``/``+mN`` variants
                set the gender), speaking rates (words per minute) and pitches (0-99); every
                combination is one speaker. Defaults: 8 voices (4 female) x 3 rates x 3 pitches.
            progress: show tqdm bars while reading audio and computing features.
            spec_augment: ``logmel`` training batches get SpecAugment-style masking (Park et al.,
                2019): ``num_masks`` frequency and ``num_masks`` time bands of up to ``mask_width``
                rows/columns, drawn per sample, set to 0 (the normalised mean). Applied on the
                device after transfer, never to validation or test batches.
            time_crop: ``logmel`` training batches keep a random ``time_crop``-1.0 share of each
                image's time axis, stretched back to ``frames`` (1.0 = off); drawn per sample, on
                the device, before the masking. Invariance to how much silence a clip kept at its ends.
            pitch_features: ``mfcc`` only: append each frame's log2(F0 / 100 Hz) and a voiced flag (YIN,
                :func:`datamodules.audio.pitch_columns`), so frames have ``n_mfcc + 2`` numbers; for
                gender, where the voice's pitch is the strongest cue.
            formant_features: ``mfcc`` only: append each frame's log2(F_k / 1 kHz) for the first three formants
                (LPC, :func:`datamodules.audio.formant_columns`) after the pitch columns: the vocal tract's
                length, for gender, where a man with a high voice is otherwise called female.
            add_corpus: an AudioMNIST-format folder under ``data_dir`` (e.g. ``AudioMNIST-AZ``: 59 speakers,
                digits spoken in Azerbaijani) whose clips join the training split as classes of their own,
                ``<folder>/0`` ... ``<folder>/9`` (labels 10-19, listed in ``extra_class_names``): its words are
                not the source's digits, so their labels never mix, but the net hears many more voices.
                The task needs as many extra outputs (``Classifier(extra_classes=10)``, net ``num_classes``
                20); validation, test and predict stay on the source and its 10 classes. No effect with
                ``source="tts"`` (as ``add_tts``): the offline source reads no dataset folder, and the extra
                outputs stay untrained (never validated or predicted either).
        """
        super().__init__()
        save_settings(self)
        if split == "speaker" and not test_speaker:
            raise ValueError("SpokenDigits: split='speaker' needs test_speaker (--data.test_speaker NAME); "
                             "the valid names are listed by the error for an unknown speaker")
        if split != "speaker" and test_speaker:
            raise ValueError(f"SpokenDigits: test_speaker={test_speaker!r} is only used with split='speaker', "
                             f"but split={split!r}")
        if source == "fsdd" and target == "gender":
            raise ValueError("SpokenDigits: target='gender' is impossible with source='fsdd': all six FSDD "
                             "speakers are male; use source='audiomnist' or 'tts'")
        if test_warps is not None and (feature != "logmel" or not test_warps):
            raise ValueError(f"SpokenDigits: test_warps={test_warps} needs feature='logmel' and at least one factor "
                             f"(1.0: as recorded), got feature={feature!r}")
        if spec_augment and feature != "logmel":
            raise ValueError(f"SpokenDigits: spec_augment=True needs feature='logmel', got feature={feature!r}")
        if time_crop != 1.0 and feature != "logmel":
            raise ValueError(f"SpokenDigits: time_crop < 1 needs feature='logmel', got feature={feature!r}")
        spectral = [name for name, on in (("normalization='utterance'", normalization == "utterance"), ("vtlp", vtlp > 0),
                                          ("channel_eq", channel_eq > 0), ("reverb", reverb > 0),
                                          ("noise_snr", noise_snr is not None), ("lifter", lifter is not None)) if on]
        if spectral and feature != "logmel":
            raise ValueError(f"SpokenDigits: {', '.join(spectral)} need feature='logmel', got feature={feature!r}")
        if lifter is not None and lifter > n_mels:
            raise ValueError(f"SpokenDigits: lifter={lifter} cepstral terms cannot exceed n_mels={n_mels}")
        if pitch_shift is not None and not pitch_shift[0] <= pitch_shift[1]:
            raise ValueError(f"SpokenDigits: pitch_shift=[lo, hi] needs lo <= hi, got {list(pitch_shift)}")
        if noise_snr is not None and not noise_snr[0] <= noise_snr[1]:
            raise ValueError(f"SpokenDigits: noise_snr=[lo, hi] needs lo <= hi, got {list(noise_snr)}")
        if folder is not None and source == "tts":
            raise ValueError("SpokenDigits: folder names a dataset folder; source='tts' has none")
        if add_corpus is not None and target != "digit":
            raise ValueError(f"SpokenDigits: add_corpus={add_corpus!r} adds another corpus's words as extra digit "
                             f"classes; it needs target='digit', got {target!r}")
        if add_corpus is not None and source == "audiomnist" and add_corpus == (folder or "AudioMNIST"):
            raise ValueError(f"SpokenDigits: add_corpus={add_corpus!r} is the source's own folder; name another corpus")
        if target == "gender" and (train_gender or test_gender):
            raise ValueError("SpokenDigits: train_gender / test_gender keep one gender's speakers; with "
                             "target='gender' that leaves one class (pass --data.train_gender null --data.test_gender null)")
        if device_resident:
            check_device_resident("SpokenDigits", num_workers)
        hp = self.hparams
        for name in ("pitch_features", "formant_features"):
            if hp[name] and feature != "mfcc":
                raise ValueError(f"SpokenDigits: {name}=True appends columns to MFCC frames; it needs "
                                 f"feature='mfcc', got feature={feature!r}")
        self.settings = FeatureSettings(feature, hp.sample_rate, hp.n_mfcc, hp.n_mels, hp.frames, hp.trim_db,
                                        pitch_features, hp.trim_gap, formant_features, hp.window)
        self.voices = list(voices) if voices is not None else list(DEFAULT_VOICES)
        self.rates = list(rates) if rates is not None else list(DEFAULT_RATES)
        self.pitches = list(pitches) if pitches is not None else list(DEFAULT_PITCHES)
        self.class_names = list(DIGIT_NAMES) if target == "digit" else list(GENDERS)
        #: training-only classes of ``add_corpus`` (labels ``len(class_names)`` on); never validated or predicted
        self.extra_class_names = [f"{add_corpus}/{d}" for d in DIGIT_NAMES] if add_corpus else []
        self.num_classes = len(self.class_names)
        self.dataset_dir: Path | None = None  # where the clips of ``source`` were read (or synthesised)
        self.clips: list[Clip] = []
        self.feature_stats: tuple[torch.Tensor, torch.Tensor] | None = None
        self._splits: dict[str, list[int]] | None = None
        self._datasets: dict[str, SpokenDigitDataset] = {}
        #: per split, with device_resident: its (features[, lengths], labels) on the trainer's device
        self._on_device: dict[str, tuple[torch.Tensor, ...]] = {}
        self._roots: list[Path] = []  # per clip: its source's root (add_tts mixes two)
        self.predict_items: list[PredictItem] = []

    # --- data preparation ---------------------------------------------------------------------
    def _predicting_files(self) -> bool:
        trainer = self.trainer
        return bool(self.hparams.predict_path) and trainer is not None and trainer.state.fn == "predict"

    @property
    def _adds_tts(self) -> bool:
        """add_tts on a real source (with source='tts' every clip already is espeak-ng speech)."""
        return self.hparams.add_tts and self.hparams.source != "tts"

    def _sources(self) -> list[tuple[str, str | None]]:
        """(source, folder) of every corpus a fit reads."""
        return ([(self.hparams.source, self.hparams.folder)] + ([("tts", None)] if self._adds_tts else [])
                + ([("audiomnist", self.hparams.add_corpus)] if self._adds_corpus else []))

    @property
    def _adds_corpus(self) -> bool:
        """add_corpus on a real source; source='tts' is the offline demo and reads no dataset folder."""
        return bool(self.hparams.add_corpus) and self.hparams.source != "tts"

    def prepare_data(self) -> None:
        """Download / synthesise the clips and build the feature cache (rank 0 only under DDP).
        Predicting on files (``predict_path``) needs no dataset, so nothing is prepared for it."""
        if self._predicting_files():
            return
        for source, folder in self._sources():
            root, clips = self._locate(source, folder)
            if not self.cache_path(root, clips, source).is_file():
                self._load_features(root, clips, source)
        if self.hparams.pitch_shift is not None:
            root, clips = self._locate()
            if not self.cache_path(root, clips, self._shifted_source).is_file():
                self._load_features(root, clips, self._shifted_source, pitch_copies=True)

    def _locate(self, source: str | None = None, folder: str | None = None) -> tuple[Path, list[Clip]]:
        hp = self.hparams
        if source is None:
            source, folder = hp.source, hp.folder
        if source == "tts":
            from datamodules.tts import synthesize_digits, tts_folder

            return synthesize_digits(cache_root(hp.cache_dir) / "spoken_digits" / tts_folder(), self.voices,
                                     self.rates, self.pitches, progress=hp.progress)
        root = ensure_dataset(source, data_root(hp.data_dir), hp.download, folder)
        return root, fsdd_clips(root) if source == "fsdd" else audiomnist_clips(root)

    def cache_path(self, root: Path, clips: Sequence[Clip], source: str | None = None) -> Path:
        """``<cache_root>/spoken_digits/<source>-<feature>-<hash>.pt``; the hash covers the source, every
        file's name, size and modification time, and the feature settings."""
        source = source or self.hparams.source
        h = hashlib.sha256()
        h.update(json.dumps({"source": source, **self.settings.key_fields()}, sort_keys=True).encode())
        for c in clips:
            st = (root / c.path).stat()
            h.update(f"{c.path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return (cache_root(self.hparams.cache_dir) / "spoken_digits"
                / f"{source}-{self.settings.feature}-{h.hexdigest()[:20]}.pt")

    def _read_cache(self, path: Path, clips: list[Clip]):
        """The cached features, or None (with a warning naming the file) when the file is damaged or
        stale: a cache is derived data, so it is rebuilt rather than trusted."""
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if blob["files"] != [c.path for c in clips]:
                raise ValueError("it lists other files")
            feats = blob["feats"]
            if self.settings.feature == "mfcc":
                feats = list(torch.split(feats, blob["lengths"].tolist()))
            if len(feats) != len(clips):
                raise ValueError(f"it holds {len(feats)} clips, expected {len(clips)}")
            return feats
        except Exception as e:  # noqa: BLE001 - any damage (truncated zip, missing key, ...) means rebuild
            log.warning("SpokenDigits: feature cache %s is unusable (%s: %s); rebuilding it", path, type(e).__name__, e)
            return None

    @property
    def _shifted_source(self) -> str:
        """The cache name of the source's pitch-shifted copies (``pitch_shift``)."""
        lo, hi = (float(f) for f in self.hparams.pitch_shift)
        return f"{self.hparams.source}+pitch{lo:g}-{hi:g}-v1"  # v1: shift_pitch's version; bump when it changes

    def _pitch_factors(self, n: int) -> torch.Tensor:
        """One pitch factor per clip of the source, log-uniform in ``pitch_shift``, fixed (seed 0): the copies
        are data, cached once for every run, not a draw of each run's seed."""
        lo, hi = (math.log(float(f)) for f in self.hparams.pitch_shift)
        return torch.exp(lo + (hi - lo) * torch.rand(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64))

    def _load_features(self, root: Path, clips: list[Clip], source: str | None = None,
                       pitch_copies: bool = False) -> list[torch.Tensor] | torch.Tensor:
        """Features of ``clips`` from the cache named by ``source``, else computed and cached; with
        ``pitch_copies``, of the clips' pitch-shifted copies (``pitch_shift``; ``source`` names their cache)."""
        source = source or self.hparams.source
        path = self.cache_path(root, clips, source)
        start = time.perf_counter()
        if path.is_file():
            feats = self._read_cache(path, clips)
            if feats is not None:
                rank_zero_info(f"SpokenDigits: loaded {len(clips)} cached {self.settings.feature} features from "
                               f"{path} in {time.perf_counter() - start:.2f} s (warm)")
                return feats
        quiet = source.startswith("tts")  # espeak's native rate differs by design: no warning
        waves = load_clips([root / c.path for c in clips], self.settings.sample_rate,
                           progress=self.hparams.progress, warn_resample=not quiet)
        if pitch_copies:
            factors = self._pitch_factors(len(waves)).tolist()
            waves = [shift_pitch(w, self.settings.sample_rate, f)
                     for w, f in tqdm(zip(waves, factors), total=len(waves), desc="shifting pitch", unit="clip",
                                      disable=not self.hparams.progress, leave=False)]
        out = FeatureExtractor(self.settings)(waves, progress=self.hparams.progress)
        if self.settings.feature == "mfcc":
            lengths = torch.tensor([f.shape[0] for f in out], dtype=torch.int64)
            blob = {"files": [c.path for c in clips], "feats": torch.cat(out), "lengths": lengths}
            feats = out
        else:
            feats = torch.stack(out)
            blob = {"files": [c.path for c in clips], "feats": feats}
        blob["settings"] = asdict(self.settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(blob, tmp)
        os.replace(tmp, path)  # atomic: a concurrent reader never sees half a cache
        rank_zero_info(f"SpokenDigits: computed {self.settings.feature} features of {len(clips)} clips in "
                       f"{time.perf_counter() - start:.2f} s (cold), cached at {path}")
        return feats

    # --- splits ---------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._splits is not None or (stage == "predict" and self._predicting_files()):
            return
        hp = self.hparams
        seq = self.settings.feature == "mfcc"
        root, clips = self._locate()
        feats = self._load_features(root, clips)
        keep = list(range(len(clips)))
        if hp.target == "gender":
            keep = self._with_gender(clips)
        splits = self._split([clips[i] for i in keep])
        splits = {k: [keep[i] for i in v] for k, v in splits.items()}
        splits = self._by_gender(clips, splits)
        if hp.train_per_class is not None:
            splits["train"] = self._per_class(clips, splits["train"], int(hp.train_per_class))
        roots = [root] * len(clips)
        if hp.pitch_shift is not None:  # the training clips again, each at another pitch (same speaker, same label)
            shifted = self._load_features(root, clips, self._shifted_source, pitch_copies=True)
            splits["train"] += [len(clips) + i for i in splits["train"]]
            feats = feats + shifted if seq else torch.cat([feats, shifted])
            clips, roots = clips + clips, roots + roots
        if self._adds_tts:  # extra training speakers only: validation and test stay real recordings
            tts_root, tts_clips = self._locate("tts")
            tts_feats = self._load_features(tts_root, tts_clips, "tts")
            splits["train"] += range(len(clips), len(clips) + len(tts_clips))
            feats = feats + tts_feats if seq else torch.cat([feats, tts_feats])
            clips, roots = clips + tts_clips, roots + [tts_root] * len(tts_clips)
        offsets = [0] * len(clips)
        if self._adds_corpus:  # training only, as classes of their own (other words than the source's digits)
            aux_root, aux_clips = self._locate("audiomnist", hp.add_corpus)
            aux_feats = self._load_features(aux_root, aux_clips, "audiomnist")
            splits["train"] += range(len(clips), len(clips) + len(aux_clips))
            feats = feats + aux_feats if seq else torch.cat([feats, aux_feats])
            clips, roots = clips + aux_clips, roots + [aux_root] * len(aux_clips)
            offsets += [len(self.class_names)] * len(aux_clips)
        if hp.train_gender:  # the added speakers too: training hears one sex only
            splits["train"] = [i for i in splits["train"] if clips[i].gender == hp.train_gender]
        self.dataset_dir, self.clips, self._roots, self._splits = root, clips, roots, splits
        labels = torch.tensor([c.digit + off if hp.target == "digit" else GENDERS.index(c.gender)
                               if c.gender in GENDERS else -1 for c, off in zip(clips, offsets)], dtype=torch.int64)
        if hp.normalization == "dataset":
            self.feature_stats = self._fit_stats(feats, splits["train"])
            feats = self._apply_stats(feats)
        for stage_name, idx in splits.items():
            part = [feats[i] for i in idx] if seq else feats[idx].unsqueeze(1)
            self._datasets[stage_name] = SpokenDigitDataset(part, labels[idx], seq)
        rank_zero_info("SpokenDigits: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items())
                       + f" clips ({hp.source}{' + tts in train' if self._adds_tts else ''}"
                       + (f" + {hp.add_corpus} in train as classes of its own" if self._adds_corpus else "")
                       + f", split={hp.split}, target={hp.target}"
                       + "".join(f", {k}={v}" for k, v in (("train_gender", hp.train_gender),
                                                           ("test_gender", hp.test_gender)) if v)
                       + ")")

    def _by_gender(self, clips: list[Clip], splits: dict[str, list[int]]) -> dict[str, list[int]]:
        """``train_gender`` keeps that gender's speakers in train and validation, ``test_gender`` in test."""
        hp = self.hparams
        for stages, gender, name in ((("train", "val"), hp.train_gender, "train_gender"),
                                     (("test",), hp.test_gender, "test_gender")):
            for stage in stages if gender else ():
                kept = [i for i in splits[stage] if clips[i].gender == gender]
                if not kept and splits[stage]:
                    found = sorted({clips[i].gender or "unknown" for i in splits[stage]})
                    raise ValueError(f"SpokenDigits: {name}={gender!r} leaves no {stage} clip: the {stage} "
                                     f"speakers of source {hp.source!r} are {', '.join(found)}")
                splits[stage] = kept
        return splits

    def _target(self, clip: Clip):
        return clip.digit if self.hparams.target == "digit" else clip.gender

    def _per_class(self, clips: list[Clip], train: list[int], n: int) -> list[int]:
        """``n`` training clips of every class, dealt round-robin over the class's speakers (each speaker's
        clips and the speakers' turn order shuffled with ``split_seed``), so every speaker keeps an equal share
        as far as its clips allow."""
        rng = np.random.default_rng(self.hparams.split_seed)
        by_class: dict = {}
        for i in train:
            by_class.setdefault(self._target(clips[i]), {}).setdefault(clips[i].speaker, []).append(i)
        kept, counts = [], {}
        for label, speakers in sorted(by_class.items(), key=lambda kv: str(kv[0])):
            queues = [list(rng.permutation(speakers[s])) for s in sorted(speakers)]
            queues = [queues[k] for k in rng.permutation(len(queues))]
            taken: list[int] = []
            while len(taken) < n and any(queues):
                taken += [int(q.pop(0)) for q in queues if q][:n - len(taken)]
            kept += taken
            counts[label] = len(taken)
        short = {label: c for label, c in sorted(counts.items()) if c < n}
        if short:
            raise ValueError(f"SpokenDigits: train_per_class={n}, but the training split has fewer clips of "
                             f"class(es) {short}; lower train_per_class")
        return sorted(kept)

    def _with_gender(self, clips: list[Clip]) -> list[int]:
        hp = self.hparams
        unknown = sorted({c.speaker for c in clips if c.gender not in GENDERS})
        if unknown:
            log.warning("target='gender': leaving out %d speaker(s) with no known gender (%s): %s",
                        len(unknown), "no entry in audioMNIST_meta.txt" if hp.source == "audiomnist"
                        else "unknown gender", ", ".join(unknown))
        keep = [i for i, c in enumerate(clips) if c.gender in GENDERS]
        present = {clips[i].gender for i in keep}
        if present != set(GENDERS):
            raise ValueError(f"SpokenDigits: target='gender' needs female and male speakers, but source="
                             f"{hp.source!r} has only {sorted(present) or 'no'} speakers with a known gender")
        if hp.split == "speaker" and hp.test_speaker in unknown:
            raise ValueError(f"SpokenDigits: test_speaker={hp.test_speaker!r} has no known gender, so it cannot be "
                             "the test set for target='gender'")
        return keep

    def _split(self, clips: list[Clip]) -> dict[str, list[int]]:
        hp = self.hparams
        speakers = sorted({c.speaker for c in clips})
        if hp.split == "speaker" and hp.test_speaker not in speakers:
            raise ValueError(f"SpokenDigits: test_speaker={hp.test_speaker!r} is not a speaker of source "
                             f"{hp.source!r}; expected one of {speakers}")
        if hp.source == "fsdd":
            if hp.split == "official":
                test = [i for i, c in enumerate(clips) if c.take in FSDD_TEST_TAKES]
            else:
                test = [i for i, c in enumerate(clips) if c.speaker == hp.test_speaker]
            held = set(test)
            rest = [i for i in range(len(clips)) if i not in held]
            if len(rest) < 2:
                raise ValueError(f"SpokenDigits: only {len(rest)} clip(s) left for training and validation")
            # validation: a share of the clips stratified by speaker and digit
            val, train = stratified_chunks([(clips[i].speaker, clips[i].digit) for i in rest],
                                           [share_count(hp.val_fraction, len(rest)), None], hp.split_seed)
            return {"train": sorted(rest[j] for j in train), "val": sorted(rest[j] for j in val), "test": test}
        # speaker-disjoint sources: partitions of the speakers, stratified by gender
        gender = {c.speaker: c.gender or "unknown" for c in clips}
        if hp.split == "speaker":
            test_spk = [hp.test_speaker]
            rest = [s for s in speakers if s != hp.test_speaker]
            val, train = stratified_chunks([gender[s] for s in rest], [share_count(hp.val_fraction, len(rest)), None],
                                           hp.split_seed)
            val_spk, train_spk = [rest[j] for j in val], [rest[j] for j in train]
        else:
            sizes = [share_count(hp.test_fraction, len(speakers)), share_count(hp.val_fraction, len(speakers)), None]
            test, val, train = stratified_chunks([gender[s] for s in speakers], sizes, hp.split_seed)
            test_spk, val_spk, train_spk = ([speakers[j] for j in part] for part in (test, val, train))
        if not train_spk:
            raise ValueError(f"SpokenDigits: {len(speakers)} speakers are too few for a speaker-disjoint split with "
                             f"val_fraction={hp.val_fraction}, test_fraction={hp.test_fraction}: no training speaker left")
        part = {s: k for k, group in (("train", train_spk), ("val", val_spk), ("test", test_spk)) for s in group}
        return {k: [i for i, c in enumerate(clips) if part[c.speaker] == k] for k in STAGES}

    def _fit_stats(self, feats, train: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of each MFCC coefficient / mel band over the **train** split only (no test leak)."""
        if self.settings.feature == "mfcc":
            std, mean = torch.std_mean(torch.cat([feats[i] for i in train]), dim=0)  # over all train frames
        else:
            std, mean = torch.std_mean(feats[train].transpose(0, 1).reshape(feats.shape[1], -1), dim=1)
        return mean, std.clamp_min(1e-5)

    def _apply_stats(self, feats):
        mean, std = self.feature_stats
        if self.settings.feature == "mfcc":
            return [(f - mean) / std for f in feats]
        return (feats - mean[:, None]) / std[:, None]

    # --- what a checkpoint carries: predicting needs no dataset -------------------------------------
    def state_dict(self) -> dict:
        """Feature settings, normalisation and class names, saved in every checkpoint by Lightning, so that
        ``predict --ckpt_path`` on new files prepares them exactly as training did."""
        state = {"settings": asdict(self.settings), "normalization": self.hparams.normalization,
                 "lifter": self.hparams.lifter, "class_names": list(self.class_names)}
        if self.feature_stats is not None:
            state["feature_mean"], state["feature_std"] = self.feature_stats
        return state

    def load_state_dict(self, state: dict) -> None:
        mine = {**asdict(self.settings), "normalization": self.hparams.normalization, "lifter": self.hparams.lifter}
        state = upgrade_settings("SpokenDigits", state)  # checkpoints before issue 15 say "normalize"
        # a setting added later is missing from older checkpoints; its default is what they were computed with
        saved = {**{f.name: f.default for f in fields(FeatureSettings)}, **state.get("settings", {}),
                 "normalization": state.get("normalization", mine["normalization"]),
                 "lifter": state.get("lifter")}  # before zoo 0.3.3: no smoothing
        check_saved_settings("SpokenDigits", saved, mine)
        if "feature_mean" in state:
            self.feature_stats = (state["feature_mean"], state["feature_std"])

    # --- public accessors ------------------------------------------------------------------------
    def _check_stage(self, stage: str) -> str:
        if stage not in STAGES:
            raise ValueError(f"SpokenDigits: stage={stage!r} is not one of {list(STAGES)}")
        if self._splits is None:
            self.setup()
        return stage

    def dataset(self, stage: str) -> SpokenDigitDataset:
        """The ``train``/``val``/``test`` dataset (items as in a batch, without the batch dim)."""
        return self._datasets[self._check_stage(stage)]

    def metadata(self, stage: str) -> list[dict]:
        """Per item of :meth:`dataset`, same order: path, speaker, digit, take, gender (``None`` if unknown).
        With ``pitch_shift`` each training clip is listed twice: its pitch-shifted copy comes from the same file."""
        self._check_stage(stage)
        return [{"path": str(self._roots[i] / self.clips[i].path), "speaker": self.clips[i].speaker,
                 "digit": self.clips[i].digit, "take": self.clips[i].take, "gender": self.clips[i].gender}
                for i in self._splits[stage]]

    def _loader(self, stage: str, shuffle: bool) -> DataLoader | DeviceBatches:
        if not self.hparams.device_resident:
            return self._make_loader(self.dataset(stage), shuffle)
        ds = self.dataset(stage)
        # MFCC sequences: padded once to the split's longest clip; each batch is cut to its own longest
        *x, y = resident(self, self._on_device, stage,
                         lambda: (*pad_sequences(ds.feats), ds.labels) if ds.sequence else (ds.feats, ds.labels))
        trim = _trim_padding(torch.as_tensor([len(f) for f in ds.feats])) if ds.sequence else None
        return device_batches(self, tuple(x), y, self.hparams.batch_size, shuffle, seed=self.hparams.split_seed,
                              transform=trim)

    def _make_loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        hp = self.hparams
        return DataLoader(dataset, batch_size=hp.batch_size, shuffle=shuffle,
                          num_workers=hp.num_workers, persistent_workers=hp.num_workers > 0 and shuffle,
                          collate_fn=collate_sequences if self.settings.feature == "mfcc" else None)

    def predict_dataloader(self) -> DataLoader:
        """The test split, or with ``predict_path`` the user's files (the failed ones are in
        :attr:`predict_items` with their reason, and left out of the batches). On the test split
        :attr:`predict_items` lists its clips with their label and speaker, so the prediction writer's CSV and
        table show which voices a model gets wrong."""
        if not self.hparams.predict_path:  # a DataLoader: under DDP Lightning gives each clip to one rank
            test = self.dataset("test")
            self.predict_items = [PredictItem(m["path"], int(y), speaker=m["speaker"])
                                  for m, y in zip(self.metadata("test"), test.labels.tolist())]
            return self._make_loader(test, shuffle=False)
        return self._make_loader(self.predict_dataset(), shuffle=False)

    def predict_dataset(self) -> SpokenDigitDataset:
        """Features of the files of ``predict_path``, prepared as the training data was."""
        hp = self.hparams
        paths = find_files(hp.predict_path, AUDIO_SUFFIXES)
        rate = self.settings.sample_rate
        clipped: list[Path] = []
        self.predict_items, waves = load_items(hp.predict_path, paths, self.class_names,
                                               lambda p: load_recording(p, rate, clipped), (AudioFileError,))
        warn_clipped(clipped)
        feats = FeatureExtractor(self.settings)(waves, progress=hp.progress)
        seq = self.settings.feature == "mfcc"
        feats = feats if seq else torch.stack(feats)
        if hp.normalization == "dataset":
            if self.feature_stats is None:
                raise RuntimeError("SpokenDigits: predicting on files needs the training set's normalisation "
                                   "statistics, which come with a checkpoint: pass --ckpt_path of a trained model")
            feats = self._apply_stats(feats)
        labels = torch.tensor(good_labels(self.predict_items), dtype=torch.int64)
        return SpokenDigitDataset(feats if seq else feats.unsqueeze(1), labels, seq)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Training-only augmentation, then the envelope smoothing and per-utterance normalisation (every
        stage), on the device; with ``test_warps``, test and predict batches become a list of warped views of
        the same clips."""
        hp = self.hparams
        if self.settings.feature != "logmel":
            return batch
        trainer = self.trainer
        training = trainer is not None and trainer.training
        x, *rest = batch
        if hp.test_warps and trainer is not None and (trainer.testing or trainer.predicting):
            rate = self.settings.sample_rate
            return ([self._finish(x, None if a == 1.0 else lambda v, a=a: warp_frequency(v, a, rate))
                     for a in hp.test_warps], *rest)
        x = self._finish(x, self._augment_db if training and self._augments_db else None)
        if training and hp.time_crop < 1.0:
            x = random_time_crop(x, hp.time_crop)
        if training and hp.spec_augment:
            x = spec_augment(x, hp.num_masks, hp.mask_width)
        return (x, *rest)

    @property
    def _augments_db(self) -> bool:
        """Whether :meth:`_augment_db` changes anything (else the trip through dB is skipped)."""
        hp = self.hparams
        return hp.vtlp > 0 or hp.reverb > 0 or hp.channel_eq > 0 or hp.noise_snr is not None

    def _augment_db(self, x: torch.Tensor) -> torch.Tensor:
        x = vtlp(x, self.hparams.vtlp, self.settings.sample_rate)
        x = add_reverb(x, self.hparams.reverb)  # the room, then the microphone, then the room's noise
        x = random_channel(x, self.settings.sample_rate, self.hparams.channel_eq)
        return add_noise(x, tuple(self.hparams.noise_snr)) if self.hparams.noise_snr is not None else x

    def _in_db(self, x: torch.Tensor, fn) -> torch.Tensor:
        """``fn`` applied to the log-mel levels in dB: warps and noise act on those, so with
        ``normalization="dataset"`` the batch is taken back to dB with the training statistics first."""
        if self.hparams.normalization != "dataset":
            return fn(x)
        mean, std = (t.to(x.device)[:, None] for t in self.feature_stats)
        return (fn(x * std + mean) - mean) / std

    def _finish(self, x: torch.Tensor, change=None) -> torch.Tensor:
        """``change`` (an augmentation or a warp of the dB levels; None: none), the envelope smoothing
        (``lifter``), then per-utterance normalisation: the one order every stage shares."""
        lifter = self.hparams.lifter

        def in_db(v: torch.Tensor) -> torch.Tensor:
            v = change(v) if change is not None else v
            return smooth_envelope(v, lifter) if lifter else v

        if change is not None or lifter:
            x = self._in_db(x, in_db)
        return utterance_normalize(x) if self.hparams.normalization == "utterance" else x
