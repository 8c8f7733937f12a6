"""The data-scarcity pipeline (zoo.tools.scarcity): the GAN sees exactly the classifier's real images, and one
command trains it, exports its samples and runs the grid on them (tiny settings on the MNIST fixture)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CONFIGS, REPO
from data_fixtures import mnist_data_dir

from zoo.tools.scarcity import run_scarcity


@pytest.fixture(scope="module")
def mnist_data(tmp_path_factory):
    yield from mnist_data_dir(tmp_path_factory)


def _train_indices(config: Path, real_per_class: int, split_seed: int) -> torch.Tensor:
    from zoo.cli import main

    cli = main(["--config", str(config), "--data.real_per_class", str(real_per_class), "--data.split_seed",
                str(split_seed), "--trainer.logger", "false"], run=False)
    cli.datamodule.setup("fit")
    return cli.datamodule.indices["train"]


def test_the_gan_is_trained_on_exactly_the_classifiers_real_images(mnist_data):
    """No leakage: same real_per_class and split_seed give the GAN config and the classifier config the same
    real training images (and another seed other ones)."""
    gan = _train_indices(CONFIGS / "dcgan_mnist_conditional.yaml", 30, 1)
    clf = _train_indices(CONFIGS / "lenet_reduced_mnist.yaml", 30, 1)
    assert len(gan) == 10 * 30 and torch.equal(torch.sort(gan).values, torch.sort(clf).values)
    other = _train_indices(CONFIGS / "lenet_reduced_mnist.yaml", 30, 2)
    assert not torch.equal(torch.sort(other).values, torch.sort(clf).values)


def test_dry_run_prints_the_gan_command_and_the_grid(tmp_path, capsys):
    plan = run_scarcity(real_per_class=300, out=str(tmp_path), augmented_per_class=[0, 1000], dry_run=True)
    cmd = " ".join(plan["gan_command"])
    assert "--data.real_per_class 300 --data.split_seed 0" in cmd and "dcgan_mnist_conditional.yaml" in cmd
    grid = plan["grid"]
    assert grid["axes"] == {"data.augmented_per_class": [0, 1000], "data.synthetic_per_class": [0, 1000, 2000, 3000]}
    assert grid["args"][:6] == ["--data.real_per_class", "300", "--data.split_seed", "0", "--data.synthetic_path",
                                str(tmp_path / "real=300" / "samples.npz")]
    assert not (tmp_path / "real=300").exists(), "a dry run writes nothing"
    with pytest.raises(ValueError, match="real_per_class must be >= 1"):
        run_scarcity(real_per_class=0, out=str(tmp_path), dry_run=True)


def test_one_command_trains_the_gan_exports_and_runs_the_grid(mnist_data, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    quick = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
             "--trainer.limit_test_batches", "1", "--trainer.enable_progress_bar", "false"]
    summary = run_scarcity(real_per_class=20, out=str(tmp_path), gan_args=quick + ["--model.fid_features", "null"],
                           synthetic_per_class=[0, 5], seeds=[0], classifier_args=quick, cas=False)
    root = tmp_path / "real=20"
    assert (root / "gan" / "checkpoints" / "last.ckpt").exists() and (root / "samples.npz").exists()
    with __import__("numpy").load(root / "samples.npz") as f:
        assert f["images"].shape == (50, 28, 28) and sorted(set(f["labels"].tolist())) == list(range(10))
    assert set(summary["grid"]) == {"synthetic_per_class=0", "synthetic_per_class=5"} and summary["failed_runs"] == 0
    grid = yaml.safe_load((root / "grid.yaml").read_text())
    assert grid["args"][:4] == ["--data.real_per_class", "20", "--data.split_seed", "0"]
    assert json.loads((root / "summary.json").read_text())["samples"] == str(root / "samples.npz")
    # a second call resumes: nothing is trained again
    mtime = (root / "gan" / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    run_scarcity(real_per_class=20, out=str(tmp_path), gan_args=quick, synthetic_per_class=[0, 5], seeds=[0],
                 classifier_args=quick, cas=False)
    assert (root / "gan" / "checkpoints" / "last.ckpt").stat().st_mtime_ns == mtime
