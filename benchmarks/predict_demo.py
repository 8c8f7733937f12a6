"""Make a folder of spoken-digit recordings that no zoo model was trained on, in mixed formats, and time
``python -m zoo predict`` on it (docs/spoken_digits.md#predicting-on-your-own-recordings).

The project has no recordings of new people, so the voices are espeak-ng voices and accents that the
shipped configs never train on, each clip made recorder-like: half a second or so of room noise
before and after, a random gain, a little reverberation, and saved at 8-48 kHz as 16/24/32-bit or
float WAV or FLAC, mono or stereo, in class folders ``<digit>/``; plus three unusable files.

    python benchmarks/predict_demo.py OUT_DIR                     # writes OUT_DIR/recordings/
    python benchmarks/predict_demo.py OUT_DIR --ckpt CKPT         # and predicts on them, timed
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from jsonargparse import auto_cli

from datamodules.tts import DIGIT_WORDS, synth

VOICES = ["en-gb-x-gbclan+Annie", "en-gb-x-gbcwmd+belinda", "en-gb-x-gbclan+john", "en-gb-x-gbcwmd+max",
          "en-us+linda", "en+steph", "en-029+Andy", "en-us-nyc+david", "en-gb-scotland+grandma", "en+edward"]
FORMATS = [(8000, "WAV", "PCM_16", 1), (16000, "WAV", "FLOAT", 1), (22050, "WAV", "PCM_24", 1),
           (44100, "WAV", "PCM_32", 2), (48000, "FLAC", "PCM_24", 2), (32000, "FLAC", "PCM_16", 1)]


def _recorded(x: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A dry synthetic word made to sound recorded: reverb tail, gain, room noise, silence around it."""
    tail = np.exp(-np.arange(int(0.25 * rate)) / (0.05 * rate)) * rng.standard_normal(int(0.25 * rate))
    tail[0] = 1.0
    x = np.convolve(x, tail * 0.3)[: len(x) + len(tail) // 2]
    x = x / np.abs(x).max() * 10 ** (rng.uniform(-25, -3) / 20)
    pad = lambda: np.zeros(int(rng.uniform(0.3, 0.8) * rate))  # noqa: E731
    y = np.concatenate([pad(), x, pad()])
    return (y + 10 ** (rng.uniform(-65, -45) / 20) * rng.standard_normal(len(y))).astype(np.float32)


def make(out: Path, seed: int = 0) -> Path:
    import torch
    import torchaudio

    rng = np.random.default_rng(seed)
    root = out / "recordings"
    for i, voice in enumerate(VOICES):
        for digit, word in enumerate(DIGIT_WORDS):
            x, sr = synth(word, voice, rate=int(rng.integers(150, 200)), pitch=int(rng.integers(30, 70)))
            x = _recorded(x.astype(np.float32) / 32768, sr, rng)
            rate, fmt, subtype, channels = FORMATS[(i + digit) % len(FORMATS)]
            y = torchaudio.functional.resample(torch.from_numpy(x), sr, rate).numpy()
            y = np.stack([y, 0.9 * y], 1) if channels == 2 else y
            path = root / str(digit) / f"{voice.replace('+', '_')}.{fmt.lower()}"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, y, rate, format=fmt, subtype=subtype)
    bad = root / "unsorted"
    bad.mkdir(exist_ok=True)
    (bad / "empty.wav").write_bytes(b"")
    sf.write(bad / "silence.wav", np.zeros(16000, np.float32), 16000, subtype="PCM_16")
    (bad / "notes.flac").write_text("not audio")
    return root


def main(out: str, ckpt: str | None = None, recipe: str = "configs/cnn_audio.yaml") -> None:
    """Args:
        out: folder for the recordings (``out/recordings``) and the predictions CSV.
        ckpt: a trained checkpoint of ``recipe``; when given, predict on the recordings and time it.
        recipe: the config the checkpoint was trained with (``zoo predict --config``; ``--config`` is this
            script's own option for a file of its arguments).
    """
    root = make(Path(out))
    print(f"wrote {sum(1 for p in root.rglob('*') if p.is_file())} files under {root}")
    if ckpt:
        cmd = [sys.executable, "-m", "zoo", "predict", "--config", recipe, "--ckpt_path", ckpt,
               "--data.predict_path", str(root), "--run.predictions_file", str(Path(out) / "predictions.csv"),
               "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--data.progress", "false"]
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        print(f"predict took {time.perf_counter() - start:.1f} s (whole process)")


if __name__ == "__main__":
    auto_cli(main)
