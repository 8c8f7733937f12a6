"""What the recipe's silence trimming keeps of one digit's word, speaker by speaker, and where the /s/ of "six" sits.

Leave-one-speaker-out's worst fold loses most of its points on one confusion (yweweler's "six" heard as "eight",
36-41 of 50 clips in every run); this measures, for each FSDD speaker's takes of a digit, the recording's length,
what ``trim_silence`` keeps of it at several thresholds, and how far below the vowel the loudest fricative frame
(more than half its energy above 2.5 kHz) lies: a consonant quieter than the threshold is cut from every image
(docs/spoken_digits.md#reproducible-espeak-ng-clips-zoo-038). With ``--results`` it also lists each run's largest
confusions from a grid's result files.

    python benchmarks/fsdd_word_edges.py --digit 6 --results docs/results/spoken_digits_ablation_recording/runs
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from jsonargparse import auto_cli

from datamodules.audio import load_clips, trim_silence
from datamodules.paths import data_root
from datamodules.spoken_digits import ensure_dataset, fsdd_clips


def fricative_gap(x: np.ndarray, sample_rate: int, win: float = 0.025, hop: float = 0.010) -> float:
    """dB from the loudest frame to the loudest fricative-like frame (more than half its energy above 2.5 kHz,
    where white noise at 8 kHz has 37.5 %, and within 60 dB of the loudest); NaN when the clip has none. A
    recorder's hiss can pass for a fricative: a gap near the clip's noise floor means no audible /s/."""
    n, step = round(win * sample_rate), round(hop * sample_rate)
    if len(x) < n:
        return float("nan")
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[::step] * np.hanning(n)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    high = np.fft.rfftfreq(n, 1 / sample_rate) > 2500
    level = 10 * np.log10(power.sum(1) + 1e-12)
    fricative = (power[:, high].sum(1) > 0.5 * power.sum(1)) & (level > level.max() - 60)
    return float(level.max() - level[fricative].max()) if fricative.any() else float("nan")


def word_edges(root: Path, digit: int, thresholds: list[float], max_gap: float = 0.3,
               sample_rate: int = 8000) -> list[dict]:
    """Per speaker: mean recording length, mean length kept at each threshold, the median fricative gap and the
    number of takes with a fricative frame at all; clips read as the datamodule reads them (mono, no DC offset, at
    ``sample_rate``, FSDD's own rate and the configs')."""
    by_speaker = defaultdict(list)
    for clip in fsdd_clips(root):
        if clip.digit == digit:
            by_speaker[clip.speaker].append(clip)
    rows = []
    for speaker, clips in sorted(by_speaker.items()):
        kept, gaps = defaultdict(list), []
        samples = load_clips([root / clip.path for clip in clips], sample_rate, progress=False)
        for x in samples:
            for db in thresholds:
                kept[db].append(trim_silence(x, sample_rate, top_db=db, max_gap=max_gap).numel() / sample_rate)
            gaps.append(fricative_gap(x.numpy(), sample_rate))
        raw = [x.numel() / sample_rate for x in samples]
        gaps = np.array(gaps)
        rows.append({"speaker": speaker, "takes": len(clips), "seconds": float(np.mean(raw)),
                     "kept": {db: float(np.mean(v)) for db, v in kept.items()},
                     "with_fricative": int(np.isfinite(gaps).sum()),
                     "fricative_below_peak_db": float(np.nanmedian(gaps)) if np.isfinite(gaps).any() else float("nan")})
    return rows


def top_confusions(results: Path, names: list[str] | None = None, at_least: int = 10) -> list[tuple[str, str, str, int]]:
    """``(run, true class, predicted class, clips)`` for every off-diagonal cell of at least ``at_least`` clips in
    the grid result files (``*.json`` with a ``confusion_matrix``) under ``results``."""
    found = []
    for path in sorted(results.glob("*.json")):
        record = json.loads(path.read_text())
        matrix = np.asarray(record.get("confusion_matrix") or [], dtype=int)
        if matrix.ndim != 2:
            continue
        labels = names or [str(i) for i in range(len(matrix))]
        for true, pred in zip(*np.nonzero(matrix >= at_least)):
            if true != pred:
                found.append((path.stem, labels[true], labels[pred], int(matrix[true, pred])))
    return found


def main(digit: int = 6, thresholds: list[float] = [15.0, 20.0, 25.0, 30.0], data_dir: str | None = None,  # noqa: B006
         results: str | None = None, at_least: int = 10) -> None:
    """Args:
        digit: which digit's takes to measure.
        thresholds: trimming thresholds (dB below the loudest frame; the configs use 15).
        data_dir: the data directory (default ``$ZOO_DATA_DIR``, else ``./data``).
        results: a grid's ``runs/`` folder of result files: list each run's confusions of ``at_least`` clips or more.
        at_least: the smallest confusion listed.
    """
    root = ensure_dataset("fsdd", data_root(data_dir), download=False)
    print(f"digit {digit}: mean seconds of the recording, kept by trimming at each threshold; loudest fricative frame "
          "below the loudest frame (median over the takes that have one)")
    for r in word_edges(root, digit, thresholds):
        kept = "  ".join(f"{db:g} dB {s:.2f}" for db, s in r["kept"].items())
        print(f"{r['speaker']:9s} {r['seconds']:.2f} s  kept: {kept}  fricative in {r['with_fricative']}/{r['takes']}, "
              f"{r['fricative_below_peak_db']:.1f} dB below")
    if results:
        print(f"\nconfusions of {at_least} clips or more (run: true -> predicted, clips)")
        for run, true, pred, n in top_confusions(Path(results), at_least=at_least):
            print(f"{run}: {true} -> {pred}, {n}")


if __name__ == "__main__":
    auto_cli(main)
