"""The few private Lightning (and jsonargparse) internals the zoo relies on, one function each.

Why a module of its own: a Lightning release may rename or change any of these without notice. With
every use here, an upgrade is checked by ``tests/test_compat.py`` (one test per function, asserting
the behaviour the zoo needs) and fixed in one place. Checked against Lightning 2.6.6 (the 2.6.x line
``make install`` pins) and jsonargparse 4.53.
"""

from __future__ import annotations

import csv
import typing
from pathlib import Path
from typing import Any


# --- Trainer / LightningModule ---------------------------------------------------------------------
def attached_trainer(module) -> Any | None:
    """The module's trainer, or None outside one (``LightningModule.trainer`` raises when detached)."""
    return module._trainer


def logger_updates_now(trainer) -> bool:
    """Whether the loggers write the values logged in this training step (every ``log_every_n_steps``).

    Lightning decides this in ``trainer._logger_connector.should_update_logs`` and has no public
    accessor; per-step ``self.log`` calls are skipped when nothing would write them (their cost is
    measured in ``benchmarks/bench_lenet_loop.py``). Without the connector every value is logged.
    """
    connector = getattr(trainer, "_logger_connector", None)
    return bool(getattr(connector, "should_update_logs", True))


def count_manual_optimizer_step(trainer) -> None:
    """Count one optimizer step of a manual-optimisation module that stepped no torch optimizer.

    ``trainer.global_step`` is the manual loop's ``optim_step_progress``, which only moves when a
    Lightning-wrapped optimizer steps; ModelCheckpoint skips saving when ``global_step`` did not move,
    so a module that fits something else (an SVM) counts its fit here to get its checkpoint written.
    """
    progress = trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
    progress.increment_ready()
    progress.increment_completed()


def forget_initial_hparams(module, keys) -> None:
    """Drop ``keys`` from the copy of the hyperparameters Lightning keeps for the loggers.

    ``save_hyperparameters`` deep-copies the arguments into ``_hparams_initial`` (no public setter); for
    a task built from Python that copy would hold a second, stale copy of its net.
    """
    initial = getattr(module, "_hparams_initial", None)
    for key in keys:
        if initial is not None:
            initial.pop(key, None)


# --- ModelCheckpoint ----------------------------------------------------------------------------------
def checkpoint_can_save(callback, trainer) -> bool:
    """False where ModelCheckpoint itself would not save: fast_dev_run, outside fit, sanity check, or
    already saved at this global step (``ModelCheckpoint._should_skip_saving_checkpoint``)."""
    return not callback._should_skip_saving_checkpoint(trainer)


def checkpoint_saves_on_train_epoch_end(callback, trainer) -> bool:
    """Whether the callback saves at train-epoch end (True: no validation, or one at the end of every
    epoch) or after each validation (False: several a epoch, or not every epoch), as decided by
    ``ModelCheckpoint._should_save_on_train_epoch_end``."""
    return callback._should_save_on_train_epoch_end(trainer)


def save_last_checkpoint(callback, trainer) -> None:
    """Write (or overwrite) the callback's ``last.ckpt`` now, with the metrics of this moment
    (``ModelCheckpoint._save_last_checkpoint`` with ``_monitor_candidates``)."""
    callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))


# --- loggers -----------------------------------------------------------------------------------------
def continue_csv_log(logger, last_epoch: int) -> int:
    """Let a CSVLogger continue the ``metrics.csv`` already in its version folder; returns the rows kept.

    Lightning's writer deletes an existing ``metrics.csv`` when it starts (``_ExperimentWriter.
    _check_log_dir_exists``), which would erase the history of a resumed run. The rows up to and
    including ``last_epoch`` (the checkpoint's) are read first and written back; rows of the epoch the
    interruption cut short are dropped, as the resumed run logs that epoch again. The writer's
    ``metrics_keys`` is set to the file's header so that its later appends line up.
    """
    path = Path(logger.log_dir) / "metrics.csv"
    if not path.is_file():
        return 0
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        header, rows = list(reader.fieldnames or []), list(reader)
    keep = [r for r in rows if not r.get("epoch") or int(float(r["epoch"])) <= last_epoch]
    writer = logger.experiment  # created now: this is where Lightning removes the file
    with open(path, "w", newline="") as fh:
        out = csv.DictWriter(fh, fieldnames=header)
        out.writeheader()
        out.writerows(keep)
    writer.metrics_keys = sorted(header)
    return len(keep)


# --- data loading --------------------------------------------------------------------------------
def with_sampler(loader, sampler):
    """``loader`` rebuilt with ``sampler`` in place of its own, as Lightning rebuilds every loader under DDP
    (``lightning.pytorch.utilities.data._update_dataloader``). The tests compare the zoo's device-resident
    shards with what this gives: the batches a DataLoader would serve each process."""
    from lightning.pytorch.utilities.data import _update_dataloader

    return _update_dataloader(loader, sampler)


# --- LightningCLI --------------------------------------------------------------------------------
def cli_get(cli, config, key: str, default: Any = None) -> Any:
    """``config[<subcommand>][key]`` (or ``config[key]`` without subcommands): ``LightningCLI._get``."""
    return cli._get(config, key, default=default)


def cli_parser(cli):
    """The parser of the running subcommand (the main parser without one): ``LightningCLI._parser``."""
    return cli._parser(cli.subcommand)


def cli_build_trainer(cli, config: dict, callbacks: list):
    """``Trainer(**config)`` with ``callbacks`` added to the configured ones, as LightningCLI builds it
    (``LightningCLI._instantiate_trainer``: it also appends the save-config callback)."""
    return cli._instantiate_trainer(config, callbacks)


def build_as_cli(cls: type, config: dict):
    """``cls`` built from a ``config`` dict (nets as ``{"class_path", "init_args"}``) the way LightningCLI
    builds it, so its hyperparameters are the config and its checkpoints load by themselves.

    LightningCLI does this with ``_given_hyperparameters_context`` (private); a Python user or a test that
    wants CLI-equivalent checkpoints without a command line uses this instead.
    """
    from lightning.pytorch.cli import instantiate_module
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters_context

    with _given_hyperparameters_context(hparams={"_class_path": f"{cls.__module__}.{cls.__qualname__}", **config},
                                        instantiator="lightning.pytorch.cli.instantiate_module"):
        return instantiate_module(cls, config)


# --- jsonargparse --------------------------------------------------------------------------------
def prefer_int_over_float(parser, prefix: str = "trainer.") -> list[str]:
    """Make ``int | float`` options under ``prefix`` try ``int`` first; returns the keys changed.

    ``typing`` caches unions by equality and ``Union[int, float] == Union[float, int]``, so once any
    import has spelled ``Optional[Union[float, int]]``, the Trainer's ``limit_train_batches:
    Optional[Union[int, float]]`` comes back float-first and jsonargparse (which tries the members in
    order) reads ``1`` as ``1.0``: 100 % of the batches instead of one. Lightning's Python API means a
    number of batches by an int and a fraction by a float; a flat ``Union[...]`` built in int-first order
    has its own cache key, so the parser gets the order back. The type hint lives in jsonargparse's
    ``ActionTypeHint._typehint``.
    """
    changed = []
    for action in parser._actions:
        hint = getattr(action, "_typehint", None)
        if not action.dest.startswith(prefix) or typing.get_origin(hint) is not typing.Union:
            continue
        members = typing.get_args(hint)
        if int in members and float in members and members.index(float) < members.index(int):
            ordered = (int, float, *(m for m in members if m not in (int, float)))
            action._typehint = typing.Union.__getitem__(ordered)
            changed.append(action.dest)
    return changed
