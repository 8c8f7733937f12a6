"""``benchmarks/recording_conditions.py``: the simulated recording conditions are what they say, and the
loading path (``load_recording`` + trimming) copes with the ones trimming is meant for."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from audio_fixtures import vowel, write_fsdd
from conftest import REPO
from datamodules.audio import (CLIPPED_SHARE, AudioFileError, clipped_share, load_recording, trim_silence,
                              warn_clipped, yin_pitch)

spec = importlib.util.spec_from_file_location("recording_conditions", REPO / "benchmarks" / "recording_conditions.py")
rc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rc)


def test_every_condition_is_written_in_class_folders_and_is_reproducible(tmp_path):
    fsdd = write_fsdd(tmp_path / "data", speakers=("alice",), takes=range(1)) / "fsdd" / "recordings"
    root = rc.make(tmp_path / "out", "alice", fsdd, takes=1, seed=0)
    conditions = sorted(p.name for p in root.iterdir())
    assert conditions == sorted(["as_recorded", "44k_padded", *rc.CONDITIONS])
    for cond in conditions:
        suffix = rc.LOSSY[cond][0] if cond in rc.LOSSY else ".wav"
        assert sorted(p.relative_to(root / cond).as_posix() for p in (root / cond).rglob("*.*")) == \
            [f"{d}/{d}_alice_0{suffix}" for d in range(10)]
    assert sf.info(root / "44k_padded" / "1" / "1_alice_0.wav").samplerate == 44100
    assert sf.info(root / "reverb_0.7s" / "1" / "1_alice_0.wav").samplerate == rc.RATE
    first = sf.read(root / "noise_10dB" / "7" / "7_alice_0.wav")[0]
    again = rc.make(tmp_path / "again", "alice", fsdd, takes=1, seed=0)
    assert np.array_equal(first, sf.read(again / "noise_10dB" / "7" / "7_alice_0.wav")[0])
    some = rc.make(tmp_path / "some", "alice", fsdd, takes=1, seed=0, only=["noise_10dB", "phone_aac"])
    assert sorted(p.name for p in some.iterdir()) == ["noise_10dB", "phone_aac"]
    assert np.array_equal(first, sf.read(some / "noise_10dB" / "7" / "7_alice_0.wav")[0])  # the same files


def test_conditions_change_the_recording_as_named():
    rng = np.random.default_rng(0)
    t = np.arange(int(0.4 * rc.RATE)) / rc.RATE
    word = 0.5 * np.sin(2 * np.pi * 440 * t) * np.hanning(t.size)
    padded = rc.CONDITIONS["padded"](word, np.random.default_rng(1))
    assert padded.size > word.size + 0.6 * rc.RATE  # 0.3-0.9 s either side
    spectrum = lambda y: np.abs(np.fft.rfft(y, 2 * rc.RATE))  # noqa: E731 (0.5 Hz bins)
    hum = spectrum(rc._hum(word, np.random.default_rng(1)))
    assert hum[100] > 100 * np.median(hum)  # 50 Hz
    tinny = spectrum(rc.CONDITIONS["tinny_mic"](word + 0.5 * np.sin(2 * np.pi * 150 * t), rng))
    assert tinny[300] < 0.05 * tinny[880]  # 150 Hz cut, 440 Hz kept
    clipped = rc._clipped(word, rng)
    assert np.isclose(np.abs(clipped).max(), 0.99)
    noisy = rc.CONDITIONS["noise_5dB"](word, np.random.default_rng(2))
    quiet = rc.CONDITIONS["noise_20dB"](word, np.random.default_rng(2))
    assert noisy[:1000].std() > 3 * quiet[:1000].std()  # the lead-in is noise only: 15 dB apart
    assert np.isclose(rc._dc_offset(word, np.random.default_rng(4))[:1000].mean(), 0.03, atol=1e-3)
    voice = vowel(120.0, (700.0,), sample_rate=rc.RATE).astype(np.float64)  # something with a pitch to change
    f0 = lambda y: float(np.nanmedian(yin_pitch(torch.from_numpy(y).float(), rc.RATE, 160).numpy()))  # noqa: E731
    assert f0(rc.CONDITIONS["voice_220Hz"](voice, np.random.default_rng(5))) == pytest.approx(220, rel=0.06)
    assert f0(rc.CONDITIONS["voice_170Hz"](voice, np.random.default_rng(5))) == pytest.approx(170, rel=0.06)


def test_adding_a_condition_leaves_the_published_conditions_files_unchanged(tmp_path, monkeypatch):
    fsdd = write_fsdd(tmp_path / "data", speakers=("alice",), takes=range(2)) / "fsdd" / "recordings"
    full = rc.make(tmp_path / "full", "alice", fsdd, takes=2, seed=0, voices=False)
    monkeypatch.setattr(rc, "CONDITIONS", {k: v for k, v in rc.CONDITIONS.items() if k in rc.FIRST})
    first = rc.make(tmp_path / "first", "alice", fsdd, takes=2, seed=0)
    assert not (first / "dc_offset").exists() and not (full / "voice_220Hz").exists()
    for name in rc.FIRST:
        for wav in (first / name).rglob("*.wav"):
            assert np.array_equal(sf.read(wav)[0], sf.read(full / wav.relative_to(first))[0]), wav


def test_a_recorders_dc_offset_is_removed_and_a_pure_offset_is_silent(tmp_path):
    t = np.arange(int(0.5 * rc.RATE)) / rc.RATE
    word = 0.1 * np.sin(2 * np.pi * 300 * t) * np.hanning(t.size)
    sf.write(tmp_path / "clean.wav", word.astype(np.float32), rc.RATE, subtype="PCM_16")
    sf.write(tmp_path / "offset.wav", (word + 0.2).astype(np.float32), rc.RATE, subtype="PCM_16")
    clean, offset = load_recording(tmp_path / "clean.wav", 8000), load_recording(tmp_path / "offset.wav", 8000)
    assert abs(float(offset.mean())) < 1e-4
    assert torch.allclose(offset, clean, atol=1e-3)  # the same recording, without the offset
    sf.write(tmp_path / "dc.wav", np.full(8000, 0.3, np.float32), 8000, subtype="PCM_16")
    with pytest.raises(AudioFileError, match=r"dc\.wav: silent"):
        load_recording(tmp_path / "dc.wav", 8000)


def test_a_clipped_recording_is_still_read_and_is_reported(tmp_path, caplog):
    t = np.arange(int(0.5 * rc.RATE)) / rc.RATE
    word = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 8)) * np.hanning(t.size)  # a vowel-like buzz
    word = 0.5 * word / np.abs(word).max()
    clip = rc._clipped(word, np.random.default_rng(0))  # the benchmark's condition: 10 dB into the rails
    assert clipped_share(torch.from_numpy(word[:, None])) == 0.0  # speech peaks in single samples
    # a peak held for one more sample is no clipping; a recording driven into the rails is, in any depth and layout
    held = word.copy()
    held[np.argmax(np.abs(held)) + 1] = held[np.argmax(np.abs(held))]
    assert 0.0 < clipped_share(torch.from_numpy(held[:, None])) < CLIPPED_SHARE
    sf.write(tmp_path / "clean.wav", word.astype(np.float32), rc.RATE, subtype="PCM_16")
    sf.write(tmp_path / "held.wav", held.astype(np.float32), rc.RATE, subtype="FLOAT")
    sf.write(tmp_path / "clipped.wav", clip.astype(np.float32), rc.RATE, subtype="PCM_16")
    sf.write(tmp_path / "clipped_stereo.flac", np.stack([clip, 0.8 * clip], 1), rc.RATE, subtype="PCM_24")
    # a microphone on the left input only: the silent right channel's zeros are no flat top
    sf.write(tmp_path / "left_only.wav", np.stack([word, np.zeros_like(word)], 1), rc.RATE, subtype="PCM_16")
    clipped = []
    read = {name: load_recording(tmp_path / name, 8000, clipped)
            for name in ("clean.wav", "held.wav", "left_only.wav", "clipped.wav", "clipped_stereo.flac")}
    assert clipped == [tmp_path / "clipped.wav", tmp_path / "clipped_stereo.flac"]
    assert abs(read["clipped.wav"].numel() - clip.size / 2) <= 1  # read as any other file (16 -> 8 kHz)
    with caplog.at_level("WARNING", logger="datamodules.audio"):
        warn_clipped(clipped)
        warn_clipped([])  # nothing to say: no warning
    assert caplog.text.count("look clipped") == 1 and "2 file(s) look clipped" in caplog.text
    assert str(tmp_path / "clipped_stereo.flac") in caplog.text and "clean.wav" not in caplog.text


def test_trimming_with_a_gap_finds_the_word_after_the_benchmarks_click(tmp_path):
    t = np.arange(int(0.5 * rc.RATE)) / rc.RATE
    word = 0.5 * np.sin(2 * np.pi * 300 * t) * np.hanning(t.size)
    path = tmp_path / "click.wav"
    sf.write(path, rc._click(word, np.random.default_rng(3)).astype(np.float32), rc.RATE)
    x = load_recording(path, 8000)
    whole = trim_silence(x, 8000, top_db=15)
    word_only = trim_silence(x, 8000, top_db=15, max_gap=0.3)
    assert whole.numel() > 0.8 * 8000  # click, silence and word
    assert 0.3 * 8000 < word_only.numel() < 0.55 * 8000
    assert torch.isfinite(word_only).all()


@pytest.mark.parametrize("name", ["phone_aac", "browser_opus"])
def test_lossy_conditions_are_the_padded_word_through_a_phones_codec(tmp_path, name):
    """What predict reads back from the .m4a / .webm file is the padded recording, not silence or another clip,
    and not bit-exact (the codec is lossy)."""
    fsdd = write_fsdd(tmp_path / "data", speakers=("alice",), takes=range(1)) / "fsdd" / "recordings"
    root = rc.make(tmp_path / "out", "alice", fsdd, takes=1, seed=0, voices=False)
    path = root / name / "0" / f"0_alice_0{rc.LOSSY[name][0]}"  # the first clip: the first draws of its generator
    decoded = load_recording(path, rc.RATE).numpy()
    x, rate = sf.read(fsdd / "0_alice_0.wav", dtype="float64")
    word = AF.resample(torch.from_numpy(x).float(), rate, rc.RATE).numpy()
    own = np.random.default_rng([0, rc.zlib.crc32(name.encode())])
    padded = rc.CONDITIONS[name](word, own)
    padded = padded / np.abs(padded).max() * min(np.abs(padded).max(), 0.99)
    assert abs(len(decoded) - len(padded)) < 0.1 * rc.RATE  # the codec's priming adds at most a frame or two
    corr = np.correlate(decoded, padded, "full") / (np.linalg.norm(decoded) * np.linalg.norm(padded))
    assert 0.8 < corr.max() < 0.9999
