"""Median pitch of each speaker of an AudioMNIST-format corpus, by the zoo's YIN and by Praat.

Where men's and women's pitch overlap, a clip-level gender classifier on pitch cannot separate them; this tells
whether the overlap is in the voices or in a tracker's octave errors (a man's 110 Hz read as 220 Hz). Two
independent trackers that agree speaker by speaker rule the octave errors out
(docs/spoken_digits.md#gender-from-real-voices). Needs Praat: ``pip install -e '.[bench]'`` (praat-parselmouth,
GPL-3; ``make install`` has it).

    python benchmarks/az_speaker_pitch.py --folder AudioMNIST-AZ > docs/results/audiomnist_az_pitch_check/median_f0_per_speaker.txt
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from jsonargparse import auto_cli

from datamodules.audio import yin_pitch
from datamodules.paths import data_root
from datamodules.spoken_digits import audiomnist_clips, ensure_dataset


def _median_f0(x: np.ndarray, sample_rate: int) -> tuple[float, float]:
    """(YIN, Praat) median F0 in Hz over the voiced frames of one clip; NaN when a tracker finds none."""
    import parselmouth

    x = x - x.mean()  # as the loading path: a recorder's DC offset is no part of the voice
    yin = yin_pitch(torch.from_numpy(x), sample_rate, int(sample_rate * 0.01)).numpy()
    praat = parselmouth.Sound(x.astype(np.float64), sample_rate).to_pitch(pitch_floor=60, pitch_ceiling=400)
    praat = praat.selected_array["frequency"]
    yin, praat = yin[~np.isnan(yin)], praat[praat > 0]
    return (float(np.median(yin)) if len(yin) else float("nan"), float(np.median(praat)) if len(praat) else float("nan"))


def speaker_pitch(root: Path, clips_per_speaker: int = 10) -> list[tuple[str, str, float, float, int]]:
    """``(speaker, gender, YIN median, Praat median, clips)`` per speaker, sorted by YIN's median: the median over
    ``clips_per_speaker`` clips spread over the speaker's files (every 6th, in name order) of each clip's median."""
    by_speaker = defaultdict(list)
    for clip in audiomnist_clips(root):
        by_speaker[clip.speaker].append(clip)
    rows = []
    for speaker, clips in sorted(by_speaker.items()):
        picked = sorted(clips, key=lambda c: c.path)[::6][:clips_per_speaker]
        medians = np.array([_median_f0(*sf.read(root / c.path, dtype="float32")) for c in picked])
        rows.append((speaker, picked[0].gender or "?", float(np.nanmedian(medians[:, 0])),
                     float(np.nanmedian(medians[:, 1])), len(picked)))
    return sorted(rows, key=lambda r: r[2])


def main(folder: str = "AudioMNIST-AZ", data_dir: str | None = None, clips_per_speaker: int = 10) -> None:
    """Args:
        folder: the corpus's folder under the data directory.
        data_dir: the data directory (default ``$ZOO_DATA_DIR``, else ``./data``).
        clips_per_speaker: clips per speaker whose medians are pooled.
    """
    root = ensure_dataset("audiomnist", data_root(data_dir), download=False, folder=folder)
    for speaker, gender, yin, praat, n in speaker_pitch(root, clips_per_speaker):
        print(f"{speaker} {gender:6s} yin {yin:6.1f}  praat {praat:6.1f}  ({n} clips)")


if __name__ == "__main__":
    auto_cli(main)
