"""espeak-ng through ctypes, a fresh engine per utterance: run as a script, it speaks one text and exits, or
(``--serve``) forks a fresh engine for each text it is sent.

Why a fresh engine per clip: libespeak-ng keeps state between utterances that no API call resets (not
``espeak_Terminate`` + ``espeak_Initialize``, not ``espeak_ng_SetRandSeed``), so in one process the same word
comes out a few samples longer or shorter depending on what was said before ("zero", en+f1, rate 140,
pitch 40: 13,116 samples as the first utterance, 13,111 after another voice, 13,124 when repeated). It also
seeds the noise of breathy voices (+f2, +f3, +f5, ...) from the clock (in whole seconds). A clip that is the
first utterance of a fresh engine with a fixed noise seed is a function of its text and settings alone, for one
espeak-ng build and voice data (:func:`datamodules.tts.tts_folder` names the cache after them).

Two ways to get a fresh engine, with the same samples (all 2,400 clips of the shipped configs compared):
a process per clip (about 60 ms: mostly Python's start-up), or ``--serve``, a small single-threaded server
that has loaded the library but never started it and ``fork``\\ s a child per clip (about 14 ms). The server
is a process of its own because forking the training process, with its threads, is unsafe. Where there is
no ``fork`` (Windows) the caller uses a process per clip. The parent runs this file with ``sys.executable``,
so a frozen application (PyInstaller) cannot synthesise. This file imports only the standard library and
``espeakng_loader``.

Protocols. ``python espeak.py TEXT VOICE RATE PITCH`` writes the sample rate (4 bytes, little-endian) and
then the int16 samples (native order) to stdout; exit status 2: unknown voice, 3: synthesis failed, with a
message on stderr. ``python espeak.py --serve`` reads one JSON list ``[text, voice, rate, pitch]`` per line
and answers each with a status and a length (``<iI``) and then that many bytes: the sample rate and samples
as above for status 0, else the message. It exits at the end of its input.
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
#: seconds a clip may take before the server gives up on it
TIMEOUT = 120.0
_REPLY = struct.Struct("<iI")


def timed_out(timeout: float) -> tuple[int, bytes]:
    """The ``(status, message)`` answer for a clip that took longer than ``timeout`` seconds."""
    return EXIT_FAILED, f"espeak-ng did not finish within {timeout:g} s".encode()


class UnknownVoice(Exception):
    """espeak-ng has no voice of that name."""


def _library():
    import ctypes

    import espeakng_loader

    return ctypes.CDLL(espeakng_loader.get_library_path())


def speak(text: str, voice: str, rate: int, pitch: int, seed: int = RAND_SEED) -> tuple[int, bytes]:
    """``(sample_rate, int16 samples as bytes)`` of ``text``: once per fresh engine (see the module doc)."""
    import ctypes

    import espeakng_loader

    callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
    lib = _library()
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


def _speak_status(text: str, voice: str, rate: int, pitch: int) -> tuple[int, bytes]:
    """``(0, sample rate + samples)``, or ``(exit status, message)``: what both protocols send."""
    try:
        sample_rate, samples = speak(text, voice, int(rate), int(pitch))
    except UnknownVoice:
        return EXIT_BAD_VOICE, f"unknown voice {voice!r}".encode()
    except Exception as e:  # noqa: BLE001 - reported to the parent process, which raises with the clip's name
        return EXIT_FAILED, f"{type(e).__name__}: {e}".encode()
    return 0, struct.pack("<I", sample_rate) + samples


def _fork_one(text: str, voice: str, rate: int, pitch: int, timeout: float) -> tuple[int, bytes]:
    """Speak in a forked child, so the engine this process never started is fresh for every clip."""
    import select
    import signal
    import time

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: nothing of it may reach the server's stdin / stdout, and it never returns
        code = EXIT_FAILED
        try:
            os.close(read_end)
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(null, 1)
            status, payload = _speak_status(text, voice, rate, pitch)
            view = memoryview(struct.pack("<i", status) + payload)
            while view:
                view = view[os.write(write_end, view):]
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)

    def stop_child() -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)

    chunks, deadline = [], time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([read_end], [], [], left)[0]:
                stop_child()
                return timed_out(timeout)
            chunk = os.read(read_end, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    except BaseException:  # the server itself is stopping: no child may outlive it unreaped
        stop_child()
        raise
    finally:
        os.close(read_end)
    _, wait_status = os.waitpid(pid, 0)
    data = b"".join(chunks)
    if os.waitstatus_to_exitcode(wait_status) != 0 or len(data) < 4:
        return EXIT_FAILED, f"the espeak-ng child ended with status {os.waitstatus_to_exitcode(wait_status)}".encode()
    return struct.unpack("<i", data[:4])[0], data[4:]


def serve(requests, replies, timeout: float = TIMEOUT) -> int:
    """Answer each ``[text, voice, rate, pitch]`` line of ``requests`` (binary) on ``replies`` (see the module doc)."""
    import json

    _library()  # load it once: every child starts from a loaded library and an engine never started
    for line in requests:
        try:
            text, voice, rate, pitch = json.loads(line)
            status, payload = _fork_one(str(text), str(voice), int(rate), int(pitch), timeout)
        except (ValueError, TypeError) as e:
            status, payload = EXIT_FAILED, f"bad request {line[:200].decode(errors='replace').strip()!r}: {e}".encode()
        replies.write(_REPLY.pack(status, len(payload)) + payload)
        replies.flush()
    return 0


def main(argv: list[str]) -> int:
    if argv == ["--serve"]:
        return serve(sys.stdin.buffer, sys.stdout.buffer)
    if len(argv) != 4:
        print("usage: espeak.py TEXT VOICE RATE PITCH | espeak.py --serve", file=sys.stderr)
        return EXIT_FAILED
    text, voice, rate, pitch = argv
    try:
        rate_, pitch_ = int(rate), int(pitch)
    except ValueError:
        print(f"rate and pitch must be integers, got {rate!r} and {pitch!r}", file=sys.stderr)
        return EXIT_FAILED
    status, payload = _speak_status(text, voice, rate_, pitch_)
    if status:
        print(payload.decode(errors="replace"), file=sys.stderr)
        return status
    sys.stdout.buffer.write(payload)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    # run as a script, this folder heads sys.path: drop it so no module here can shadow a standard one
    if sys.path and os.path.realpath(sys.path[0] or ".") == os.path.dirname(os.path.realpath(__file__)):
        del sys.path[0]
    sys.exit(main(sys.argv[1:]))
