"""benchmarks/az_speaker_pitch.py: both trackers find each fixture speaker's pitch, and genders come from the meta file."""
from __future__ import annotations

import importlib.util

import pytest

from audio_fixtures import voiced_tone, write_audiomnist, write_wav
from conftest import REPO

pytest.importorskip("parselmouth")
spec = importlib.util.spec_from_file_location("az_speaker_pitch", REPO / "benchmarks" / "az_speaker_pitch.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_median_pitch_per_speaker_by_yin_and_praat(tmp_path):
    root = write_audiomnist(tmp_path, genders={"01": "male", "02": "female"}, digits=[0, 1], takes=[0],
                            sample_rate=16000) / "AudioMNIST"
    for spk, f0 in (("01", 110.0), ("02", 230.0)):
        for d in (0, 1):  # replace the fixture's tones with voices of a known pitch, plus a DC offset
            write_wav(root / "data" / spk / f"{d}_{spk}_0.wav", voiced_tone(f0, 0.6, 16000, seed=d) + 0.05, 16000)
    rows = bench.speaker_pitch(root, clips_per_speaker=5)
    assert [(r[0], r[1], r[4]) for r in rows] == [("01", "male", 1), ("02", "female", 1)]  # every 6th: one of two
    for (_, _, yin, praat, _), f0 in zip(rows, (110.0, 230.0)):
        assert yin == pytest.approx(f0, rel=0.03) and praat == pytest.approx(f0, rel=0.03)
