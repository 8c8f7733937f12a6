"""``python -m zoo``: help, config printing, short class names, logging defaults, precision and DDP."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import LightningDataModule, LightningModule

from audio_fixtures import write_fsdd
from conftest import REPO, run_cli
from zoo.safe_load import load_checkpoint


@pytest.fixture(scope="module")
def fsdd_root(tmp_path_factory) -> Path:
    return write_fsdd(tmp_path_factory.mktemp("fsdd_fixture"), speakers=("alice", "bob"), takes=range(7))


def small_cbam_args(root: Path, out: Path, *extra) -> list:
    return ["--model", "Classifier", "--model.net", "ConvNet", "--model.net.attention", "cbam",
            "--model.net.channels", "[4, 8, 8, 16]", "--model.net.hidden", "16",
            "--data", "SpokenDigits", "--data.data_dir", root, "--data.n_mels", "32", "--data.frames", "32",
            "--data.batch_size", "32", "--data.cache_dir", out / "cache", "--data.progress", "false",
            "--trainer.default_root_dir", out, "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.log_every_n_steps", "1", *extra]


def csv_logger(out: Path) -> list:
    return ["--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", out / "logs"]


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for sub in ("fit", "validate", "test", "predict"):
        assert sub in out


def test_model_and_net_help_by_short_name(capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli(["fit", "--model.help", "Classifier"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--model.net NET" in out and "--model.label_smoothing" in out
    with pytest.raises(SystemExit) as exc:
        run_cli(["fit", "--model", "Classifier", "--model.net.help", "ConvNet"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--net.attention {none,spatial,cbam}" in out and "--net.reduction" in out


def test_print_config_resolves_short_names_and_defaults(capsys):
    with pytest.raises(SystemExit):
        run_cli(["fit", "--model", "Classifier", "--model.net", "ConvNet", "--model.net.attention", "cbam",
                 "--data", "SpokenDigits", "--print_config"])
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["class_path"] == "zoo.tasks.classifier.Classifier"
    net = cfg["model"]["init_args"]["net"]
    assert net["class_path"] == "zoo.nets.convnet.ConvNet" and net["init_args"]["attention"] == "cbam"
    assert net["init_args"]["channels"] == [32, 64, 128, 256]  # the net's own defaults are filled in
    assert cfg["data"]["class_path"] == "datamodules.spoken_digits.SpokenDigits"
    logger = cfg["trainer"]["logger"]
    assert logger["class_path"].endswith("WandbLogger")
    assert logger["init_args"]["offline"] is True  # no account needed
    assert cfg["seed_everything"] == 0
    assert cfg["checkpoint"]["save_last"] is True


def test_every_zoo_class_has_a_unique_short_name():
    """Short names (``--model Classifier``, ``--model.net ConvNet``) must each mean one class."""
    from torch import nn

    from zoo.cli import import_all

    import_all()

    def subclasses(base):
        out, todo = {}, [base]  # a class reached by two inheritance paths counts once
        while todo:
            for sub in todo.pop().__subclasses__():
                todo.append(sub)
                if sub.__module__.split(".")[0] in ("zoo", "datamodules"):
                    out[sub] = None
        return list(out)

    for base in (LightningModule, LightningDataModule, nn.Module):
        names = [c.__name__ for c in subclasses(base)]
        assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    assert "Classifier" in {c.__name__ for c in subclasses(LightningModule)}
    assert {"ConvNet", "LeNet5", "MnistCNN"} <= {c.__name__ for c in subclasses(nn.Module)}


def test_fit_tests_best_checkpoint_and_logs_everything(fsdd_root, tmp_path):
    results = tmp_path / "results.json"
    cli = run_cli(["fit", *small_cbam_args(fsdd_root, tmp_path, "--trainer.max_epochs", "3",
                                           "--run.results_file", results), *csv_logger(tmp_path)])
    metrics = json.loads(results.read_text())
    assert {"val/acc", "val/loss", "test/acc", "test/f1", "test/balanced_acc", "test/loss"} <= set(metrics["metrics"])
    assert Path(metrics["best_checkpoint"]).name.startswith("best-")
    assert cli.trainer.ckpt_path == metrics["best_checkpoint"]  # test/ came from the best weights, not the last
    # the test confusion matrix and the per-class table it gives, one row per class name
    cm = torch.tensor(metrics["confusion_matrix"])
    assert cm.shape == (10, 10) and int(cm.sum()) > 0
    # the config gives the model no class names; the data's name the rows ("zero", ... "nine")
    assert list(metrics["per_class"]) == cli.datamodule.class_names == ["zero", "one", "two", "three", "four", "five",
                                                                         "six", "seven", "eight", "nine"]
    assert sum(row["support"] for row in metrics["per_class"].values()) == int(cm.sum())
    # the file alone says what ran: seed, resolved config, code version and packages
    assert metrics["seed"] == 0 and metrics["config"]["model"]["class_path"] == "zoo.tasks.classifier.Classifier"
    assert metrics["config"]["model"]["init_args"]["net"]["init_args"]["attention"] == "cbam"
    assert metrics["config"]["trainer"]["max_epochs"] == 3 and metrics["command"][:4] == ["python", "-m", "zoo", "fit"]
    assert metrics["provenance"]["torch"] == torch.__version__
    if (REPO / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}", metrics["provenance"]["git_commit"]), metrics["provenance"]
    log_dir = Path(cli.trainer.logger.log_dir)
    header = (log_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "test/acc"} <= set(header)
    assert any(h.startswith("lr-") for h in header), header  # learning-rate monitor
    assert list((log_dir / "media").glob("test_confusion_matrix*.png")), "confusion matrix figure missing"
    saved = yaml.safe_load((log_dir / "config.yaml").read_text())
    assert saved["model"]["init_args"]["net"]["class_path"] == "zoo.nets.convnet.ConvNet"
    assert (Path(metrics["best_checkpoint"]).parent / "last.ckpt").exists()


def test_wandb_offline_run_carries_name_group_tags_and_config(fsdd_root, tmp_path):
    import wandb

    cli = run_cli(["fit", *small_cbam_args(fsdd_root, tmp_path, "--trainer.max_epochs", "1",
                                           "--run.group", "study-x", "--run.tags", "[a, b]",
                                           "--run.test_after_fit", "false",
                                           "--trainer.logger.init_args.save_dir", tmp_path / "wb")])
    try:
        run = cli.trainer.logger.experiment
        assert run.settings.mode in ("offline", "dryrun")  # wandb calls offline mode "dryrun" internally
        assert run.group == "study-x" and set(run.tags) == {"a", "b"}
        assert run.name == "Classifier-ConvNet-SpokenDigits-seed0"
        assert run.config["model"]["init_args"]["net"]["class_path"] == "zoo.nets.convnet.ConvNet"
        assert run.config["data"]["init_args"]["source"] == "fsdd"
        assert (Path(run.dir) / "zoo_config.yaml").exists()
        # the local copy sits with this run's checkpoints, not in one save_dir/config.yaml that every run overwrites
        ckpt_dir = Path(cli.trainer.checkpoint_callback.dirpath)
        assert ckpt_dir == tmp_path / "wb" / "zoo" / run.id / "checkpoints"
        saved = yaml.safe_load((ckpt_dir.parent / "config.yaml").read_text())
        assert saved["run"]["group"] == "study-x" and not (tmp_path / "wb" / "config.yaml").exists()
    finally:
        wandb.finish()


def built(args: list):
    """The CLI with its trainer, model and data built from ``args`` (no subcommand, nothing run)."""
    from unittest import mock

    from zoo.cli import main

    with mock.patch("sys.argv", ["zoo"]):
        return main([str(a) for a in args], run=False)


def test_wandb_files_follow_default_root_dir_unless_save_dir_is_given(tmp_path):
    base = ["--config", REPO / "configs" / "lenet_reduced_mnist.yaml", "--trainer.default_root_dir", tmp_path / "root"]
    assert Path(built(base).trainer.logger.save_dir) == tmp_path / "root"
    given = built([*base, "--trainer.logger.init_args.save_dir", tmp_path / "wb"])
    assert Path(given.trainer.logger.save_dir) == tmp_path / "wb"


@pytest.mark.parametrize("logger", ["CSVLogger", "TensorBoardLogger"])
def test_csv_and_tensorboard_logs_are_filed_under_group_and_run_name(logger, tmp_path):
    base = ["--config", REPO / "configs" / "lenet_reduced_mnist.yaml",  # its run.group is reduced-mnist
            "--trainer.logger", logger, "--trainer.logger.save_dir", tmp_path]
    assert built(base).trainer.logger.name == "reduced-mnist"  # docs' <group>/version_N paths
    named = built([*base, "--run.name", "lenet-a"]).trainer.logger
    assert named.name == "reduced-mnist/lenet-a"
    assert Path(named.log_dir) == tmp_path / "reduced-mnist" / "lenet-a" / "version_0"


@pytest.mark.parametrize("logger", ["CSVLogger", "TensorBoardLogger"])
def test_file_loggers_write_under_default_root_dir_unless_save_dir_is_given(logger, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where Lightning's save_dir "." would put them
    base = ["--config", REPO / "configs" / "lenet_reduced_mnist.yaml", "--trainer.logger", logger,
            "--trainer.default_root_dir", tmp_path / "root"]
    assert Path(built(base).trainer.logger.log_dir) == tmp_path / "root" / "reduced-mnist" / "version_0"
    given = built([*base, "--trainer.logger.save_dir", tmp_path / "elsewhere"]).trainer.logger
    assert Path(given.log_dir) == tmp_path / "elsewhere" / "reduced-mnist" / "version_0"


def test_runs_started_together_get_their_own_log_version(tmp_path):
    """Both runs are configured before either has written a line (two folds launched at once)."""
    args = ["--config", REPO / "configs" / "lenet_reduced_mnist.yaml", "--trainer.logger", "CSVLogger",
            "--trainer.logger.save_dir", tmp_path]
    first, second = built(args).trainer, built(args).trainer
    assert (first.logger.version, second.logger.version) == (0, 1)
    assert {Path(t.logger.log_dir) for t in (first, second)} == {tmp_path / "reduced-mnist" / f"version_{v}" for v in (0, 1)}
    assert all(Path(t.logger.log_dir).is_dir() for t in (first, second))  # claimed on disk, not just in memory
    assert built([*args, "--trainer.logger.version", "7"]).trainer.logger.version == 7  # an explicit one wins
    # the claim is this process's: the config it saves still says "next free version", so a run started
    # again from that config.yaml claims a new folder instead of writing into this one
    assert built(args).config.trainer.logger.init_args.version is None


def test_claimed_versions_nothing_was_written_to_are_released(tmp_path):
    from zoo.cli import release_unused_versions

    args = ["--config", REPO / "configs" / "lenet_reduced_mnist.yaml", "--trainer.logger", "CSVLogger",
            "--trainer.logger.save_dir", tmp_path]
    used, unused = (Path(built(args).trainer.logger.log_dir) for _ in range(2))
    (used / "metrics.csv").write_text("epoch\n")
    release_unused_versions()  # what happens at exit: a run that failed before logging leaves no empty folder
    assert used.is_dir() and not unused.exists()


def test_only_the_rank_zero_process_claims_a_version(tmp_path, monkeypatch):
    monkeypatch.setattr("zoo.cli.rank_zero_only.rank", 1)  # a DDP child re-running the command
    built(["--config", REPO / "configs" / "lenet_reduced_mnist.yaml", "--trainer.logger", "CSVLogger",
           "--trainer.logger.save_dir", tmp_path])
    assert not list(tmp_path.rglob("version_*"))


def test_results_file_keeps_the_metrics_when_provenance_fails(tmp_path, monkeypatch):
    def broken():
        raise RuntimeError("no git here")

    monkeypatch.setattr("zoo.cli.provenance", broken)
    cli = built(["--config", REPO / "configs" / "lenet_reduced_mnist.yaml", "--trainer.logger", "false",
                 "--trainer.default_root_dir", tmp_path, "--run.results_file", tmp_path / "r.json"])
    cli.trainer.callback_metrics["val/acc"] = torch.tensor(0.5)
    cli._write_results()
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["metrics"] == {"val/acc": 0.5} and "no git here" in record["provenance"]["error"]
    assert record["config"]["data"]["init_args"]["batch_size"] == 128


def test_bf16_mixed_precision_on_cpu(fsdd_root, tmp_path):
    cli = run_cli(["fit", *small_cbam_args(fsdd_root, tmp_path, "--trainer.max_epochs", "1",
                                           "--trainer.precision", "bf16-mixed"), *csv_logger(tmp_path)])
    assert cli.trainer.precision == "bf16-mixed"
    assert torch.isfinite(cli.trainer.callback_metrics["test/loss"])
    x = cli.datamodule.on_after_batch_transfer(next(iter(cli.datamodule.test_dataloader())), 0)[0]
    with torch.no_grad(), cli.trainer.precision_plugin.forward_context():  # the context every step ran in
        assert cli.model(x).dtype == torch.bfloat16, "the convolutions must run in bf16, not silently in fp32"
    assert cli.model(x).dtype == torch.float32  # and the weights stay fp32 outside it


def test_two_process_cpu_ddp(fsdd_root, tmp_path):
    results = tmp_path / "ddp.json"
    args = ["fit", *small_cbam_args(fsdd_root, tmp_path, "--trainer.max_epochs", "1",
                                    "--trainer.accelerator", "cpu", "--trainer.devices", "2",
                                    "--trainer.strategy", "ddp", "--run.results_file", results),
            *csv_logger(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "zoo", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world_size=2" in proc.stderr + proc.stdout or "distributed_backend=gloo" in proc.stderr + proc.stdout
    assert "test/acc" in json.loads(results.read_text())["metrics"]


def test_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="fsdd"):
        run_cli(["fit", *small_cbam_args(tmp_path / "nowhere", tmp_path, "--trainer.max_epochs", "1"),
                 *csv_logger(tmp_path)])


def test_enable_checkpointing_false_drops_the_default_checkpoint(fsdd_root, tmp_path):
    results = tmp_path / "results.json"
    cli = run_cli(["fit", *small_cbam_args(fsdd_root, tmp_path, "--trainer.max_epochs", "1",
                                           "--trainer.enable_checkpointing", "false",
                                           "--run.results_file", results), *csv_logger(tmp_path)])
    assert cli.trainer.checkpoint_callback is None
    assert not list(tmp_path.rglob("*.ckpt"))
    metrics = json.loads(results.read_text())
    assert metrics["best_checkpoint"] is None and "test/acc" in metrics["metrics"]  # tested the final weights


@pytest.mark.parametrize("progress_bar", [False, True])
def test_step_values_are_logged_only_where_shown(progress_bar, tmp_path):
    """Per-step ``self.log`` calls are skipped on steps that neither the logger nor a bar would show."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from zoo.nets.lenet import LeNet5
    from zoo.tasks.classifier import Classifier, step_is_shown

    class Recorder(Classifier):
        def training_step(self, batch, batch_idx):
            self.shown = getattr(self, "shown", []) + [step_is_shown(self)]
            return super().training_step(batch, batch_idx)

    data = DataLoader(TensorDataset(torch.randn(14, 1, 28, 28), torch.arange(14) % 10), batch_size=2)
    model = Recorder(LeNet5())
    trainer = L.Trainer(max_epochs=2, log_every_n_steps=3, accelerator="cpu", enable_checkpointing=False,
                        enable_progress_bar=progress_bar, enable_model_summary=False,
                        logger=L.pytorch.loggers.CSVLogger(tmp_path))
    trainer.fit(model, data)
    if progress_bar:
        assert all(model.shown)
    else:  # the logger writes every 3rd step (global steps 2, 5, 8, 11 of 0..13)
        assert [i for i, s in enumerate(model.shown) if s] == [2, 5, 8, 11]
    assert 0.0 <= float(trainer.callback_metrics["train/acc"]) <= 1.0  # epoch-level, computed once
    assert step_is_shown(Classifier(LeNet5()))  # outside a trainer every value counts


@pytest.mark.parametrize("mode", ["min", "max"])
def test_last_checkpoint_follows_every_epoch_after_the_best(mode, tmp_path):
    """The best epoch follows the module's own monitor mode; last.ckpt must hold the latest epoch even
    when the monitored metric stopped improving."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from zoo.callbacks import BestCheckpoint
    from zoo.nets.lenet import LeNet5
    from zoo.tasks.classifier import Classifier

    class GetsWorse(Classifier):
        monitor = ("val/worse", mode)

        def on_validation_epoch_end(self):  # best at epoch 0, never again
            self.log("val/worse", float(self.current_epoch) * (1 if mode == "min" else -1))

    data = DataLoader(TensorDataset(torch.randn(8, 1, 28, 28), torch.arange(8) % 10), batch_size=4)
    ckpt = BestCheckpoint(dirpath=tmp_path)
    L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
              num_sanity_val_steps=0, callbacks=[ckpt]).fit(GetsWorse(LeNet5()), data, data)
    assert Path(ckpt.best_model_path).name == "best-epoch00.ckpt"
    assert load_checkpoint(tmp_path / "last.ckpt")["epoch"] == 2


def test_entry_points_draw_to_files_unless_mplbackend_says_otherwise(monkeypatch):
    import matplotlib
    import matplotlib.pyplot as plt

    from zoo.figures import use_file_backend

    before = matplotlib.get_backend()
    try:
        plt.switch_backend("svg")
        monkeypatch.setenv("MPLBACKEND", "svg")
        use_file_backend()
        assert matplotlib.get_backend().lower() == "svg"
        monkeypatch.delenv("MPLBACKEND")
        use_file_backend()
        assert matplotlib.get_backend().lower() == "agg"
    finally:
        plt.switch_backend(before)


@pytest.mark.parametrize("given, expected", [("1", 1), ("3", 3), ("1.0", 1.0), ("0.25", 0.25)])
def test_int_trainer_limits_mean_batches_and_decimals_fractions(given, expected, tmp_path):
    """As in Lightning's Python API: ``limit_train_batches=1`` is one batch, ``1.0`` all of them."""
    config = tmp_path / "limits.yaml"
    config.write_text(f"trainer:\n  limit_val_batches: {given}\n  overfit_batches: {given}\n")
    trainer = built(["--config", REPO / "configs" / "lenet_reduced_mnist.yaml", "--config", config,
                     "--trainer.logger", "false", "--trainer.limit_train_batches", given,
                     "--trainer.limit_test_batches", given]).trainer
    for value in (trainer.limit_train_batches, trainer.limit_val_batches, trainer.limit_test_batches,
                  trainer.overfit_batches):
        assert value == expected and type(value) is type(expected)


def test_non_finite_loss_stops_the_run_naming_the_learning_rate(tmp_path):
    from test_resume import write_mnist

    from zoo.callbacks import NonFiniteLossError

    results = tmp_path / "r.json"
    with pytest.raises(NonFiniteLossError, match=r"training loss became NaN .*epoch 0, batch \d.*AdamW lr=1e\+06.*lower it"):
        run_cli(["fit", "--config", REPO / "configs" / "lenet_reduced_mnist.yaml",
                 "--data.data_dir", write_mnist(tmp_path / "data"), "--data.real_per_class", "12",
                 "--data.test_per_class", "5", "--data.batch_size", "16", "--model.optimizer.init_args.lr", "1e6",
                 "--trainer.logger", "false", "--trainer.default_root_dir", tmp_path, "--trainer.max_epochs", "5",
                 "--trainer.enable_progress_bar", "false", "--run.results_file", results])
    assert not results.exists()  # a diverged run reports no metrics


def test_results_file_is_valid_json_when_a_metric_is_nan(tmp_path):
    cli = built(["--config", REPO / "configs" / "lenet_reduced_mnist.yaml", "--trainer.logger", "false",
                 "--trainer.default_root_dir", tmp_path, "--run.results_file", tmp_path / "r.json"])
    cli.trainer.callback_metrics.update({"val/loss": torch.tensor(float("nan")), "val/acc": torch.tensor(0.5)})
    cli._write_results()

    def no_constants(name):
        raise ValueError(f"{name} is not JSON")

    record = json.loads((tmp_path / "r.json").read_text(), parse_constant=no_constants)
    assert record["metrics"] == {"val/loss": None, "val/acc": 0.5}


def test_ckpt_path_of_an_old_zoo_names_the_converter(tmp_path):
    """A zoo 0.1 checkpoint given to --ckpt_path fails before LightningCLI reads its hyperparameters."""
    import torch

    from zoo.cli import check_ckpt_path

    old = tmp_path / "old.ckpt"
    torch.save({"hyper_parameters": {"_class_path": "zoo.audio_cnn.CNN", "channels": [8, 8, 8, 8]},
                "state_dict": {}}, old)
    with pytest.raises(ValueError, match=r"--ckpt_path .*old\.ckpt was written before .*zoo\.audio_cnn\.CNN.*"
                                         r"python -m zoo\.tools\.convert_checkpoint --src .*old\.ckpt"):
        check_ckpt_path(old, None)
    new = tmp_path / "new.ckpt"
    torch.save({"hyper_parameters": {"_class_path": "zoo.tasks.classifier.Classifier"}, "state_dict": {}}, new)
    check_ckpt_path(new, None)  # today's checkpoints pass


def test_model_settings_a_checkpoint_replaces_are_named_once_each():
    """What ``--ckpt_path`` names on stderr: a changed value at its own key, a block that differs as a whole
    (``null`` against a scheduler, another optimizer class) once, and nothing for values that only look
    different (tuple and list, path and string, NaN and NaN) or settings the checkpoint does not record."""
    from pathlib import Path

    from jsonargparse import Namespace

    from zoo.cli import model_settings_replaced

    adamw = {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.002, "betas": (0.9, 0.999)}}
    now = Namespace(class_path="zoo.tasks.classifier.Classifier", init_args=Namespace(
        net=Namespace(class_path="zoo.nets.convnet.ConvNet", init_args=Namespace(channels=[8, 16], pool_height=8)),
        optimizer=Namespace(class_path="torch.optim.AdamW", init_args=Namespace(lr=0.5, betas=[0.9, 0.999])),
        scheduler=None, judge=Path("/m/j.ckpt"), margin=float("nan"), mixup=0.0, only_in_command=3))
    saved = {"_class_path": "zoo.tasks.classifier.Classifier", "_instantiator": "x",
             "net": {"class_path": "zoo.nets.convnet.ConvNet", "init_args": {"channels": (8, 16), "pool_height": 1}},
             "optimizer": adamw, "scheduler": {"class_path": "torch.optim.lr_scheduler.StepLR", "init_args": {}},
             "judge": "/m/j.ckpt", "margin": float("nan"), "mixup": 0.0}
    assert model_settings_replaced(saved, now) == [
        "model.init_args.net.init_args.pool_height: 8 (command) -> 1 (checkpoint)",
        "model.init_args.optimizer.init_args.lr: 0.5 (command) -> 0.002 (checkpoint)",
        "model.init_args.scheduler: None (command) -> torch.optim.lr_scheduler.StepLR(...) (checkpoint)"]
    other = {**saved, "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.5}}}
    assert "model.init_args.optimizer: torch.optim.AdamW(...) (command) -> torch.optim.SGD(...) (checkpoint)" \
        in model_settings_replaced(other, now)
    assert model_settings_replaced({**saved, "_class_path": "zoo.tasks.gan.GAN"}, now) == [
        "model: zoo.tasks.classifier.Classifier(...) (command) -> zoo.tasks.gan.GAN(...) (checkpoint)"]
    assert model_settings_replaced(None, now) == [] and model_settings_replaced(saved, None) == []
