"""Offline spoken digits synthesised with espeak-ng: the source that needs no dataset and no network.

The ``espeakng-loader`` wheel ships ``libespeak-ng`` and its voice data; we drive the C API through
ctypes in synchronous mode and collect the samples from the synth callback, so nothing is played
and no ``espeak-ng`` executable is needed. Each voice x speaking rate x pitch combination acts as
one speaker; ``+fN`` / ``+mN`` voice variants give female and male voices, so gender is a real
target. WAVs are cached (``{digit}_{speaker}_0.wav``) and only missing ones are synthesised.
"""

from __future__ import annotations

import ctypes
import os
import re
import threading
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

# espeak-ng C API constants (speak_lib.h)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_espeakRATE, _espeakPITCH = 1, 3
_POS_CHARACTER = 1
_espeakCHARS_UTF8 = 1
_EE_OK = 0
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

_VOICE_NAME = re.compile(r"^[A-Za-z0-9-]+(\+[A-Za-z0-9]+)?$")
RATE_RANGE = (80, 450)  # words per minute espeak-ng accepts
PITCH_RANGE = (0, 99)


class Espeak:
    """A process-wide espeak-ng engine (the C library keeps global state, hence one instance + a lock)."""

    _instance: "Espeak | None" = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        import espeakng_loader

        self.data_path = Path(espeakng_loader.get_data_path())
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib = self.lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        self.sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self.data_path).encode(), 0)
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak-ng failed to initialise with voice data at {self.data_path}")
        self._chunks: list[np.ndarray] = []
        self._callback = _SYNTH_CALLBACK(self._collect)  # keep a reference: ctypes must not free it
        lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def get(cls) -> "Espeak":
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _collect(self, wav, numsamples, events) -> int:
        if numsamples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        return 0  # 0 = continue synthesis

    def synth(self, text: str, voice: str, rate: int = 175, pitch: int = 50) -> np.ndarray:
        """``text`` spoken by ``voice`` as int16 samples at :attr:`sample_rate`."""
        with self._lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                raise ValueError(f"tts voice {voice!r} is not an espeak-ng voice; expected a language such as "
                                 f"'en-us', 'en' (British) or 'en-gb-scotland', optionally with a variant ('en+f3'); see "
                                 f"{self.data_path / 'lang'} and {self.data_path / 'voices' / '!v'}")
            self.lib.espeak_SetParameter(_espeakRATE, int(rate), 0)
            self.lib.espeak_SetParameter(_espeakPITCH, int(pitch), 0)
            self._chunks = []
            data = text.encode("utf-8")
            err = self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _espeakCHARS_UTF8, None, None)
            if err != _EE_OK:
                raise RuntimeError(f"espeak-ng could not synthesise {text!r} with voice {voice!r} (error {err})")
            chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


def voice_gender(voice: str) -> str:
    """Gender of a voice: the ``gender`` line of its ``+variant`` file; espeak-ng's base voices are male."""
    if "+" not in voice:
        return "male"
    import espeakng_loader

    variant = voice.split("+", 1)[1]
    path = Path(espeakng_loader.get_data_path()) / "voices" / "!v" / variant
    if not path.is_file():
        raise ValueError(f"tts voice {voice!r}: variant {variant!r} not found (expected {path})")
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "gender":
            return parts[1].lower()
    return "male"


def speaker_name(voice: str, rate: int, pitch: int) -> str:
    return f"{voice}-r{rate}-p{pitch}"


def _check(voices: Sequence[str], rates: Sequence[int], pitches: Sequence[int]) -> None:
    if not voices or not rates or not pitches:
        raise ValueError(f"tts needs at least one voice, rate and pitch; got voices={list(voices)}, "
                         f"rates={list(rates)}, pitches={list(pitches)}")
    for v in voices:
        if not _VOICE_NAME.match(v):
            raise ValueError(f"tts voice {v!r}: expected an espeak-ng voice name like 'en-us' or 'en+f3'")
    for name, values, (lo, hi) in (("rates", rates, RATE_RANGE), ("pitches", pitches, PITCH_RANGE)):
        bad = [x for x in values if not lo <= int(x) <= hi]
        if bad:
            raise ValueError(f"tts {name} {bad} out of range: expected integers in [{lo}, {hi}]")


def synthesize_digits(out_dir: str | Path, voices: Sequence[str], rates: Sequence[int], pitches: Sequence[int],
                      digits: Sequence[int] = range(10), progress: bool = True):
    """Write (if missing) ``out_dir/{digit}_{speaker}_0.wav`` for every digit x voice x rate x pitch.

    Returns ``(out_dir, clips)`` with :class:`~datamodules.audio.Clip` records whose paths
    are relative to ``out_dir``; ``gender`` comes from the voice variant.
    """
    from datamodules.audio import Clip

    _check(voices, rates, pitches)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    engine: Espeak | None = None
    jobs = [(v, int(r), int(p), d) for v in voices for r in rates for p in pitches for d in digits]
    clips, genders = [], {}
    for voice, rate, pitch, digit in tqdm(jobs, desc="espeak-ng digits", unit="clip", disable=not progress,
                                          leave=False):
        spk = speaker_name(voice, rate, pitch)
        name = f"{digit}_{spk}_0.wav"
        path = out_dir / name
        if not path.is_file():
            engine = engine or Espeak.get()
            samples = engine.synth(DIGIT_WORDS[digit], voice, rate, pitch)
            if samples.size == 0:
                raise RuntimeError(f"espeak-ng produced no audio for {DIGIT_WORDS[digit]!r} with voice {voice!r}")
            tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
            sf.write(tmp, samples, engine.sample_rate, subtype="PCM_16", format="WAV")
            os.replace(tmp, path)
        if voice not in genders:
            genders[voice] = voice_gender(voice)
        clips.append(Clip(name, spk, digit, 0, genders[voice]))
    return out_dir, clips
