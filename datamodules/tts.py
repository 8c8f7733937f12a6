"""Offline spoken digits synthesised with espeak-ng: the source that needs no dataset and no network.

The ``espeakng-loader`` wheel ships ``libespeak-ng`` and its voice data; :mod:`datamodules.espeak` drives
its C API through ctypes, so nothing is played and no ``espeak-ng`` executable is needed. Each clip is
the first utterance of a fresh engine (the library's output depends on what it said before), so a clip is
the same whatever else was synthesised and in whichever order. Each voice x speaking rate x pitch
combination acts as one speaker; ``+fN`` / ``+mN`` voice variants give female and male voices, so gender is
a real target. WAVs are cached (``{digit}_{speaker}_0.wav``) and only missing ones are synthesised.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from datamodules import espeak

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

_VOICE_NAME = re.compile(r"^[A-Za-z0-9-]+(\+[A-Za-z0-9]+)?$")
RATE_RANGE = (80, 450)  # words per minute espeak-ng accepts
PITCH_RANGE = (0, 99)
#: the TTS cache folder's version: 2 (zoo 0.3.8) synthesises every clip with a fresh engine (same bytes since)
TTS_VERSION = 2


def tts_folder() -> str:
    """The cache folder's name: this synthesis's version and the ``espeakng-loader`` release that ships the
    library and voice data, so clips of another synthesis or espeak-ng build are never mixed with these."""
    from importlib.metadata import version

    return f"tts-v{TTS_VERSION}-espeakng-loader-{version('espeakng-loader')}"


class _ProcessPerClip:
    """A fresh espeak-ng process for every clip: works wherever Python runs, about 60 ms a clip."""

    def speak(self, text: str, voice: str, rate: int, pitch: int) -> tuple[int, bytes]:
        try:
            done = subprocess.run([sys.executable, espeak.__file__, text, voice, str(int(rate)), str(int(pitch))],
                                  capture_output=True, timeout=espeak.TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            return espeak.timed_out(espeak.TIMEOUT)
        return done.returncode, done.stdout if done.returncode == 0 else done.stderr

    def close(self) -> None:
        pass


class _ForkServer:
    """A ``python espeak.py --serve`` process that forks a fresh engine per clip: about 14 ms a clip, the same
    samples as :class:`_ProcessPerClip`. One clip at a time; a thread each for parallel synthesis."""

    def __init__(self) -> None:
        self._log = tempfile.TemporaryFile()  # its stderr: read when it dies, never a pipe that could fill up
        # a session of its own: a terminal's Ctrl-C stops this process, which then closes the server's input
        # (the server ends after the clip in hand), and close() can kill the server and its child together
        self._proc = subprocess.Popen([sys.executable, espeak.__file__, "--serve"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=self._log, start_new_session=True)

    def speak(self, text: str, voice: str, rate: int, pitch: int) -> tuple[int, bytes]:
        try:
            self._proc.stdin.write(json.dumps([text, voice, int(rate), int(pitch)]).encode() + b"\n")
            self._proc.stdin.flush()
            head = self._proc.stdout.read(espeak._REPLY.size)
        except BrokenPipeError:
            head = b""
        if len(head) == espeak._REPLY.size:
            status, size = espeak._REPLY.unpack(head)
            payload = self._proc.stdout.read(size)
            if len(payload) == size:
                return status, payload
        try:
            self._proc.wait(timeout=5)  # its output has ended: let it finish dying, for its exit status
        except subprocess.TimeoutExpired:
            pass
        self._log.seek(0)
        message = self._log.read().decode(errors="replace").strip()[-2000:]
        return espeak.EXIT_FAILED, f"the espeak-ng server ended (exit status {self._proc.returncode}): {message}".encode()

    def close(self) -> None:
        if self._proc.stdin:
            try:
                self._proc.stdin.close()  # the server exits at the end of its input
            except BrokenPipeError:
                pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # stuck on a clip: the server and its child go together
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._proc.wait()
        self._proc.stdout.close()
        self._log.close()


def fork_server_available() -> bool:
    """Whether this platform can run the fork server (``fork`` and process groups: not Windows)."""
    return hasattr(os, "fork") and hasattr(os, "killpg") and sys.platform != "win32"


def _engine() -> _ProcessPerClip | _ForkServer:
    """The fork server where the platform has ``fork``, else a process per clip."""
    return _ForkServer() if fork_server_available() else _ProcessPerClip()


def _samples(status: int, payload: bytes, text: str, voice: str) -> tuple[np.ndarray, int]:
    """An engine's answer as ``(int16 samples, sample rate)``, or the error it stands for."""
    if status == espeak.EXIT_BAD_VOICE:
        import espeakng_loader

        data = Path(espeakng_loader.get_data_path())
        raise ValueError(f"tts voice {voice!r} is not an espeak-ng voice; expected a language such as "
                         f"'en-us', 'en' (British) or 'en-gb-scotland', optionally with a variant ('en+f3'); see "
                         f"{data / 'lang'} and {data / 'voices' / '!v'}")
    if status != 0 or len(payload) < 4:
        raise RuntimeError(f"espeak-ng could not synthesise {text!r} with voice {voice!r} (exit status "
                           f"{status}): {payload.decode(errors='replace').strip()}")
    sample_rate = int.from_bytes(payload[:4], "little")
    return np.frombuffer(payload[4:], dtype=np.int16).copy(), sample_rate


def synth(text: str, voice: str, rate: int = 175, pitch: int = 50) -> tuple[np.ndarray, int]:
    """``(int16 samples, sample rate)`` of ``text`` spoken by ``voice``, from a fresh espeak-ng process."""
    return _samples(*_ProcessPerClip().speak(text, voice, rate, pitch), text, voice)


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
    jobs = [(v, int(r), int(p), d) for v in voices for r in rates for p in pitches for d in digits]
    genders = {v: voice_gender(v) for v in voices}
    clips = [Clip(f"{d}_{speaker_name(v, r, p)}_0.wav", speaker_name(v, r, p), d, 0, genders[v]) for v, r, p, d in jobs]
    missing = {c.path: job for job, c in zip(jobs, clips) if not (out_dir / c.path).is_file()}  # a job once

    def write(job: tuple[str, int, int, int], path: Path) -> None:
        voice, rate, pitch, digit = job
        engine = engines.get()
        try:
            samples, sample_rate = _samples(*engine.speak(DIGIT_WORDS[digit], voice, rate, pitch), DIGIT_WORDS[digit],
                                            voice)
        finally:
            engines.put(engine)
        if samples.size == 0:
            raise RuntimeError(f"espeak-ng produced no audio for {DIGIT_WORDS[digit]!r} with voice {voice!r}")
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            sf.write(tmp, samples, sample_rate, subtype="PCM_16", format="WAV")
            os.replace(tmp, path)  # a killed run leaves no half-written clip behind
        except OSError:
            tmp.unlink(missing_ok=True)
            if not path.is_file():  # on Windows a run beside this one may hold its (identical) copy open: fine
                raise
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    if missing:
        # a fresh engine per clip (see datamodules.espeak), as many at a time as this process has cores
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        workers = min(workers, len(missing))
        engines: queue.SimpleQueue = queue.SimpleQueue()
        with ExitStack() as stack:  # every engine is closed, even when closing another one fails
            for _ in range(workers):
                engine = _engine()
                stack.callback(engine.close)
                engines.put(engine)
            with ThreadPoolExecutor(max_workers=workers) as pool:
                pending = [pool.submit(write, job, out_dir / name) for name, job in missing.items()]
                try:
                    for future in tqdm(pending, desc="espeak-ng digits", unit="clip", disable=not progress,
                                       leave=False):
                        future.result()
                except BaseException:
                    for future in pending:
                        future.cancel()
                    raise
    return out_dir, clips
