"""WAV reading with validation, and batched MFCC / log-mel features.

Used by :mod:`datamodules.spoken_digits`, but free of any dataset knowledge: give it paths and a
sample rate, get float tensors back. Features are computed on length-sorted, zero-padded batches
for speed, with the framing arranged so that a clip's features do not depend on which batch it
was computed in (see :func:`_frames`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
import torchaudio
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Clip:
    """One recording; ``path`` relative to the source root (stable across machines for cache keys)."""

    path: str
    speaker: str
    digit: int
    take: int
    gender: str | None = None


#: container formats soundfile reports for RIFF/WAVE files: the datasets' own format
WAV_FORMATS = ("WAV", "WAVEX")
#: what ``predict`` reads from a user's own recordings through libsndfile (soundfile's names): WAV (also RF64 and
#: Wave64, which recorders write past 4 GB), FLAC, Ogg (Vorbis, Opus), MP3 and AIFF
PREDICT_FORMATS = ("WAV", "WAVEX", "RF64", "W64", "FLAC", "OGG", "MP3", "AIFF")
#: what phones and browsers record and libsndfile cannot decode (AAC in .m4a/.mp4/.3gp, AMR, Opus in WebM or
#: Matroska, WMA): read through PyAV, FFmpeg's decoders (zoo 0.3.3)
AV_SUFFIXES = (".m4a", ".mp4", ".aac", ".3gp", ".amr", ".webm", ".mka", ".wma")
AUDIO_SUFFIXES = (".wav", ".w64", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", *AV_SUFFIXES)
FEATURES = ("mfcc", "logmel")


class AudioFileError(ValueError):
    """An audio file is empty, corrupt or not a WAV file; the message names the file."""


def read_wav(path: str | Path, formats: Sequence[str] = WAV_FORMATS) -> tuple[torch.Tensor, int, int]:
    """Read one audio file of one of ``formats`` (soundfile's names) as float32 in [-1, 1], whatever its
    bit depth (8/16/24/32-bit integer or float) and channel count.

    Returns ``(samples (frames, channels), sample_rate, channels)``; raises
    :class:`AudioFileError` naming ``path`` for an empty, unreadable, other-format or sample-less file.
    """
    kind = "WAV" if tuple(formats) == WAV_FORMATS else "/".join(f for f in formats if f not in ("WAVEX", "RF64", "W64"))
    path = _existing(path, kind)
    try:
        with sf.SoundFile(path) as f:
            fmt, rate, channels = f.format, f.samplerate, f.channels
            data = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioFileError(f"{path}: not a readable {kind} file ({e}); expected a "
                             f"{'RIFF/WAVE' if kind == 'WAV' else kind} audio file") from e
    if fmt not in formats:
        raise AudioFileError(f"{path}: is a {fmt} file, expected a {kind} file")
    if data.shape[0] == 0:
        raise AudioFileError(f"{path}: {fmt} file contains no audio samples; expected a non-empty recording")
    return torch.from_numpy(data), rate, channels


def _existing(path: str | Path, kind: str) -> Path:
    """``path`` as a Path; :class:`AudioFileError` when it cannot be read or is empty."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise AudioFileError(f"{path}: cannot read the file ({e}); expected a {kind} file") from e
    if size == 0:
        raise AudioFileError(f"{path}: empty file (0 bytes); expected a {kind} file with audio samples")
    return path


def read_av(path: str | Path) -> tuple[torch.Tensor, int, int]:
    """:func:`read_wav` for the formats of :data:`AV_SUFFIXES`, decoded by FFmpeg through PyAV: the first audio
    stream as float32 ``(frames, channels)``, its own rate and channels.

    Why PyAV: libsndfile reads no AAC, AMR or WebM, and those are what a phone's recorder app or a browser
    writes; asking users to convert every file first loses most of them on the way.
    """
    import av  # imported here: FFmpeg's libraries load only when such a file is read

    kind = f"{Path(path).suffix.lower()} (AAC/AMR/Opus/WMA)"
    path = _existing(path, kind)
    chunks = []
    try:
        with av.open(str(path)) as container:
            stream = next(iter(container.streams.audio), None)
            if stream is None:
                raise AudioFileError(f"{path}: has no audio stream; expected a {kind} recording")
            rate = stream.codec_context.sample_rate
            to_float = av.AudioResampler(format="fltp")  # planar float32; rate and channels as recorded
            for frame in container.decode(stream):
                chunks += [f.to_ndarray() for f in to_float.resample(frame)]
            chunks += [f.to_ndarray() for f in to_float.resample(None)]
    except av.FFmpegError as e:
        raise AudioFileError(f"{path}: not a readable {kind} file ({e}); expected an audio recording") from e
    if not chunks or sum(c.shape[1] for c in chunks) == 0:
        raise AudioFileError(f"{path}: {kind} file contains no audio samples; expected a non-empty recording")
    data = np.ascontiguousarray(np.concatenate(chunks, axis=1).T, dtype=np.float32)  # (frames, channels)
    return torch.from_numpy(data), rate, data.shape[1]


def write_av(path: str | Path, samples: np.ndarray, sample_rate: int, codec: str = "aac",
             bit_rate: int | None = None) -> Path:
    """Encode ``samples`` ((n,) or (n, channels) float in [-1, 1]) with FFmpeg's ``codec`` through PyAV, in the
    container ``path``'s suffix names ("aac" into .m4a, "libopus" into .webm): the lossy files phones and
    browsers write, for tests and for the recording-conditions benchmark (libsndfile cannot write them)."""
    import av

    x = samples if samples.ndim == 2 else samples[:, None]
    layout = {1: "mono", 2: "stereo"}[x.shape[1]]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=sample_rate, layout=layout)
        if bit_rate:
            stream.bit_rate = bit_rate
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x.T, dtype=np.float32), format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return path


def _summarise(paths: list[Path], limit: int = 5) -> str:
    shown = ", ".join(str(p) for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


#: the loading path's version, part of every feature cache key: 2 (zoo 0.3.4) removes each clip's DC offset
LOADING_VERSION = 2


class _Converter:
    """Downmix to mono, remove the DC offset and resample to one rate, keeping one resampler per source rate.

    Every clip, a dataset's or a user's, goes through this one path, so ``zoo test`` and ``zoo predict`` see
    the same file the same way. Why remove the offset: some recorders add one (all of AudioMNIST-AZ sits at
    -0.085 full scale, FSDD's nicolas at -0.007), and a constant offset is no sound but fills the lowest mel band
    and keeps silence from looking silent to :func:`trim_silence` (docs/spoken_digits.md). It is removed before
    resampling, where a step at the clip's edges would ring."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._resamplers: dict[int, torchaudio.transforms.Resample] = {}

    def __call__(self, path, data: torch.Tensor, rate: int, channels: int) -> torch.Tensor:
        x = data.mean(dim=1) if channels > 1 else data[:, 0]
        x = x - x.mean()
        if rate != self.sample_rate:
            if rate not in self._resamplers:
                self._resamplers[rate] = torchaudio.transforms.Resample(rate, self.sample_rate)
            x = self._resamplers[rate](x)
            if x.numel() == 0:
                raise AudioFileError(f"{path}: too short to resample from {rate} Hz to {self.sample_rate} Hz")
        return x.contiguous()


def load_clips(paths: Sequence[str | Path], sample_rate: int, progress: bool = True,
               warn_resample: bool = True) -> list[torch.Tensor]:
    """Read ``paths`` (WAV) as mono float32 1-D tensors at ``sample_rate``, each without its DC offset.

    Multi-channel files are averaged to mono and other rates resampled; both are converted rather
    than refused, with one logged warning per kind naming the files (resampling is logged at info
    level instead when ``warn_resample`` is false: for sources whose native rate differs by design).
    """
    clips: list[torch.Tensor] = []
    downmixed: list[Path] = []
    resampled: dict[int, list[Path]] = {}
    convert = _Converter(sample_rate)
    for p in tqdm(paths, desc="reading wav", unit="file", disable=not progress, leave=False):
        data, rate, channels = read_wav(p)
        if channels > 1:
            downmixed.append(Path(p))
        if rate != sample_rate:
            resampled.setdefault(rate, []).append(Path(p))
        clips.append(convert(p, data, rate, channels))
    if downmixed:
        log.warning("downmixed %d multi-channel file(s) to mono (expected mono): %s",
                    len(downmixed), _summarise(downmixed))
    for rate, files in resampled.items():
        (log.warning if warn_resample else log.info)("resampled %d file(s) from %d Hz to %d Hz (expected %d Hz): %s",
                    len(files), rate, sample_rate, sample_rate, _summarise(files))
    return clips


#: a user's file below these is refused by :func:`load_recording` (FSDD's shortest clip is 0.1 s)
MIN_SECONDS = 0.1
SILENCE_PEAK = 1e-3  # -60 dBFS: no recorder's speech peaks this low
#: a file with at least this share of its samples on flat tops (:func:`clipped_share`) is reported as clipped
CLIPPED_SHARE = 0.005


def clipped_share(data: torch.Tensor) -> float:
    """The share of the samples of ``(frames, channels)`` audio that sit on a flat top at their channel's peak
    (two or more consecutive samples within 0.1 % of it): how much of a recording an input gain set too high
    cut off. Speech peaks in single samples: FSDD's 3,000 files have at most 0.33 %, the recording-conditions
    benchmark's ``clipped`` (10 dB into the rails) a median of 2 %. A silent channel (a microphone on the left
    input of a stereo interface) is left out: its zeros are no flat top."""
    a = data.abs()
    peak = a.max(dim=0).values
    live = peak >= SILENCE_PEAK
    if not live.any():
        return 0.0
    top = a[:, live] >= peak[live] * (1 - 1e-3)
    pair = top[1:] & top[:-1]
    edge = torch.zeros_like(top[:1])
    flat = torch.cat([edge, pair]) | torch.cat([pair, edge])
    return float(flat.float().mean())


def warn_clipped(paths: Sequence[Path]) -> None:
    """One warning naming the files :func:`load_recording` found clipped (predictions on them are less sure)."""
    if paths:
        log.warning("%d file(s) look clipped (flat tops at their peak in at least %.1f %% of the samples: the "
                    "input gain was too high); clipping cost the zoo 0.3 CNN 25 points of digit accuracy on voices "
                    "it never heard (docs/spoken_digits.md#recording-conditions-what-a-users-recording-costs-zoo-03), "
                    "so record these again with less gain: %s", len(paths), 100 * CLIPPED_SHARE, _summarise(list(paths)))


def load_recording(path: str | Path, sample_rate: int, clipped: list[Path] | None = None) -> torch.Tensor:
    """One of a user's recordings (:data:`PREDICT_FORMATS` or :data:`AV_SUFFIXES`, any rate, depth and channels)
    as a mono clip at ``sample_rate``, checked the way a dataset never needs: raises :class:`AudioFileError`
    naming the file when it is unreadable, empty, shorter than :data:`MIN_SECONDS` or silent. A file that looks
    clipped (:data:`CLIPPED_SHARE`) is still read, and its path appended to ``clipped`` when given
    (:func:`warn_clipped`): nothing in training models clipping, so the user should know.

    The clip's DC offset (its mean) is removed, as for a dataset's clips (:class:`_Converter`; an offset of 0.02
    full scale cost a held-out voice 6 points, 0.1 cost 40; docs/spoken_digits.md).
    """
    data, rate, channels = (read_av(path) if Path(path).suffix.lower() in AV_SUFFIXES
                            else read_wav(path, PREDICT_FORMATS))
    if data.shape[0] < MIN_SECONDS * rate:
        raise AudioFileError(f"{path}: too short ({data.shape[0] / rate:.3f} s); expected a recording of at least "
                             f"{MIN_SECONDS} s")
    x = _Converter(sample_rate)(path, data, rate, channels)
    peak = float(x.abs().max())
    if peak < SILENCE_PEAK:
        raise AudioFileError(f"{path}: silent (peak {20 * math.log10(max(peak, 1e-12)):.0f} dBFS); expected speech "
                             f"peaking above {20 * math.log10(SILENCE_PEAK):.0f} dBFS")
    if clipped is not None and clipped_share(data) >= CLIPPED_SHARE:
        clipped.append(Path(path))
    return x


def trim_silence(x: torch.Tensor, sample_rate: int, top_db: float = 40.0, margin: float = 0.02,
                 max_gap: float | None = None) -> torch.Tensor:
    """Cut leading and trailing silence (as ``librosa.effects.trim`` does, with an adaptive floor).

    A frame (25 ms, 10 ms hop) is sound when its RMS level is within ``top_db`` of the loudest frame
    and 6 dB above the quietest stretch (the smoothed minimum: the recording's own noise floor, so a
    noisy room does not count as sound); ``margin`` seconds are kept on either side. Why: log-mel
    images are resized to a fixed number of frames, so the silence a recorder kept would shrink and
    shift the word; FSDD's clips are already trimmed, a user's recordings are not.

    ``max_gap`` (seconds): sound frames separated by less quiet than this form one stretch, and only the
    stretch with the most energy is kept (the word), not everything from the first sound to the last. Why:
    the click of a record button, a cough or a door before or after the word would otherwise be kept with
    the silence between them and squeeze the word into a corner of the image. The level threshold is then
    taken from the word's own loudest frame, so a click louder than the word does not cut the word's edges.
    """
    win, hop = max(1, round(0.025 * sample_rate)), max(1, round(0.010 * sample_rate))
    if x.numel() <= win:
        return x
    frames = x.unfold(0, win, hop)
    level = 10.0 * torch.log10(frames.pow(2).mean(dim=1).clamp_min(1e-12))
    smooth = F.avg_pool1d(level[None, None], 5, 1, 2, count_include_pad=False)[0, 0] if level.numel() >= 5 else level
    noise_floor = float(smooth.min()) + 6.0
    loud = torch.nonzero(level >= max(float(level.max()) - top_db, noise_floor)).flatten()
    if loud.numel() == 0:
        return x
    first, last = int(loud[0]), int(loud[-1])
    if max_gap is not None:
        breaks = torch.nonzero(loud.diff() * hop > max_gap * sample_rate).flatten()  # a gap follows loud[b]
        if breaks.numel():
            starts = torch.cat([loud[:1], loud[breaks + 1]])
            ends = torch.cat([loud[breaks], loud[-1:]])
            power = torch.zeros_like(level).index_put_((loud,), 10.0 ** (level[loud] / 10.0))
            energy = torch.stack([power[a:b + 1].sum() for a, b in zip(starts.tolist(), ends.tolist())])
            best = int(energy.argmax())
            first, last = int(starts[best]), int(ends[best])
            # the threshold again, from the word's own loudest frame (a click may have been louder), within
            # the quiet on either side of it: the word's soft edges come back, the other stretches do not
            lo = int(ends[best - 1]) + 1 if best > 0 else 0
            hi = int(starts[best + 1]) if best + 1 < starts.numel() else level.numel()
            threshold = max(float(level[first:last + 1].max()) - top_db, noise_floor)
            inside = torch.nonzero(level[lo:hi] >= threshold).flatten() + lo
            first, last = int(inside[0]), int(inside[-1])
    pad = round(margin * sample_rate)
    start = max(0, first * hop - pad)
    end = min(x.numel(), last * hop + win + pad)
    return x[start:end]


#: the longest analysis window (s) a feature setting accepts: a quarter second already spans a short word's syllable
MAX_WINDOW_S = 0.25


@dataclass(frozen=True)
class FeatureSettings:
    """Everything that determines a clip's features (and therefore the cache key).

    * ``mfcc``: 15 ms windows, 10 ms hop, ``n_mfcc`` coefficients from a 40-band mel filterbank,
      one row per 10 ms frame: a variable-length sequence.
    * ``logmel``: ``n_mels``-band log-mel (dB) spectrogram, 25 ms windows, 10 ms hop, then linearly
      resized along time to exactly ``frames`` columns. Resizing (instead of pad/crop) keeps every
      utterance whole whatever its length (FSDD spans 0.1-2.3 s) and normalises speaking rate,
      which a digit label does not depend on; pitch and timbre, which live on the mel axis, are
      untouched.
    * ``trim_db``: leading and trailing silence is cut first (:func:`trim_silence`); None keeps it.
      ``trim_gap`` (seconds, with ``trim_db``): keep only the loudest stretch of sound whose pauses are shorter
      (``trim_silence``'s ``max_gap``); None keeps everything from the first sound to the last.
    * ``pitch`` (``mfcc`` only): two columns appended to every frame, :func:`pitch_columns`: log2 of the
      fundamental frequency over 100 Hz and a voicing flag. Why: the voice's pitch is what separates most
      women's from most men's voices, and 13-40 MFCCs of 15 ms windows barely see it.
    * ``formants`` (``mfcc`` only): three more columns after those, :func:`formant_columns`: log2 of the first
      three formants over 1 kHz. Why: they measure the vocal tract's length, which tells a high-pitched man
      from a woman where pitch does not.
    * ``window``: analysis window in seconds; None: the feature's own (15 ms MFCC, 25 ms log-mel). Why longer:
      a 25 ms window smears the harmonics of a 100-150 Hz voice together, so a log-mel image barely shows a
      man's pitch; 50-64 ms resolve them (for gender, where pitch is the main cue).
    """

    feature: str = "logmel"
    sample_rate: int = 8000
    n_mfcc: int = 13
    n_mels: int = 64
    frames: int = 64
    trim_db: float | None = None
    pitch: bool = False
    trim_gap: float | None = None
    formants: bool = False
    window: float | None = None
    version: int = 1  # bump when the computation changes so old caches are not reused

    def __post_init__(self):
        if self.feature not in FEATURES:
            raise ValueError(f"feature={self.feature!r} is not supported; expected one of {list(FEATURES)}")
        for name in ("sample_rate", "n_mfcc", "n_mels", "frames"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("pitch", "formants"):
            if getattr(self, name) and self.feature != "mfcc":
                raise ValueError(f"{name}=True appends columns to MFCC frames; it needs feature='mfcc', "
                                 f"got {self.feature!r}")
        if self.window is not None and not 0 < self.window <= MAX_WINDOW_S:
            raise ValueError(f"window={self.window}: expected an analysis window in (0, {MAX_WINDOW_S}] seconds")
        if self.trim_gap is not None and self.trim_db is None:
            raise ValueError(f"trim_gap={self.trim_gap} picks the word among the sounds trimming finds; it needs "
                             f"trim_db (got None)")

    def key_fields(self) -> dict:
        """Settings that affect this feature kind (changing ``frames`` must not invalidate MFCCs)."""
        keep = {"mfcc": ("n_mfcc",), "logmel": ("n_mels", "frames")}[self.feature]
        trim = {} if self.trim_db is None else {"trim_db": float(self.trim_db)}  # untrimmed caches keep their keys
        if self.trim_db is not None and self.trim_gap is not None:
            trim["trim_gap"] = float(self.trim_gap)
        pitch = {"pitch": 1} if self.pitch else {}  # the pitch tracker's own version: bump when YIN changes
        formants = {"formants": 1} if self.formants else {}  # lpc_formants' version
        window = {} if self.window is None else {"window": float(self.window)}  # default caches keep their keys
        return {"feature": self.feature, "sample_rate": self.sample_rate, "version": self.version,
                "loading": LOADING_VERSION,
                **{k: getattr(self, k) for k in keep}, **trim, **pitch, **formants, **window}

    @property
    def hop(self) -> int:
        return round(0.010 * self.sample_rate)

    @property
    def win(self) -> int:
        if self.window is not None:
            return max(1, round(self.window * self.sample_rate))
        return round((0.015 if self.feature == "mfcc" else 0.025) * self.sample_rate)

    @property
    def n_fft(self) -> int:
        # >= 64 ms of spectrum resolution so that no low mel band falls between two FFT bins
        return 2 ** math.ceil(math.log2(max(self.win, 0.064 * self.sample_rate)))


class FeatureExtractor:
    """Computes :class:`FeatureSettings` features for a list of mono clips, in padded batches."""

    def __init__(self, settings: FeatureSettings):
        self.s = settings
        mel = dict(n_fft=settings.n_fft, win_length=settings.win, hop_length=settings.hop, center=False,
                   f_min=0.0, f_max=settings.sample_rate / 2)
        if settings.feature == "mfcc":
            self.transform = torchaudio.transforms.MFCC(settings.sample_rate, n_mfcc=settings.n_mfcc, log_mels=True,
                                                        melkwargs={**mel, "n_mels": 40})
        else:
            self.transform = torchaudio.transforms.MelSpectrogram(settings.sample_rate, n_mels=settings.n_mels, **mel)

    def num_frames(self, n_samples: int) -> int:
        """Frames of a clip: one every hop, as with centred framing (at least one)."""
        return 1 + n_samples // self.s.hop

    def _frames(self, batch: torch.Tensor) -> torch.Tensor:
        # Centre frames by zero padding ourselves (not reflect padding): the batch's own zero
        # padding at the end then looks exactly like a lone clip's, so results are batch-independent.
        half = self.s.n_fft // 2
        return self.transform(F.pad(batch, (half, half)))

    @torch.no_grad()
    def __call__(self, clips: Sequence[torch.Tensor], batch_size: int = 256,
                 progress: bool = True) -> list[torch.Tensor]:
        """``mfcc``: list of ``(T_i, n_mfcc)``; ``logmel``: list of ``(n_mels, frames)`` tensors."""
        if self.s.trim_db is not None:
            clips = [trim_silence(c, self.s.sample_rate, self.s.trim_db, max_gap=self.s.trim_gap) for c in clips]
        order = sorted(range(len(clips)), key=lambda i: clips[i].numel())
        out: list[torch.Tensor | None] = [None] * len(clips)
        for start in tqdm(range(0, len(order), batch_size), desc=f"{self.s.feature} features", unit="batch",
                          disable=not progress, leave=False):
            idx = order[start:start + batch_size]
            lengths = [clips[i].numel() for i in idx]
            batch = torch.zeros(len(idx), max(lengths))
            for row, i in enumerate(idx):
                batch[row, :lengths[row]] = clips[i]
            feats = self._frames(batch)  # (B, n_bands, T)
            for row, i in enumerate(idx):
                f = self._finish(feats[row, :, : self.num_frames(lengths[row])])
                if self.s.pitch or self.s.formants:
                    f0 = yin_pitch(clips[i], self.s.sample_rate, self.s.hop)
                    f = torch.cat([f] + [columns(clips[i], self.s.sample_rate, self.s.hop, f0) for on, columns in
                                         ((self.s.pitch, pitch_columns), (self.s.formants, formant_columns)) if on], 1)
                out[i] = f
        return out  # type: ignore[return-value]

    def _finish(self, f: torch.Tensor) -> torch.Tensor:
        if self.s.feature == "mfcc":
            return f.transpose(0, 1).contiguous()
        db = 10.0 * torch.log10(f.clamp_min(1e-10))
        return F.interpolate(db[None], size=self.s.frames, mode="linear", align_corners=False)[0].contiguous()


def yin_pitch(x: torch.Tensor, sample_rate: int, hop: int, fmin: float = 60.0, fmax: float = 400.0,
              threshold: float = 0.15, max_aperiodicity: float = 0.3, top_db: float = 25.0) -> torch.Tensor:
    """Fundamental frequency (Hz) of a mono clip, one value per ``hop`` (frames centred as
    :class:`FeatureExtractor`'s: ``1 + len // hop`` of them), NaN where the frame is not voiced.

    YIN (de Cheveigné & Kawahara, 2002), 25 ms analysis windows: the first lag whose cumulative-mean-
    normalised difference falls below ``threshold``, walked down to its local minimum (else the global
    minimum), without YIN's parabolic interpolation: F0 is the rate over a whole lag (about 2 % coarse
    at 300 Hz and 8 kHz, far finer than the 1.5-2x between male and female voices). A frame is voiced
    when that minimum is below ``max_aperiodicity`` and the frame is within ``top_db`` of the clip's
    loudest. Why not ``torchaudio.functional.detect_pitch_frequency``: it has no voicing decision and on
    the AudioMNIST-AZ voices its per-clip median separated women from men in 71 % of clips against 94 % for this (docs/spoken_digits.md#gender-from-real-voices).
    """
    win, tmin, tmax = round(0.025 * sample_rate), int(sample_rate / fmax), int(math.ceil(sample_rate / fmin))
    span = win + tmax
    frames = F.pad(x.float(), (win // 2, span - win // 2)).unfold(0, span, hop)  # (1 + len // hop, span)
    frames = frames - frames.mean(1, keepdim=True)
    n = 1 << (2 * span - 1).bit_length()
    spectrum = torch.fft.rfft(frames[:, :win], n=n).conj() * torch.fft.rfft(frames, n=n)
    cross = torch.fft.irfft(spectrum, n=n)[:, : tmax + 1]  # sum_j x[j] x[j + tau] over the window
    energy = F.pad(frames.pow(2).cumsum(1), (1, 0))
    lags = torch.arange(tmax + 1, device=x.device)
    diff = energy[:, win:win + 1] + energy[:, lags + win] - energy[:, lags] - 2 * cross  # d(tau), tau = 0..tmax
    cmnd = diff[:, 1:] * lags[1:] / diff[:, 1:].cumsum(1).clamp_min(1e-12)
    cmnd = F.pad(cmnd, (1, 0), value=1.0)
    cmnd[:, :tmin] = float("inf")  # above fmax
    below = cmnd < threshold
    lag = torch.where(below.any(1), below.float().argmax(1), cmnd.argmin(1))
    while True:  # walk each frame's lag down to the local minimum of the dip it is in
        step = (lag + 1).clamp_max(tmax)
        better = cmnd.gather(1, step[:, None])[:, 0] < cmnd.gather(1, lag[:, None])[:, 0]
        if not better.any():
            break
        lag = torch.where(better, step, lag)
    rms = frames[:, :win].pow(2).mean(1).sqrt()
    voiced = (cmnd.gather(1, lag[:, None])[:, 0] < max_aperiodicity) & (rms > rms.max() * 10 ** (-top_db / 20))
    return torch.where(voiced, sample_rate / lag.float(), torch.full_like(rms, float("nan")))


def pitch_columns(x: torch.Tensor, sample_rate: int, hop: int, f0: torch.Tensor | None = None) -> torch.Tensor:
    """``(1 + len // hop, 2)``: log2(F0 / 100 Hz) and a voiced flag (1/0) per frame (:func:`yin_pitch`;
    pass its ``f0`` when already computed).

    Unvoiced frames take the clip's median voiced pitch, so that the mean describes the voice rather than
    how much of the clip was voiced (the std still shrinks with the unvoiced share); a clip with no voiced
    frame gets 0 (100 Hz) and a voiced share of 0, which tells a model that its pitch is unknown."""
    f0 = yin_pitch(x, sample_rate, hop) if f0 is None else f0
    voiced = ~f0.isnan()
    log_f0 = torch.log2(f0 / 100.0)
    fill = log_f0[voiced].median() if voiced.any() else log_f0.new_zeros(())
    return torch.stack([torch.where(voiced, log_f0, fill), voiced.float()], 1)


#: formants of a uniform 17.5 cm tube (a neutral vowel), for clips where none could be estimated
NEUTRAL_FORMANTS = (500.0, 1500.0, 2500.0)


def lpc_formants(x: torch.Tensor, sample_rate: int, hop: int, f0: torch.Tensor | None = None,
                 max_bandwidth: float = 400.0) -> torch.Tensor:
    """``(1 + len // hop, 3)``: the first three formant frequencies (Hz) of each voiced frame, NaN elsewhere.

    Linear prediction of order ``2 + sample_rate / 1000`` (10 at 8 kHz: one resonance per kHz and two for the
    glottal and lip slope) on pre-emphasised 25 ms Hamming frames centred as :func:`yin_pitch`'s; the roots
    of the predictor above 200 Hz with bandwidth under ``max_bandwidth`` are the formants (the textbook rule,
    e.g. Praat's and Markel & Gray's). Frames that :func:`yin_pitch` (or ``f0``) calls unvoiced, or with fewer
    than three such roots, are NaN. Why: the formants scale with the vocal tract's length, the cue that
    tells a man's raised voice from a woman's where the pitch alone does not (men are 15-20 % longer).
    Why not a library: torchaudio has no LPC and librosa's would be a new dependency for 20 lines; the
    batched Toeplitz solve and companion-matrix roots below run in milliseconds per clip.
    """
    f0 = yin_pitch(x, sample_rate, hop) if f0 is None else f0
    if f0.shape != (1 + x.numel() // hop,):
        raise ValueError(f"lpc_formants: f0 must have one value per frame, shape ({1 + x.numel() // hop},) for "
                         f"{x.numel()} samples at hop {hop}; got {tuple(f0.shape)}")
    order, win = round(2 + sample_rate / 1000), round(0.025 * sample_rate)
    dev = x.device
    y = x.double()
    y = torch.cat([y[:1], y[1:] - 0.97 * y[:-1]])  # pre-emphasis: flatten the glottal source's -6 dB/octave
    frames = F.pad(y, (win // 2, win - win // 2)).unfold(0, win, hop)
    frames = frames * torch.hamming_window(win, periodic=False, dtype=frames.dtype, device=dev)
    out = torch.full((f0.numel(), 3), float("nan"), dtype=torch.float32, device=dev)
    use = ~f0.isnan() & (frames.pow(2).sum(1) > 0)
    if not use.any():
        return out
    spec = torch.fft.rfft(frames[use], n=2 * win)
    r = torch.fft.irfft(spec.abs().pow(2), n=2 * win)[:, : order + 1]  # autocorrelation, lags 0..order
    lags = torch.arange(order, device=dev)
    toeplitz = r[:, (lags[:, None] - lags[None]).abs()]
    toeplitz = toeplitz + 1e-9 * r[:, :1, None] * torch.eye(order, dtype=r.dtype, device=dev)  # conditioning
    a = torch.linalg.solve(toeplitz, -r[:, 1:])  # the predictor 1 + a1 z^-1 + ... + ap z^-p
    companion = torch.zeros(a.shape[0], order, order, dtype=a.dtype, device=dev)
    companion[:, 0] = -a
    companion[:, 1:, :-1] = torch.eye(order - 1, dtype=a.dtype, device=dev)
    roots = torch.linalg.eigvals(companion)
    hz = roots.angle() * sample_rate / (2 * math.pi)
    bandwidth = -roots.abs().clamp_min(1e-12).log() * sample_rate / math.pi
    keep = (roots.imag > 0) & (hz > 200.0) & (bandwidth < max_bandwidth)
    hz = torch.where(keep, hz, torch.full_like(hz, float("inf"))).sort(1).values[:, :3]
    out[use] = torch.where(hz[:, 2:].isfinite(), hz, torch.full_like(hz, float("nan"))).float()
    return out


def formant_columns(x: torch.Tensor, sample_rate: int, hop: int, f0: torch.Tensor | None = None) -> torch.Tensor:
    """``(1 + len // hop, 3)``: log2(F_k / 1 kHz) of the first three formants per frame (:func:`lpc_formants`).

    Frames without an estimate take the clip's per-formant median, as :func:`pitch_columns` does with
    unvoiced frames, so that a clip's mean describes its vocal tract; a clip with no estimate at all gets
    :data:`NEUTRAL_FORMANTS`, the middle of the range rather than a value of either sex."""
    log_f = torch.log2(lpc_formants(x, sample_rate, hop, f0) / 1000.0)
    found = ~log_f.isnan().any(1)
    fill = (log_f[found].median(0).values if found.any()
            else torch.log2(torch.tensor(NEUTRAL_FORMANTS, device=x.device) / 1000.0))
    return torch.where(found[:, None], log_f, fill)


def shift_pitch(x: torch.Tensor, sample_rate: int, factor: float) -> torch.Tensor:
    """The clip with its voice's pitch scaled by ``factor`` and its formants (the vocal tract) kept: TD-PSOLA
    (Moulines & Charpentier, 1990) on :func:`yin_pitch`'s track, the same length and RMS level.

    Voiced stretches are cut into two-period Hann grains centred one period apart (on the waveform's peaks)
    and laid down ``factor`` times closer; unvoiced sound (consonants, silence) is copied through in 10 ms
    grains. Why: a man's voice raised towards a woman's pitch, which the log-mel image shows as wider-spaced
    harmonics below 2 kHz: no warp of the image can make that without also moving the formants (:func:`vtlp`).
    """
    if factor <= 0:
        raise ValueError(f"shift_pitch: factor must be positive, got {factor}")
    hop = max(1, round(0.005 * sample_rate))
    f0 = yin_pitch(x, sample_rate, hop).numpy()
    sig = x.double().numpy()
    n = sig.size
    unvoiced = max(1, round(0.010 * sample_rate))

    def period(t: int) -> int | None:
        f = f0[min(t // hop, f0.size - 1)]
        return None if math.isnan(f) else max(2, round(sample_rate / f))

    marks: list[tuple[int, int, bool]] = []  # analysis (centre, half width, voiced)
    t = 0
    while t < n:
        p = period(t)
        if p is None:
            marks.append((t, unvoiced, False))
            t += unvoiced
            continue
        lo, hi = t, min(n, t + p)  # a voiced mark sits on the largest peak of its period
        t = lo + int(np.argmax(np.abs(sig[lo:hi]))) if not marks or not marks[-1][2] else t
        marks.append((t, p, True))
        t += p
    centres = np.array([m[0] for m in marks])
    windows: dict[int, np.ndarray] = {}
    out = np.zeros(n)
    s = 0.0
    while s < n:
        j = int(np.searchsorted(centres, s))  # the analysis mark nearest to s (centres are sorted)
        j = j - 1 if j == len(centres) or (j > 0 and s - centres[j - 1] <= centres[j] - s) else j
        c, half, voiced = marks[j]
        window = windows.get(half)
        if window is None:
            window = windows[half] = np.hanning(2 * half + 1)
        a, b = max(0, c - half), min(n, c + half + 1)
        at = int(round(s))
        lo, hi = at - (c - a), at + (b - c)
        if lo < 0 or hi > n:
            a, b = a + max(0, -lo), b - max(0, hi - n)
            lo, hi = max(lo, 0), min(hi, n)
        if b > a:
            out[lo:hi] += sig[a:b] * window[a - c + half:b - c + half]
        s += half / factor if voiced else half
    rms_in, rms_out = np.sqrt(np.mean(sig ** 2)), np.sqrt(np.mean(out ** 2))
    if rms_out > 0:
        out *= rms_in / rms_out
    return torch.from_numpy(out).to(x.dtype)


def pad_sequences(seqs: Iterable[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad ``(T_i, D)`` tensors to ``(B, T_max, D)``; also return lengths ``(B,)`` int64."""
    seqs = list(seqs)
    lengths = torch.tensor([s.shape[0] for s in seqs], dtype=torch.int64)
    return torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True), lengths


def _band_mask(n: int, size: int, num: int, width: int, device, generator=None) -> torch.Tensor:
    """``(n, size)`` bool: ``num`` random bands of width 0..``width`` per row."""
    pos = torch.arange(size, device=device)
    mask = torch.zeros(n, size, dtype=torch.bool, device=device)
    for _ in range(num):
        w = torch.randint(0, width + 1, (n, 1), device=device, generator=generator)
        start = (torch.rand(n, 1, device=device, generator=generator) * (size - w + 1)).floor()
        mask |= (pos >= start) & (pos < start + w)
    return mask


def spec_augment(x: torch.Tensor, num_masks: int = 2, mask_width: int = 8,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """SpecAugment-style masking of ``(N, C, F, T)`` spectrogram images, parameters drawn per sample.

    torchaudio's masking transforms draw one mask per call (shared by the whole batch); here every
    sample gets its own frequency and time bands, in a few batched tensor ops on the input's device.
    """
    if num_masks == 0 or mask_width == 0:
        return x
    n, _, f, t = x.shape
    freq = _band_mask(n, f, num_masks, min(mask_width, f), x.device, generator)[:, None, :, None]
    time = _band_mask(n, t, num_masks, min(mask_width, t), x.device, generator)[:, None, None, :]
    return x.masked_fill(freq | time, 0.0)


def random_time_crop(x: torch.Tensor, min_keep: float = 0.85, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per sample, keep a random ``min_keep``-1.0 share of the time axis of ``(N, C, F, T)`` spectrogram
    images and stretch it back to ``T`` frames (one batched ``grid_sample``).

    Fixed-size log-mel images resize each whole utterance, silences included, to ``T`` frames, so how
    much silence a recording kept at its ends shifts and scales the word along time. Training on random
    time crops makes the classifier insensitive to that trimming; frequency rows are untouched.
    """
    if not 0.0 < min_keep <= 1.0:
        raise ValueError(f"random_time_crop: min_keep must be in (0, 1], got {min_keep}")
    if min_keep == 1.0:
        return x
    n = x.shape[0]
    keep = min_keep + (1.0 - min_keep) * torch.rand(n, generator=generator)
    centre = (torch.rand(n, generator=generator) * 2 - 1) * (1 - keep)  # crop stays inside [-1, 1]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1] = keep, centre, 1.0
    grid = F.affine_grid(theta.to(device=x.device, dtype=x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


# --- batched, per-sample augmentation of log-mel (dB) images, on the batch's device ---------------------

def _hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)  # HTK, torchaudio's MelSpectrogram default


def _mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def vtlp(x: torch.Tensor, max_warp: float, sample_rate: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Vocal-tract-length perturbation of ``(N, C, n_mels, T)`` log-mel images (Jaitly & Hinton, 2013).

    Per sample a factor ``a`` in ``[1 - max_warp, 1 + max_warp]`` scales every frequency
    (:func:`warp_frequency`): a shorter or longer vocal tract, the main difference between voices
    (children, women and men) besides pitch.
    """
    if max_warp == 0:
        return x
    warp = 1.0 + max_warp * (2.0 * torch.rand(x.shape[0], generator=generator,
                                              device=generator.device if generator else None) - 1.0)
    return warp_frequency(x, warp, sample_rate)


def warp_frequency(x: torch.Tensor, factors: torch.Tensor | float, sample_rate: int) -> torch.Tensor:
    """Scale every frequency of ``(N, C, n_mels, T)`` log-mel images by ``factors`` (one per sample, or one
    for all): the output band at ``f`` Hz reads the input at ``f / a``. Exact on the mel axis, through the
    mel-scale formula, in one ``grid_sample``; the top band repeats where ``f / a`` passes Nyquist."""
    n, _, bands, t = x.shape
    dev, dt = x.device, x.dtype
    step = _hz_to_mel(torch.tensor(sample_rate / 2.0, device=dev)) / (bands + 1)
    warp = torch.as_tensor(factors, dtype=torch.float32).to(dev).reshape(-1, 1).expand(n, 1)
    source_hz = (_band_centres_hz(bands, sample_rate, dev)[None, :] / warp).clamp(0, sample_rate / 2)
    pos = _hz_to_mel(source_hz) / step - 1.0  # fractional input band of each output band
    y = (2.0 * pos / max(bands - 1, 1) - 1.0).to(dt)  # grid_sample coordinates, align_corners=True
    grid = torch.stack(torch.broadcast_tensors(torch.linspace(-1, 1, t, device=dev, dtype=dt)[None, None, :],
                                               y[:, :, None]), dim=-1)  # (N, bands, T, 2): (x=time, y=band)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def _uniform(generator: torch.Generator | None, device, *shape: int) -> torch.Tensor:
    """``torch.rand(*shape)`` drawn from ``generator`` (on its own device, so a CPU generator seeds GPU batches
    too), then moved to ``device``."""
    source = generator.device if generator is not None else None
    return torch.rand(*shape, generator=generator, device=source).to(device)


def _band_centres_hz(bands: int, sample_rate: int, device) -> torch.Tensor:
    """Centre frequencies (Hz) of ``bands`` mel bands from 0 Hz to Nyquist (torchaudio's filter peaks)."""
    top = _hz_to_mel(torch.tensor(sample_rate / 2.0, device=device))
    return _mel_to_hz(top / (bands + 1) * torch.arange(1, bands + 1, device=device))


def random_channel(x: torch.Tensor, sample_rate: int, p: float = 1.0,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """A random microphone / telephone response added to ``(N, C, n_mels, T)`` log-mel (dB) images, per sample
    with probability ``p``: a high-pass at 50-600 Hz and a low-pass at 1.5-4 kHz, each 6-24 dB per octave
    (first to fourth order), and a tilt of +-6 dB across the band. Why: a laptop or phone microphone cuts
    the bass a studio one keeps, a phone line the treble, and FSDD's six recordings show few such responses.
    A filter is a fixed gain per band, so in dB it is added, exactly; attenuation stops at 60 dB (a real
    recording's noise floor hides the rest, which :func:`add_noise` after it supplies)."""
    if p == 0:
        return x
    n, _, bands, _ = x.shape
    dev = x.device
    rand = partial(_uniform, generator, dev)

    f = _band_centres_hz(bands, sample_rate, dev)[None, :]
    low, high = 50.0 + 550.0 * rand(n, 1), 1500.0 + 2500.0 * rand(n, 1)
    slope_low, slope_high = 6.0 + 18.0 * rand(n, 1), 6.0 + 18.0 * rand(n, 1)
    tilt = (2.0 * rand(n, 1) - 1.0) * 6.0 * torch.linspace(-0.5, 0.5, bands, device=dev)[None, :]
    gain = (-slope_low * torch.log2(low / f).clamp_min(0) - slope_high * torch.log2(f / high).clamp_min(0)
            + tilt).clamp_min(-60.0) * (rand(n, 1) < p)
    return x + gain[:, None, :, None].to(x.dtype)


def add_reverb(x: torch.Tensor, max_rt60: float, seconds: float = 0.5,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """A room's reverberation added to ``(N, C, F, T)`` log-mel (dB) images: per sample a reverberation time
    uniform in ``[0, max_rt60]`` s and a direct-to-reverberant ratio uniform in 0-10 dB; the reverberant part
    is each band's power smeared forward in time by an exponential decay (60 dB per RT60), added in the power
    domain. The time axis was resized to ``T`` frames, so a frame is taken as ``seconds / T`` (a trimmed word
    lasts about half a second). Why: a room at home blurs every formant transition into the next frames, and
    FSDD's close-microphone recordings show none of it."""
    if max_rt60 == 0:
        return x
    n, c, f, t = x.shape
    dev = x.device
    rand = partial(_uniform, generator, dev)

    rt60 = (max_rt60 * rand(n, 1)).clamp_min(1e-3)
    drr_db = 10.0 * rand(n, 1)
    lag = torch.arange(1, t, device=dev, dtype=torch.float32)[None, :] * (seconds / t)  # frames after the sound
    kernel = 10.0 ** (-6.0 * lag / rt60)  # power decay: 60 dB per RT60
    kernel = kernel / kernel.sum(dim=1, keepdim=True).clamp_min(1e-12) * 10.0 ** (-drr_db / 10.0)
    power = 10.0 ** (x.float() / 10.0)
    # tail[t] = sum_k kernel[k] * power[t - k]: one causal convolution per sample (grouped over samples)
    weight = kernel.flip(1).repeat_interleave(c * f, dim=0)[:, None, :]  # (N*C*F, 1, T-1)
    tail = F.conv1d(F.pad(power.reshape(1, n * c * f, t), (t - 1, 0))[..., :-1], weight, groups=n * c * f)
    return (10.0 * torch.log10(power + tail.reshape(n, c, f, t))).to(x.dtype)


def add_noise(x: torch.Tensor, snr_db: tuple[float, float], generator: torch.Generator | None = None) -> torch.Tensor:
    """Background noise at a random SNR in ``snr_db`` (dB, per sample) added to ``(N, C, F, T)`` log-mel
    (dB) images in the power domain: a noise floor with a random spectral tilt (+-12 dB across bands)
    and gamma-distributed fluctuation, as a mel band of real noise has. A user's room is never silent."""
    n, c, f, t = x.shape
    dev = x.device
    rand = partial(_uniform, generator, dev)

    power = 10.0 ** (x / 10.0)
    lo, hi = snr_db
    snr = lo + (hi - lo) * rand(n, 1, 1, 1)
    tilt = (rand(n, 1, 1, 1) * 2 - 1) * 12.0 * torch.linspace(-0.5, 0.5, f, device=dev)[None, None, :, None]
    floor = power.mean(dim=(1, 2, 3), keepdim=True) * 10.0 ** ((tilt - snr) / 10.0)
    fluctuation = -torch.log(rand(4, n, c, f, t).clamp_min(1e-12)).mean(0)  # Gamma(4)/4: mean 1
    return 10.0 * torch.log10(power + floor * fluctuation)


def smooth_envelope(x: torch.Tensor, keep: int) -> torch.Tensor:
    """``(N, C, n_mels, T)`` log-mel (dB) images with each frame's spectrum reduced to its first ``keep``
    cepstral terms (an orthonormal DCT-II over the mel axis and back): the vocal tract's envelope, without
    the harmonics of the voice's pitch.

    Why: below about 1 kHz the mel bands resolve a voice's harmonics, so a woman's 220 Hz voice draws
    stripes 2-3 times wider apart than the 100-140 Hz men of FSDD do, a pattern the training set never
    shows. With 64 bands at 8 kHz, harmonics 220 Hz apart repeat about every 10 bands (cepstral term ~13),
    100 Hz apart every 4-5 bands (~28): ``keep`` below those removes them, as 13 MFCCs do.
    """
    bands = x.shape[-2]
    if not 1 <= keep <= bands:
        raise ValueError(f"smooth_envelope: keep={keep} cepstral terms must be in [1, {bands}] (the mel bands)")
    return torch.einsum("fg,ncgt->ncft", _envelope_projection(keep, bands).to(x.device, x.dtype), x)


@lru_cache(maxsize=8)
def _envelope_projection(keep: int, bands: int) -> torch.Tensor:
    """``(bands, bands)``: DCT to the first ``keep`` terms and back, in one matrix; built once per shape, since
    :func:`smooth_envelope` runs on every batch."""
    dct = torchaudio.functional.create_dct(keep, bands, "ortho")  # (bands, keep)
    return dct @ dct.T


def utterance_normalize(x: torch.Tensor) -> torch.Tensor:
    """Per-utterance normalisation of ``(N, C, F, T)`` log-mel (dB) images: the clip's own mean level is
    removed and its spread scaled to one, so a recording's gain and loudness do not matter.

    One mean for the whole image, not one per band: the average spectrum of a one-word clip is much of
    what tells its digit, and removing it per band (cepstral mean normalisation) cost 10 points of
    leave-one-speaker-out accuracy in the study
    (docs/spoken_digits.md#voices-never-heard-the-recipe-leave-one-speaker-out-and-its-ablation).
    """
    x = x - x.mean(dim=(1, 2, 3), keepdim=True)
    return x / x.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-5)
