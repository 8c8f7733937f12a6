"""AudioToImageVAE (the task), MFCCToImageVAE (its net), the judge and the SpokenDigitImagePairs DataModule; the
tests that need MNIST and a trained judge run on the real data when ../shared has it, else on fixtures in
MNIST's IDX format (tests/data_fixtures.py)."""

from __future__ import annotations

import csv
import importlib.util
import shutil
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import soundfile as sf
import torch
from lightning.pytorch.loggers import CSVLogger
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from audio_fixtures import digit_tone, write_fsdd
from conftest import CONFIGS, run_cli
from datamodules.audio_image_pairs import PairSampler, SpokenDigitImagePairs
from datamodules.predict import PredictItem
from zoo.callbacks import PredictionWriter, unique_png_names
from zoo.checkpoints import load_cli_checkpoint
from zoo.metrics import load_judge
from zoo.nets.audio_to_image import MFCCToImageVAE, resample_frames
from zoo.tasks.audio_to_image import AudioToImageVAE
from zoo.tools.convert_checkpoint import convert_checkpoint

HOOK = Path(__file__).parent / "config_hooks" / "audio2image_vae_fsdd.py"


def vae(n_mfcc: int = 13, hidden=(16,), latent_dim: int = 2, decoder_channels: int = 4, dropout: float = 0.2,
        **task) -> AudioToImageVAE:
    return AudioToImageVAE(MFCCToImageVAE(n_mfcc=n_mfcc, hidden=hidden, latent_dim=latent_dim, dropout=dropout,
                                          decoder_channels=decoder_channels), **task)


def _trainer(tmp_path=None, **kw) -> L.Trainer:
    return L.Trainer(logger=CSVLogger(tmp_path) if tmp_path else False, enable_progress_bar=False,
                     enable_checkpointing=False, enable_model_summary=False, accelerator="cpu", **kw)


def _pair_batch(n: int = 20, seed: int = 0):
    """Fake MFCC sequences whose first coefficient encodes the digit, with images to match."""
    g = torch.Generator().manual_seed(seed)
    digits = torch.arange(n) % 10
    lengths = torch.randint(5, 12, (n,), generator=g)
    feats = 0.1 * torch.randn(n, 12, 13, generator=g)
    feats[:, :, 0] += digits[:, None].float() - 4.5
    feats[torch.arange(12)[None, :] >= lengths[:, None]] = 0.0
    images = torch.zeros(n, 1, 28, 28)
    for i, d in enumerate(digits.tolist()):
        images[i, 0, 2 * d: 2 * d + 8, 4:24] = 1.0  # a bar whose height encodes the digit
    return feats, lengths, images, digits


class FixedJudge(nn.Module):
    """Says ``digit`` for every image; records the input range it was given."""

    def __init__(self, digit: int) -> None:
        super().__init__()
        self.digit, self.seen = digit, []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        logits = torch.zeros(x.shape[0], 10)
        logits[:, self.digit] = 1.0
        return logits


# --- resampling ----------------------------------------------------------------------------------
def test_resample_frames_uses_only_valid_frames():
    ramp = torch.arange(5, dtype=torch.float32)
    feats = torch.full((2, 8, 2), 1e6)  # padding garbage must never leak in
    feats[0, :5, 0] = ramp
    feats[0, :5, 1] = -ramp
    feats[1, :1] = 7.0  # a one-frame clip resamples to a constant
    out = resample_frames(feats, torch.tensor([5, 1]), 9)
    assert out.shape == (2, 9, 2)
    torch.testing.assert_close(out[0, :, 0], torch.linspace(0, 4, 9))
    torch.testing.assert_close(out[0, :, 1], -torch.linspace(0, 4, 9))
    torch.testing.assert_close(out[1], torch.full((9, 2), 7.0))


def test_resample_frames_rejects_bad_lengths():
    with pytest.raises(ValueError, match="lengths"):
        resample_frames(torch.zeros(2, 4, 3), torch.tensor([0, 4]), 8)


# --- model ---------------------------------------------------------------------------------------
def test_vae_shapes_and_range():
    feats, lengths, images, digits = _pair_batch(6)
    model = vae(hidden=(32,), latent_dim=4, decoder_channels=8)
    mu, logvar = model.encode(feats, lengths)
    assert mu.shape == logvar.shape == (6, 4)
    model.eval()
    out = model(feats, lengths)
    assert out.shape == (6, 1, 28, 28) and 0 <= out.min() and out.max() <= 1
    assert model.sample(feats, lengths).shape == (6, 1, 28, 28)
    loss, recon, kl, _ = model.elbo_terms(feats, lengths, images)
    assert torch.isclose(loss, recon + kl) and kl >= 0


def test_time_averaged_input_is_the_mean_over_valid_frames_only():
    """The original study's input (audio_input="mean"): 13 numbers per clip, padding left out."""
    net = MFCCToImageVAE(n_mfcc=3, hidden=(8,), latent_dim=2, decoder_channels=4, audio_input="mean")
    feats = torch.zeros(2, 4, 3)
    feats[0, :2] = torch.tensor([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]])
    feats[0, 2:] = 100.0  # padding beyond the valid length must not count
    feats[1] = torch.arange(12.0).view(4, 3)
    x = net.audio_input(feats, torch.tensor([2, 4]))
    assert torch.allclose(x, torch.tensor([[2.0, 3.0, 4.0], [4.5, 5.5, 6.5]]))
    assert net.encoder[1].in_features == 3  # vs n_mfcc * audio_frames for the resampled input
    assert net(feats, torch.tensor([2, 4])).shape == (2, 1, 28, 28)


def test_vae_rejects_non_mfcc_input_and_bad_settings():
    model = vae(n_mfcc=13)
    with pytest.raises(ValueError, match="n_mfcc=13"):
        model.encode(torch.zeros(2, 1, 64, 64), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="hidden non-empty"):
        MFCCToImageVAE(hidden=())
    with pytest.raises(ValueError, match="kl_weight must be >= 0"):
        vae(kl_weight=-1.0)


def test_net_trains_without_lightning():
    """The net is a plain nn.Module: a hand-written ELBO loop on it alone learns the paired images."""
    torch.manual_seed(0)
    feats, lengths, images, digits = _pair_batch(20)
    net = MFCCToImageVAE(hidden=(64,), latent_dim=4, dropout=0.0, decoder_channels=8)
    assert not any(isinstance(m, L.LightningModule) for m in net.modules())
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        mu, logvar = net.encode(feats, lengths)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        recon = torch.nn.functional.binary_cross_entropy_with_logits(net.decode_logits(z), images, reduction="sum")
        loss = (recon + (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum()) / len(digits)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]
    net.eval()
    out = net(feats, lengths)
    assert out.shape == (20, 1, 28, 28) and 0 <= out.min() and out.max() <= 1


def test_vae_loss_decreases_on_fixed_batch():
    torch.manual_seed(0)
    batch = _pair_batch(20)
    model = vae(hidden=(64,), latent_dim=4, dropout=0.0, decoder_channels=8, kl_weight=0.5)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = model.training_step(batch, 0)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses[::10]


# --- judge ---------------------------------------------------------------------------------------
def test_judged_accuracy_with_known_answer(tmp_path):
    feats, lengths, images, digits = _pair_batch(30)  # digits 0..9, three of each
    loader = DataLoader(TensorDataset(feats, lengths, images, digits), batch_size=7)
    model = vae(n_show=5)
    judge = FixedJudge(3)
    model.set_judge(judge, normalize="minus_one_one")
    res = _trainer(tmp_path).test(model, loader, verbose=False)[0]
    assert res["test/acc"] == pytest.approx(0.1)  # only the clips that said "3" are judged right
    # the judge saw the generated images (from the latent mean) mapped to its own normalisation
    model.eval()
    with torch.no_grad():
        expected = model(feats, lengths) * 2 - 1
    torch.testing.assert_close(torch.cat(judge.seen), expected)
    assert list(tmp_path.rglob("test_generated_*.png")), "generated-image figure not written"


def test_judged_accuracy_all_right():
    feats, lengths, images, digits = _pair_batch(10)
    keep = digits == 7
    loader = DataLoader(TensorDataset(feats[keep], lengths[keep], images[keep], digits[keep]), batch_size=4)
    model = vae()
    model.set_judge(FixedJudge(7))
    assert _trainer().test(model, loader, verbose=False)[0]["test/acc"] == pytest.approx(1.0)


def test_missing_judge_fails_clearly_at_test_time(tmp_path):
    loader = DataLoader(TensorDataset(*_pair_batch(4)), batch_size=4)
    with pytest.raises(ValueError, match="judge_checkpoint is not set"):
        _trainer().test(vae(hidden=(8,)), loader, verbose=False)
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        _trainer().test(vae(hidden=(8,), judge_checkpoint=str(missing)), loader, verbose=False)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_judge(garbage)
    no_class = tmp_path / "no_class.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}}, no_class)
    with pytest.raises(ValueError, match="_class_path"):
        load_judge(no_class)


def _build_judge(tmp_path: Path) -> Path:
    """A real judge: one step of configs/lenet_mnist.yaml through the CLI (the config hook's)."""
    spec = importlib.util.spec_from_file_location("a2i_hook", HOOK)
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    return hook.build_judge(tmp_path)


def test_judge_from_cli_checkpoint_with_its_saved_normalisation(tmp_path, config_data):
    """A real judge (one step of configs/lenet_mnist.yaml through the CLI); the task takes the input
    normalisation its MNIST DataModule recorded and feeds the judge images in that range."""
    path = _build_judge(tmp_path)
    judge, normalize = load_judge(path)
    assert type(judge.net).__name__ == "LeNet5" and normalize == "standard"
    assert not any(p.requires_grad for p in judge.parameters())
    images = torch.rand(2, 1, 28, 28)
    model = vae(judge_checkpoint=str(path))
    logits = model.judge_images(images)
    assert model._judge_normalize == "standard" and model.judge is not None
    assert not any(p.requires_grad for p in model.judge.parameters())
    # the judge is neither trained nor saved with the VAE: not a submodule
    assert set(model.state_dict()) == {f"net.{k}" for k in model.net.state_dict()}
    from datamodules.mnist import MNIST_MEAN, MNIST_STD

    torch.testing.assert_close(logits, judge((images - MNIST_MEAN) / MNIST_STD))
    overridden = vae(judge_checkpoint=str(path), judge_normalize="zero_one")
    torch.testing.assert_close(overridden.judge_images(images), judge(images))


# --- pairing DataModule ------------------------------------------------------------------------------
def test_pair_sampler_matches_digits_and_redraws_per_epoch():
    clip_digits = torch.arange(40) % 10
    image_digits = torch.arange(500) % 10
    s = PairSampler(clip_digits, image_digits, shuffle=True, seed=1)
    first = s.pairs()
    assert sorted(i for i, _ in first) == list(range(40))
    assert all(int(image_digits[j]) == int(clip_digits[i]) for i, j in first)
    assert s.pairs() == first  # same seed + epoch -> same pairs
    s.set_epoch(1)
    second = s.pairs()
    assert all(int(image_digits[j]) == int(clip_digits[i]) for i, j in second)
    assert dict(second) != dict(first)  # a new image draw
    s.set_epoch(0)
    assert s.pairs() == first
    fixed = PairSampler(clip_digits, image_digits, shuffle=False, seed=1, redraw=False)
    assert [i for i, _ in fixed.pairs()] == list(range(40))
    pairs = fixed.pairs()
    fixed.set_epoch(5)  # Lightning also calls set_epoch on evaluation loaders: their pairs must not move
    assert fixed.pairs() == pairs
    with pytest.raises(ValueError, match=r"digit\(s\) \[9\]"):
        PairSampler(clip_digits, image_digits[image_digits != 9], shuffle=False)


@pytest.fixture
def pair_root(tmp_path, config_data) -> Path:
    root = write_fsdd(tmp_path / "data", speakers=("alice", "bob"), takes=range(7))
    (root / "MNIST").symlink_to(config_data / "MNIST")  # real MNIST (or its IDX fixture), read-only, not copied
    return root


def test_pairs_datamodule_batches(pair_root, tmp_path):
    dm = SpokenDigitImagePairs(data_dir=str(pair_root), cache_dir=str(tmp_path / "cache"), batch_size=16,
                               mnist_per_class=20, progress=False)
    dm.setup("fit")
    feats, lengths, images, digits = next(iter(dm.train_dataloader()))
    assert feats.shape[0] == lengths.shape[0] == images.shape[0] == digits.shape[0] == 16
    assert feats.shape[2] == 13 and int(lengths.max()) == feats.shape[1]
    assert images.shape == (16, 1, 28, 28) and images.min() >= 0 and images.max() <= 1
    # every pair's image is an MNIST image of the clip's digit
    image_digits = dm.images.split("train")[1]
    clip_digits = dm.audio.dataset("train").labels
    for split in ("train", "test"):
        img_y = dm.images.split(split)[1]
        clips_y = dm.audio.dataset(split).labels
        assert all(int(img_y[j]) == int(clips_y[i]) for i, j in dm.sampler(split).pairs())
    assert len(dm.dataset("test")) == 2 * 10 * 5  # FSDD official split: takes 0-4
    # Lightning calls set_epoch on the loader's sampler: the next epoch pairs new images
    loader = dm.train_dataloader()
    before = dm.sampler("train").pairs()
    loader.sampler.set_epoch(1)
    after = dm.sampler("train").pairs()
    assert dict(before) != dict(after)
    assert all(int(image_digits[j]) == int(clip_digits[i]) for i, j in after)
    test_pairs = dm.sampler("test").pairs()
    dm.test_dataloader().sampler.set_epoch(3)
    assert dm.sampler("test").pairs() == test_pairs
    clips, sr = dm.waveforms("test", [0, 1])
    assert sr == 8000 and len(clips) == 2 and clips[0].dim() == 1


def test_vae_trains_on_pairs_and_logs_audio(pair_root, tmp_path):
    torch.manual_seed(0)
    dm = SpokenDigitImagePairs(data_dir=str(pair_root), cache_dir=str(tmp_path / "cache"), batch_size=32,
                               mnist_per_class=20, progress=False)
    model = vae(hidden=(32,), latent_dim=4, decoder_channels=8, n_show=3)
    model.set_judge(FixedJudge(0))
    trainer = _trainer(tmp_path, max_epochs=1, limit_train_batches=2)
    trainer.fit(model, dm)
    assert {"train/loss", "val/loss", "val/acc"} <= set(trainer.callback_metrics)
    res = trainer.test(model, dm, verbose=False)[0]
    assert res["test/acc"] == pytest.approx(0.1)  # FixedJudge(0): right for the 10% of clips that say 0
    assert len(list(tmp_path.rglob("test_clips_*.wav"))) == 3


# --- predict: an image for each of a user's recordings --------------------------------------------------
NET = "--model.init_args.net.init_args."


def test_predict_writes_an_image_per_recording_and_a_contact_sheet(pair_root, tmp_path, capsys):
    """Train one tiny epoch through the CLI, delete the clips and the cache, then predict on recordings of other
    rates, depths and channel counts (two with the same stem) and a bad file: every usable file gets a PNG equal
    to the model's own output for it, the judge's digit, and a CSV row; the bad one an error row."""
    judge = _build_judge(tmp_path)
    args = ["--config", CONFIGS / "audio2image_vae_fsdd.yaml", NET + "hidden", "[16]", NET + "latent_dim", "2",
            NET + "decoder_channels", "4", "--model.judge_checkpoint", judge, "--data.mnist_per_class", "20",
            "--data.batch_size", "16", "--data.progress", "false", "--trainer.accelerator", "cpu",
            "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", tmp_path / "runs"]
    cli = run_cli(["fit", *args, "--data.data_dir", pair_root, "--data.cache_dir", tmp_path / "cache",
                   "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
                   "--run.test_after_fit", "false"])
    ckpt = cli.trainer.checkpoint_callback.best_model_path
    assert ckpt and Path(ckpt).is_file()
    shutil.rmtree(pair_root)  # the clips and MNIST (a link) are gone: the checkpoint must be enough
    shutil.rmtree(tmp_path / "cache")
    recs = tmp_path / "recs"
    for name, digit, rate, channels, fmt, subtype in (("seven/a.wav", 7, 8000, 1, "WAV", "PCM_16"),
                                                      ("two/a.flac", 2, 48000, 2, "FLAC", "PCM_24"),
                                                      ("c_16k.wav", 4, 16000, 1, "WAV", "FLOAT")):
        (recs / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(recs / name, digit_tone(digit, 0, 9, sample_rate=rate, channels=channels), rate, format=fmt,
                 subtype=subtype)
    (recs / "bad").mkdir()
    (recs / "bad" / "empty.wav").write_bytes(b"")
    out = tmp_path / "out" / "generated.csv"
    run_cli(["predict", *args, "--data.data_dir", tmp_path / "gone", "--data.cache_dir", tmp_path / "cache2",
             "--ckpt_path", ckpt, "--data.predict_path", recs, "--run.predictions_file", out])

    with out.open() as f:
        rows = {Path(r["path"]).relative_to(recs).as_posix(): r for r in csv.DictReader(f)}
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    assert list(rows["c_16k.wav"]) == ["path", "image", "prediction", "probability", "label", "error",
                                       *(f"probability_{n}" for n in names)]
    assert "empty file" in rows["bad/empty.wav"]["error"] and str(recs / "bad" / "empty.wav") in rows["bad/empty.wav"]["error"]
    assert rows["bad/empty.wav"]["image"] == ""
    good = ["c_16k.wav", "seven/a.wav", "two/a.flac"]  # file order: sorted paths
    folder = tmp_path / "out" / "generated_images"
    assert [Path(rows[k]["image"]) for k in good] == [folder / "c_16k.png", folder / "a.png", folder / "a-2.png"]
    assert [rows[k]["label"] for k in good] == ["", "seven", "two"]
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    for k in good:  # the judge's digit for each generated image
        assert rows[k]["error"] == "" and rows[k]["prediction"] in names and 0 < float(rows[k]["probability"]) <= 1
    pngs = []
    for k in good:
        with Image.open(rows[k]["image"]) as im:
            assert im.format == "PNG" and im.mode == "L" and im.size == (28, 28)
            pngs.append(np.asarray(im))
    assert not np.array_equal(pngs[1], pngs[2])  # a spoken seven and a two give different images

    # the PNGs are the model's own output for the same files, converted as the training clips were
    model, _ = load_cli_checkpoint(ckpt)
    dm = SpokenDigitImagePairs(data_dir=str(tmp_path / "gone"), predict_path=str(recs), progress=False)
    dm.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)["SpokenDigitImagePairs"])
    feats, lengths, digits = next(iter(dm.predict_dataloader()))
    assert digits.tolist() == [-1, 7, 2]
    with torch.no_grad():
        expected = model.eval()(feats, lengths)[:, 0].numpy()
    np.testing.assert_allclose(np.stack(pngs) / 255.0, expected, rtol=0, atol=0.5 / 255 + 1e-6)

    montage = tmp_path / "out" / "generated_montage.png"
    with Image.open(montage) as im:
        assert im.format == "PNG" and im.width > 3 * 28
    printed = capsys.readouterr().out
    assert "3 file(s) predicted, 1 failed" in printed and str(montage) in printed

    # the judge is a training-time artefact: without it the images are still written, without the digit
    judge.unlink()
    with pytest.warns(UserWarning, match="judge_checkpoint .* not found"):
        run_cli(["predict", *args, "--data.data_dir", tmp_path / "gone", "--ckpt_path", ckpt,
                 "--data.predict_path", recs / "seven", "--run.predictions_file", tmp_path / "no_judge.csv"])
    with (tmp_path / "no_judge.csv").open() as f:
        (row,) = csv.DictReader(f)
    assert list(row) == ["path", "image", "label"] and row["label"] == "seven"
    with Image.open(row["image"]) as im:
        np.testing.assert_array_equal(np.asarray(im), pngs[1])


def test_pairs_predict_path_uses_the_saved_normalisation_or_recomputes_it(pair_root, tmp_path):
    """The checkpoint's state is all predicting needs; a checkpoint written before the DataModule saved it gets
    the same statistics back from the training clips when they are there, and a clear error when not."""
    trained = SpokenDigitImagePairs(data_dir=str(pair_root), cache_dir=str(tmp_path / "cache"), mnist_per_class=20,
                                    progress=False)
    trained.setup("fit")
    state = trained.state_dict()
    assert {"settings", "feature_mean", "feature_std"} <= set(state)
    sf.write(tmp_path / "r.wav", digit_tone(3, 0, 9, sample_rate=22050), 22050)
    kw = dict(cache_dir=str(tmp_path / "cache"), predict_path=str(tmp_path / "r.wav"), progress=False)
    fresh = SpokenDigitImagePairs(data_dir=str(tmp_path / "gone"), **kw)
    fresh.load_state_dict(state)
    feats, lengths, digits = next(iter(fresh.predict_dataloader()))
    assert feats.shape[0] == 1 and feats.shape[2] == 13 and [it.error for it in fresh.predict_items] == [None]
    old = SpokenDigitImagePairs(data_dir=str(pair_root), **kw)  # no state loaded: as from an old checkpoint
    torch.testing.assert_close(next(iter(old.predict_dataloader()))[0], feats)
    with pytest.raises(RuntimeError, match="does not carry it.*FSDD.*not found"):
        SpokenDigitImagePairs(data_dir=str(tmp_path / "gone"), **kw).predict_dataloader()
    with pytest.raises(ValueError, match=r"n_mfcc=13 \(checkpoint\) vs 20 \(now\)"):
        SpokenDigitImagePairs(n_mfcc=20, **kw).load_state_dict(state)


def _writer_run(tmp_path: Path, images: torch.Tensor, items: list[PredictItem], predictions_file: bool = True):
    writer = PredictionWriter(str(tmp_path / "p.csv") if predictions_file else None)
    trainer = SimpleNamespace(world_size=1, datamodule=SimpleNamespace(predict_items=items, class_names=None))
    writer.write_on_epoch_end(trainer, None, [{"images": images[:1]}, {"images": images[1:]}], None)
    return writer


def test_prediction_writer_saves_images_exactly_with_unique_names(tmp_path, capsys):
    """Without probabilities (a generator with no judge): an image column and PNGs named after the files, the
    stems made unique whatever their case; RGB images stay RGB; values round to the nearest of 0..255."""
    items = [PredictItem("x/a.wav"), PredictItem("y/bad.wav", error="y/bad.wav: empty file"),
             PredictItem("y/A.flac")]
    images = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    writer = _writer_run(tmp_path, images, items)
    with (tmp_path / "p.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "image", "error"]
    assert [Path(r["image"]).name if r["image"] else "" for r in rows] == ["a.png", "", "A-2.png"]
    for r, img in zip([rows[0], rows[2]], images):
        with Image.open(r["image"]) as im:
            assert im.mode == "RGB" and im.size == (7, 5)
            np.testing.assert_array_equal(np.asarray(im), (img.permute(1, 2, 0) * 255).round().byte().numpy())
    assert writer.montage == tmp_path / "p_montage.png" and writer.montage.is_file()
    assert unique_png_names(["a.wav", "7/a.flac", "a-2.wav"]) == ["a.png", "a-2.png", "a-2-2.png"]
    _writer_run(tmp_path / "none", images, items, predictions_file=False)
    assert "images not saved: pass --run.predictions_file" in capsys.readouterr().out
    assert not (tmp_path / "none").exists()


def test_prediction_writer_refuses_images_outside_zero_one(tmp_path):
    """A tanh generator's [-1, 1] images would be clipped to half black without a word: refused, with the fix."""
    with pytest.raises(ValueError, match=r"images must be in \[0, 1\], got values in \[-1.*\(x \+ 1\) / 2"):
        _writer_run(tmp_path, torch.linspace(-1, 1, 2 * 28 * 28).view(2, 1, 28, 28),
                    [PredictItem("a.wav"), PredictItem("b.wav")])


# --- checkpoints written before the nets/tasks split --------------------------------------------------
def test_legacy_checkpoint_converts_to_the_same_model(tmp_path):
    torch.manual_seed(0)
    net = MFCCToImageVAE(hidden=(16, 8), latent_dim=3, decoder_channels=4, audio_frames=10).eval()
    hparams = {"n_mfcc": 13, "audio_frames": 10, "hidden": [16, 8], "latent_dim": 3, "dropout": 0.2, "kl_weight": 0.5,
               "decoder_channels": 4, "judge_checkpoint": "runs/judge/lenet_mnist.ckpt", "judge_normalize": None,
               "n_show": 7, "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.001}},
               "scheduler": None}
    src = tmp_path / "old.ckpt"
    torch.save({"state_dict": dict(net.state_dict()), "pytorch-lightning_version": L.__version__, "epoch": 4,
                "hyper_parameters": {"_class_path": "zoo.audio_to_image.AudioToImageVAE", **hparams,
                                     "_instantiator": "lightning.pytorch.cli.instantiate_module"}}, src)
    with pytest.raises(ValueError, match="zoo.tools.convert_checkpoint --src"):
        load_cli_checkpoint(src)
    model, _ = load_cli_checkpoint(convert_checkpoint(src=str(src), dst=str(tmp_path / "new.ckpt")))
    assert isinstance(model, AudioToImageVAE) and isinstance(model.net, MFCCToImageVAE)
    assert (model.kl_weight, model.n_show, model.judge_checkpoint) == (0.5, 7, "runs/judge/lenet_mnist.ckpt")
    feats, lengths, images, _ = _pair_batch(4)
    with torch.no_grad():
        torch.testing.assert_close(model(feats, lengths), net(feats, lengths), rtol=0, atol=0)
