"""Tiny spoken-digit fixture trees in the real FSDD and AudioMNIST layouts.

Clips are tones whose frequencies encode the digit (two partials, a per-speaker pitch offset and
a little noise), so a model can learn them, yet they are seconds to write. Use from any test:
``from audio_fixtures import write_fsdd, write_audiomnist``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import soundfile as sf


def digit_tone(digit: int, speaker: int = 0, take: int = 0, sample_rate: int = 8000, channels: int = 1,
               seconds: float | None = None) -> np.ndarray:
    """A digit-distinguishable signal: partials at ``300 + 250*digit`` Hz and 1.5x that, shifted per
    speaker by a few percent, with seeded noise; duration 0.20-0.34 s varying with the take."""
    rng = np.random.default_rng(1000 * digit + 100 * speaker + take)
    seconds = seconds if seconds is not None else 0.20 + 0.02 * (take % 8)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = (300.0 + 250.0 * digit) * (1.0 + 0.03 * speaker)
    x = 0.5 * np.sin(2 * np.pi * f0 * t) + 0.25 * np.sin(2 * np.pi * 1.5 * f0 * t)
    x = x * np.hanning(len(t)) + 0.02 * rng.standard_normal(len(t))
    x = x.astype(np.float32)
    return np.stack([x * (1.0 - 0.2 * c) for c in range(channels)], axis=1) if channels > 1 else x


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, sample_rate, subtype="PCM_16", format="WAV")
    return path


def write_fsdd(data_root: Path, speakers: Sequence[str] = ("alice", "bob", "carol"),
               digits: Iterable[int] = range(10), takes: Iterable[int] = range(7), sample_rate: int = 8000) -> Path:
    """Write ``<data_root>/fsdd/recordings/{digit}_{speaker}_{take}.wav``; returns ``data_root``."""
    rec = Path(data_root) / "fsdd" / "recordings"
    for s, speaker in enumerate(speakers):
        for d in digits:
            for k in takes:
                write_wav(rec / f"{d}_{speaker}_{k}.wav", digit_tone(d, s, k, sample_rate), sample_rate)
    return Path(data_root)


def write_audiomnist(data_root: Path, genders: dict[str, str | None] | None = None,
                     digits: Iterable[int] = range(10), takes: Iterable[int] = range(2),
                     sample_rate: int = 48000, folder: str = "AudioMNIST",
                     signal: Callable[[int, int, int, str], np.ndarray] | None = None) -> Path:
    """Write ``<data_root>/<folder>/data/NN/{digit}_{NN}_{take}.wav`` and ``data/audioMNIST_meta.txt``.

    ``genders`` maps speaker id to gender; ``None`` leaves that id out of the meta file, as upstream
    does for some ids. Default: 01-03 male, 04-05 female, 06 without meta entry. ``signal(digit, speaker
    index, take, gender)`` gives each clip's samples (default :func:`digit_tone`). Returns ``data_root``.
    """
    genders = genders if genders is not None else {"01": "male", "02": "male", "03": "male",
                                                   "04": "female", "05": "female", "06": None}
    data = Path(data_root) / folder / "data"
    meta = {}
    for s, (spk, gender) in enumerate(sorted(genders.items())):
        for d in digits:
            for k in takes:
                x = digit_tone(d, s, k, sample_rate) if signal is None else signal(d, s, k, gender)
                write_wav(data / spk / f"{d}_{spk}_{k}.wav", x, sample_rate)
        if gender is not None:
            meta[spk] = {"accent": "German", "age": str(20 + s), "gender": gender, "native speaker": "yes",
                         "origin": "Europe, Germany", "recordingdate": "17-06-22-11-04-28", "recordingroom": "Kitchen"}
    data.mkdir(parents=True, exist_ok=True)
    (data / "audioMNIST_meta.txt").write_text(json.dumps(meta, indent=4))
    return Path(data_root)


def voiced_tone(f0: float, seconds: float = 0.5, sample_rate: int = 8000, seed: int = 0) -> np.ndarray:
    """A voice-like harmonic signal: partials k * ``f0`` (k = 1..8, amplitude 1/k) under a Hann envelope,
    with seeded noise 30 dB down; its fundamental is exactly ``f0``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    x = sum(np.sin(2 * np.pi * k * f0 * t + k) / k for k in range(1, 9) if k * f0 < sample_rate / 2)
    x = 0.4 * x / np.abs(x).max() * np.hanning(len(t)) + 0.01 * rng.standard_normal(len(t))
    return x.astype(np.float32)


def vowel(f0: float, formants: Sequence[float], seconds: float = 0.5, sample_rate: int = 8000, seed: int = 0,
          bandwidth: float = 80.0) -> np.ndarray:
    """A sustained vowel: a glottal pulse train at ``f0`` through one two-pole resonator per formant (Hz,
    ``bandwidth`` wide; a cascade formant synthesiser as Klatt's), under a Hann envelope, with seeded noise
    40 dB down; its formants are exactly ``formants``."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    x = np.zeros(n)
    x[np.arange(0, n - 1, sample_rate / f0).astype(int)] = 1.0
    x = lfilter([1.0], [1.0, -0.9], x)  # glottal roll-off
    radius = np.exp(-np.pi * bandwidth / sample_rate)
    for f in formants:
        theta = 2 * np.pi * f / sample_rate
        x = lfilter([1.0 - radius], [1.0, -2 * radius * np.cos(theta), radius ** 2], x)
    x = 0.4 * x / np.abs(x).max() * np.hanning(n) + 0.004 * rng.standard_normal(n)
    return x.astype(np.float32)
