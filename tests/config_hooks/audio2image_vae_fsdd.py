"""audio2image_vae_fsdd needs a judge: a zoo-trained MNIST classifier checkpoint. Build a tiny real one
(one step of ``configs/lenet_mnist.yaml`` on 5 images per class) through the CLI, as a user would."""

from __future__ import annotations

from pathlib import Path

from conftest import CONFIGS, run_cli


def build_judge(tmp_path: Path) -> Path:
    out = Path(tmp_path) / "judge"
    run_cli(["fit", "--config", CONFIGS / "lenet_mnist.yaml", "--data.real_per_class", "5", "--data.on_device", "false",
             "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1", "--trainer.logger", "false",
             "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
             "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", tmp_path,
             "--run.test_after_fit", "false", "--checkpoint.dirpath", out, "--checkpoint.filename", "judge"])
    path = out / "judge.ckpt"
    assert path.is_file(), f"judge checkpoint not written: {sorted(out.glob('*'))}"
    return path


def extra_args(tmp_path: Path) -> list[str]:
    return ["--model.judge_checkpoint", str(build_judge(tmp_path))]
