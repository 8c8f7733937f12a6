"""DataModule settings: one vocabulary, checked by their type hints (at CLI parse time and from plain
Python alike), stored as plain numbers, and read back from checkpoints that saved them under old names."""

from __future__ import annotations

import io
import pickle

import lightning
import pytest
import torch
from jsonargparse.typing import PositiveInt
from lightning.pytorch.cli import instantiate_module

from conftest import CONFIGS, run_cli
from datamodules.audio_image_pairs import SpokenDigitImagePairs
from datamodules.images import ImageFolderDataModule
from datamodules.mnist import MNISTDataModule
from datamodules.settings import RENAMED, upgrade_settings
from datamodules.sines import SineWaves
from datamodules.spoken_digits import SpokenDigits
from datamodules.voc_stl import STL10DataModule, VOC2007DataModule


@pytest.mark.parametrize("config, key, value, expected", [
    ("lenet_mnist.yaml", "batch_size", "0", "PositiveInt"),
    ("lenet_mnist.yaml", "normalization", "imagenet", "zero_one"),
    ("cnn_audio.yaml", "val_fraction", "1.0", "OpenUnitInterval"),
    ("cnn_audio.yaml", "vtlp", "0.7", "WarpFraction"),
    ("image_classifier_cifar.yaml", "label_fraction", "0", "UnitFraction"),
    ("image_classifier_cifar.yaml", "image_channels", "4", "Literal"),
])
def test_cli_refuses_a_bad_setting_at_parse_time_naming_it(config, key, value, expected, capsys, monkeypatch):
    import lightning.pytorch as pl

    monkeypatch.setattr(pl.Trainer, "fit", lambda *a, **k: pytest.fail("a bad setting must stop the CLI before fit"))
    with pytest.raises(SystemExit) as exit_:
        run_cli(["fit", "--config", CONFIGS / config, f"--data.{key}", value, "--trainer.fast_dev_run", "true"])
    assert exit_.value.code != 0
    err = capsys.readouterr().err
    assert f'Parser key "{key}"' in err and expected in err, err[-2000:]


def test_cli_names_an_old_setting_name_as_not_accepted(capsys):
    with pytest.raises(SystemExit):
        run_cli(["fit", "--config", CONFIGS / "lenet_mnist.yaml", "--data.normalize", "standard"])
    assert "normalize" in capsys.readouterr().err


@pytest.mark.parametrize("cls, kwargs, message", [
    (MNISTDataModule, dict(batch_size=0), r"MNISTDataModule: batch_size=0 is not allowed: expected an integer > 0"),
    (MNISTDataModule, dict(test_per_class=0), r"test_per_class=0 .* an integer > 0"),
    (MNISTDataModule, dict(augmented_per_class=-5), r"augmented_per_class=-5 .* an integer >= 0"),
    (MNISTDataModule, dict(normalization="tanh"), r"normalization='tanh' .* one of \['zero_one', 'minus_one_one'"),
    (SpokenDigits, dict(test_fraction=1.0), r"SpokenDigits: test_fraction=1.0 .* a number > 0 and < 1"),
    (SpokenDigits, dict(n_mels=0), r"n_mels=0 .* an integer > 0"),
    (ImageFolderDataModule, dict(image_size=0), r"ImageFolderDataModule: image_size=0"),
    (VOC2007DataModule, dict(limit_per_class=0), r"VOC2007DataModule: limit_per_class=0"),
    (STL10DataModule, dict(num_workers=-1), r"STL10DataModule: num_workers=-1 .* an integer >= 0"),
    (SineWaves, dict(noise=-0.1), r"SineWaves: noise=-0.1 .* a number >= 0"),
    (SineWaves, dict(n_val=0), r"SineWaves: n_val=0"),
    (SpokenDigitImagePairs, dict(batch_size=0), r"SpokenDigitImagePairs: batch_size=0"),
])
def test_plain_python_gets_the_same_checks_as_the_cli(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


def test_range_types_state_their_bounds_in_errors_of_python_built_datamodules():
    """The bounds come from :func:`number_range`; a range type made by jsonargparse alone still refuses."""
    from jsonargparse.typing import restricted_number_type

    from datamodules.settings import _violation, number_range

    assert _violation(number_range("Probe", float, [(">", 0.5), ("<=", 2)]), 2.5) == "expected a number > 0.5 and <= 2"
    assert _violation(PositiveInt, 1.5) == "expected an integer > 0" and _violation(PositiveInt, 3) is None
    foreign = restricted_number_type("ProbeForeign", int, [("<", 7)])
    assert _violation(foreign, 9) == "expected an integer of ProbeForeign (9 does not conform to restriction v<7)"
    assert _violation(foreign, 6) is None and _violation(int, -3) is None


def test_range_typed_values_are_stored_as_plain_numbers():
    """jsonargparse hands range types (PositiveInt, ...) to the DataModule; saved as they came, they would
    make every checkpoint unloadable weights-only."""
    dm = instantiate_module(MNISTDataModule, {"batch_size": 5, "val_fraction": 0.2, "aug_degrees": 3.0})
    direct = MNISTDataModule(batch_size=PositiveInt(5))
    for hp in (dm.hparams, dm.hparams_initial, direct.hparams):
        assert type(hp["batch_size"]) is int and hp["batch_size"] == 5
    assert type(dm.hparams["val_fraction"]) is float and type(dm.batch_size) is int
    blob = {"datamodule_hyper_parameters": dict(dm.hparams), "direct": dict(direct.hparams)}
    torch.save(blob, buf := __import__("io").BytesIO())
    buf.seek(0)
    assert torch.load(buf, weights_only=True)["datamodule_hyper_parameters"]["batch_size"] == 5


def test_upgrade_settings_maps_old_names_and_values():
    assert upgrade_settings("datamodules.spoken_digits.SpokenDigits", {"normalize": False, "seed": 4, "n_mfcc": 13}) \
        == {"normalization": "none", "split_seed": 4, "n_mfcc": 13}
    assert upgrade_settings("SpokenDigits", {"normalize": True})["normalization"] == "dataset"
    assert upgrade_settings("ImageFolderDataModule", {"root": "a", "folder": "b"}) == {"folder": "b"}  # new name wins
    assert upgrade_settings("SomethingElse", {"seed": 1}) == {"seed": 1}
    for cls, renames in RENAMED.items():  # every new name is a current constructor argument
        module = {"MNISTDataModule": MNISTDataModule, "SpokenDigits": SpokenDigits, "SineWaves": SineWaves,
                  "SpokenDigitImagePairs": SpokenDigitImagePairs, "ImageFolderDataModule": ImageFolderDataModule,
                  "VOC2007DataModule": VOC2007DataModule, "STL10DataModule": STL10DataModule}[cls]
        params = module.__init__.__code__.co_varnames
        assert all(new in params and old not in params for old, new in renames.items()), cls


def _old_checkpoint(path, class_path: str, hparams: dict, state: dict | None = None):
    """A checkpoint as `python -m zoo fit` wrote it before issue 15 (old setting names)."""
    name = class_path.rsplit(".", 1)[-1]
    ckpt = {"pytorch-lightning_version": lightning.__version__, "state_dict": {}, "datamodule_hparams_name": "kwargs",
            "datamodule_hyper_parameters": {"_class_path": class_path, **hparams,
                                            "_instantiator": "lightning.pytorch.cli.instantiate_module"}}
    if state is not None:
        ckpt[name] = state
    torch.save(ckpt, path)
    return path


def test_a_datamodule_state_from_cli_values_loads_weights_only():
    """What SpokenDigits puts in a checkpoint (its feature settings) must hold plain numbers too: a range-typed
    analysis window there made the best checkpoint unloadable for the test stage."""
    dm = instantiate_module(SpokenDigits, {"window": 0.064, "trim_db": 15.0, "n_mels": 32, "progress": False})
    torch.save(dm.state_dict(), buf := io.BytesIO())
    buf.seek(0)
    settings = torch.load(buf, weights_only=True)["settings"]
    assert (settings["window"], settings["trim_db"], settings["n_mels"]) == (0.064, 15.0, 32)


def test_old_checkpoints_load_with_their_settings(tmp_path):
    ckpt = _old_checkpoint(tmp_path / "mnist.ckpt", "datamodules.mnist.MNISTDataModule",
                           {"normalize": "minus_one_one", "seed": 3, "real_per_class": 7, "batch_size": 32})
    dm = MNISTDataModule.load_from_checkpoint(ckpt)
    assert (dm.normalization, dm.split_seed, dm.data_seed, dm.real_per_class, dm.batch_size) == ("minus_one_one", 3, 3, 7, 32)

    ckpt = _old_checkpoint(tmp_path / "audio.ckpt", "datamodules.spoken_digits.SpokenDigits",
                           {"normalize": False, "seed": 2, "feature": "mfcc"},
                           {"settings": {"feature": "mfcc", "sample_rate": 8000, "n_mfcc": 13, "n_mels": 64,
                                         "frames": 64, "trim_db": None, "version": 1},
                            "normalize": "none", "class_names": ["zero"] * 10})
    dm = SpokenDigits.load_from_checkpoint(ckpt, progress=False)
    assert (dm.hparams.normalization, dm.hparams.split_seed, dm.settings.feature) == ("none", 2, "mfcc")

    ckpt = _old_checkpoint(tmp_path / "img.ckpt", "datamodules.images.ImageFolderDataModule",
                           {"root": "cats-dogs", "image_size": 32, "normalization": "minus_one_one"},
                           {"class_names": ["cats", "dogs"], "image_size": 32, "channels": 3,
                            "normalization": "minus_one_one"})
    dm = ImageFolderDataModule.load_from_checkpoint(ckpt)
    assert (dm.folder, dm.image_size, dm.class_names) == ("cats-dogs", 32, ["cats", "dogs"])

    ckpt = _old_checkpoint(tmp_path / "sines.ckpt", "datamodules.sines.SineWaves", {"seed": 5, "n_train": 8})
    assert SineWaves.load_from_checkpoint(ckpt).hparams.data_seed == 5


def test_saved_data_settings_must_match_the_run(tmp_path):
    """What predict and resume read from a checkpoint's DataModule state, old names included."""
    dm = SpokenDigits(normalization="utterance", progress=False)
    dm.load_state_dict({"settings": {}, "normalize": "utterance"})  # saved before issue 15
    dm.load_state_dict(dm.state_dict())
    with pytest.raises(ValueError, match=r"normalization='dataset' \(checkpoint\) vs 'utterance' \(now\)"):
        dm.load_state_dict({"settings": {}, "normalize": "dataset"})
    mnist = MNISTDataModule(normalization="zero_one")
    assert mnist.state_dict() == {"normalization": "zero_one"}
    mnist.load_state_dict({"normalization": "zero_one"})
    with pytest.raises(ValueError, match=r"MNISTDataModule: .*normalization='standard' \(checkpoint\) vs 'zero_one'"):
        mnist.load_state_dict({"normalize": "standard"})


class _Payload:
    """Anything but weights: a checkpoint holding it must not be unpickled."""


def test_a_checkpoint_stream_is_read_weights_only_even_when_torch_is_told_otherwise(tmp_path, monkeypatch):
    ckpt = _old_checkpoint(tmp_path / "sines.ckpt", "datamodules.sines.SineWaves", {"seed": 5, "trap": _Payload()})
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # torch's default would then unpickle anything
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        SineWaves.load_from_checkpoint(io.BytesIO(ckpt.read_bytes()))  # a stream: no weights-only pre-read of ours
