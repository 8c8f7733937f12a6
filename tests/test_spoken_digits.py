"""SpokenDigits: layouts, splits, features, caching, bad input, TTS, and the real FSDD split sizes."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import datamodules.spoken_digits as sd
from audio_fixtures import digit_tone, write_audiomnist, write_fsdd, write_wav
from conftest import SHARED_DATA
from datamodules.audio import AudioFileError, FeatureExtractor, FeatureSettings, load_clips, load_recording
from datamodules.paths import DatasetNotFoundError
from datamodules.splits import stratified_order
from datamodules.spoken_digits import SpokenDigits
from datamodules.tts import fork_server_available

SPEAKERS = ("alice", "bob", "carol")


@pytest.fixture(scope="module")
def fsdd_root(tmp_path_factory) -> Path:
    """3 speakers x 10 digits x 7 takes: official test = takes 0-4 (150 clips), 60 for train + val."""
    return write_fsdd(tmp_path_factory.mktemp("fsdd_data"), SPEAKERS)


@pytest.fixture(scope="module")
def audiomnist_root(tmp_path_factory) -> Path:
    return write_audiomnist(tmp_path_factory.mktemp("am_data"))


def make(tmp_path, root, **kw) -> SpokenDigits:
    kw.setdefault("progress", False)
    return SpokenDigits(data_dir=str(root), cache_dir=str(tmp_path / "cache"), **kw)


def files_of(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


# --- FSDD layout and splits ---------------------------------------------------------------------------

def test_fsdd_official_split(tmp_path, fsdd_root):
    before = files_of(fsdd_root)
    dm = make(tmp_path, fsdd_root, val_fraction=0.5)
    dm.setup("fit")
    meta = {k: dm.metadata(k) for k in ("train", "val", "test")}
    assert {k: len(v) for k, v in meta.items()} == {"train": 30, "val": 30, "test": 150}
    assert all(m["take"] < 5 for m in meta["test"]) and all(m["take"] >= 5 for m in meta["train"] + meta["val"])
    paths = [{m["path"] for m in v} for v in meta.values()]
    assert not (paths[0] & paths[1]) and not (paths[0] & paths[2]) and not (paths[1] & paths[2])
    # stratified by speaker and digit: each of the 30 (speaker, digit) strata has 2 non-test takes -> 1 in val
    assert Counter((m["speaker"], m["digit"]) for m in meta["val"]) == Counter(
        {(s, d): 1 for s in SPEAKERS for d in range(10)})
    assert meta["test"][0]["gender"] is None and meta["test"][0]["path"].endswith(".wav")
    assert dm.num_classes == 10 and dm.class_names[3] == "three"
    labels = [int(y) for _, y in dm.dataset("test")]
    assert labels == [m["digit"] for m in meta["test"]]
    assert files_of(fsdd_root) == before, "the dataset folder must never be written to"


def test_val_split_depends_on_split_seed_only(tmp_path, fsdd_root):
    dm = make(tmp_path, fsdd_root, val_fraction=0.5, split_seed=1)
    a = [m["path"] for m in dm.metadata("val")]
    b = [m["path"] for m in make(tmp_path, fsdd_root, val_fraction=0.5, split_seed=1).metadata("val")]
    c = [m["path"] for m in make(tmp_path, fsdd_root, val_fraction=0.5, split_seed=2).metadata("val")]
    assert a == b and a != c and dm.metadata("test") == make(tmp_path, fsdd_root, split_seed=2).metadata("test")


def test_train_per_class_limits_training_clips_only_spread_over_speakers(tmp_path, fsdd_root):
    """As the original CBAM study (50 clips per digit): only the training split shrinks."""
    full = make(tmp_path, fsdd_root, val_fraction=0.25)
    dm = make(tmp_path, fsdd_root, val_fraction=0.25, train_per_class=3)
    train = dm.metadata("train")
    assert Counter(m["digit"] for m in train) == Counter({d: 3 for d in range(10)})
    assert all(Counter(m["speaker"] for m in train if m["digit"] == d) == Counter({s: 1 for s in SPEAKERS})
               for d in range(10)), "each digit's clips come from every speaker"
    assert {m["path"] for m in train} <= {m["path"] for m in full.metadata("train")}
    assert dm.metadata("val") == full.metadata("val") and dm.metadata("test") == full.metadata("test")
    other = make(tmp_path, fsdd_root, val_fraction=0.25, train_per_class=3, split_seed=1).metadata("train")
    assert [m["path"] for m in other] != [m["path"] for m in train]
    with pytest.raises(ValueError, match=r"train_per_class=9, but the training split has fewer clips"):
        make(tmp_path, fsdd_root, val_fraction=0.25, train_per_class=9).setup("fit")


def test_fsdd_speaker_split(tmp_path, fsdd_root):
    dm = make(tmp_path, fsdd_root, split="speaker", test_speaker="bob", val_fraction=0.2)
    test, rest = dm.metadata("test"), dm.metadata("train") + dm.metadata("val")
    assert len(test) == 70 and {m["speaker"] for m in test} == {"bob"}
    assert {m["speaker"] for m in rest} == {"alice", "carol"} and len(rest) == 140
    assert len(dm.metadata("val")) == 28


def test_speaker_split_needs_a_known_speaker(tmp_path, fsdd_root):
    with pytest.raises(ValueError, match="test_speaker"):
        SpokenDigits(split="speaker")
    with pytest.raises(ValueError, match=r"'dave'.*\['alice', 'bob', 'carol'\]"):
        make(tmp_path, fsdd_root, split="speaker", test_speaker="dave").setup()
    with pytest.raises(ValueError, match="only used with split='speaker'"):
        SpokenDigits(test_speaker="bob")


def test_stratified_order_prefixes_are_proportional():
    strata = ["a"] * 40 + ["b"] * 20 + ["c"] * 10
    order = stratified_order(strata, seed=3)
    assert sorted(order) == list(range(70))
    for k in (7, 14, 35):
        counts = Counter(strata[i] for i in order[:k])
        for s, n in (("a", 40), ("b", 20), ("c", 10)):
            assert abs(counts[s] - k * n / 70) <= 1, (k, counts)


# --- features and batches -------------------------------------------------------------------------------

def test_logmel_batches(tmp_path, fsdd_root):
    dm = make(tmp_path, fsdd_root, feature="logmel", n_mels=32, frames=24, batch_size=16)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 1, 32, 24) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.isfinite(x).all() and 0 <= y.min() and y.max() <= 9
    # normalised with train statistics: each mel band has mean 0 and std 1 over the train set
    train = torch.stack([dm.dataset("train")[i][0] for i in range(len(dm.dataset("train")))])
    assert torch.allclose(train.mean(dim=(0, 1, 3)), torch.zeros(32), atol=1e-4)
    assert torch.allclose(train.std(dim=(0, 1, 3)), torch.ones(32), atol=1e-2)


def test_mfcc_normalised_with_train_statistics_only(tmp_path, fsdd_root):
    dm = make(tmp_path, fsdd_root, feature="mfcc", batch_size=8)
    dm.setup("fit")
    frames = lambda stage: torch.cat([item[0][: int(item[1])] for item in dm.dataset(stage)])  # noqa: E731
    train = frames("train")
    assert torch.allclose(train.mean(0), torch.zeros(13), atol=1e-4)
    assert torch.allclose(train.std(0), torch.ones(13), atol=1e-3)
    # statistics from all clips (a test leak) would not leave the train frames exactly standardised
    assert not torch.allclose(frames("test").mean(0), torch.zeros(13), atol=1e-2)


def test_mfcc_batches_are_padded_with_true_lengths(tmp_path, fsdd_root):
    dm = make(tmp_path, fsdd_root, feature="mfcc", batch_size=8, normalization="none")
    feats, lengths, y = next(iter(dm.test_dataloader()))
    meta = dm.metadata("test")[:8]
    expected = torch.tensor([1 + sf.info(m["path"]).frames // 80 for m in meta])  # 10 ms hop at 8 kHz
    assert feats.shape == (8, int(expected.max()), 13) and feats.dtype == torch.float32
    assert lengths.dtype == torch.int64 and torch.equal(lengths, expected)
    assert y.tolist() == [m["digit"] for m in meta]
    for i, n in enumerate(lengths.tolist()):
        assert (feats[i, n:] == 0).all() and (feats[i, :n].abs().sum(dim=1) > 0).all()
    item = dm.dataset("test")[0]
    assert item[0].shape == (int(expected[0]), 13) and int(item[1]) == expected[0]


def test_features_do_not_depend_on_the_batch():
    clips = [torch.from_numpy(digit_tone(d, take=d)) for d in range(6)]
    for feature in ("mfcc", "logmel"):
        fx = FeatureExtractor(FeatureSettings(feature=feature))
        together = fx(clips, batch_size=6, progress=False)
        alone = fx([clips[2]], progress=False)[0]
        assert torch.allclose(together[2], alone, atol=1e-5), feature


def test_fixture_digits_are_learnable(tmp_path, fsdd_root):
    """Nearest class mean on mean-pooled log-mel: the fixture tones must separate the digits."""
    dm = make(tmp_path, fsdd_root, n_mels=32, frames=16)
    tr, te = dm.dataset("train"), dm.dataset("test")
    xtr = torch.stack([tr[i][0].mean(-1).flatten() for i in range(len(tr))])
    ytr = torch.stack([tr[i][1] for i in range(len(tr))])
    xte = torch.stack([te[i][0].mean(-1).flatten() for i in range(len(te))])
    yte = torch.stack([te[i][1] for i in range(len(te))])
    centroids = torch.stack([xtr[ytr == d].mean(0) for d in range(10)])
    acc = (torch.cdist(xte, centroids).argmin(1) == yte).float().mean()
    assert acc > 0.9


# --- caching ------------------------------------------------------------------------------------------

def test_second_setup_loads_the_cache(tmp_path, fsdd_root, monkeypatch):
    dm = make(tmp_path, fsdd_root, feature="mfcc")
    dm.setup("fit")
    cached = list((tmp_path / "cache" / "spoken_digits").glob("fsdd-mfcc-*.pt"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns

    def boom(*a, **k):
        raise AssertionError("features recomputed although the cache is valid")

    monkeypatch.setattr(FeatureExtractor, "__call__", boom)
    monkeypatch.setattr(sd, "load_clips", boom)
    again = make(tmp_path, fsdd_root, feature="mfcc")
    again.setup("fit")
    assert cached[0].stat().st_mtime_ns == stamp
    assert all(torch.equal(a[0], b[0]) for a, b in zip(dm.dataset("val"), again.dataset("val")))
    # a different feature setting is a different cache entry
    with pytest.raises(AssertionError, match="recomputed"):
        make(tmp_path, fsdd_root, feature="mfcc", n_mfcc=20).setup()


def test_cache_key_follows_the_files(tmp_path):
    root = write_fsdd(tmp_path / "data", ("alice",), digits=range(2), takes=range(6))
    dm = make(tmp_path, root)
    src, clips = dm._locate()
    key = dm.cache_path(src, clips)
    wav = root / "fsdd" / "recordings" / "1_alice_3.wav"
    os.utime(wav, ns=(wav.stat().st_atime_ns, wav.stat().st_mtime_ns + 10**9))
    assert dm.cache_path(src, clips) != key
    assert make(tmp_path, root, frames=32).cache_path(src, clips) != dm.cache_path(src, clips)
    trimmed = make(tmp_path, root, trim_db=15.0).cache_path(src, clips)
    gap = make(tmp_path, root, trim_db=15.0, trim_gap=0.3).cache_path(src, clips)
    assert len({dm.cache_path(src, clips), trimmed, gap}) == 3  # trimming, and picking the word, are in the key
    with pytest.MonkeyPatch.context() as mp:  # a change of the loading path (zoo 0.3.4: DC offsets) too
        mp.setattr("datamodules.audio.LOADING_VERSION", 1)
        assert dm.cache_path(src, clips) != key


def test_a_recorders_dc_offset_is_removed_from_dataset_clips_as_from_a_users(tmp_path):
    """AudioMNIST-AZ's clips all sit at -0.085 full scale: the dataset path must see them as predict does,
    without the offset, or the lowest mel band and the trimming describe the recorder instead of the word."""
    clean = write_fsdd(tmp_path / "clean", ("alice",), digits=range(10), takes=range(6))
    shifted = tmp_path / "shifted"
    for wav in (clean / "fsdd" / "recordings").glob("*.wav"):
        x, rate = sf.read(wav, dtype="float32")
        write_wav(shifted / "fsdd" / "recordings" / wav.name, x - 0.085, rate)
    one = next((shifted / "fsdd" / "recordings").glob("*.wav"))
    loaded = load_clips([one], 8000, progress=False)[0]
    assert abs(float(loaded.mean())) < 1e-5 and torch.allclose(loaded, load_recording(one, 8000))
    kw = dict(feature="logmel", trim_db=15.0, trim_gap=0.3, normalization="utterance", n_mels=32, frames=24)
    a, b = make(tmp_path / "a", clean, **kw), make(tmp_path / "b", shifted, **kw)
    a.setup("test"), b.setup("test")
    fa, fb = (torch.stack([dm.dataset("test")[i][0] for i in range(len(dm.dataset("test")))]) for dm in (a, b))
    assert (fa - fb).abs().max() < 0.05  # the same recordings (PCM rounding apart)
    kept = FeatureExtractor(b.settings)([torch.from_numpy(sf.read(one, dtype="float32")[0])], progress=False)[0]
    assert (kept[0] - FeatureExtractor(b.settings)([loaded], progress=False)[0][0]).abs().max() > 20  # dB: it would show


# --- bad input ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("setting, value", [("source", "librispeech"), ("feature", "wav2vec"),
                                            ("split", "random"), ("target", "age")])
def test_unknown_names_are_refused_at_construction(setting, value):
    with pytest.raises(ValueError, match=rf"SpokenDigits: {setting}='{value}' is not allowed: expected one of \["):
        SpokenDigits(**{setting: value})


def test_fsdd_gender_target_is_refused():
    with pytest.raises(ValueError, match="all six FSDD speakers are male"):
        SpokenDigits(source="fsdd", target="gender")


def test_missing_dataset_without_download(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"fsdd.recordings.*--data.download true"):
        make(tmp_path, tmp_path / "nothing").setup()
    with pytest.raises(DatasetNotFoundError, match="AudioMNIST"):
        make(tmp_path, tmp_path / "nothing", source="audiomnist").setup()


def _small_fsdd(tmp_path) -> Path:
    return write_fsdd(tmp_path / "data", ("alice",), digits=range(2), takes=range(6))


@pytest.mark.parametrize("kind, message", [
    ("empty", "empty file"),
    ("garbage", "not a readable WAV file"),
    ("text", "not a readable WAV file"),
    ("flac", "is a FLAC file, expected a WAV"),
    ("no_samples", "contains no audio samples"),
])
def test_bad_audio_files_name_the_file(tmp_path, kind, message):
    root = _small_fsdd(tmp_path)
    bad = root / "fsdd" / "recordings" / "1_alice_4.wav"
    if kind == "empty":
        bad.write_bytes(b"")
    elif kind == "garbage":
        bad.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8)))
    elif kind == "text":
        bad.write_text("this is not audio\n" * 20)
    elif kind == "flac":
        sf.write(bad, digit_tone(1), 8000, format="FLAC")
    else:
        sf.write(bad, np.zeros(0, dtype=np.float32), 8000, format="WAV", subtype="PCM_16")
    with pytest.raises(AudioFileError, match=message) as err:
        make(tmp_path, root).setup()
    assert str(bad) in str(err.value)


def test_unexpected_file_names_are_refused(tmp_path):
    root = _small_fsdd(tmp_path)
    odd = root / "fsdd" / "recordings" / "notes.txt"
    odd.write_text("hi")
    with pytest.raises(ValueError, match=r"notes.txt.*\{digit\}_\{speaker\}_\{take\}.wav"):
        make(tmp_path, root).setup()


def test_multichannel_and_other_rates_are_converted_with_a_warning(tmp_path, caplog):
    stereo = write_wav(tmp_path / "stereo.wav", digit_tone(3, channels=2), 8000)
    fast = write_wav(tmp_path / "fast.wav", digit_tone(3, sample_rate=16000), 16000)
    mono = write_wav(tmp_path / "mono.wav", digit_tone(3), 8000)
    with caplog.at_level(logging.WARNING, logger="datamodules.audio"):
        a, b, c = load_clips([stereo, fast, mono], 8000, progress=False)
    assert "downmixed 1" in caplog.text and str(stereo) in caplog.text
    assert "16000 Hz to 8000 Hz" in caplog.text and str(fast) in caplog.text and str(mono) not in caplog.text
    assert a.ndim == b.ndim == 1 and a.numel() == c.numel() and abs(b.numel() - c.numel()) <= 1
    assert torch.allclose(a, c * 0.9, atol=2e-4)  # mean of the channels (second one at 0.8x)


# --- downloads (no network: the downloader is replaced by a local archive) ---------------------------

@pytest.mark.parametrize("source", ["fsdd", "audiomnist"])
def test_download_extracts_upstream_layout(tmp_path, monkeypatch, source):
    arc = sd.ARCHIVES[source]
    upstream = tmp_path / "upstream"
    if source == "fsdd":
        write_fsdd(tmp_path / "tree", ("alice",), digits=range(2), takes=range(6))
        shutil.copytree(tmp_path / "tree" / "fsdd", upstream / arc.top)
        archive = Path(shutil.make_archive(str(tmp_path / "v1.0.10"), "gztar", upstream))
    else:
        write_audiomnist(tmp_path / "tree", {"01": "male", "02": "female", "03": "male"}, digits=range(2), takes=range(2))
        shutil.copytree(tmp_path / "tree" / "AudioMNIST", upstream / arc.top)
        archive = Path(shutil.make_archive(str(tmp_path / "master"), "zip", upstream))
    (upstream / arc.top / "README.md").write_text("upstream readme")
    calls = []

    def fake_download(url, download_root, extract_root=None, **kw):
        from torchvision.datasets.utils import extract_archive

        calls.append(url)
        Path(download_root).mkdir(parents=True, exist_ok=True)
        local = Path(download_root) / archive.name
        shutil.copy(archive, local)
        extract_archive(str(local), extract_root)

    monkeypatch.setattr(sd, "download_and_extract_archive", fake_download)
    data = tmp_path / "data"
    dm = make(tmp_path, data, source=source, download=True)
    dm.setup()
    assert calls == [arc.url]
    assert len(list((data / arc.folder / arc.check).rglob("*.wav"))) == 12
    assert sorted(p.name for p in data.iterdir()) == [arc.folder], "staging folder must be cleaned up"
    assert sum(len(dm.metadata(s)) for s in ("train", "val", "test")) == 12
    make(tmp_path, data, source=source, download=True).setup()  # present now: no second download
    assert len(calls) == 1


def test_download_of_another_folder_fetches_that_corpus_or_refuses(tmp_path, monkeypatch):
    """``folder`` / ``add_corpus`` name another corpus: its own archive (AudioMNIST-AZ, with upstream's stray
    yaml beside the clips), never the source's; a folder with no known archive is refused, not filled."""
    arc = sd.FOLDER_ARCHIVES["AudioMNIST-AZ"]
    upstream = tmp_path / "upstream"
    write_audiomnist(tmp_path / "tree", {"01": "male", "02": "female", "03": "male"}, digits=range(2), takes=range(2))
    (tmp_path / "tree" / "AudioMNIST" / "data" / "audioMNIST_meta.txt").unlink()  # upstream has none
    shutil.copytree(tmp_path / "tree" / "AudioMNIST", upstream / arc.top)
    (upstream / arc.top / "data" / "01" / "hparams_inference.yaml").write_text("sample_rate: 16000\n")
    archive = Path(shutil.make_archive(str(tmp_path / "az"), "zip", upstream))
    calls = []

    def fake_download(url, download_root, extract_root=None, **kw):
        from torchvision.datasets.utils import extract_archive

        calls.append(url)
        extract_archive(str(archive), extract_root)

    monkeypatch.setattr(sd, "download_and_extract_archive", fake_download)
    data = tmp_path / "data"
    write_fsdd(data, SPEAKERS, digits=range(2), takes=range(6))
    dm = make(tmp_path, data, split="speaker", test_speaker="bob", add_corpus="AudioMNIST-AZ", download=True)
    dm.setup()
    assert calls == [arc.url] and sorted(p.name for p in data.iterdir()) == ["AudioMNIST-AZ", "fsdd"]
    assert sum(int(y) >= 10 for _, y in dm.dataset("train")) == 12  # the yaml is not a clip
    with pytest.raises(DatasetNotFoundError, match="No download is known for the folder 'Mine'"):
        make(tmp_path, data, source="audiomnist", folder="Mine", download=True).setup()
    assert calls == [arc.url]


# --- AudioMNIST -------------------------------------------------------------------------------------------

def test_audiomnist_digit_target_is_speaker_disjoint(tmp_path, audiomnist_root, caplog):
    with caplog.at_level(logging.WARNING):
        dm = make(tmp_path, audiomnist_root, source="audiomnist", val_fraction=0.2, test_fraction=0.2)
        dm.setup()
    spk = {k: {m["speaker"] for m in dm.metadata(k)} for k in ("train", "val", "test")}
    assert not (spk["train"] & spk["val"]) and not (spk["train"] & spk["test"]) and not (spk["val"] & spk["test"])
    assert set().union(*spk.values()) == {f"0{i}" for i in range(1, 7)}  # speaker 06 (no meta) kept for digits
    assert len(spk["test"]) == 1 and len(spk["val"]) == 1
    assert "resampled 120 file(s) from 48000 Hz to 8000 Hz" in caplog.text and "leaving out" not in caplog.text
    m = dm.metadata("train")[0]
    assert m["path"].endswith(f"{m['digit']}_{m['speaker']}_{m['take']}.wav")


def test_audiomnist_gender_target(tmp_path, audiomnist_root, caplog):
    with caplog.at_level(logging.WARNING):
        dm = make(tmp_path, audiomnist_root, source="audiomnist", target="gender", split="speaker",
                  test_speaker="04", val_fraction=0.25)
        dm.setup()
    assert "leaving out 1 speaker(s)" in caplog.text and "06" in caplog.text
    assert dm.num_classes == 2 and dm.class_names == ["female", "male"]
    seen = set()
    for stage in ("train", "val", "test"):
        meta, ds = dm.metadata(stage), dm.dataset(stage)
        seen |= {m["speaker"] for m in meta}
        assert [int(ds[i][1]) for i in range(len(ds))] == [dm.class_names.index(m["gender"]) for m in meta]
    assert "06" not in seen and {m["speaker"] for m in dm.metadata("test")} == {"04"}
    with pytest.raises(ValueError, match="no known gender"):
        make(tmp_path, audiomnist_root, source="audiomnist", target="gender", split="speaker",
             test_speaker="06").setup()


def test_audiomnist_gender_with_tts_voices(tmp_path, audiomnist_root):
    """add_tts with target='gender': the espeak-ng speakers join training only, labelled by their voice's sex."""
    kw = dict(source="audiomnist", target="gender", split="speaker", test_speaker="04", val_fraction=0.25)
    plain = make(tmp_path, audiomnist_root, **kw)
    plain.setup()
    mixed = make(tmp_path, audiomnist_root, **kw, add_tts=True, voices=["en-us+f2", "en-us+m3"], rates=[175],
                 pitches=[50])
    mixed.setup()
    assert len(mixed.dataset("train")) == len(plain.dataset("train")) + 20
    assert len(mixed.dataset("test")) == len(plain.dataset("test"))
    ds = mixed.dataset("train")
    pairs = {(m["speaker"], mixed.class_names[int(ds[i][1])]) for i, m in enumerate(mixed.metadata("train"))}
    tts_pairs = {p for p in pairs if p[0].startswith("en-us")}
    assert tts_pairs == {("en-us+f2-r175-p50", "female"), ("en-us+m3-r175-p50", "male")}


def test_audiomnist_name_mismatch_and_bad_meta(tmp_path):
    root = write_audiomnist(tmp_path / "data", {"01": "male", "02": "female"}, digits=range(2), takes=range(1))
    data = root / "AudioMNIST" / "data"
    (data / "audioMNIST_meta.txt").write_text("{not json")
    with pytest.raises(ValueError, match="audioMNIST_meta.txt.*not valid JSON"):
        make(tmp_path, root, source="audiomnist").setup()
    (data / "audioMNIST_meta.txt").write_text("{}")
    shutil.move(data / "02" / "1_02_0.wav", data / "01" / "1_02_0.wav")
    with pytest.raises(ValueError, match=r"1_02_0.wav.*speaker folder 01"):
        make(tmp_path, root, source="audiomnist").setup()


# --- TTS ----------------------------------------------------------------------------------------------

def test_tts_synthesizes_digits_offline(tmp_path):
    from datamodules.tts import synthesize_digits

    out, clips = synthesize_digits(tmp_path / "tts", ["en-us+f2", "en+m1"], [175], [50], digits=[1, 7],
                                   progress=False)
    assert len(clips) == 4 and {c.gender for c in clips} == {"female", "male"}
    for c in clips:
        x, rate = sf.read(out / c.path)
        assert 0.15 < len(x) / rate < 1.5 and np.abs(x).max() > 0.05
        assert c.path == f"{c.digit}_{c.speaker}_0.wav"
    stamp = (out / clips[0].path).stat().st_mtime_ns
    synthesize_digits(tmp_path / "tts", ["en-us+f2"], [175], [50], digits=[1], progress=False)
    assert (out / clips[0].path).stat().st_mtime_ns == stamp, "cached WAV must not be re-synthesised"
    seven_f, seven_m = (sf.read(out / c.path)[0] for c in clips if c.digit == 7)
    assert not np.array_equal(seven_f[:1000], seven_m[:1000])


@pytest.mark.parametrize("engine", ["fork server", "process per clip"])
def test_tts_clip_is_the_same_whatever_was_synthesised_before(tmp_path, monkeypatch, engine):
    """espeak-ng's output depends on what its process said before and, for breathy voices such as +f2, on the
    clock; every clip must be the same wherever, whenever and in whichever order it is built, or a cache folder
    built in two goes holds other audio than one built at once. Both engines give the same samples."""
    from datamodules import tts
    from datamodules.tts import synth, synthesize_digits

    if engine == "process per clip":
        monkeypatch.setattr(tts, "_engine", tts._ProcessPerClip)
    elif not tts.fork_server_available():
        pytest.skip("no fork on this platform")

    first, rate = synth("zero", "en+f2", 140, 40)
    time.sleep(1.05)  # espeak-ng's own noise seed is the clock in whole seconds: the next clips start in another
    synthesize_digits(tmp_path / "a", ["en-us+m3", "en+f2"], [140], [40], digits=[9, 0], progress=False)
    synthesize_digits(tmp_path / "b", ["en+f2"], [140], [40], digits=[0], progress=False)
    again, _ = synth("zero", "en+f2", 140, 40)
    a, rate_a = sf.read(tmp_path / "a" / "0_en+f2-r140-p40_0.wav", dtype="int16")
    b, _ = sf.read(tmp_path / "b" / "0_en+f2-r140-p40_0.wav", dtype="int16")
    assert rate == rate_a > 0 and first.dtype == np.int16 and len(first) > 0.2 * rate
    assert np.array_equal(first, again) and np.array_equal(first, a) and np.array_equal(first, b)


def test_tts_failed_synthesis_names_the_clip_and_leaves_no_file(tmp_path, monkeypatch):
    from datamodules import tts

    real_engine = tts._engine

    class Broken:
        def speak(self, text, voice, rate, pitch):
            return 3, b"RuntimeError: espeak_Synth returned error 1"

        def close(self):
            pass

    monkeypatch.setattr(tts, "_engine", Broken)
    with pytest.raises(RuntimeError, match=r"'seven' with voice 'en\+f2' \(exit status 3\): .*error 1"):
        tts.synthesize_digits(tmp_path, ["en+f2"], [175], [50], digits=[7], progress=False)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(tts, "_engine", real_engine)

    def no_rename(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(tts.os, "replace", no_rename)  # synthesised and written, then the rename fails
    with pytest.raises(PermissionError):
        tts.synthesize_digits(tmp_path, ["en+f2"], [175], [50], digits=[7], progress=False)
    assert list(tmp_path.iterdir()) == [], "the temporary file must be removed"
    # a run beside this one already wrote the clip and holds it open (Windows refuses the rename): not an error
    clip = tmp_path / "7_en+f2-r175-p50_0.wav"
    monkeypatch.setattr(tts.os, "replace", lambda src, dst: (clip.write_bytes(b"theirs"), no_rename(src, dst)))
    tts.synthesize_digits(tmp_path, ["en+f2"], [175], [50], digits=[7], progress=False)
    assert [f.name for f in tmp_path.iterdir()] == [clip.name] and clip.read_bytes() == b"theirs"


def _replies(data: bytes) -> list[tuple[int, bytes]]:
    from datamodules import espeak

    out = []
    while data:
        status, size = espeak._REPLY.unpack(data[:espeak._REPLY.size])
        out.append((status, data[espeak._REPLY.size:espeak._REPLY.size + size]))
        data = data[espeak._REPLY.size + size:]
    return out


def _serve(requests: list[str], script: str | None = None) -> list[tuple[int, bytes]]:
    """Replies of a real ``espeak.py --serve`` process (or of ``script``, which starts one its own way)."""
    import subprocess
    import sys

    from datamodules import espeak

    cmd = [sys.executable, espeak.__file__, "--serve"] if script is None else [sys.executable, "-c", script]
    done = subprocess.run(cmd, input=("\n".join(requests) + "\n").encode(), capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    return _replies(done.stdout)


@pytest.mark.skipif(not fork_server_available(), reason="the espeak-ng server forks (not on Windows)")
def test_espeak_server_answers_every_request_and_outlives_bad_ones():
    import json

    from datamodules import espeak
    from datamodules.tts import synth

    seven = json.dumps(["seven", "en+f3", 175, 50])
    replies = _serve([seven, json.dumps(["one", "xx-nope", 175, 50]), "not json", json.dumps(["one"]), seven])
    assert [status for status, _ in replies] == [0, espeak.EXIT_BAD_VOICE, espeak.EXIT_FAILED, espeak.EXIT_FAILED, 0]
    assert b"'xx-nope'" in replies[1][1] and b"bad request 'not json'" in replies[2][1]
    reference, rate = synth("seven", "en+f3", 175, 50)
    assert replies[0][1] == replies[4][1] == rate.to_bytes(4, "little") + reference.tobytes()


@pytest.mark.skipif(not fork_server_available(), reason="the espeak-ng server forks (not on Windows)")
def test_espeak_server_kills_a_clip_past_its_time_and_answers_the_next():
    import json

    from datamodules import espeak
    from datamodules.tts import synth

    hang_on_hang = (  # a server whose clip "hang" never ends, with a 1 s limit
        "import sys, time\n"
        "from datamodules import espeak\n"
        "real = espeak._speak_status\n"
        "espeak._speak_status = lambda text, *a: time.sleep(600) if text == 'hang' else real(text, *a)\n"
        "sys.exit(espeak.serve(sys.stdin.buffer, sys.stdout.buffer, timeout=1.0))\n")
    replies = _serve([json.dumps(["hang", "en", 175, 50]), json.dumps(["seven", "en+f3", 175, 50])], hang_on_hang)
    reference, rate = synth("seven", "en+f3", 175, 50)
    assert replies == [(espeak.EXIT_FAILED, b"espeak-ng did not finish within 1 s"),
                       (0, rate.to_bytes(4, "little") + reference.tobytes())]


def test_tts_engine_that_died_is_reported():
    from datamodules import espeak, tts

    if not tts.fork_server_available():
        pytest.skip("no fork server on this platform")
    engine = tts._engine()
    try:
        engine._proc.kill()
        engine._proc.wait()
        status, message = engine.speak("one", "en", 175, 50)
    finally:
        engine.close()
    assert status == espeak.EXIT_FAILED and b"espeak-ng server ended (exit status -9)" in message


def test_tts_process_per_clip_reports_a_bad_voice_and_a_failure(tmp_path, monkeypatch):
    """The engine of platforms without fork (Windows): its errors reach the user as the fork server's do."""
    import subprocess

    from datamodules import tts

    monkeypatch.setattr(tts, "_engine", tts._ProcessPerClip)
    with pytest.raises(ValueError, match="tts voice 'xx-nope' is not an espeak-ng voice"):
        tts.synthesize_digits(tmp_path, ["xx-nope"], [175], [50], digits=[0], progress=False)
    monkeypatch.setattr(tts.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, -11, b"", b""))
    with pytest.raises(RuntimeError, match=r"'seven' with voice 'en' \(exit status -11\)"):
        tts.synthesize_digits(tmp_path, ["en"], [175], [50], digits=[7], progress=False)

    def hang(cmd, **kw):
        raise subprocess.TimeoutExpired(cmd, kw["timeout"])

    monkeypatch.setattr(tts.subprocess, "run", hang)
    with pytest.raises(RuntimeError, match=r"'three' with voice 'en' \(exit status 3\): espeak-ng did not finish "
                                           r"within 120 s"):
        tts.synthesize_digits(tmp_path, ["en"], [175], [50], digits=[3], progress=False)
    assert list(tmp_path.iterdir()) == []


def test_tts_folder_names_the_synthesis_and_the_espeak_build():
    from importlib.metadata import version

    from datamodules.tts import TTS_VERSION, tts_folder

    assert tts_folder() == f"tts-v{TTS_VERSION}-espeakng-loader-{version('espeakng-loader')}"


def test_espeak_worker_reports_an_unknown_voice_by_exit_status(capsys):
    from datamodules import espeak

    assert espeak.main(["one", "xx-nope", "175", "50"]) == espeak.EXIT_BAD_VOICE
    assert "'xx-nope'" in capsys.readouterr().err
    assert espeak.main(["one"]) == espeak.EXIT_FAILED


def test_tts_bad_voice_is_named(tmp_path):
    from datamodules.tts import synthesize_digits

    with pytest.raises(ValueError, match="'xx-nope'"):
        synthesize_digits(tmp_path, ["xx-nope"], [175], [50], digits=[0], progress=False)
    with pytest.raises(ValueError, match=r"rates \[999\]"):
        synthesize_digits(tmp_path, ["en-us"], [999], [50], digits=[0], progress=False)


def test_tts_source_gender_split(tmp_path):
    dm = SpokenDigits(source="tts", target="gender", cache_dir=str(tmp_path), voices=["en-us+f2", "en+m1"],
                      rates=[150, 200], pitches=[40, 60], val_fraction=0.25, test_fraction=0.25, progress=False,
                      feature="mfcc")
    dm.setup()
    spk = {k: {m["speaker"] for m in dm.metadata(k)} for k in ("train", "val", "test")}
    assert [len(spk[k]) for k in ("train", "val", "test")] == [4, 2, 2]
    assert {m["gender"] for m in dm.metadata("test")} == {"female", "male"}  # stratified by gender
    feats, lengths, y = next(iter(dm.train_dataloader()))
    assert feats.shape[0] == y.shape[0] == 40 and set(y.tolist()) == {0, 1}


# --- the data root: the real data when present, else the fixtures in its format -------------------------

def test_fsdd_official_split_of_the_data_root(config_data):
    # the session cache dir and the configs' feature, so the config tests reuse this cache (and vice versa)
    dm = SpokenDigits(data_dir=str(config_data), feature="logmel", progress=False)
    dm.setup()
    n = {k: len(dm.dataset(k)) for k in ("train", "val", "test")}
    takes = Counter(m["take"] < 5 for k in n for m in dm.metadata(k))
    assert n["test"] == takes[True] and n["train"] + n["val"] == takes[False] and n["val"] == round(0.1 * takes[False])
    speakers = Counter(m["speaker"] for m in dm.metadata("test"))
    assert len(set(speakers.values())) == 1, "every speaker has takes 0-4 of every digit in the test set"
    if config_data == SHARED_DATA:  # the real FSDD: 6 speakers x 10 digits x 50 takes
        assert n["train"] + n["val"] == 2700 and n["test"] == 300 and n["val"] == 270
        assert speakers == Counter({s: 50 for s in ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")})


def test_audiomnist_az_gender_folds_of_the_data_root(config_data):
    """The AudioMNIST-AZ gender study's 5 speaker-disjoint folds (split_seed 0-4): gender-stratified,
    disjoint, and (on the real corpus) the 59 speakers as 12 test / 6 validation / 41 training."""
    tests = []
    for seed in range(5):
        dm = SpokenDigits(data_dir=str(config_data), source="audiomnist", folder="AudioMNIST-AZ", target="gender",
                          feature="mfcc", split_seed=seed, progress=False)
        _, clips = dm._locate()
        split = dm._split([clips[i] for i in dm._with_gender(clips)])
        speakers = {k: {clips[i].speaker for i in v} for k, v in split.items()}
        assert not (speakers["train"] & speakers["test"]) and not (speakers["val"] & speakers["test"])
        assert {clips[i].gender for i in split["test"]} == {"female", "male"}
        tests.append(frozenset(speakers["test"]))
        if config_data == SHARED_DATA:
            assert [len(speakers[k]) for k in ("test", "val", "train")] == [12, 6, 41]
    assert len(set(tests)) == 5, "each split_seed draws other test speakers"


def test_spec_augment_masks_per_sample_bands_only_in_training():
    from datamodules.audio import spec_augment

    x = torch.ones(6, 1, 32, 40)
    out = spec_augment(x, num_masks=2, mask_width=6, generator=torch.Generator().manual_seed(0))
    zero = out == 0
    assert out.shape == x.shape and zero.any()
    # masked cells form whole rows (frequency bands) or whole columns (time bands) of each image
    for img in zero[:, 0]:
        rows, cols = img.all(dim=1), img.all(dim=0)
        assert torch.equal(img, rows[:, None] | cols[None, :])
        assert rows.sum() <= 12 and cols.sum() <= 12
    assert not all(torch.equal(zero[0], zero[i]) for i in range(1, 6)), "masks must differ per sample"
    torch.testing.assert_close(spec_augment(x, 0, 6), x)


def test_spec_augment_needs_logmel():
    with pytest.raises(ValueError, match="spec_augment"):
        SpokenDigits(feature="mfcc", spec_augment=True)


def test_spec_augment_hook_touches_training_batches_only():
    from types import SimpleNamespace

    dm = SpokenDigits(spec_augment=True, num_masks=2, mask_width=8)
    batch = (torch.ones(4, 1, 64, 64), torch.arange(4))
    dm.trainer = SimpleNamespace(training=False)
    assert torch.equal(dm.on_after_batch_transfer(batch, 0)[0], batch[0])
    dm.trainer = SimpleNamespace(training=True)
    torch.manual_seed(0)
    x, y = dm.on_after_batch_transfer(batch, 0)
    assert (x == 0).any() and torch.equal(y, batch[1])


def test_random_time_crop_stretches_time_only_and_per_sample():
    from datamodules.audio import random_time_crop

    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 1, 40).expand(6, 1, 16, 40).contiguous()  # varies along time only
    out = random_time_crop(ramp, min_keep=0.7, generator=g)
    assert out.shape == ramp.shape
    assert (out.diff(dim=-1) >= -1e-6).all(), "a time crop keeps the ramp monotone"
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, ramp) and not torch.allclose(out[0], out[1]), "crops differ per sample"
    bands = torch.linspace(-1, 1, 16)[:, None].expand(6, 1, 16, 40).contiguous()  # varies along frequency only
    torch.testing.assert_close(random_time_crop(bands, 0.7, generator=g), bands)
    torch.testing.assert_close(random_time_crop(ramp, 1.0), ramp)
    with pytest.raises(ValueError, match="min_keep"):
        random_time_crop(ramp, 0.0)


@pytest.mark.parametrize("kwargs,match", [(dict(time_crop=0.0), "time_crop"), (dict(time_crop=1.5), "time_crop"),
                                          (dict(feature="mfcc", time_crop=0.8), "time_crop")])
def test_time_crop_setting_is_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SpokenDigits(**kwargs)


def test_time_crop_hook_touches_training_batches_only():
    from types import SimpleNamespace

    dm = SpokenDigits(time_crop=0.7)
    batch = (torch.linspace(0, 1, 64).expand(4, 1, 64, 64).contiguous(), torch.arange(4))
    dm.trainer = SimpleNamespace(training=False)
    assert torch.equal(dm.on_after_batch_transfer(batch, 0)[0], batch[0])
    dm.trainer = SimpleNamespace(training=True)
    x, y = dm.on_after_batch_transfer(batch, 0)
    assert x.shape == batch[0].shape and not torch.allclose(x, batch[0]) and torch.equal(y, batch[1])


@pytest.mark.parametrize("damage", ["truncated", "empty", "other_files", "crafted"])
def test_a_damaged_feature_cache_is_named_and_rebuilt(tmp_path, caplog, damage):
    root = _small_fsdd(tmp_path)
    first = make(tmp_path, root)
    first.setup()
    cache = first.cache_path(first.dataset_dir, first.clips)
    good = first.dataset("train").feats.clone()
    if damage == "truncated":
        cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    elif damage == "empty":
        cache.write_bytes(b"")
    elif damage == "other_files":
        blob = torch.load(cache, weights_only=True)
        torch.save({**blob, "files": blob["files"][::-1]}, cache)
    else:  # a pickle that would run code: refused by the weights-only load, never executed
        marker = tmp_path / "pwned"

        class Evil:
            def __reduce__(self):
                return (Path.touch, (marker,))

        torch.save({"files": Evil()}, cache)
    with caplog.at_level(logging.WARNING, logger="datamodules.spoken_digits"):
        again = make(tmp_path, root)
        again.setup()
    assert f"feature cache {cache} is unusable" in caplog.text and "rebuilding it" in caplog.text
    assert torch.equal(again.dataset("train").feats, good)
    assert torch.load(cache, weights_only=True)["files"] == [c.path for c in again.clips]  # rewritten whole
    if damage == "crafted":
        assert not marker.exists()


@pytest.mark.parametrize("f0", [95.0, 120.0, 210.0, 290.0])
def test_yin_pitch_finds_the_fundamental_of_a_harmonic_voice(f0):
    from datamodules.audio import yin_pitch
    from audio_fixtures import voiced_tone

    x = torch.from_numpy(voiced_tone(f0, 0.5))
    track = yin_pitch(x, 8000, hop=80)
    assert track.shape == (1 + x.numel() // 80,)  # aligned with the MFCC frames
    voiced = track[~track.isnan()]
    assert len(voiced) > 0.5 * len(track)
    assert abs(float(voiced.median()) / f0 - 1) < 0.02  # no octave errors on a clean harmonic voice


def test_yin_pitch_calls_noise_and_silence_unvoiced():
    from datamodules.audio import pitch_columns, yin_pitch

    noise = torch.from_numpy(np.random.default_rng(0).standard_normal(4000).astype(np.float32))
    assert yin_pitch(noise, 8000, hop=80).isnan().float().mean() > 0.9
    assert yin_pitch(torch.zeros(4000), 8000, hop=80).isnan().all()
    cols = pitch_columns(torch.zeros(4000), 8000, hop=80)  # no voiced frame: pitch unknown, voiced share 0
    assert cols.shape == (51, 2) and cols.abs().sum() == 0


def test_pitch_columns_fill_unvoiced_frames_with_the_median():
    from datamodules.audio import pitch_columns
    from audio_fixtures import voiced_tone

    x = torch.cat([torch.zeros(2000), torch.from_numpy(voiced_tone(200.0, 0.5)), torch.zeros(2000)])
    cols = pitch_columns(x, 8000, hop=80)
    voiced = cols[:, 1] == 1
    assert 0 < voiced.sum() < len(cols)  # the silences either side are unvoiced
    torch.testing.assert_close(cols[~voiced, 0], torch.full(((~voiced).sum(),), float(cols[voiced, 0].median())))
    assert abs(2 ** float(cols[voiced, 0].median()) * 100 / 200 - 1) < 0.02  # log2(F0 / 100 Hz)


@pytest.mark.parametrize("f0, tolerance", [(100.0, 0.05), (220.0, 0.1)])
def test_lpc_formants_find_a_vowels_resonances_and_scale_with_the_tract(f0, tolerance):
    from datamodules.audio import lpc_formants
    from audio_fixtures import vowel

    for scale in (1.0, 1.2):  # a vocal tract 1/1.2 as long: every formant 20 % higher
        true = np.array([600.0, 1400.0, 2500.0]) * scale
        found = lpc_formants(torch.from_numpy(vowel(f0, true)), 8000, hop=80)
        assert found.shape == (51, 3)
        rows = found[~found.isnan().any(1)]
        assert len(rows) > 0.5 * len(found)
        np.testing.assert_allclose(rows.median(0).values.numpy(), true, rtol=tolerance)


def test_formant_columns_fill_frames_without_an_estimate():
    from datamodules.audio import NEUTRAL_FORMANTS, formant_columns, lpc_formants
    from audio_fixtures import vowel

    x = torch.cat([torch.zeros(2000), torch.from_numpy(vowel(120.0, (700.0, 1200.0, 2600.0))), torch.zeros(2000)])
    cols, found = formant_columns(x, 8000, hop=80), lpc_formants(x, 8000, hop=80)
    known = ~found.isnan().any(1)
    assert 0 < known.sum() < len(cols)  # the silences either side have none
    torch.testing.assert_close(cols[known], torch.log2(found[known] / 1000))  # log2(F / 1 kHz)
    torch.testing.assert_close(cols[~known], torch.log2(found[known] / 1000).median(0).values.expand(int((~known).sum()), 3))
    silent = formant_columns(torch.zeros(4000), 8000, hop=80)  # nothing voiced: the neutral tube, not a sex
    torch.testing.assert_close(silent, torch.log2(torch.tensor(NEUTRAL_FORMANTS) / 1000).expand(51, 3))
    assert formant_columns(torch.zeros(5), 8000, hop=80).shape == (1, 3)  # shorter than one window
    with pytest.raises(ValueError, match=r"f0 must have one value per frame, shape \(51,\)"):
        lpc_formants(torch.zeros(4000), 8000, hop=80, f0=torch.zeros(50))


def test_formant_features_follow_the_pitch_columns(tmp_path, audiomnist_root):
    pitch = make(tmp_path, audiomnist_root, source="audiomnist", feature="mfcc", target="gender", pitch_features=True)
    both = make(tmp_path, audiomnist_root, source="audiomnist", feature="mfcc", target="gender", pitch_features=True,
                formant_features=True)
    pitch.setup(), both.setup()
    a, b = pitch.dataset("train")[0][0], both.dataset("train")[0][0]
    assert b.shape == (a.shape[0], a.shape[1] + 3)
    torch.testing.assert_close(b[:, :-3], a)  # MFCCs and pitch columns unchanged
    assert len(list((tmp_path / "cache" / "spoken_digits").glob("audiomnist-mfcc-*.pt"))) == 2  # own cache key
    assert both.state_dict()["settings"]["formants"] is True
    with pytest.raises(ValueError, match=r"formants=True \(checkpoint\) vs False"):
        pitch.load_state_dict(both.state_dict())
    old = pitch.state_dict()
    del old["settings"]["formants"]  # checkpoints from before formant features
    pitch.load_state_dict(old)
    with pytest.raises(ValueError, match="formant_features=True .* needs feature='mfcc'"):
        SpokenDigits(feature="logmel", formant_features=True)


def test_a_longer_window_resolves_a_low_voices_harmonics():
    """A 110 Hz voice: a 25 ms window blurs its harmonics into a smooth envelope, 64 ms shows them."""
    t = torch.arange(8000) / 8000
    voice = sum(torch.sin(2 * np.pi * 110 * k * t) for k in range(1, 20)) / 10
    ripple = {}
    for window in (None, 0.064):
        extract = FeatureExtractor(FeatureSettings("logmel", window=window))
        bank = extract.transform.mel_scale.fb  # (FFT bins, mel bands)
        centres = bank.argmax(0) * (extract.s.sample_rate / 2) / (bank.shape[0] - 1)  # FFT bin -> Hz
        spectrum = extract([voice], progress=False)[0].mean(-1)[(centres > 150) & (centres < 700)]  # dB
        ripple[window] = float(spectrum.max() - spectrum.min())
    assert ripple[0.064] > 20.0 and ripple[0.064] > 3 * ripple[None], ripple
    assert FeatureSettings("logmel", window=0.064).win == 512 and FeatureSettings("logmel").win == 200
    assert "window" not in FeatureSettings("logmel").key_fields()  # caches of the default window keep their keys
    assert FeatureSettings("logmel", window=0.064).key_fields()["window"] == 0.064
    with pytest.raises(ValueError, match=r"window=0.5: expected an analysis window in \(0, 0.25\] seconds"):
        FeatureSettings("logmel", window=0.5)
    with pytest.raises(ValueError, match=r"SpokenDigits: window=0.5 is not allowed: expected a number > 0 and <= 0.25"):
        SpokenDigits(window=0.5)


def test_the_window_travels_with_the_checkpoint(tmp_path, audiomnist_root):
    wide = make(tmp_path, audiomnist_root, source="audiomnist", target="gender", window=0.064)
    plain = make(tmp_path, audiomnist_root, source="audiomnist", target="gender")
    wide.setup(), plain.setup()
    assert wide.dataset("train")[0][0].shape == plain.dataset("train")[0][0].shape
    assert not torch.allclose(wide.dataset("train")[0][0], plain.dataset("train")[0][0])
    assert len(list((tmp_path / "cache" / "spoken_digits").glob("audiomnist-logmel-*.pt"))) == 2  # own cache key
    assert wide.state_dict()["settings"]["window"] == 0.064
    with pytest.raises(ValueError, match=r"window=0.064 \(checkpoint\) vs None"):
        plain.load_state_dict(wide.state_dict())
    old = plain.state_dict()
    del old["settings"]["window"]  # checkpoints from before the window setting
    plain.load_state_dict(old)
    with pytest.raises(ValueError, match=r"window=None \(checkpoint\) vs 0.064"):
        wide.load_state_dict(old)


def test_pitch_features_append_two_columns_to_mfcc_frames(tmp_path, audiomnist_root):
    plain = make(tmp_path, audiomnist_root, source="audiomnist", feature="mfcc", target="gender")
    with_pitch = make(tmp_path, audiomnist_root, source="audiomnist", feature="mfcc", target="gender", pitch_features=True)
    plain.setup(), with_pitch.setup()
    a, b = plain.dataset("train")[0][0], with_pitch.dataset("train")[0][0]
    assert b.shape == (a.shape[0], a.shape[1] + 2)
    torch.testing.assert_close(b[:, :-2], a)  # the MFCCs themselves are unchanged
    caches = sorted(p.name for p in (tmp_path / "cache" / "spoken_digits").glob("audiomnist-mfcc-*.pt"))
    assert len(caches) == 2  # the pitch setting is part of the cache key
    assert with_pitch.state_dict()["settings"]["pitch"] is True  # and of what a checkpoint carries
    saved = with_pitch.state_dict()
    with pytest.raises(ValueError, match="pitch"):  # a pitch checkpoint cannot predict without its columns
        plain.load_state_dict(saved)
    old = plain.state_dict()
    del old["settings"]["pitch"]  # checkpoints from before pitch features
    plain.load_state_dict(old)
    with pytest.raises(ValueError, match="pitch"):
        with_pitch.load_state_dict(old)
    from zoo.nets.mfcc import MFCCStats
    with pytest.raises(ValueError, match="the data has 2 pitch columns"):  # the net must be told, not guess
        MFCCStats(a.shape[1])(b[None], torch.tensor([b.shape[0]]))


def test_pitch_features_need_mfcc():
    with pytest.raises(ValueError, match="pitch_features=True .* needs feature='mfcc'"):
        SpokenDigits(feature="logmel", pitch_features=True)


def test_add_corpus_joins_training_only_as_classes_of_its_own(tmp_path):
    """Another corpus's words widen the voices the net hears; their labels (10-19) never mix with the digits."""
    root = write_fsdd(tmp_path / "data", SPEAKERS, takes=range(6))
    write_audiomnist(root)
    (root / "AudioMNIST").rename(root / "Other-Digits")
    plain = make(tmp_path, root, split="speaker", test_speaker="bob")
    dm = make(tmp_path, root, split="speaker", test_speaker="bob", add_corpus="Other-Digits")
    plain.setup(), dm.setup()
    assert dm.extra_class_names == [f"Other-Digits/{d}" for d in sd.DIGIT_NAMES] and plain.extra_class_names == []
    assert dm.num_classes == 10 and dm.class_names == plain.class_names
    train = [int(y) for _, y in dm.dataset("train")]
    assert len(train) == len(plain.dataset("train")) + 120  # 6 speakers x 10 digits x 2 takes
    assert Counter(train[len(plain.dataset("train")):]) == Counter({10 + d: 12 for d in range(10)})
    for stage in ("val", "test"):  # validation and test stay the source's own clips and classes
        assert dm.metadata(stage) == plain.metadata(stage)
        assert max(int(y) for _, y in dm.dataset(stage)) <= 9
    with pytest.raises(ValueError, match="add_corpus='Other-Digits' .* needs target='digit'"):
        SpokenDigits(source="audiomnist", target="gender", add_corpus="Other-Digits")
    with pytest.raises(ValueError, match="the source's own folder"):
        SpokenDigits(source="audiomnist", folder="Other-Digits", add_corpus="Other-Digits")
    with pytest.raises(DatasetNotFoundError):
        make(tmp_path, root, add_corpus="Missing-Corpus").setup()
    offline = SpokenDigits(source="tts", add_corpus="Missing-Corpus")  # the offline demo reads no folder
    assert offline._sources() == [("tts", None)] and len(offline.extra_class_names) == 10


def test_train_and_test_gender_keep_one_sex_in_their_splits(tmp_path):
    """train_gender asks what a one-sex training set (FSDD's: six men) does to the other sex; test_gender
    tests each sex on its own; the other splits stay as they were."""
    genders = {f"0{i}": ("male" if i <= 4 else "female") for i in range(1, 9)}
    root = write_audiomnist(tmp_path / "data", genders, digits=range(2), takes=range(1), sample_rate=8000)
    shutil.copytree(root / "AudioMNIST", root / "Other-Digits")
    kw = dict(source="audiomnist", val_fraction=0.25, test_fraction=0.25)
    plain, men, women_test = (make(tmp_path, root, **kw, **extra) for extra in
                              ({}, {"train_gender": "male", "add_corpus": "Other-Digits"}, {"test_gender": "female"}))
    for dm in (plain, men, women_test):
        dm.setup()
    sex = {k: [m["gender"] for m in plain.metadata(k)] for k in ("train", "val", "test")}
    assert all(set(v) == {"female", "male"} for v in sex.values())  # stratified: both in every split
    assert {m["gender"] for k in ("train", "val") for m in men.metadata(k)} == {"male"}
    assert men.metadata("val") == [m for m in plain.metadata("val") if m["gender"] == "male"]
    assert men.metadata("test") == plain.metadata("test")
    own = [m for m in plain.metadata("train") if m["gender"] == "male"]
    assert men.metadata("train")[:len(own)] == own
    added = men.metadata("train")[len(own):]  # the corpus's 4 men x 2 clips; its 4 women left out
    assert len(added) == 8 == len(men.dataset("train")) - len(own) and {m["gender"] for m in added} == {"male"}
    assert [m["gender"] for m in women_test.metadata("test")] == ["female"] * sex["test"].count("female")
    assert women_test.metadata("train") == plain.metadata("train")
    with pytest.raises(ValueError, match="train_gender='female' leaves no train clip.*are male"):
        genders_m = {f"0{i}": "male" for i in range(1, 5)}
        make(tmp_path, write_audiomnist(tmp_path / "men", genders_m, digits=range(1), takes=range(1)),
             source="audiomnist", train_gender="female").setup()
    with pytest.raises(ValueError, match="with target='gender' that leaves one class"):
        SpokenDigits(source="audiomnist", target="gender", test_gender="male")
    with pytest.raises(ValueError, match="train_gender"):
        SpokenDigits(train_gender="women")
