"""A tiny LeNet5 classifier checkpoint (two steps on 100 MNIST images) so the fast_dev_run exercises val/test FID."""

from __future__ import annotations

from pathlib import Path


def make_feature_checkpoint(tmp_path: Path) -> Path:
    """Train LeNet5 for two steps through the zoo CLI (so the checkpoint records its class and the
    DataModule's normalisation, as a real ``configs/lenet_mnist.yaml`` checkpoint does)."""
    from conftest import run_cli

    out = Path(tmp_path) / "fid_features"
    run_cli(["fit", "--model", "zoo.tasks.classifier.Classifier", "--model.net", "zoo.nets.lenet.LeNet5",
             "--data", "MNISTDataModule", "--data.real_per_class", "10",
             "--data.test_per_class", "1", "--trainer.max_steps", "2", "--trainer.logger", "false",
             "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
             "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", out,
             "--checkpoint.dirpath", out, "--run.test_after_fit", "false"])
    ckpt = out / "last.ckpt"
    assert ckpt.is_file(), f"feature checkpoint was not written to {ckpt}"
    return ckpt


def extra_args(tmp_path: Path) -> list[str]:
    return ["--model.fid_features", str(make_feature_checkpoint(tmp_path))]
