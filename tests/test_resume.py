"""Resume continues the same run and changes nothing (issue 16 part 2): a run interrupted in its second
epoch and resumed with ``--ckpt_path`` ends with the uninterrupted run's weights and metrics, in the same
version folder / W&B run, with the best score it had before the interruption."""

from __future__ import annotations

import csv
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import CONFIGS, run_cli
from zoo.tasks.classifier import Classifier


def write_mnist(root: Path, per_class: int = 20, test_per_class: int = 5) -> Path:
    """A tiny MNIST in torchvision's raw IDX layout (digit-dependent bright squares plus noise)."""
    rng = np.random.default_rng(0)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", per_class), ("t10k", test_per_class)):
        labels = np.tile(np.arange(10, dtype=np.uint8), n)
        images = rng.integers(0, 60, (len(labels), 28, 28), dtype=np.uint8)
        for i, d in enumerate(labels):
            images[i, 2 * d:2 * d + 8, 4:12] = 250
        for kind, arr in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            header = bytes([0, 0, 8, arr.ndim]) + b"".join(s.to_bytes(4, "big") for s in arr.shape)
            (raw / f"{prefix}-{kind}").write_bytes(header + arr.tobytes())
    return root


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory) -> Path:
    return write_mnist(tmp_path_factory.mktemp("mnist_fixture"))


def lenet_args(root: Path, out: Path, *extra) -> list:
    """LeNet-5 with dropout on 120 images, batches of 16 (8 steps an epoch), cosine schedule, 3 epochs."""
    return ["fit", "--config", CONFIGS / "lenet_reduced_mnist.yaml", "--data.data_dir", root,
            "--data.real_per_class", "12", "--data.test_per_class", "5", "--data.batch_size", "16",
            "--data.on_device", "false", "--model.init_args.net.init_args.dropout", "0.3", "--trainer.max_epochs", "3",
            "--model.scheduler.init_args.T_max", "3", "--trainer.accelerator", "cpu",
            "--trainer.default_root_dir", out, "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.log_every_n_steps", "1", *extra]


def crash_at(monkeypatch, epoch: int, batch: int) -> None:
    """Make training raise at (epoch, batch), as a kill would stop it there."""
    step = Classifier.training_step

    def failing(self, b, batch_idx):
        if (self.current_epoch, batch_idx) == (epoch, batch):
            raise RuntimeError("interrupted")
        return step(self, b, batch_idx)

    monkeypatch.setattr(Classifier, "training_step", failing)


def weights(ckpt: Path, key: str = "state_dict") -> dict[str, torch.Tensor]:
    return torch.load(ckpt, weights_only=True, map_location="cpu")[key]


EMA = ["--trainer.callbacks+=EMAWeights", "--trainer.callbacks.decay", "0.9"]


@pytest.mark.parametrize("extra", [[], EMA], ids=["plain", "ema"])
def test_interrupted_run_resumed_with_last_equals_the_uninterrupted_run(mnist_root, tmp_path, monkeypatch, extra):
    logger = ["--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", tmp_path / "logs", *extra]
    whole = run_cli(lenet_args(mnist_root, tmp_path, *logger, "--run.name", "whole",
                               "--run.results_file", tmp_path / "whole.json"))
    with monkeypatch.context() as m:
        crash_at(m, epoch=1, batch=5)
        with pytest.raises(RuntimeError, match="interrupted"):
            run_cli(lenet_args(mnist_root, tmp_path, *logger, "--run.name", "cut"))
    run_dir = tmp_path / "logs" / "reduced-mnist" / "cut" / "version_0"
    before = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert before["epoch"] == 0  # the interruption lost the unfinished epoch 1 only
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = run_cli(lenet_args(mnist_root, tmp_path, *logger, "--run.name", "cut", "--ckpt_path", "last",
                                     "--run.results_file", tmp_path / "resumed.json"))
    assert resumed.config.fit.ckpt_path == str(run_dir / "checkpoints" / "last.ckpt")  # `last` found this run's
    # the same run: same version folder (no version_1), same checkpoint folder, best score carried over
    assert Path(resumed.trainer.logger.log_dir) == run_dir
    assert [p.name for p in run_dir.parent.iterdir()] == ["version_0"]
    assert Path(resumed.trainer.checkpoint_callback.dirpath) == run_dir / "checkpoints"
    assert not [w for w in caught if "dirpath has changed" in str(w.message)]
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    assert sorted(int(r["epoch"]) for r in rows if r.get("val/acc")) == [0, 1, 2]  # one history, all epochs
    # and it changed nothing: final weights and every metric equal the uninterrupted run's
    for key in ("state_dict", "current_model_state") if extra else ("state_dict",):  # EMA: the average and the raw
        a = weights(Path(whole.trainer.checkpoint_callback.last_model_path), key)
        b = weights(run_dir / "checkpoints" / "last.ckpt", key)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ra, rb = (json.loads((tmp_path / f).read_text()) for f in ("whole.json", "resumed.json"))
    learned = [{k: v for k, v in r["metrics"].items() if not k.endswith("/seconds")} for r in (ra, rb)]  # not timings
    assert learned[1] == pytest.approx(learned[0], abs=1e-6) and "test/acc" in learned[1]
    assert rb["best"] == ra["best"] and Path(rb["best_checkpoint"]).name == Path(ra["best_checkpoint"]).name


def test_wandb_run_resumes_under_its_id_and_checkpoint_folder(mnist_root, tmp_path, monkeypatch):
    """`--ckpt_path last` with W&B: the newest last.ckpt of a run with this name and group, not of another run."""
    import shutil

    import wandb

    wb = ["--trainer.logger.init_args.save_dir", tmp_path / "wb", "--trainer.max_epochs", "2"]
    with monkeypatch.context() as m:
        crash_at(m, epoch=1, batch=2)
        with pytest.raises(RuntimeError, match="interrupted"):
            run_cli(lenet_args(mnist_root, tmp_path, *wb))
    wandb.finish()
    (run_dir,) = (tmp_path / "wb" / "zoo").iterdir()  # <save_dir>/<project>/<run id>
    decoy = tmp_path / "wb" / "zoo" / "decoy"  # another run's, written later
    shutil.copytree(run_dir, decoy)
    os.utime(decoy / "checkpoints" / "last.ckpt", (time.time() + 60, time.time() + 60))
    other = (run_dir / "config.yaml").read_text().replace("Classifier-LeNet5-MNISTDataModule", "other")
    (decoy / "config.yaml").write_text(other)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            resumed = run_cli(lenet_args(mnist_root, tmp_path, *wb, "--ckpt_path", "last"))
        run = resumed.trainer.logger.experiment
        assert resumed.config.fit.ckpt_path == str(run_dir / "checkpoints" / "last.ckpt")
        assert run.id == run_dir.name and run.name == "Classifier-LeNet5-MNISTDataModule-seed0"
        assert run.settings.mode in ("offline", "dryrun")
        assert Path(resumed.trainer.checkpoint_callback.dirpath) == run_dir / "checkpoints"
        assert not [w for w in caught if "dirpath has changed" in str(w.message)]  # best score restored
        assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1  # it trained on
        # the config it saves does not pin the id: a new run from that config is a new W&B run
        assert resumed.config.fit.trainer.logger.init_args.id is None
    finally:
        wandb.finish()


def test_ema_weights_are_what_fit_validates_keeps_and_tests_in_every_process(mnist_root, tmp_path):
    """EMAWeights: the best checkpoint's state_dict is the average, not the raw weights; testing it right after
    fit (the same trainer) and in a new process evaluate that average, so the two give one number; the raw
    weights it keeps are those of a run without it."""
    out = tmp_path / "run"
    fitted = run_cli(lenet_args(mnist_root, out, *EMA, "--trainer.logger", "false",
                                "--run.results_file", tmp_path / "fit.json"))
    best = Path(fitted.trainer.checkpoint_callback.best_model_path)
    average, raw = weights(best), weights(best, "current_model_state")
    assert average.keys() == raw.keys()
    assert not all(torch.equal(average[k], raw[k]) for k in average)  # the average is not the raw weights
    tested = fitted.model.state_dict()  # after fit's test of the best checkpoint (Lightning loaded the raw ones)
    assert all(torch.equal(tested[k], average[k]) for k in average)
    alone = run_cli(["test", "--config", CONFIGS / "lenet_reduced_mnist.yaml", "--data.data_dir", mnist_root,
                     "--data.real_per_class", "12", "--data.test_per_class", "5", "--data.on_device", "false",
                     "--model.init_args.net.init_args.dropout", "0.3", "--trainer.accelerator", "cpu",
                     "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", *EMA,
                     "--trainer.default_root_dir", out,
                     "--ckpt_path", best, "--run.results_file", tmp_path / "test.json"])
    assert all(torch.equal(alone.model.state_dict()[k], average[k]) for k in average)
    after_fit, in_new_process = (json.loads((tmp_path / f).read_text())["metrics"] for f in ("fit.json", "test.json"))
    assert in_new_process["test/acc"] == pytest.approx(after_fit["test/acc"])
    assert in_new_process["test/loss"] == pytest.approx(after_fit["test/loss"], rel=1e-5)
    # averaging changes what is evaluated, not the training: the raw weights are a plain run's, bit for bit
    plain = run_cli(lenet_args(mnist_root, tmp_path / "plain", "--trainer.logger", "false", "--run.test_after_fit",
                               "false"))
    a, b = weights(Path(plain.trainer.checkpoint_callback.last_model_path)), weights(
        Path(fitted.trainer.checkpoint_callback.last_model_path), "current_model_state")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_ema_decay_outside_0_1_is_refused():
    from zoo.callbacks import EMAWeights

    for decay in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="decay must be in"):
            EMAWeights(decay=decay)


def test_random_states_survive_a_weights_only_checkpoint(tmp_path):
    """What ResumeState stores loads with weights_only=True and gives back the very same draws."""
    import random

    from zoo.callbacks import rng_state, set_rng_state

    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    torch.save({"rng": rng_state()}, tmp_path / "s.pt")
    draws = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)], np.random.randn())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    set_rng_state(torch.load(tmp_path / "s.pt", weights_only=True)["rng"])
    again = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)], np.random.randn())
    assert torch.equal(draws[0], again[0]) and np.array_equal(draws[1], again[1]) and draws[2:] == again[2:]


def test_best_score_is_restored_when_the_folder_is_spelled_differently(tmp_path, monkeypatch):
    """A relative checkpoint folder resumed as an absolute one (or from another working directory)."""
    from zoo.callbacks import BestCheckpoint

    monkeypatch.chdir(tmp_path)
    best = "runs/x/checkpoints/best.ckpt"
    state = {"dirpath": "runs/x/checkpoints", "best_model_score": torch.tensor(0.9), "best_model_path": best,
             "kth_best_model_path": best, "kth_value": torch.tensor(0.9), "best_k_models": {best: torch.tensor(0.9)},
             "last_model_path": "runs/x/checkpoints/last.ckpt"}
    callback = BestCheckpoint(dirpath=str(tmp_path / "runs" / "x" / "checkpoints"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Lightning's "dirpath has changed" would be raised here
        callback.load_state_dict(state)
    assert callback.best_model_score == pytest.approx(0.9) and callback.last_model_path.endswith("last.ckpt")


def test_ckpt_path_last_without_a_checkpoint(tmp_path, capsys):
    """`test` has nothing to test and says where it looked; `fit` says so and trains from scratch."""
    args = ["--config", CONFIGS / "lenet_reduced_mnist.yaml", "--trainer.logger", "CSVLogger",
            "--trainer.logger.save_dir", tmp_path, "--run.name", "nothing-yet", "--ckpt_path", "last"]
    with pytest.raises(FileNotFoundError, match=r"no last.ckpt of this run in .*nothing-yet"):
        run_cli(["test", *args])
    with pytest.raises(FileNotFoundError, match="MNIST"):  # got as far as loading the data: no checkpoint needed
        run_cli(["fit", *args, "--data.data_dir", tmp_path / "no_data"])
    assert "no last.ckpt of this run" in capsys.readouterr().err
