"""espeak-ng through ctypes, one utterance per process: run as a script, it speaks one text and exits.

Why a process per clip: libespeak-ng keeps state between utterances that no API call resets (not
``espeak_Terminate`` + ``espeak_Initialize``, not ``espeak_ng_SetRandSeed``), so in one process the same word
comes out a few samples longer or shorter depending on what was said before ("zero", en+f1, rate 140,
pitch 40: 13,116 samples as the first utterance, 13,111 after another voice, 13,124 when repeated). It also
seeds the noise of breathy voices (+f2, +f3, +f5, ...) from the clock (in whole seconds). A clip that is the
first utterance of a fresh engine with a fixed noise seed is a function of its text and settings alone, for one
espeak-ng build and voice data (:func:`datamodules.tts.tts_folder` names the cache after them; ``fork`` from an
unused engine would be cheaper but is Linux-only in practice). The parent runs this file with ``sys.executable``,
so a frozen application (PyInstaller) cannot synthesise. This file imports only the standard library
and ``espeakng_loader``, so a process costs about 40 ms.

Protocol: ``python espeak.py TEXT VOICE RATE PITCH`` writes the sample rate (4 bytes, little-endian) and
then the int16 samples (native order) to stdout. Exit status 2: unknown voice; 3: synthesis failed; a
message on stderr either way.
"""

from __future__ import annotations

import os
import struct
import sys

# espeak-ng C API constants (speak_lib.h)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_espeakRATE, _espeakPITCH = 1, 3
_POS_CHARACTER = 1
_espeakCHARS_UTF8 = 1
_EE_OK = 0
EXIT_BAD_VOICE, EXIT_FAILED = 2, 3
RAND_SEED = 0


class UnknownVoice(Exception):
    """espeak-ng has no voice of that name."""


def speak(text: str, voice: str, rate: int, pitch: int, seed: int = RAND_SEED) -> tuple[int, bytes]:
    """``(sample_rate, int16 samples as bytes)`` of ``text``: call once per process (see the module doc)."""
    import ctypes

    import espeakng_loader

    callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [callback_type]
    data_path = espeakng_loader.get_data_path()
    sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data_path).encode(), 0)
    if sample_rate <= 0:
        raise RuntimeError(f"espeak-ng failed to initialise with voice data at {data_path}")
    # espeak-ng seeds the noise of breathy voices (+f2, +f3, +f5, ...) from the clock at start-up: fix it
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetRandSeed(int(seed))
    chunks: list[bytes] = []

    def collect(wav, numsamples, events) -> int:
        if numsamples > 0 and wav:
            chunks.append(ctypes.string_at(wav, 2 * numsamples))
        return 0  # 0 = continue synthesis

    keep = callback_type(collect)  # a reference for the whole synthesis: ctypes must not free it
    lib.espeak_SetSynthCallback(keep)
    if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
        raise UnknownVoice(voice)
    lib.espeak_SetParameter(_espeakRATE, int(rate), 0)
    lib.espeak_SetParameter(_espeakPITCH, int(pitch), 0)
    encoded = text.encode("utf-8")
    err = lib.espeak_Synth(encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _espeakCHARS_UTF8, None, None)
    if err != _EE_OK:
        raise RuntimeError(f"espeak_Synth returned error {err}")
    return sample_rate, b"".join(chunks)


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print("usage: espeak.py TEXT VOICE RATE PITCH", file=sys.stderr)
        return EXIT_FAILED
    text, voice, rate, pitch = argv
    try:
        sample_rate, samples = speak(text, voice, int(rate), int(pitch))
    except UnknownVoice:
        print(f"unknown voice {voice!r}", file=sys.stderr)
        return EXIT_BAD_VOICE
    except Exception as e:  # noqa: BLE001 - reported to the parent process, which raises with the clip's name
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAILED
    sys.stdout.buffer.write(struct.pack("<I", sample_rate) + samples)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    # run as a script, this folder heads sys.path: drop it so no module here can shadow a standard one
    if sys.path and os.path.realpath(sys.path[0] or ".") == os.path.dirname(os.path.realpath(__file__)):
        del sys.path[0]
    sys.exit(main(sys.argv[1:]))
