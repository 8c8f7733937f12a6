"""The spoken-digit recipe for voices never heard: on-device augmentation and per-utterance
normalisation (datamodules/audio.py), and how SpokenDigits applies them (train only, every stage)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchaudio

from audio_fixtures import write_fsdd
from datamodules.audio import (FeatureExtractor, FeatureSettings, add_noise, add_reverb, random_channel, shift_pitch,
                               smooth_envelope, trim_silence, utterance_normalize, vtlp, warp_frequency, yin_pitch)
from datamodules.spoken_digits import SpokenDigits


def _images(n=4, bands=64, frames=32):
    g = torch.Generator().manual_seed(0)
    return -60 + 40 * torch.rand(n, 1, bands, frames, generator=g)


def test_vtlp_identity_at_zero_and_per_sample_warps():
    x = _images()
    assert torch.equal(vtlp(x, 0.0, 8000), x)
    # one bright band: a warp moves it up or down, by a different amount per sample
    x = torch.full((64, 1, 64, 8), -60.0)
    x[:, :, 30, :] = 0.0
    out = vtlp(x, 0.2, 8000, generator=torch.Generator().manual_seed(1))
    peaks = out[:, 0, :, 0].argmax(dim=1)
    assert peaks.min() < 30 < peaks.max() and len(set(peaks.tolist())) > 5
    assert (peaks - 30).abs().max() <= 12  # 20 % of a mel-band centre of ~1.5 kHz moves it a few bands, not far


def test_warp_frequency_is_vtlp_with_chosen_factors():
    x = torch.full((3, 1, 64, 8), -60.0)
    x[:, :, 30, :] = 0.0
    torch.testing.assert_close(warp_frequency(x, 1.0, 8000), x)
    peaks = warp_frequency(x, torch.tensor([0.9, 1.0, 1.1]), 8000)[:, 0, :, 0].argmax(dim=1).tolist()
    assert peaks[0] < 30 == peaks[1] < peaks[2]  # a shorter vocal tract (1.1) moves a formant up
    g = torch.Generator().manual_seed(3)
    factors = 1.0 + 0.2 * (2 * torch.rand(3, generator=torch.Generator().manual_seed(3)) - 1)
    torch.testing.assert_close(vtlp(x, 0.2, 8000, generator=g), warp_frequency(x, factors, 8000))


def test_noise_only_adds_energy_and_follows_the_snr():
    x = _images(n=256)
    g = torch.Generator().manual_seed(0)
    loud, quiet = add_noise(x, (0.0, 0.0), generator=g), add_noise(x, (40.0, 40.0), generator=g)
    assert (loud >= x - 1e-4).all() and (quiet >= x - 1e-4).all()
    assert (loud - x).mean() > 1.0 > (quiet - x).mean() > 0.0


def test_random_channel_cuts_lows_and_highs_per_sample_and_only_when_drawn():
    x = _images(n=256)
    assert random_channel(x, 8000, p=0.0) is x
    out = random_channel(x, 8000, p=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, random_channel(x, 8000, p=1.0, generator=torch.Generator().manual_seed(0)))  # seeded
    gain = (out - x)[:, 0, :, 0]
    assert torch.allclose(out - x, gain[:, None, :, None].expand_as(x), atol=1e-4)  # a fixed gain per band
    assert (gain[:, 0] < -6.0).all()  # every high-pass (>= 50 Hz) cuts the lowest band (~20 Hz)
    assert (gain >= -60.0 - 3.0).all() and (gain <= 3.0 + 1e-4).all()  # cut at most 60 dB; the tilt is +-3 dB
    assert gain[:, 20:40].abs().max() < 10.0  # 0.5-1.5 kHz, the formants' heart, passes (up to the tilt)
    assert len(set(gain[:, 12].mul(10).round().tolist())) > 100  # a response per sample
    some = random_channel(x, 8000, p=0.5, generator=torch.Generator().manual_seed(1)) - x
    untouched = (some.abs().amax(dim=(1, 2, 3)) == 0).float().mean()
    assert 0.35 < untouched < 0.65


def test_reverb_smears_energy_forward_in_time_only():
    x = _images(n=64)
    assert add_reverb(x, 0.0) is x
    click = torch.full((64, 1, 8, 64), -80.0)
    click[..., 20] = 0.0
    out = add_reverb(click, 0.8, generator=torch.Generator().manual_seed(0))
    assert (out >= click - 1e-4).all()  # only adds power
    torch.testing.assert_close(out[..., 20], click[..., 20], atol=0.5, rtol=0)  # the direct sound dominates
    assert (out[..., :20] < -70.0).all()  # nothing before the sound
    tail = out[..., 21:40].mean(dim=(1, 2))  # (64, 19): the tail decays, more slowly in a longer room
    assert (tail[:, 1:] <= tail[:, :-1] + 1e-3).all() and (tail[:, 0] > -40.0).all()
    long_room = tail[:, -1].argmax()
    assert tail[long_room, -1] > tail[tail[:, -1].argmin(), -1] + 10.0


def test_trim_gap_keeps_the_word_not_a_click_before_it():
    g = torch.Generator().manual_seed(0)
    rate = 8000
    t = torch.arange(int(0.4 * rate)) / rate
    word = 0.3 * torch.sin(2 * torch.pi * 300 * t) * torch.hann_window(t.numel())
    click = torch.zeros(int(0.6 * rate))
    click[800:840] = 0.9 * torch.randn(40, generator=g)  # 5 ms, louder than the word, 0.5 s before it
    x = torch.cat([click, word, torch.zeros(int(0.2 * rate))]) + 1e-4 * torch.randn(int(1.2 * rate), generator=g)
    plain = trim_silence(x, rate, top_db=15)
    assert plain.numel() > 0.8 * rate  # from the click to the word's end: mostly silence
    out = trim_silence(x, rate, top_db=15, max_gap=0.3)
    assert 0.25 * rate < out.numel() < 0.45 * rate  # the word, its soft edges back (15 dB under the word's peak)
    # a word with a short inner pause stays whole, and without pauses nothing changes
    split = torch.cat([word, torch.zeros(int(0.1 * rate)), word])
    assert trim_silence(split, rate, 15, max_gap=0.3).numel() == trim_silence(split, rate, 15).numel()
    assert torch.equal(trim_silence(word, rate, 15, max_gap=0.3), trim_silence(word, rate, 15))


def test_utterance_normalisation_removes_level_and_keeps_spectral_shape():
    x = _images()
    x[:, :, :8] += 20.0  # a loud low band: the shape a digit's spectrum has
    out = utterance_normalize(x)
    assert out.mean(dim=(1, 2, 3)).abs().max() < 1e-4
    assert torch.allclose(out.std(dim=(1, 2, 3)), torch.ones(4), atol=1e-4)
    assert torch.allclose(utterance_normalize(x + 17.0), out, atol=1e-4)  # gain in dB drops out
    assert (out[:, :, :8].mean(dim=(1, 2, 3)) > out[:, :, 8:].mean(dim=(1, 2, 3)) + 1.0).all()  # band shape kept


def test_augmentation_on_train_batches_only_and_normalisation_everywhere(tmp_path):
    data = write_fsdd(tmp_path / "data", speakers=("alice", "bob"), takes=range(7))
    dm = SpokenDigits(data_dir=str(data), cache_dir=str(tmp_path / "cache"), progress=False, batch_size=8,
                      normalization="utterance", vtlp=0.2, noise_snr=(5.0, 20.0), trim_db=40, channel_eq=1.0,
                      reverb=0.5)
    dm.setup()
    x, y = next(iter(dm.val_dataloader()))

    class Trainer:
        training = False

    dm.trainer = Trainer()
    val = dm.on_after_batch_transfer((x, y), 0)[0]
    assert torch.allclose(val, utterance_normalize(x))  # evaluation: normalised, never augmented
    Trainer.training = True
    torch.manual_seed(0)
    train = dm.on_after_batch_transfer((x, y), 0)[0]
    assert not torch.allclose(train, val, atol=1e-3)
    assert train.mean(dim=(1, 2, 3)).abs().max() < 1e-4  # augmented, then normalised
    dm.hparams.vtlp, dm.hparams.noise_snr, dm.hparams.reverb = 0.0, None, 0.0  # the channel alone, then normalised
    torch.manual_seed(0)
    gains = random_channel(x, 8000, 1.0)
    torch.manual_seed(0)
    torch.testing.assert_close(dm.on_after_batch_transfer((x, y), 0)[0], utterance_normalize(gains))


@pytest.mark.parametrize("normalization", ["utterance", "dataset"])
def test_test_warps_make_views_of_test_and_predict_batches_only(tmp_path, normalization):
    data = write_fsdd(tmp_path / "data", speakers=("alice", "bob"), takes=range(7))
    dm = SpokenDigits(data_dir=str(data), cache_dir=str(tmp_path / "cache"), progress=False, batch_size=8,
                      normalization=normalization, trim_db=40, test_warps=[0.9, 1.0, 1.15])
    dm.setup()
    x, y = next(iter(dm.test_dataloader()))

    class Trainer:
        training = testing = predicting = False

    dm.trainer = Trainer()
    plain = dm.on_after_batch_transfer((x, y), 0)[0]  # validation: one view
    assert isinstance(plain, torch.Tensor)
    for stage in ("testing", "predicting"):
        setattr(Trainer, stage, True)
        views, y2 = dm.on_after_batch_transfer((x, y), 0)
        setattr(Trainer, stage, False)
        assert torch.equal(y2, y) and len(views) == 3 and all(v.shape == x.shape for v in views)
        assert torch.equal(views[1], plain)  # 1.0: as recorded
        db = x if normalization == "utterance" else x * dm.feature_stats[1][:, None] + dm.feature_stats[0][:, None]
        expect = warp_frequency(db, 0.9, 8000)
        if normalization == "utterance":
            expect = utterance_normalize(expect)
        else:
            expect = (expect - dm.feature_stats[0][:, None]) / dm.feature_stats[1][:, None]
        torch.testing.assert_close(views[0], expect)
        assert not torch.allclose(views[0], views[2])


@pytest.mark.parametrize("kwargs, match", [
    ({"feature": "mfcc", "normalization": "utterance"}, "need feature='logmel'"),
    ({"feature": "mfcc", "vtlp": 0.1}, "need feature='logmel'"),
    ({"vtlp": 0.7}, r"vtlp=0.7 is not allowed: expected a number >= 0 and < 0.5"),
    ({"test_warps": [1.0, 2.5]}, r"test_warps=\[1.0, 2.5\] is not allowed"),
    ({"test_warps": []}, r"at least one factor"),
    ({"feature": "mfcc", "test_warps": [1.0]}, r"test_warps=\[1.0\] needs feature='logmel'"),
    ({"noise_snr": (30.0, 5.0)}, r"lo <= hi"),
    ({"pitch_shift": (2.0, 1.0)}, r"pitch_shift=\[lo, hi\] needs lo <= hi"),
    ({"trim_db": -3.0}, r"trim_db=-3.0 is not allowed: expected a number > 0"),
    ({"trim_gap": 0.3}, r"trim_gap=0.3 .* needs trim_db"),
    ({"trim_db": 15.0, "trim_gap": 0.0}, r"trim_gap=0.0 is not allowed: expected a number > 0"),
    ({"channel_eq": 1.5}, r"channel_eq=1.5 is not allowed"),
    ({"reverb": 3.0}, r"reverb=3.0 is not allowed: expected a number >= 0 and <= 2"),
    ({"feature": "mfcc", "reverb": 0.5}, "need feature='logmel'"),
    ({"feature": "mfcc", "channel_eq": 0.5}, "need feature='logmel'"),
    ({"normalization": "sometimes"}, r"normalization='sometimes' is not allowed: expected one of \['dataset'"),
    ({"normalization": True}, r"normalization=True is not allowed"),  # the old bool spelling is gone
    ({"feature": "mfcc", "lifter": 13}, "lifter need feature='logmel'"),
    ({"lifter": 0}, r"lifter=0 is not allowed: expected an integer > 0"),
    ({"n_mels": 40, "lifter": 41}, r"lifter=41 cepstral terms cannot exceed n_mels=40"),
])
def test_recipe_settings_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SpokenDigits(**kwargs)


def test_add_tts_extends_training_only(tmp_path, monkeypatch):
    """espeak-ng speakers join the training split; validation and test stay the real source's."""
    data = write_fsdd(tmp_path / "data", speakers=("alice", "bob"), takes=range(7))
    kw = dict(data_dir=str(data), cache_dir=str(tmp_path / "cache"), progress=False, trim_db=40)
    plain = SpokenDigits(**kw)
    plain.setup()
    mixed = SpokenDigits(**kw, add_tts=True, voices=["en-us+f2"], rates=[175], pitches=[50])
    mixed.setup()
    assert len(mixed.dataset("train")) == len(plain.dataset("train")) + 10
    assert len(mixed.dataset("val")) == len(plain.dataset("val")) and len(mixed.dataset("test")) == len(plain.dataset("test"))
    speakers = {m["speaker"] for m in mixed.metadata("train")}
    assert "en-us+f2-r175-p50" in speakers and {m["speaker"] for m in mixed.metadata("test")} <= {"alice", "bob"}


def test_state_with_cli_typed_settings_loads_weights_only(tmp_path):
    """The CLI hands restricted-type values (jsonargparse's PositiveFloat); a checkpoint must hold plain numbers,
    or the weights-only load of every test and predict refuses it."""
    import io

    from jsonargparse.typing import PositiveFloat

    dm = SpokenDigits(source="tts", trim_db=PositiveFloat(15.0), trim_gap=PositiveFloat(0.3), progress=False,
                      pitch_shift=(PositiveFloat(0.8), PositiveFloat(2.0)))
    buffer = io.BytesIO()
    torch.save({"state": dm.state_dict(), "hparams": dict(dm.hparams)}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert loaded["state"]["settings"]["trim_gap"] == 0.3 and type(loaded["state"]["settings"]["trim_gap"]) is float
    assert type(loaded["hparams"]["trim_gap"]) is float and tuple(loaded["hparams"]["pitch_shift"]) == (0.8, 2.0)


def _voice(f0: float, seconds: float = 0.5, rate: int = 8000, formant: float = 700.0) -> torch.Tensor:
    """A vowel: a glottal pulse train at ``f0`` through one resonance at ``formant`` Hz."""
    n = int(seconds * rate)
    pulses = np.zeros(n)
    pulses[(np.arange(0, seconds, 1 / f0) * rate).astype(int)] = 1.0
    r, theta = 0.97, 2 * np.pi * formant / rate  # a two-pole resonator
    y = np.zeros(n)
    for i in range(n):
        y[i] = pulses[i] + 2 * r * np.cos(theta) * (y[i - 1] if i else 0) - r * r * (y[i - 2] if i > 1 else 0)
    return torch.tensor(y / np.abs(y).max() * 0.5, dtype=torch.float32)


def _peak_hz(x: torch.Tensor, rate: int = 8000) -> float:
    """Frequency of the strongest peak of the smoothed spectrum (the formant, not a harmonic)."""
    spectrum = torch.fft.rfft(x * torch.hann_window(x.numel())).abs()
    smooth = torch.nn.functional.avg_pool1d(spectrum[None, None], 41, 1, 20)[0, 0]
    return float(smooth.argmax()) * rate / x.numel()


@pytest.mark.parametrize("factor", [0.8, 1.75])
def test_shift_pitch_moves_the_pitch_and_keeps_the_formant_length_and_level(factor):
    x = _voice(120.0)
    y = shift_pitch(x, 8000, factor)
    assert y.shape == x.shape and torch.isclose(y.pow(2).mean(), x.pow(2).mean(), rtol=1e-4)
    f0 = lambda v: float(np.nanmedian(yin_pitch(v, 8000, 80).numpy()))  # noqa: E731
    assert f0(y) == pytest.approx(120.0 * factor, rel=0.05)
    assert _peak_hz(y) == pytest.approx(_peak_hz(x), abs=80)  # the vocal tract stays where it was
    if factor > 1:  # the measure sees a formant move: played faster, pitch and formant move together
        faster = torchaudio.functional.resample(x, round(8000 * factor), 8000)
        assert _peak_hz(faster) == pytest.approx(factor * _peak_hz(x), rel=0.1)


def test_shift_pitch_copies_unvoiced_sound_through():
    noise = 0.1 * torch.randn(4000, generator=torch.Generator().manual_seed(0))
    y = shift_pitch(noise, 8000, 1.75)
    assert torch.corrcoef(torch.stack([noise[200:-200], y[200:-200]]))[0, 1] > 0.95
    with pytest.raises(ValueError, match="factor must be positive"):
        shift_pitch(noise, 8000, 0.0)


def test_pitch_shift_adds_shifted_copies_of_the_training_clips_only(tmp_path):
    data = write_fsdd(tmp_path / "data", speakers=("alice", "bob"), takes=range(7))
    kw = dict(data_dir=str(data), cache_dir=str(tmp_path / "cache"), progress=False, trim_db=40,
              normalization="none")
    plain = SpokenDigits(**kw)
    plain.setup()
    shifted = SpokenDigits(**kw, pitch_shift=(1.5, 2.0))
    shifted.prepare_data()
    shifted.setup()
    n = len(plain.dataset("train"))
    assert len(shifted.dataset("train")) == 2 * n
    for stage in ("val", "test"):
        torch.testing.assert_close(shifted.dataset(stage).feats, plain.dataset(stage).feats)
    originals, copies = shifted.dataset("train").feats[:n], shifted.dataset("train").feats[n:]
    torch.testing.assert_close(originals, plain.dataset("train").feats)
    assert torch.equal(shifted.dataset("train").labels[n:], shifted.dataset("train").labels[:n])
    assert (copies - originals).abs().mean() > 1.0  # dB: the copies are other sounds
    factors = shifted._pitch_factors(100)
    assert factors.min() >= 1.5 and factors.max() <= 2.0 and torch.equal(factors, shifted._pitch_factors(100))
    again = SpokenDigits(**kw, pitch_shift=(1.5, 2.0))
    again.setup()  # from the cache: the same copies
    torch.testing.assert_close(again.dataset("train").feats, shifted.dataset("train").feats)


def test_smooth_envelope_removes_stripes_and_keeps_the_envelope():
    bands = torch.arange(64.0)
    envelope = -0.01 * (bands - 20) ** 2  # a formant-like hump
    stripes = 6 * torch.cos(2 * torch.pi * bands / 10)  # harmonics 10 bands apart (a 220 Hz voice's low bands)
    x = (envelope + stripes)[None, None, :, None].repeat(2, 1, 1, 5)
    smooth = smooth_envelope(x, 8)
    assert smooth.shape == x.shape
    assert (smooth[0, 0, :, 0] - envelope).abs().mean() < 0.5 < 3.5 < (x[0, 0, :, 0] - envelope).abs().mean()
    torch.testing.assert_close(smooth_envelope(x, 64), x, atol=1e-3, rtol=0)  # every term kept: nothing changes
    torch.testing.assert_close(smooth_envelope(envelope[None, None, :, None], 20)[0, 0, :, 0], envelope, atol=0.3, rtol=0)
    with pytest.raises(ValueError, match=r"keep=65 cepstral terms must be in \[1, 64\]"):
        smooth_envelope(x, 65)


@pytest.mark.parametrize("formant", [500.0, 1000.0])
def test_lifter_brings_a_womans_pitch_closer_to_a_mans(formant):
    """One vowel (same formant) at a man's 110 Hz and a woman's 220 Hz: 13 cepstral terms halve the difference of
    their log-mel images, the harmonics' spacing being most of it."""
    extract = FeatureExtractor(FeatureSettings("logmel", 8000))
    man, woman = (torch.stack(extract([_voice(f0, formant=formant)], progress=False))[:, None] for f0 in (110, 220))
    gap = (utterance_normalize(man) - utterance_normalize(woman)).pow(2).mean().sqrt()
    smoothed = (utterance_normalize(smooth_envelope(man, 13)) - utterance_normalize(smooth_envelope(woman, 13)))
    assert smoothed.pow(2).mean().sqrt() < 0.6 * gap


@pytest.mark.parametrize("normalization", ["utterance", "dataset"])
def test_lifter_smooths_every_stage_after_augmentation_and_warps(tmp_path, normalization):
    data = write_fsdd(tmp_path / "data", speakers=("alice", "bob"), takes=range(7))
    dm = SpokenDigits(data_dir=str(data), cache_dir=str(tmp_path / "cache"), progress=False, batch_size=8, trim_db=40,
                      normalization=normalization, lifter=13, vtlp=0.2, test_warps=[0.9, 1.0])
    dm.setup()
    x, y = next(iter(dm.test_dataloader()))

    class Trainer:
        training = testing = predicting = False

    def finish(db):  # smoothing in dB, then the run's normalisation
        db = smooth_envelope(db, 13)
        return utterance_normalize(db) if normalization == "utterance" else (db - mean) / std

    mean, std = (t[:, None] for t in dm.feature_stats) if normalization == "dataset" else (0.0, 1.0)
    db = x * std + mean
    dm.trainer = Trainer()
    torch.testing.assert_close(dm.on_after_batch_transfer((x, y), 0)[0], finish(db))  # validation
    Trainer.predicting = True
    warped, plain = dm.on_after_batch_transfer((x, y), 0)[0]
    torch.testing.assert_close(plain, finish(db))
    torch.testing.assert_close(warped, finish(warp_frequency(db, 0.9, 8000)))
    Trainer.predicting, Trainer.training = False, True
    torch.manual_seed(0)
    train = dm.on_after_batch_transfer((x, y), 0)[0]
    torch.manual_seed(0)
    torch.testing.assert_close(train, finish(vtlp(db, 0.2, 8000)))  # augmented first, then smoothed


def test_a_checkpoint_state_names_its_lifter(tmp_path):
    """Predicting with another smoothing than training used would change every answer silently: refused."""
    kw = dict(source="tts", progress=False, normalization="utterance")
    state = SpokenDigits(**kw, lifter=13).state_dict()
    assert state["lifter"] == 13
    with pytest.raises(ValueError, match=r"lifter=13 \(checkpoint\) vs None \(now\)"):
        SpokenDigits(**kw).load_state_dict(state)
    SpokenDigits(**kw, lifter=13).load_state_dict(state)
    old = {k: v for k, v in SpokenDigits(**kw).state_dict().items() if k != "lifter"}  # before zoo 0.3.3
    SpokenDigits(**kw).load_state_dict(old)
    with pytest.raises(ValueError, match=r"lifter=None \(checkpoint\) vs 13 \(now\)"):
        SpokenDigits(**kw, lifter=13).load_state_dict(old)
