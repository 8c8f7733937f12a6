"""How much do recording conditions cost a spoken-digit model on a voice it never heard?

A user's recording differs from FSDD's in more than the voice: silence and room noise around the word, another
gain and sample rate, a room's reverberation, a phone's band, mains hum, a click of the record button, clipping,
a recorder's DC offset, a phone's or browser's lossy codec.
This takes each FSDD speaker's clips, re-records them under each such condition (simulated, seeded), and runs
``python -m zoo predict`` with the checkpoint that never heard that speaker (a leave-one-speaker-out fold), so
the accuracy per condition is measured on real voices the model does not know
(docs/spoken_digits.md#recording-conditions-what-a-users-recording-costs-zoo-03).

    python benchmarks/recording_conditions.py OUT \
        'runs/grid_logs/spoken_digits_loso_cbam_recording/checkpoints/*/best-*.ckpt' --recipe configs/cbam_audio.yaml

Each checkpoint's held-out speaker is read from its folder name (``test_speaker=<name>``). Writes
``OUT/<speaker>/<condition>/<digit>/<file>.wav``, ``OUT/<speaker>.csv`` (the predict CSVs) and prints a markdown
table of accuracy per condition and speaker (also ``OUT/table.md``, and ``OUT/accuracy.json``).
"""

from __future__ import annotations

import csv
import glob
import json
import os
import re
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from jsonargparse import auto_cli

from datamodules.audio import write_av

RATE = 16000  # every simulated condition is written at 16 kHz but "as_recorded" (FSDD's 8 kHz) and "44k_padded"


def _padded(x: np.ndarray, rng: np.random.Generator, seconds: tuple[float, float] = (0.3, 0.9),
            floor_db: float = -60.0) -> np.ndarray:
    """The word with a random gain and a stretch of faint room noise either side: how a recorder keeps it."""
    x = x / np.abs(x).max() * 10 ** (rng.uniform(-25, -3) / 20)
    pad = lambda: np.zeros(int(rng.uniform(*seconds) * RATE))  # noqa: E731
    y = np.concatenate([pad(), x, pad()])
    return y + 10 ** (floor_db / 20) * rng.standard_normal(len(y))


def _noise(snr_db: float) -> Callable:
    def f(x, rng):
        speech = np.sqrt(np.mean(x ** 2))
        y = _padded(x, rng)
        gain = np.abs(y).max() / np.abs(x).max()  # the gain _padded drew, to set the SNR against the speech
        pink = np.cumsum(rng.standard_normal(len(y)))  # brown-ish: a room's hum-and-rumble spectrum, high-passed
        pink = pink - np.convolve(pink, np.ones(64) / 64, mode="same")
        pink = 0.5 * pink / pink.std() + 0.5 * rng.standard_normal(len(y))
        return y + pink / pink.std() * speech * gain * 10 ** (-snr_db / 20)
    return f


def _reverb(rt60: float, drr_db: float) -> Callable:
    def f(x, rng):
        n = int(rt60 * RATE)
        tail = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n)
        tail[: int(0.002 * RATE)] = 0.0  # the first reflection comes 2 ms after the direct sound
        tail *= 10 ** (-drr_db / 20) / np.sqrt(np.sum(tail ** 2))
        tail[0] = 1.0
        return _padded(np.convolve(x, tail), rng)
    return f


def _band(low: float | None, high: float | None) -> Callable:
    def f(x, rng):
        t = torch.from_numpy(x).float()
        for _ in range(2):  # 4th order
            t = AF.highpass_biquad(t, RATE, low) if low else t
            t = AF.lowpass_biquad(t, RATE, high) if high else t
        return _padded(t.numpy().astype(np.float64), rng)
    return f


def _hum(x, rng):
    y = _padded(x, rng)
    t = np.arange(len(y)) / RATE
    return y + 0.1 * np.abs(y).max() * (np.sin(2 * np.pi * 50 * t) + 0.5 * np.sin(2 * np.pi * 150 * t))


def _click(x, rng):
    """The record button's click 0.2-0.4 s before the word, louder than the word."""
    y = _padded(x, rng, seconds=(0.5, 0.9))
    at = int(rng.uniform(0.1, 0.3) * RATE)
    n = int(0.008 * RATE)
    y[at:at + n] += 1.5 * np.abs(y).max() * rng.standard_normal(n) * np.exp(-np.arange(n) / (0.002 * RATE))
    return y


def _clipped(x, rng):
    y = _padded(x, rng)
    return np.clip(y / np.abs(y).max() * 3.0, -0.99, 0.99)  # 10 dB into the rails


def _dc_offset(x, rng):
    """A recorder's constant offset of 0.03 full scale (-30 dBFS) under the word and its padding."""
    return _padded(x, rng) + 0.03


def _voice(pitch_hz: float, formant_ratio: float = 1.0) -> Callable:
    """The speaker's voice moved to a median pitch of ``pitch_hz`` (and formants scaled by ``formant_ratio``) with
    Praat's "Change gender" (PSOLA; praat-parselmouth, GPL-3, the ``bench`` extra): a woman's pitch from a man's
    recording. An implementation independent of the recipe's own ``shift_pitch``. Praat leaves energy below the
    new pitch that a voice does not have; a 70 Hz high-pass takes it out."""
    def f(x, rng):
        try:
            import parselmouth
            from parselmouth.praat import call
        except ImportError as e:
            raise SystemExit("recording_conditions: the voice conditions need praat-parselmouth "
                             "(pip install -e '.[bench]'); or pass --voices false") from e
        y = call(parselmouth.Sound(x, sampling_frequency=RATE), "Change gender", 75, 600, formant_ratio, pitch_hz,
                 1.0, 1.0).values[0]
        t = torch.from_numpy(y).float()
        for _ in range(2):
            t = AF.highpass_biquad(t, RATE, 70.0)
        return _padded(t.numpy().astype(np.float64), rng)
    return f


def _long_silence(x, rng):
    return _padded(x, rng, seconds=(1.5, 2.5), floor_db=-50.0)


CONDITIONS: dict[str, Callable] = {
    "padded": lambda x, rng: _padded(x, rng),
    "noise_20dB": _noise(20), "noise_10dB": _noise(10), "noise_5dB": _noise(5),
    "reverb_0.3s": _reverb(0.3, 3.0), "reverb_0.7s": _reverb(0.7, 0.0),
    "telephone": _band(300, 3400), "tinny_mic": _band(600, None), "muffled": _band(None, 1500),
    "hum_50Hz": _hum, "click": _click, "clipped": _clipped, "long_silence": _long_silence, "dc_offset": _dc_offset,
    "voice_170Hz": _voice(170.0), "voice_220Hz": _voice(220.0), "voice_female": _voice(220.0, 1.15),
    "phone_aac": _padded, "browser_opus": _padded,  # padded, then written lossy (LOSSY)
}
#: conditions written in a lossy format a phone or browser records (zoo 0.3.3): name -> (suffix, codec, bit rate);
#: padded at 16 kHz, then AAC at 32 kbit/s (a voice memo's lowest setting) or Opus at 16 kbit/s (a voice message)
LOSSY = {"phone_aac": (".m4a", "aac", 32_000), "browser_opus": (".webm", "libopus", 16_000)}
VOICES = ("voice_170Hz", "voice_220Hz", "voice_female")
#: the conditions of the first published table (zoo 0.3), which draw from one generator in this order
FIRST = ("padded", "noise_20dB", "noise_10dB", "noise_5dB", "reverb_0.3s", "reverb_0.7s", "telephone", "tinny_mic",
         "muffled", "hum_50Hz", "click", "clipped", "long_silence")


def make(out: Path, speaker: str, fsdd: Path, takes: int, seed: int, voices: bool = True,
         only: list[str] | None = None) -> Path:
    """Write ``out/<speaker>/<condition>/<digit>/`` for takes ``0..takes-1`` of every digit; returns the folder.
    ``voices=False`` leaves out the voice conditions (:data:`VOICES`); ``only`` writes just those conditions (the
    files are the same as in a full run)."""
    rng = np.random.default_rng(seed)
    # conditions added after the first table draw from generators of their own, so that adding one leaves the
    # published conditions' files (which share ``rng``, in this order) unchanged
    own = {name: np.random.default_rng([seed, zlib.crc32(name.encode())]) for name in CONDITIONS if name not in FIRST}
    root = out / speaker
    for digit in range(10):
        for take in range(takes):
            src = fsdd / f"{digit}_{speaker}_{take}.wav"
            x, rate = sf.read(src, dtype="float64")
            up = AF.resample(torch.from_numpy(x).float(), rate, RATE).numpy().astype(np.float64)
            for name in _names(voices):
                if only is not None and name not in only:
                    if name == "44k_padded":  # the shared generator must draw as in a full run
                        _padded(up, rng)
                    elif name in FIRST:
                        CONDITIONS[name](up, rng)
                    continue
                path = root / name / str(digit) / src.name
                path.parent.mkdir(parents=True, exist_ok=True)
                if name == "as_recorded":
                    sf.write(path, x, rate, subtype="PCM_16")
                    continue
                if name == "44k_padded":
                    y, r = AF.resample(torch.from_numpy(_padded(up, rng)).float(), RATE, 44100).numpy(), 44100
                else:
                    y, r = CONDITIONS[name](up, own.get(name, rng)), RATE
                peak = np.abs(y).max()
                y = (y / peak * min(peak, 0.99)).astype(np.float32)
                if name in LOSSY:
                    suffix, codec, bit_rate = LOSSY[name]
                    write_av(path.with_suffix(suffix), y, r, codec, bit_rate)
                else:
                    sf.write(path, y, r, subtype="PCM_16")
    return root


def _names(voices: bool) -> list[str]:
    return ["as_recorded", "44k_padded", *(c for c in CONDITIONS if voices or c not in VOICES)]


def main(out: str, ckpts: str, recipe: str = "configs/cbam_audio.yaml", takes: int = 10, seed: int = 0,
         fsdd: str | None = None, args: list[str] | None = None, voices: bool = True,
         conditions: list[str] | None = None) -> None:
    """Args:
        out: folder for the recordings, predict CSVs and table.
        ckpts: glob of leave-one-speaker-out checkpoints (folder names carry ``test_speaker=<name>``).
        recipe: the config the checkpoints were trained with (``zoo predict --config``).
        takes: takes per digit and speaker (10: 100 clips per speaker and condition).
        seed: seed of the simulated conditions.
        fsdd: FSDD's recordings folder (default ``$ZOO_DATA_DIR/fsdd/recordings``).
        voices: also the voice conditions (another pitch and vocal tract; needs praat-parselmouth).
        args: more ``zoo predict`` arguments, e.g. ``["--data.trim_gap", "null"]`` for a checkpoint trained
            with other feature settings than ``recipe``'s.
        conditions: only these conditions (e.g. the ones added since a checkpoint's last table); None: all.
    """
    fsdd_dir = Path(fsdd or Path(os.environ.get("ZOO_DATA_DIR", "data")) / "fsdd" / "recordings")
    if not fsdd_dir.is_dir():
        raise SystemExit(f"recording_conditions: FSDD recordings not found at {fsdd_dir}; expected the "
                         f"folder of FSDD's WAVs (--fsdd or ZOO_DATA_DIR)")
    unknown = sorted(set(conditions or ()) - set(_names(True)))
    if unknown:
        raise SystemExit(f"recording_conditions: unknown condition(s) {unknown}; expected some of {_names(True)}")
    paths = sorted(glob.glob(ckpts))
    if not paths:
        raise SystemExit(f"recording_conditions: no checkpoint matches {ckpts!r}")
    acc: dict[str, dict[str, float]] = {}
    for ck in paths:
        m = re.search(r"test_speaker=([a-z]+)", ck)
        if not m:
            raise SystemExit(f"recording_conditions: {ck}: no 'test_speaker=<name>' in its path")
        speaker = m.group(1)
        root = make(Path(out), speaker, fsdd_dir, takes, seed, voices, conditions)
        csv_path = Path(out) / f"{speaker}.csv"
        subprocess.run([sys.executable, "-m", "zoo", "predict", "--config", recipe, "--ckpt_path", ck,
                        "--data.predict_path", str(root), "--run.predictions_file", str(csv_path),
                        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                        "--data.progress", "false", *(args or [])], check=True, stdout=subprocess.DEVNULL)
        hits: dict[str, list[bool]] = {}
        with open(csv_path) as f:
            for row in csv.DictReader(f):
                cond = Path(row["path"]).relative_to(root).parts[0]
                hits.setdefault(cond, []).append(row["prediction"] == row["label"] and not row.get("error"))
        acc[speaker] = {c: 100.0 * sum(h) / len(h) for c, h in hits.items()}
    speakers = sorted(acc)
    conds = [c for c in _names(voices) if conditions is None or c in conditions]
    lines = [f"| condition | {' | '.join(speakers)} | mean |", "|---" * (len(speakers) + 2) + "|"]
    for c in conds:
        vals = [acc[s][c] for s in speakers]
        lines.append(f"| {c} | {' | '.join(f'{v:.0f}' for v in vals)} | **{np.mean(vals):.1f}** |")
    table = "\n".join(lines)
    (Path(out) / "table.md").write_text(table + "\n")
    (Path(out) / "accuracy.json").write_text(json.dumps(acc, indent=1) + "\n")
    print(table)


if __name__ == "__main__":
    auto_cli(main)
