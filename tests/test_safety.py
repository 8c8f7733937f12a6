"""Crafted checkpoints and caches are refused (naming the file) and run nothing; the zoo's own files
still load weights-only; damaged image caches are rebuilt; 16-bit PNGs decode to the right values.

Every crafted file holds :class:`Payload`, whose unpickling would create ``marker``: each test checks
both the error and that the marker does not exist afterwards.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

import datamodules.images as images_mod
from audio_fixtures import write_fsdd
from conftest import CONFIGS, run_cli
from datamodules.images import ImageFolderDataModule, decode_image
from zoo.checkpoints import load_cli_checkpoint
from zoo.metrics import load_judge
from zoo.nets.dcgan import Discriminator, Generator
from zoo.nets.lenet import LeNet5
from zoo.nets.masked_ae import MaskedAENet
from zoo.tasks.classifier import Classifier
from zoo.tasks.gan import GAN, load_gan
from zoo.tasks.masked_ae import MaskedAE
from zoo.tasks.mfcc_repr import MFCCStatsSVM, svm_from_state, svm_state
from zoo.tasks.transfer import TransferClassifier, load_pretrained_net
from zoo.tools.gan_eval import grid


class Payload:
    """Unpickling this calls ``Path.touch(marker)``: what an attacker's file would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "a crafted file ran code"


def _trainer(root, **kw) -> L.Trainer:
    kw = {"max_steps": 1, "accelerator": "cpu", "logger": False, "enable_checkpointing": False,
          "enable_progress_bar": False, "enable_model_summary": False, "default_root_dir": root, **kw}
    return L.Trainer(**kw)


def _lenet_checkpoint(tmp_path) -> Path:
    """A LeNet-5 classifier checkpoint as ``python -m zoo fit`` writes it (task class path, the net as its
    config, DataModule settings), saved from Python, so its hyperparameters hold the default optimizer
    *function* (allowlisted)."""
    path = tmp_path / "lenet.ckpt"
    t = _trainer(tmp_path)
    t.fit(Classifier(LeNet5()), DataLoader(TensorDataset(torch.randn(8, 1, 28, 28), torch.arange(8)), batch_size=8))
    t.save_checkpoint(path)
    with torch.serialization.safe_globals(_zoo_callables()):
        ckpt = torch.load(path, weights_only=True)
    ckpt["hyper_parameters"].update(_class_path="zoo.tasks.classifier.Classifier",
                                    _instantiator="lightning.pytorch.cli.instantiate_module",
                                    net={"class_path": "zoo.nets.lenet.LeNet5", "init_args": {}})
    ckpt["datamodule_hyper_parameters"] = {"normalize": "standard"}
    torch.save(ckpt, path)
    return path


def _zoo_callables():
    from zoo.safe_load import zoo_callables

    return zoo_callables()


def _crafted(src: Path, dst: Path, marker: Path, where: str = "hyper_parameters") -> Path:
    """A copy of the real checkpoint ``src`` with the payload hidden in its ``where`` entry."""
    with torch.serialization.safe_globals(_zoo_callables()):
        ckpt = torch.load(src, weights_only=True)
    ckpt[where] = {**ckpt.get(where, {}), "note": Payload(marker)}
    torch.save(ckpt, dst)
    return dst


# --- the judge / classifier loader ---------------------------------------------------------------------
def test_judge_and_classifier_loaders_refuse_crafted_checkpoint(tmp_path, marker):
    real = _lenet_checkpoint(tmp_path)
    model, data_hp = load_cli_checkpoint(real)  # round trip: the zoo's own checkpoint loads weights-only
    assert type(model) is Classifier and type(model.net) is LeNet5 and data_hp == {"normalize": "standard"}
    judge, normalize = load_judge(real)
    assert type(judge.net) is LeNet5 and normalize == "standard" and not judge.training
    with torch.serialization.safe_globals(_zoo_callables()):
        sd = torch.load(real, weights_only=True)["state_dict"]
    assert all(torch.equal(v, sd[k]) for k, v in model.state_dict().items())
    bad = _crafted(real, tmp_path / "crafted_judge.ckpt", marker)
    for load in (load_judge, load_cli_checkpoint):
        with pytest.raises(ValueError, match=r"crafted_judge\.ckpt was refused.*weights-only") as err:
            load(bad)
        assert "weights_only=False" not in str(err.value)  # never advise the unsafe load


def test_cli_checkpoint_loader_does_not_import_foreign_modules(tmp_path, marker, monkeypatch):
    (tmp_path / "zoo_evil_module.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Net: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"_class_path": "zoo_evil_module.Net"}}, path)
    with pytest.raises(ValueError, match=r"foreign\.ckpt names class 'zoo_evil_module\.Net'.*neither a zoo class"):
        load_cli_checkpoint(path)
    assert "zoo_evil_module" not in sys.modules


def test_a_net_of_a_foreign_module_is_refused_before_anything_is_imported(tmp_path, marker, monkeypatch):
    """The net of a task is a class path inside the hyperparameters: it must pass the same check."""
    (tmp_path / "zoo_evil_net.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Net: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    real = _lenet_checkpoint(tmp_path)
    with torch.serialization.safe_globals(_zoo_callables()):
        ckpt = torch.load(real, weights_only=True)
    ckpt["hyper_parameters"]["net"] = {"class_path": "zoo_evil_net.Net", "init_args": {}}
    torch.save(ckpt, tmp_path / "evil_net.ckpt")
    for load in (load_judge, load_cli_checkpoint):
        with pytest.raises(ValueError, match=r"evil_net\.ckpt names class 'zoo_evil_net\.Net'.*neither a zoo"):
            load(tmp_path / "evil_net.ckpt")
    assert "zoo_evil_net" not in sys.modules


def test_unreadable_checkpoint_names_the_file(tmp_path):
    for name, data in (("empty.ckpt", b""), ("truncated.ckpt", None)):
        path = tmp_path / name
        if data is None:
            torch.save({"state_dict": {"w": torch.zeros(1000)}}, path)
            data = path.read_bytes()[:500]
        path.write_bytes(data)
        with pytest.raises(ValueError, match=rf"{name} is not a readable checkpoint"):
            load_cli_checkpoint(path)


# --- transfer encoder ----------------------------------------------------------------------------------
def test_encoder_checkpoint_is_loaded_weights_only(tmp_path, marker):
    net_args = {"architecture": "conv", "image_size": 8, "conv_channels": [4, 8], "bottleneck": 4}
    ae = MaskedAE(MaskedAENet(**net_args))
    t = _trainer(tmp_path, limit_val_batches=0)
    t.fit(ae, DataLoader(TensorDataset(torch.rand(8, 3, 8, 8), torch.zeros(8, dtype=torch.long)), batch_size=8))
    real = tmp_path / "ae.ckpt"
    t.save_checkpoint(real)
    with torch.serialization.safe_globals(_zoo_callables()):
        ckpt = torch.load(real, weights_only=True)
    ckpt["hyper_parameters"]["net"] = {"class_path": "zoo.nets.masked_ae.MaskedAENet", "init_args": net_args}
    torch.save(ckpt, real)  # as `python -m zoo fit` records it: the net as its config
    net = load_pretrained_net(real)
    assert all(torch.equal(v, ae.net.encoder.state_dict()[k]) for k, v in net.encoder.state_dict().items())
    bad = _crafted(real, tmp_path / "crafted_ae.ckpt", marker)
    with pytest.raises(ValueError, match=r"encoder_checkpoint .*crafted_ae\.ckpt was refused"):
        TransferClassifier(str(bad), num_classes=3)


# --- DCGAN ---------------------------------------------------------------------------------------------
def test_gan_load_and_grid_refuse_crafted_checkpoint(tmp_path, marker):
    def nets():
        return {"generator": Generator(latent_dim=8, width=4), "discriminator": Discriminator(width=4)}

    gan = GAN(**nets(), samples_per_row=2, interpolation_steps=3, standing_batches=0)
    loader = DataLoader(TensorDataset(torch.rand(8, 1, 28, 28) * 2 - 1, torch.arange(8)), batch_size=8)
    t = _trainer(tmp_path, limit_val_batches=0)
    t.fit(gan, loader)
    real = tmp_path / "gan.ckpt"
    t.save_checkpoint(real)
    loaded = load_gan(str(real), **nets())  # its hyperparameters hold dcgan_adam: allowlisted, not unpickled freely
    assert all(torch.equal(v, gan.generator.state_dict()[k]) for k, v in loaded.generator.state_dict().items())
    bad = _crafted(real, tmp_path / "crafted_gan.ckpt", marker)
    with pytest.raises(ValueError, match=r"GAN checkpoint .*crafted_gan\.ckpt was refused"):
        load_gan(str(bad), **nets())
    with pytest.raises(ValueError, match=r"crafted_gan\.ckpt was refused"):
        grid(checkpoint=str(bad), out=str(tmp_path / "grid.png"), standing_batches=0)
    assert not (tmp_path / "grid.png").exists()


# --- the SVM -------------------------------------------------------------------------------------------
def _svm_task(n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = 0.5 * torch.randn(n, 10, 13, generator=g)
    x[torch.arange(n), :, y] += 1.0
    return x, torch.randint(3, 11, (n,), generator=g), y


@pytest.mark.parametrize("classes,kernel,gamma", [(3, "rbf", "scale"), (2, "rbf", 0.05), (3, "poly", "auto")])
def test_svm_is_stored_as_arrays_and_rebuilt_exactly(tmp_path, classes, kernel, gamma):
    model = MFCCStatsSVM(num_classes=classes, kernel=kernel, gamma=gamma)
    x, lengths, y = _svm_task(90, 0)
    keep = y < classes
    model.fit_svm(model.features(x[keep], lengths[keep]).double().numpy(), y[keep].numpy())
    ckpt = {}
    model.on_save_checkpoint(ckpt)
    assert "sklearn_svm" not in ckpt
    torch.save(ckpt, tmp_path / "svm.ckpt")
    again = MFCCStatsSVM(num_classes=classes, gamma=1.0)  # the stored gamma, not this one, is used
    again.on_load_checkpoint(torch.load(tmp_path / "svm.ckpt", weights_only=True))  # no allowlist needed
    feats = again.features(*_svm_task(40, 1)[:2]).double().numpy() * 3  # also far from the training data
    np.testing.assert_array_equal(again.svm.decision_function(feats), model.svm.decision_function(feats))
    np.testing.assert_array_equal(again.svm.predict(feats), model.svm.predict(feats))
    assert again.svm[-1]._gamma == model.svm[-1]._gamma and again.svm[-1].kernel == kernel
    with pytest.raises(ValueError, match="unknown svm_state version"):
        svm_from_state({**svm_state(model.svm), "version": 99})


def test_svm_checkpoint_round_trip_and_pickled_svm_refused_through_the_cli(tmp_path, marker):
    root = write_fsdd(tmp_path / "data", speakers=("alice", "bob"), takes=range(8))
    args = ["--config", CONFIGS / "mfcc_svm.yaml", "--data.data_dir", root, "--trainer.logger", "false",
            "--trainer.default_root_dir", tmp_path, "--trainer.enable_progress_bar", "false",
            "--data.progress", "false"]
    run_cli(["fit", *args, "--run.results_file", tmp_path / "fit.json"])
    fitted = json.loads((tmp_path / "fit.json").read_text())
    best = Path(fitted["best_checkpoint"])
    ckpt = torch.load(best, weights_only=True)  # the zoo's own checkpoint: plain tensors and values
    assert "svm_state" in ckpt and "sklearn_svm" not in ckpt
    run_cli(["test", *args, "--ckpt_path", best, "--run.results_file", tmp_path / "test.json"])
    tested = json.loads((tmp_path / "test.json").read_text())["metrics"]
    assert tested["test/acc"] == fitted["metrics"]["test/acc"] and tested["test/loss"] == fitted["metrics"]["test/loss"]
    # an old-format checkpoint (the SVM pickled into 'sklearn_svm'): refused, never unpickled
    del ckpt["svm_state"]
    ckpt["sklearn_svm"] = torch.frombuffer(bytearray(pickle.dumps(Payload(marker))), dtype=torch.uint8)
    old = tmp_path / "old_svm.ckpt"
    torch.save(ckpt, old)
    with pytest.raises(ValueError, match=r"old_svm\.ckpt stores its SVM as pickled bytes.*Retrain"):
        run_cli(["test", *args, "--ckpt_path", old])


# --- image cache ---------------------------------------------------------------------------------------
@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        for i in range(5):
            (tmp_path / "imgs" / c).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "imgs" / c / f"{i}.png")
    return tmp_path


def _images(root) -> torch.Tensor:
    dm = ImageFolderDataModule(folder="imgs", data_dir=str(root), cache_dir=str(root / "cache"), image_size=8)
    return dm.load()[0]


def _cache_file(root) -> Path:
    (path,) = (root / "cache" / "images").glob("*.pt")
    return path


def test_crafted_image_cache_is_refused_and_rebuilt(image_folder, marker):
    first = _images(image_folder)
    cache = _cache_file(image_folder)
    torch.save({"images": Payload(marker)}, cache)
    with pytest.warns(RuntimeWarning, match=rf"image cache .*{cache.name} .*refused.*rebuilding"):
        again = _images(image_folder)
    assert torch.equal(again, first)
    assert torch.equal(torch.load(cache, weights_only=True)["images"], first)  # healed on disk


@pytest.mark.parametrize("damage", ["empty", "truncated", "not a torch file", "wrong content"])
def test_damaged_image_cache_is_named_and_rebuilt(image_folder, damage):
    first = _images(image_folder)
    cache = _cache_file(image_folder)
    if damage == "empty":
        cache.write_bytes(b"")
    elif damage == "truncated":
        cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    elif damage == "not a torch file":
        cache.write_text("hello")
    else:
        torch.save([1, 2, 3], cache)
    with pytest.warns(RuntimeWarning, match=rf"image cache .*{cache.name} is damaged.*rebuilding"):
        again = _images(image_folder)
    assert torch.equal(again, first)
    assert torch.equal(torch.load(cache, weights_only=True)["images"], first)


def test_image_cache_key_changes_when_a_file_changes_in_place(image_folder, monkeypatch):
    first = _images(image_folder)
    path = image_folder / "imgs" / "b" / "2.png"
    st = path.stat()
    new = np.full((8, 8, 3), 7, dtype=np.uint8)
    Image.fromarray(new).save(path)  # same name; PNG of another image
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    again = _images(image_folder)
    assert torch.equal(again[7], torch.from_numpy(new).permute(2, 0, 1))  # b/2 is the 8th file
    assert torch.equal(again[:7], first[:7]) and len(list((image_folder / "cache" / "images").glob("*.pt"))) == 2
    # an untouched folder still reuses its cache
    monkeypatch.setattr(images_mod, "decode_images", lambda *a, **k: pytest.fail("cache was not reused"))
    assert torch.equal(_images(image_folder), again)


# --- 16-bit PNG ----------------------------------------------------------------------------------------
def test_16bit_grayscale_png_is_scaled_not_white(image_folder):
    ramp = (np.arange(64, dtype=np.uint32).reshape(8, 8) * 1040).astype(np.uint16)  # 0 .. 65520
    path = image_folder / "imgs" / "a" / "9_16bit.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode == "I;16"
    expected = torch.from_numpy(np.round(ramp / 257.0).astype(np.uint8))
    assert torch.equal(decode_image(path, 8, channels=1)[0], expected)
    rgb = decode_image(path, 8, channels=3)
    assert torch.equal(rgb, expected.expand(3, 8, 8)) and rgb.float().mean() < 200
    images = _images(image_folder)  # among 8-bit RGB PNGs
    assert torch.equal(images[5], expected.expand(3, 8, 8))  # a/9_16bit sorts after a/0..a/4


def test_32bit_image_is_refused_with_its_name(image_folder):
    path = image_folder / "imgs" / "a" / "deep.tif"
    Image.fromarray(np.arange(64, dtype=np.int32).reshape(8, 8) * 100000).save(path)
    with pytest.raises(ValueError, match=r"deep\.tif.*32-bit integer"):
        _images(image_folder)
