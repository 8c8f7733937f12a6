"""zoo/compat.py: each private Lightning / jsonargparse internal still does what the zoo relies on.

A failure here after an upgrade names the one function to fix."""

from __future__ import annotations

import csv
import typing
from unittest import mock

import lightning as L
import torch
from jsonargparse import ArgumentParser
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from conftest import REPO
from zoo import compat


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 2)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.layer(batch[0]).pow(2).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader(n: int = 8) -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(n, 2)), batch_size=2)


def trainer(tmp_path, **kwargs) -> L.Trainer:
    defaults = dict(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                    enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0)
    return L.Trainer(**{**defaults, **kwargs})


def test_attached_trainer(tmp_path):
    model = Tiny()
    assert compat.attached_trainer(model) is None
    t = trainer(tmp_path, max_steps=1, enable_checkpointing=False)
    t.fit(model, loader())
    assert compat.attached_trainer(model) is t


def test_logger_updates_now_follows_log_every_n_steps(tmp_path):
    seen = []

    class Probe(Callback):
        def on_train_batch_start(self, trainer, *args):
            seen.append(compat.logger_updates_now(trainer))

    trainer(tmp_path, logger=CSVLogger(tmp_path), log_every_n_steps=3, enable_checkpointing=False,
            callbacks=[Probe()], max_epochs=2).fit(Tiny(), loader(14))
    assert [i for i, shown in enumerate(seen) if shown] == [2, 5, 8, 11]
    assert compat.logger_updates_now(object())  # no connector: log everything


def test_count_manual_optimizer_step_moves_global_step(tmp_path):
    class Manual(Tiny):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            if batch_idx % 2 == 0:  # "fits" something of its own every other batch
                compat.count_manual_optimizer_step(self.trainer)

    t = trainer(tmp_path, enable_checkpointing=False)
    t.fit(Manual(), loader(8))
    assert t.global_step == 2


def test_checkpoint_internals(tmp_path):
    seen = {}

    class Probe(Callback):
        def on_train_batch_end(self, trainer, *args):
            cb = trainer.checkpoint_callback
            seen.setdefault("can_save", []).append(compat.checkpoint_can_save(cb, trainer))
            seen["at_train_epoch_end"] = compat.checkpoint_saves_on_train_epoch_end(cb, trainer)
            if trainer.global_step == 2:
                compat.save_last_checkpoint(cb, trainer)
                seen["saved_step"] = torch.load(tmp_path / "a" / "last.ckpt", weights_only=True)["global_step"]
                seen["can_save_after"] = compat.checkpoint_can_save(cb, trainer)

    # no validation: ModelCheckpoint saves at train-epoch end
    last_only = ModelCheckpoint(dirpath=tmp_path / "a", save_last=True)
    trainer(tmp_path, callbacks=[last_only, Probe()]).fit(Tiny(), loader())
    assert seen["can_save"][:2] == [True, True] and seen["at_train_epoch_end"] is True
    assert seen["saved_step"] == 2 and seen["can_save_after"] is False  # already saved at this step
    # validation twice an epoch: after validation; fast_dev_run: never
    trainer(tmp_path, val_check_interval=0.5, callbacks=[ModelCheckpoint(dirpath=tmp_path / "b"), Probe()]).fit(
        Tiny(), loader(), loader())
    assert seen["at_train_epoch_end"] is False
    seen.clear()
    trainer(tmp_path, fast_dev_run=1, callbacks=[ModelCheckpoint(tmp_path / "c"), Probe()]).fit(Tiny(), loader())
    assert seen["can_save"] == [False]


def test_with_sampler_serves_the_samplers_indices_in_the_loaders_batches():
    loader = DataLoader(TensorDataset(torch.arange(10)), batch_size=3, shuffle=True)
    for rank in (0, 1):
        sampler = DistributedSampler(loader.dataset, num_replicas=2, rank=rank, shuffle=True, seed=4)
        batches = [b[0] for b in compat.with_sampler(loader, sampler)]
        assert [len(b) for b in batches] == [3, 2] and torch.cat(batches).tolist() == list(sampler)


def test_cli_internals(tmp_path):
    from zoo.cli import main

    with mock.patch("sys.argv", ["zoo"]):
        cli = main(["--config", str(REPO / "configs" / "lenet_reduced_mnist.yaml"), "--trainer.logger", "false",
                    "--trainer.default_root_dir", str(tmp_path)], run=False)
    assert compat.cli_get(cli, cli.config_init, "trainer")["max_epochs"] == 10
    assert compat.cli_get(cli, cli.config_init, "no_such_key", default="d") == "d"
    parser = compat.cli_parser(cli)
    assert parser is cli.parser and "checkpoint" in parser.callback_keys
    extra = Callback()
    config = {**compat.cli_get(cli, cli.config_init, "trainer"), "max_epochs": 2}
    built = compat.cli_build_trainer(cli, config, [extra])
    assert built.max_epochs == 2 and extra in built.callbacks


def test_prefer_int_over_float():
    parser = ArgumentParser()
    float_first = typing.Union.__getitem__((float, int, type(None)))  # as typing's cache may hand it out
    parser.add_argument("--trainer.limit", type=float_first, default=None)
    parser.add_argument("--model.scale", type=float_first, default=None)
    assert parser.parse_args(["--trainer.limit", "1"]).trainer.limit == 1.0  # the problem
    assert compat.prefer_int_over_float(parser) == ["trainer.limit"]
    parsed = parser.parse_args(["--trainer.limit", "1", "--model.scale", "1"])
    assert type(parsed.trainer.limit) is int and type(parsed.model.scale) is float  # only under the prefix
    assert parser.parse_args(["--trainer.limit", "1.0"]).trainer.limit == 1.0
    assert parser.parse_args(["--trainer.limit", "null"]).trainer.limit is None


def test_continue_csv_log_keeps_the_history_up_to_the_checkpoint(tmp_path):
    first = CSVLogger(tmp_path, name="run", version=0)
    for epoch in (0, 1):
        first.log_metrics({"val/acc": 0.5 + epoch / 10, "epoch": epoch}, step=epoch)
    first.save()
    again = CSVLogger(tmp_path, name="run", version=0)
    assert compat.continue_csv_log(again, last_epoch=0) == 1  # epoch 1 was cut short: logged again below
    again.log_metrics({"val/acc": 0.7, "epoch": 1, "train/loss": 0.1}, step=1)  # a new column, too
    again.save()
    rows = list(csv.DictReader(open(tmp_path / "run" / "version_0" / "metrics.csv")))
    assert [(r["epoch"], r["val/acc"], r.get("train/loss")) for r in rows] == [("0", "0.5", ""), ("1", "0.7", "0.1")]
    assert compat.continue_csv_log(CSVLogger(tmp_path, name="fresh", version=0), last_epoch=0) == 0


def test_forget_initial_hparams_drops_the_loggers_copy():
    class Task(L.LightningModule):
        def __init__(self, net: torch.nn.Module, width: int = 3) -> None:
            super().__init__()
            self.save_hyperparameters()

    task = Task(torch.nn.Linear(2, 2))
    assert "net" in task.hparams_initial
    compat.forget_initial_hparams(task, ["net"])
    assert "net" not in task.hparams_initial and task.hparams_initial["width"] == 3


def test_build_as_cli_records_the_nets_config_so_the_checkpoint_loads_alone(tmp_path):
    from zoo.nets.lenet import LeNet5
    from zoo.tasks.classifier import Classifier

    config = {"net": {"class_path": "zoo.nets.lenet.LeNet5", "init_args": {"dropout": 0.1}}, "label_smoothing": 0.2}
    model = compat.build_as_cli(Classifier, config)
    assert isinstance(model.net, LeNet5) and model.hparams["net"]["init_args"] == {"dropout": 0.1}
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(model, DataLoader(TensorDataset(torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))), batch_size=4))
    trainer.save_checkpoint(tmp_path / "c.ckpt")
    again = Classifier.load_from_checkpoint(tmp_path / "c.ckpt", weights_only=True)  # no net= needed
    assert isinstance(again.net, LeNet5) and again.label_smoothing == 0.2
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(again.eval()(x), model.eval()(x))
