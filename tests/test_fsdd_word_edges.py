"""benchmarks/fsdd_word_edges.py: the fricative's level below the vowel, what trimming keeps, and the confusions listed."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from audio_fixtures import write_wav
from conftest import REPO

spec = importlib.util.spec_from_file_location("fsdd_word_edges", REPO / "benchmarks" / "fsdd_word_edges.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
RATE = 8000


def _six(fricative_db: float | None, seed: int = 0) -> np.ndarray:
    """/s/ - vowel - /s/: 0.15 s of noise above 2.5 kHz ``fricative_db`` below a 0.2 s vowel (harmonics of 120 Hz),
    with 0.1 s of near-silence either side (the recording's noise floor, which trimming measures)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(0.2 * RATE)) / RATE
    vowel = sum(np.sin(2 * np.pi * 120 * k * t) / k for k in range(1, 12)) * np.hanning(len(t))
    vowel = 0.5 * vowel / np.abs(vowel).max()
    if fricative_db is None:
        return np.concatenate([np.zeros(2000), vowel, np.zeros(2000)]).astype(np.float32)
    spectrum = np.fft.rfft(rng.standard_normal(1200))
    spectrum[np.fft.rfftfreq(1200, 1 / RATE) < 2800] = 0
    hiss = np.fft.irfft(spectrum, 1200)
    # the loudest 25 ms frame of each, compared as the benchmark does (Hann-windowed power): scale the hiss to it
    frame = lambda x: max((np.hanning(200) * x[i:i + 200]).var() for i in range(0, len(x) - 200, 80))  # noqa: E731
    hiss *= np.sqrt(frame(vowel) / frame(hiss) * 10 ** (-fricative_db / 10))
    quiet = np.zeros(800)
    clip = np.concatenate([quiet, hiss, vowel, hiss, quiet])
    return (clip + 1e-4 * rng.standard_normal(len(clip))).astype(np.float32)


@pytest.mark.parametrize("db", [12.0, 25.0])
def test_fricative_gap_measures_the_hiss_below_the_vowel(db):
    assert bench.fricative_gap(_six(db), RATE) == pytest.approx(db, abs=2.0)


def test_no_fricative_is_nan():
    assert np.isnan(bench.fricative_gap(_six(None), RATE))


def test_word_edges_trimming_cuts_a_quiet_fricative_only_below_its_level(tmp_path):
    rec = tmp_path / "fsdd" / "recordings"
    for take in range(2):
        write_wav(rec / f"6_quiet_{take}.wav", _six(25.0, take), RATE)
        write_wav(rec / f"6_loud_{take}.wav", _six(8.0, take), RATE)
        write_wav(rec / f"1_quiet_{take}.wav", _six(None, take), RATE)  # another digit: not measured
    rows = {r["speaker"]: r for r in bench.word_edges(tmp_path / "fsdd", 6, [15.0, 35.0])}
    assert set(rows) == {"loud", "quiet"} and rows["quiet"]["takes"] == 2 and rows["quiet"]["with_fricative"] == 2
    assert rows["quiet"]["seconds"] == pytest.approx(0.7, abs=0.01)
    # 15 dB keeps the vowel (0.2 s, its soft edges partly cut) but not hiss 25 dB below it; 35 dB keeps both hisses
    # (0.5 s), not the near-silence around them
    assert rows["quiet"]["kept"][15.0] < 0.25 and 0.5 < rows["quiet"]["kept"][35.0] < 0.6
    assert 0.5 < rows["loud"]["kept"][15.0] < 0.6


def test_top_confusions_lists_large_off_diagonal_cells(tmp_path):
    matrix = np.diag([50] * 3)
    matrix[1, 1], matrix[1, 2] = 9, 41
    (tmp_path / "run-a.json").write_text(json.dumps({"confusion_matrix": matrix.tolist()}))
    (tmp_path / "no-matrix.json").write_text(json.dumps({"metrics": {}}))
    assert bench.top_confusions(tmp_path, at_least=10) == [("run-a", "1", "2", 41)]
    assert bench.top_confusions(tmp_path, names=["zero", "one", "two"], at_least=5) == [("run-a", "one", "two", 41)]
