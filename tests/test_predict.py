"""``python -m zoo predict --ckpt_path ... --data.predict_path FILES``: a user's own recordings.

The checkpoint alone must be enough (the dataset folder and the feature cache are removed after
training); files of any rate, depth and channel count are converted as training data was; bad files
get a row with their reason and do not stop the run; class-named folders give labels and an accuracy.
"""

from __future__ import annotations

import csv
from collections import Counter
import json
import shutil
import warnings
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from scipy.signal import resample_poly

from audio_fixtures import digit_tone, write_fsdd
from conftest import CONFIGS, run_cli
from datamodules.audio import write_av
from datamodules.predict import PredictItem
from zoo.callbacks import PredictionWriter, breakdown

NET = "--model.init_args.net.init_args."
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SMALL_CNN = [NET + "channels", "[8, 16, 16, 32]", NET + "hidden", "32"]
# the shipped recipe's trimming, without what cannot work on the fixture's digits, which are steady
# tones: per-utterance normalisation removes a tone's level per band, a +-15 % frequency warp moves
# one digit's tone onto the next (so do the shipped +-10 % test warps), 13 cepstral terms (lifter) blur a tone's
# narrow line into its neighbours', and espeak-ng speakers (real words)
# take minutes to synthesise; the fixture has no second corpus (the extra classes' part in predict:
# tests/test_classifier.py)
DATA = ["--data.trim_db", "40", "--data.normalization", "dataset", "--data.add_tts", "false", "--data.vtlp", "0",
        "--data.noise_snr", "null", "--data.add_corpus", "null", "--model.init_args.extra_classes", "0",
        "--model.init_args.net.init_args.num_classes", "10", "--data.test_warps", "null", "--data.lifter", "null"]


def _quiet(tmp_path: Path, audio: bool = True) -> list[str]:
    return ["--trainer.accelerator", "cpu", "--trainer.default_root_dir", tmp_path / "runs",
            "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
            *(["--data.progress", "false"] if audio else [])]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A CNN trained 12 epochs on an FSDD-layout fixture; then the dataset and the cache are deleted."""
    tmp = tmp_path_factory.mktemp("predict")
    data = write_fsdd(tmp / "data", speakers=("alice", "bob"), takes=range(14))
    cache = tmp / "cache"
    cli = run_cli(["fit", "--config", CONFIGS / "cnn_audio.yaml", *SMALL_CNN, *_quiet(tmp),
                   "--data.data_dir", data, "--data.cache_dir", cache, "--data.batch_size", "16",
                   *DATA, "--trainer.max_epochs", "12", "--run.test_after_fit", "false"])
    ckpt = cli.trainer.checkpoint_callback.best_model_path
    assert ckpt and Path(ckpt).is_file()
    shutil.rmtree(data)
    shutil.rmtree(cache)
    return tmp, Path(ckpt)


def _recordings(folder: Path) -> dict[str, str | None]:
    """Mixed-format recordings of digits 2 and 7 in class-named folders, padded with room noise, and bad
    files; returns file name -> the error expected (None: must be predicted)."""
    def tone(digit, rate, channels=1):
        """One 8 kHz take, stored at ``rate``: every file holds the same sound, so a wrong prediction can only
        come from reading or converting the file (a tone synthesised at 48 kHz would carry 6x the noise band
        the model was trained on)."""
        x = digit_tone(digit, 0, 3, sample_rate=8000)
        # half a second of room noise either side, at the level of the clip's own noise (as in a recording;
        # the trimming must cut it): the model then sees the word as it saw the training clips
        pad = lambda seed: 0.02 * np.random.default_rng(seed).standard_normal(4000)  # noqa: E731
        x = np.concatenate([pad(0), x, pad(1)])
        if rate != 8000:
            ratio = Fraction(rate, 8000)
            x = resample_poly(x, ratio.numerator, ratio.denominator)
        x = np.stack([x * (1.0 - 0.2 * c) for c in range(channels)], axis=1) if channels > 1 else x
        return x.astype(np.float32)

    files = {
        "7/a_8k_16bit.wav": (tone(7, 8000), 8000, "WAV", "PCM_16"),
        "seven/b_48k_24bit_stereo.flac": (tone(7, 48000, 2), 48000, "FLAC", "PCM_24"),
        "2/c_16k_float.wav": (tone(2, 16000), 16000, "WAV", "FLOAT"),
        "two/d_44k_32bit.wav": (tone(2, 44100), 44100, "WAV", "PCM_32"),
        "unsorted/e_22k.wav": (tone(2, 22050), 22050, "WAV", "PCM_16"),
        "7/f_16k.mp3": (tone(7, 16000), 16000, "MP3", "MPEG_LAYER_III"),  # lossy: what phones and apps send
        "two/g_48k_stereo.ogg": (tone(2, 48000, 2), 48000, "OGG", "VORBIS"),
        "seven/h_44k.aiff": (tone(7, 44100), 44100, "AIFF", "PCM_16"),
        # driven 10 dB into the rails: still predicted, and named in a warning
        "unsorted/i_clipped.wav": (np.clip(tone(2, 16000) / np.abs(tone(2, 16000)).max() * 3, -0.99, 0.99),
                                   16000, "WAV", "PCM_16"),
    }
    for name, (x, rate, fmt, subtype) in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(folder / name, x, rate, format=fmt, subtype=subtype)
    # a phone's AAC (.m4a) and a browser's Opus (.webm), which only PyAV reads (zoo 0.3.3)
    phone = {"7/j_44k_stereo.m4a": (tone(7, 44100, 2), 44100, "aac"), "two/k_48k.webm": (tone(2, 48000), 48000, "libopus")}
    for name, (x, rate, codec) in phone.items():
        write_av(folder / name, x, rate, codec)
    files.update(phone)
    (folder / "bad").mkdir()
    (folder / "bad" / "empty.wav").write_bytes(b"")
    (folder / "bad" / "garbage.flac").write_bytes(b"not audio at all" * 50)
    (folder / "bad" / "garbage.m4a").write_bytes(b"not audio at all" * 50)
    sf.write(folder / "bad" / "silent.wav", np.zeros(8000, np.float32), 8000, subtype="PCM_16")
    sf.write(folder / "bad" / "short.wav", digit_tone(1, seconds=0.03), 8000, subtype="PCM_16")
    expected = {name: None for name in files}
    expected.update({"bad/empty.wav": "empty file", "bad/garbage.flac": "not a readable", "bad/garbage.m4a": "not a readable",
                     "bad/silent.wav": "silent", "bad/short.wav": "too short"})
    return expected


@pytest.mark.parametrize("views", [[], ["--data.test_warps", "[0.98, 1.0, 1.02]"]], ids=["as-recorded", "test-warps"])
def test_predict_on_mixed_files_with_only_the_checkpoint(trained, tmp_path, capsys, caplog, views):
    run_dir, ckpt = trained
    expected = _recordings(tmp_path / "recs")
    out = tmp_path / "out" / "predictions.csv"
    with caplog.at_level("WARNING", logger="datamodules.audio"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = run_cli(["predict", "--config", CONFIGS / "cnn_audio.yaml", *SMALL_CNN, *_quiet(tmp_path),
                       *DATA, "--data.data_dir", tmp_path / "no-such-dataset", "--data.cache_dir", tmp_path / "empty-cache",
                       "--ckpt_path", ckpt, "--data.predict_path", tmp_path / "recs", "--run.predictions_file", out, *views])
    # predict saves no checkpoints: no checkpoint callback to restore, so no warning that its folder changed
    assert not any(isinstance(c, ModelCheckpoint) for c in cli.trainer.callbacks)
    assert not [w for w in caught if "dirpath has changed" in str(w.message)]
    # the clipped file is named, and no clean file in any format (the lossy MP3 and Ogg included)
    assert "1 file(s) look clipped" in caplog.text and str(tmp_path / "recs" / "unsorted" / "i_clipped.wav") in caplog.text
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "prediction", "probability", "label", "error", *(f"probability_{n}" for n in DIGITS)]
    by_name = {str(Path(r["path"]).relative_to(tmp_path / "recs")): r for r in rows}
    assert set(by_name) == set(expected)
    for name, error in expected.items():
        row = by_name[name]
        if error is None:
            assert row["error"] == "" and row["prediction"] in DIGITS
            assert 0.0 < float(row["probability"]) <= 1.0
            # every class's probability at the end of the row: they sum to 1, the prediction's is the largest
            dist = {n: float(row[f"probability_{n}"]) for n in DIGITS}
            assert sum(dist.values()) == pytest.approx(1.0, abs=1e-5) and max(dist, key=dist.get) == row["prediction"]
            assert dist[row["prediction"]] == pytest.approx(float(row["probability"]), abs=1e-4)
        else:
            assert error in row["error"] and str(tmp_path / "recs" / name) in row["error"]
            assert row["prediction"] == ""
    assert by_name["7/a_8k_16bit.wav"]["label"] == "seven" and by_name["two/d_44k_32bit.wav"]["label"] == "two"
    assert by_name["unsorted/e_22k.wav"]["label"] == ""
    # the fixture's digits are tones: the model, trained on them, must get these right in every lossless format
    # (its 12 epochs leave margins of a few percent, which the AAC and Opus files' coding may tip either way;
    # their decoding is checked against the original in tests/test_recording_conditions.py)
    for name, row in by_name.items():
        if not row["error"] and "clipped" not in name and not name.endswith((".m4a", ".webm")):
            assert row["prediction"] == ("seven" if name.startswith(("7/", "seven/")) else "two"), (name, row)
    printed = capsys.readouterr().out
    assert "11 file(s) predicted, 5 failed" in printed and "accuracy on 9 labelled file(s)" in printed


def test_predict_refuses_other_feature_settings_than_the_checkpoint(trained, tmp_path):
    _, ckpt = trained
    _recordings(tmp_path / "recs")
    with pytest.raises(ValueError, match=r"trim_db=40.0 \(checkpoint\) vs 30.0 \(now\)"):
        run_cli(["predict", "--config", CONFIGS / "cnn_audio.yaml", *SMALL_CNN, *_quiet(tmp_path),
                 *DATA, "--data.trim_db", "30", "--ckpt_path", ckpt,
                 "--data.predict_path", tmp_path / "recs"])


def test_predict_path_that_matches_nothing_is_an_error(trained, tmp_path):
    _, ckpt = trained
    with pytest.raises(FileNotFoundError, match=r"no \.wav/.*/\.aiff/\.m4a/.*/\.wma files found"):
        run_cli(["predict", "--config", CONFIGS / "cnn_audio.yaml", *SMALL_CNN, *_quiet(tmp_path),
                 *DATA, "--ckpt_path", ckpt,
                 "--data.predict_path", str(tmp_path / "nothing" / "*.wav")])


def test_glob_and_single_file(tmp_path, caplog):
    from datamodules.predict import find_files, label_from_folder

    for name in ("a/1.wav", "a/b/2.WAV", "a/c/3.flac", "a/.hidden/4.wav", "a/notes.txt", "a/b/phone.m4a"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    suffixes = (".wav", ".flac")
    with caplog.at_level("WARNING", logger="datamodules.predict"):
        assert [p.name for p in find_files(str(tmp_path / "a"), suffixes)] == ["1.wav", "2.WAV", "3.flac"]
    assert "skipped 2 file(s) that are not .wav/.flac" in caplog.text
    assert str(tmp_path / "a" / "b" / "phone.m4a") in caplog.text and "notes.txt" in caplog.text
    assert ".hidden" not in caplog.text
    assert [p.name for p in find_files(str(tmp_path / "a" / "**" / "*.wav"), suffixes)] == ["1.wav"]
    assert find_files(str(tmp_path / "a" / "1.wav"), suffixes) == [tmp_path / "a" / "1.wav"]
    names = ["zero", "one", "two"]
    assert label_from_folder(Path("x/TWO/r.wav"), names) == 2
    assert label_from_folder(Path("x/1/r.wav"), names) == 1
    assert label_from_folder(Path("x/9/r.wav"), names) is None
    assert label_from_folder(Path("x/misc/r.wav"), names) is None


def test_trim_silence_keeps_the_word_and_drops_the_padding():
    from datamodules.audio import trim_silence

    word = torch.from_numpy(digit_tone(4, seconds=0.3))
    quiet = 1e-3 * torch.randn(4000, generator=torch.Generator().manual_seed(0))
    padded = torch.cat([quiet, word, quiet])
    out = trim_silence(padded, 8000, top_db=40)
    assert 0.28 * 8000 <= out.numel() <= 0.40 * 8000  # the word (0.3 s) plus small margins
    assert trim_silence(word, 8000, top_db=40).numel() >= 0.9 * word.numel()  # a trimmed clip stays whole


# --- images: MNIST classifiers and the image classifier ------------------------------------------------
def test_mnist_classifier_predicts_png_and_jpeg_of_any_size_and_mode(tmp_path, capsys):
    from PIL import Image
    from test_resume import write_mnist

    data = write_mnist(tmp_path / "data", per_class=30)
    cli = run_cli(["fit", "--config", CONFIGS / "lenet_reduced_mnist.yaml", *_quiet(tmp_path, audio=False),
                   "--data.data_dir", data, "--data.real_per_class", "27", "--data.test_per_class", "5",
                   "--data.batch_size", "16", "--trainer.max_epochs", "8", "--run.test_after_fit", "false"])
    ckpt = cli.trainer.checkpoint_callback.best_model_path
    split_csv = tmp_path / "split.csv"  # the test split lists no files: rows by position, labelled by the data
    run_cli(["predict", "--config", CONFIGS / "lenet_reduced_mnist.yaml", *_quiet(tmp_path, audio=False), "--data.data_dir",
             data, "--data.real_per_class", "27", "--data.test_per_class", "5", "--ckpt_path", ckpt,
             "--run.predictions_file", split_csv])
    split_rows = list(csv.DictReader(split_csv.open()))
    assert [r["path"] for r in split_rows] == [f"#{i}" for i in range(50)]
    assert sorted(Counter(r["label"] for r in split_rows).items()) == [(str(d), 5) for d in range(10)]
    assert "accuracy on 50 labelled file(s)" in capsys.readouterr().out
    shutil.rmtree(data)
    rng = np.random.default_rng(1)
    for digit, (size, mode, suffix) in zip((3, 5, 7), ((28, "L", ".png"), (56, "RGB", ".jpg"), (40, "RGBA", ".png"))):
        img = rng.integers(0, 60, (28, 28), dtype=np.uint8)
        img[2 * digit:2 * digit + 8, 4:12] = 250  # the fixture's digit pattern
        path = tmp_path / "imgs" / str(digit) / f"x{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, "L").convert(mode).resize((size, size), Image.NEAREST).save(path)
    (tmp_path / "imgs" / "3" / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "digits.csv"
    run_cli(["predict", "--config", CONFIGS / "lenet_reduced_mnist.yaml", *_quiet(tmp_path, audio=False), "--data.data_dir",
             tmp_path / "gone", "--ckpt_path", ckpt, "--data.predict_path", tmp_path / "imgs",
             "--run.predictions_file", out])
    rows = {Path(r["path"]).name + "@" + Path(r["path"]).parent.name: r for r in csv.DictReader(out.open())}
    assert "cannot decode image file" in rows["broken.png@3"]["error"]
    assert [rows[k]["prediction"] for k in ("x.png@3", "x.jpg@5", "x.png@7")] == ["3", "5", "7"]
    assert "accuracy on 3 labelled file(s): 100.00 %" in capsys.readouterr().out


def test_image_classifier_takes_class_names_from_the_checkpoint(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    colours = {"cats": (220, 40, 40), "dogs": (40, 40, 220)}
    for name, colour in colours.items():
        for i in range(12):
            img = np.clip(rng.normal(colour, 25, (16, 16, 3)), 0, 255).astype(np.uint8)
            (tmp_path / "pets" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(tmp_path / "pets" / name / f"{i}.png")
    args = ["--config", CONFIGS / "image_classifier_cifar.yaml", *_quiet(tmp_path, audio=False), "--data.folder", tmp_path / "pets",
            "--data.image_size", "16", "--data.batch_size", "8", "--data.cache_dir", tmp_path / "cache",
            NET + "num_classes", "2", "--model.init_args.class_names", "null",
            NET + "channels", "[4, 8, 8, 16]", NET + "hidden", "16"]
    cli = run_cli(["fit", *args, "--trainer.max_epochs", "4", "--run.test_after_fit", "false"])
    ckpt = cli.trainer.checkpoint_callback.best_model_path
    shutil.rmtree(tmp_path / "pets" / "dogs")  # the dataset is gone: names must come from the checkpoint
    shutil.rmtree(tmp_path / "pets" / "cats")
    Image.fromarray(np.full((48, 32, 3), (200, 50, 60), np.uint8)).save(tmp_path / "mine.jpg")
    out = tmp_path / "p.csv"
    run_cli(["predict", *args, "--ckpt_path", ckpt, "--data.predict_path", tmp_path / "mine.jpg",
             "--run.predictions_file", out])
    (row,) = csv.DictReader(out.open())
    assert row["prediction"] == "cats" and list(row) == ["path", "prediction", "probability", "probability_cats",
                                                         "probability_dogs"]


def test_mfcc_svm_predicts_files(tmp_path):
    data = write_fsdd(tmp_path / "data", speakers=("alice", "bob"), takes=range(10))
    base = ["--config", CONFIGS / "mfcc_svm.yaml", *_quiet(tmp_path), "--data.cache_dir", tmp_path / "cache"]
    cli = run_cli(["fit", *base, "--data.data_dir", data, "--run.test_after_fit", "false"])
    ckpt = cli.trainer.checkpoint_callback.last_model_path or cli.trainer.checkpoint_callback.best_model_path
    shutil.rmtree(data)
    folder = tmp_path / "recs" / "four"
    folder.mkdir(parents=True)
    sf.write(folder / "a.flac", digit_tone(4, 0, 9, sample_rate=16000), 16000, format="FLAC")
    out = tmp_path / "svm.csv"
    run_cli(["predict", *base, "--data.data_dir", tmp_path / "gone", "--ckpt_path", ckpt,
             "--data.predict_path", tmp_path / "recs", "--run.predictions_file", out])
    (row,) = csv.DictReader(out.open())
    assert row["prediction"] == "four" and row["label"] == "four" and 0 < float(row["probability"]) <= 1


def test_a_folder_of_only_unusable_files_is_one_clear_error(trained, tmp_path):
    _, ckpt = trained
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "empty.wav").write_bytes(b"")
    sf.write(tmp_path / "bad" / "silent.wav", np.zeros(8000, np.float32), 8000, subtype="PCM_16")
    with pytest.raises(ValueError, match=r"none of the 2 file\(s\) could be used: .*empty\.wav: empty file"):
        run_cli(["predict", "--config", CONFIGS / "cnn_audio.yaml", *SMALL_CNN, *_quiet(tmp_path), *DATA,
                 "--ckpt_path", ckpt, "--data.predict_path", tmp_path / "bad"])


def test_predict_builds_the_net_of_the_checkpoint_and_names_the_settings_it_replaces(trained, tmp_path, capfd):
    """A config that builds the net differently (8 kept frequency bands; the checkpoint has the global pool)
    still predicts, with the checkpoint's net (LightningCLI reads its hyperparameters), and the setting the
    command gave in vain is named on stderr, as is a learning rate, which predict does not use either."""
    _, ckpt = trained
    _recordings(tmp_path / "recs")
    cli = run_cli(["predict", "--config", CONFIGS / "cnn_audio.yaml", *SMALL_CNN, NET + "pool_height", "8",
                   "--model.init_args.optimizer.init_args.lr", "0.5",
                   *_quiet(tmp_path), *DATA, "--ckpt_path", ckpt, "--data.predict_path", tmp_path / "recs"])
    assert cli.model.net.head[2].in_features == 32  # the global pool: 32 channels, one band
    err = capfd.readouterr().err
    assert "these of this command (its config, arguments or defaults) are not used" in err
    assert "model.init_args.net.init_args.pool_height: 8 (command) -> 1 (checkpoint)" in err
    assert "model.init_args.optimizer.init_args.lr: 0.5 (command) -> " in err
    # nothing else differs between the command and the checkpoint, so nothing else is named
    assert err.count("(command) -> ") == 2, err


def test_predict_on_the_test_split_lists_each_clip_with_its_speaker_and_matches_test(trained, tmp_path, capsys):
    """Without ``predict_path`` the test split is predicted: one row per test clip with its label and speaker,
    and the accuracy the table prints is the one ``test`` reports for the same checkpoint and data."""
    _, ckpt = trained
    data = write_fsdd(tmp_path / "data", speakers=("alice", "bob"), takes=range(14))  # the training fixture again
    common = [*SMALL_CNN, *_quiet(tmp_path), *DATA, "--data.data_dir", data, "--data.cache_dir", tmp_path / "cache",
              "--ckpt_path", ckpt]
    out = tmp_path / "split.csv"
    cli = run_cli(["predict", "--config", CONFIGS / "cnn_audio.yaml", *common, "--run.predictions_file", out])
    with out.open() as f:
        rows = list(csv.DictReader(f))
    test_clips = cli.datamodule.metadata("test")
    assert list(rows[0]) == ["path", "prediction", "probability", "label", "speaker", *(f"probability_{n}" for n in DIGITS)]
    assert [r["path"] for r in rows] == [m["path"] for m in test_clips] and all(Path(r["path"]).is_file() for r in rows)
    assert [r["speaker"] for r in rows] == [m["speaker"] for m in test_clips] and {r["speaker"] for r in rows} == {"alice", "bob"}
    names = cli.datamodule.class_names
    assert [r["label"] for r in rows] == [names[m["digit"]] for m in test_clips]
    printed = capsys.readouterr().out
    correct = sum(r["prediction"] == r["label"] for r in rows)
    assert f"accuracy on {len(rows)} labelled file(s): {100.0 * correct / len(rows):.2f} %" in printed
    assert "recall per class: zero " in printed and "accuracy per speaker, worst first (2): " in printed
    results = tmp_path / "test.json"
    run_cli(["test", "--config", CONFIGS / "cnn_audio.yaml", *common, "--run.results_file", results])
    metrics = json.loads(results.read_text())["metrics"]
    assert metrics["test/acc"] == pytest.approx(correct / len(rows), abs=1e-6)
    assert f"balanced accuracy {100.0 * metrics['test/balanced_acc']:.2f} %" in printed
    # a smoke run predicts one batch of the split: its rows, not an error
    run_cli(["predict", "--config", CONFIGS / "cnn_audio.yaml", *common, "--data.batch_size", "8",
             "--trainer.fast_dev_run", "true", "--run.predictions_file", out])
    with out.open() as f:
        assert [r["path"] for r in csv.DictReader(f)] == [m["path"] for m in test_clips[:8]]


def test_breakdown_scores_each_class_and_names_the_worst_speakers_first():
    """Recall per class and their mean (balanced accuracy: 3 of 4 female right, 1 of 1 male -> 87.5 %, where plain
    accuracy says 80 %); speakers worst first, with their class when all their clips share one, and a cut-off
    that says how good the unnamed ones are."""
    def row(label, prediction, speaker):
        return {"label": label, "prediction": prediction, "speaker": speaker}

    rows = [row("female", "male", "05"), row("female", "female", "05"), row("female", "female", "22"),
            row("female", "female", "22"), row("male", "male", "37")]
    assert breakdown(rows[::-1], ["female", "male"]) == breakdown(rows) == [
        "recall per class: female 75.0 % of 4, male 100.0 % of 1; balanced accuracy 87.50 %",
        "accuracy per speaker, worst first (3): 05 (female) 50.0 % of 2, 22 (female) 100.0 % of 2, 37 (male) 100.0 % of 1"]
    assert breakdown(rows, most=1)[1] == "accuracy per speaker, worst first (3): 05 (female) 50.0 % of 2; 2 more at 100.0 % or above"
    # a speaker with clips of several classes (digits) gets no class; rows without a speaker give no speaker line
    mixed = [row("one", "one", "alice"), row("two", "one", "alice")]
    assert breakdown(mixed)[1] == "accuracy per speaker, worst first (1): alice 50.0 % of 2"
    assert breakdown([{**r, "speaker": ""} for r in mixed]) == [
        "recall per class: one 100.0 % of 1, two 0.0 % of 1; balanced accuracy 50.00 %"]
    # classes in the order of the class names, not alphabetical
    digits = [row("two", "two", ""), row("ten", "ten", "")]
    assert breakdown(digits, ["two", "ten"])[0].startswith("recall per class: two 100.0 % of 1, ten 100.0 % of 1")
    # one class only: no recall line (it would repeat the accuracy)
    assert breakdown([row("male", "male", "")]) == []
    # a class predicted but absent counts with recall 0, as torchmetrics' macro accuracy (test/balanced_acc) has it
    absent = [row("male", "male", ""), row("male", "female", "")]
    assert breakdown(absent) == ["recall per class: male 50.0 % of 2; predicted but absent: female; balanced accuracy 25.00 %"]
    from torchmetrics.classification import MulticlassAccuracy
    macro = MulticlassAccuracy(2, average="macro")(torch.tensor([0, 1]), torch.tensor([1, 1]))
    assert float(macro) == pytest.approx(0.25)


def test_the_writer_on_a_limited_run_writes_the_files_it_reached_and_under_ddp_needs_one_device(tmp_path, recwarn):
    """``fast_dev_run`` predicts one batch: the rows are the files of that batch (a failed file before the cut
    keeps its row), not an error. Under DDP each process holds a share: a CSV is refused, the table skipped."""
    items = [PredictItem("a.wav", 0), PredictItem("bad.wav", error="bad.wav: empty"), PredictItem("b.wav", 1),
             PredictItem("c.wav", 1)]
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    writer = PredictionWriter(str(tmp_path / "p.csv"))
    trainer = SimpleNamespace(world_size=1, fast_dev_run=1, limit_predict_batches=1,
                              datamodule=SimpleNamespace(predict_items=items, class_names=["no", "yes"]))
    writer.write_on_epoch_end(trainer, None, [{"probs": probs}], None)
    assert [(r["path"], r["prediction"], r["error"] != "") for r in writer.rows] == [
        ("a.wav", "no", False), ("bad.wav", "", True), ("b.wav", "yes", False)]
    trainer.fast_dev_run, trainer.limit_predict_batches = 0, 1.0  # not limited: a short count is a bug
    with pytest.raises(RuntimeError, match="2 predictions for 3 usable files"):
        writer.write_on_epoch_end(trainer, None, [{"probs": probs}], None)
    trainer.world_size = 2
    with pytest.raises(RuntimeError, match="--run.predictions_file needs one device"):
        writer.on_predict_start(trainer, None)  # before the predict pass
    with pytest.raises(RuntimeError, match="--run.predictions_file needs one device"):
        writer.write_on_epoch_end(trainer, None, [{"probs": probs}], None)
    PredictionWriter().on_predict_start(trainer, None)  # no CSV asked for: no error
    PredictionWriter().write_on_epoch_end(trainer, None, [{"probs": probs}], None)
    assert any("no table under DDP" in str(w.message) for w in recwarn)


def test_the_writer_numbers_the_rows_of_data_that_lists_no_files(tmp_path, capsys):
    """A classifier predicting a split of MNIST (the DataModule lists no files): rows ``#0``, ``#1``, ... with the
    batches' targets as labels (-1: none), the accuracy over the labelled ones; a task that returns no class
    probabilities (codes) gets no table."""
    writer = PredictionWriter(str(tmp_path / "p.csv"))
    trainer = SimpleNamespace(world_size=1, fast_dev_run=0, limit_predict_batches=1.0,
                              datamodule=SimpleNamespace(predict_items=[], class_names=["no", "yes"]))
    batches = [{"probs": torch.tensor([[0.9, 0.1], [0.3, 0.7]]), "target": torch.tensor([0, 0])},
               {"probs": torch.tensor([[0.2, 0.8]]), "target": torch.tensor([-1])}]
    writer.write_on_epoch_end(trainer, None, batches, None)
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert [(r["path"], r["prediction"], r["label"]) for r in rows] == [("#0", "no", "no"), ("#1", "yes", "no"),
                                                                         ("#2", "yes", "")]
    assert "accuracy on 2 labelled file(s): 50.00 %" in capsys.readouterr().out
    two_d = [{"probs": torch.tensor([[0.9, 0.1]]), "target": torch.tensor([[0, 1]])}]  # no class index per row
    writer.write_on_epoch_end(trainer, None, two_d, None)
    assert [(r["path"], r["label"]) for r in writer.rows] == [("#0", "")]
    quiet = PredictionWriter(str(tmp_path / "codes.csv"))
    quiet.write_on_epoch_end(trainer, None, [{"code": torch.zeros(2, 3), "pred": torch.zeros(2)}], None)
    images = [{"probs": torch.tensor([[0.9, 0.1]]), "images": torch.zeros(1, 1, 4, 4)}]  # nothing to name a PNG after
    quiet.write_on_epoch_end(trainer, None, images, None)
    assert not (tmp_path / "codes.csv").exists() and quiet.rows == []
