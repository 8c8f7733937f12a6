"""W&B runs beyond one process (issue 17): a run started under ``WANDB_RUN_ID`` (a sweep agent's run, or a
preempted run started again with its id) resumes from its own folder into the same W&B run, refusing
another experiment under that id; ``--run.artifacts`` logs the config and the best checkpoint as W&B
artifacts offline. Everything runs offline (``WANDB_MODE=offline``): what an offline run logged is read
back from its transaction log (``offline-run-*/run-<id>.wandb``), which ``wandb sync`` uploads later."""

from __future__ import annotations

import json
import os
import signal
import struct
import time
import zlib
from pathlib import Path

import pytest
import torch
import yaml

from conftest import CONFIGS, run_cli
from test_resume import lenet_args, mnist_root  # noqa: F401 - mnist_root is a fixture
from zoo.tasks.classifier import Classifier
from zoo.tools.grid import load_grid
from zoo.tools.launchers import sweep_command_lines, sweep_configs


def wandb_records(run_dir: Path, timeout: float = 30.0) -> list:
    """The records of a finished offline run's transaction log, parsed with wandb's own protobuf; waits (up to
    ``timeout`` s) for its ``exit`` record, as wandb's service may still be writing the file after ``finish``."""
    deadline = time.monotonic() + timeout
    while True:
        records = _read_log(run_dir)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def _read_log(run_dir: Path) -> list:
    """The records written so far. The file is a LevelDB-style log (what wandb's writer produces): a 7-byte
    header (``:W&B``, magic, version), then 32 KiB blocks of chunks, each a 7-byte header (CRC32 of its type
    byte and bytes, length, type: 1 full, 2 first, 3 middle, 4 last) and its bytes; a block's tail shorter
    than a chunk header is padding. Reading stops at a chunk not (completely) written yet."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("run-*.wandb")
    data, block, pos, records, parts = path.read_bytes(), 32768, 7, [], b""
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # padding at the end of a block
            pos += block - pos % block
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        if len(chunk) < length or zlib.crc32(bytes([kind]) + chunk) != crc:
            break  # being written
        parts += chunk
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(parts)
            records.append(record)
            parts = b""
    return records


def artifacts(run_dir: Path) -> list:
    return [r.artifact for r in wandb_records(run_dir) if r.WhichOneof("record_type") == "artifact"]


def offline_runs(save_dir: Path, run_id: str) -> list[Path]:
    return sorted((save_dir / "wandb").glob(f"offline-run-*-{run_id}"))


# --- one run id, one run: resumed after an interruption, another experiment refused ---------------------
def global_steps(run_dir: Path) -> list[int]:
    """The ``trainer/global_step`` of every history row an offline run logged."""
    return [int(json.loads(item.value_json)) for r in wandb_records(run_dir) if r.WhichOneof("record_type") == "history"
            for item in r.history.item if list(item.nested_key) == ["trainer/global_step"]]


def sweep_line(root: Path, out: Path, tmp_path: Path) -> list[str]:
    """The command line a W&B agent would run for the first point of a tiny grid's sweep (after ``python -m zoo``)."""
    args = [str(a) for a in lenet_args(root, out, "--trainer.max_epochs", "2", "--run.test_after_fit", "false",
                                       "--trainer.logger.init_args.save_dir", out / "wb")[3:]]
    grid = {"config": str(CONFIGS / "lenet_reduced_mnist.yaml"), "group": "g-sweep", "seeds": [0],
            "axes": {"model.init_args.net.init_args.dropout": [0.3]}, "args": args, "out": str(out / "grid")}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    (sweep,) = sweep_configs(load_grid(path), "grid").values()
    return sweep_command_lines(sweep)[0]


@pytest.fixture
def agent_env(monkeypatch):
    """The environment ``wandb agent`` gives the run it starts (WANDB_RUN_ID, WANDB_SWEEP_ID), seen by wandb itself.

    wandb reads its environment once per process (``wandb.setup``) and ignores later changes: its session is
    ended before (so it reads these) and after (so later tests do not run as this sweep run)."""
    import wandb

    wandb.teardown()
    monkeypatch.setenv("WANDB_RUN_ID", "abc123")
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep9")
    yield monkeypatch
    wandb.teardown()


def terminate_at(monkeypatch, epoch: int, batch: int) -> None:
    """SIGTERM to this process at (epoch, batch), as SLURM or a spot VM sends it before preemption."""
    step = Classifier.training_step

    def terminated(self, b, batch_idx):
        if (self.current_epoch, batch_idx) == (epoch, batch):
            os.kill(os.getpid(), signal.SIGTERM)
        return step(self, b, batch_idx)

    monkeypatch.setattr(Classifier, "training_step", terminated)


def test_a_preempted_sweep_run_started_again_under_its_id_resumes_and_another_experiment_is_refused(
        mnist_root, tmp_path, agent_env):  # noqa: F811
    """The agent's command, terminated in epoch 1 (SIGTERM): the W&B run is marked preempting and the process exits
    with 143, so W&B requeues it under its id. Started again with the same WANDB_RUN_ID, it continues from its
    last.ckpt (epoch 0) into the same W&B run and folder and ends after epoch 1; the same id with another setting
    is refused naming the folder and the setting."""
    import wandb

    out = tmp_path / "out"
    line = sweep_line(mnist_root, out, tmp_path)
    assert "--ckpt_path" not in line and not any("init_args.id" in a for a in line)  # nothing run-specific
    run_dir = out / "wb" / "zoo" / "abc123"
    try:
        with agent_env.context() as m:
            terminate_at(m, epoch=1, batch=2)  # Lightning stops at the end of this batch
            with pytest.raises(SystemExit) as stopped:
                run_cli(line)
        assert stopped.value.code == 143
        wandb.finish()
        (piece,) = offline_runs(out / "wb", "abc123")
        assert [r for r in wandb_records(piece) if r.WhichOneof("record_type") == "preempting"]
        assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
        # W&B names an offline run's folder by the second it started; a requeued run starts seconds later, and on a
        # fast machine this test would otherwise restart within the same second and write into the first folder
        time.sleep(1.1)
        resumed = run_cli(line)  # the same command, as the agent would start it again
        run = resumed.trainer.logger.experiment
        assert resumed.config.fit.ckpt_path == str(run_dir / "checkpoints" / "last.ckpt")
        assert run.id == "abc123" and run.settings.mode in ("offline", "dryrun")
        assert Path(resumed.trainer.checkpoint_callback.dirpath) == run_dir / "checkpoints"
        assert resumed.trainer.current_epoch == 2  # epochs 0 (before) and 1 (now): max_epochs reached
        assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
        assert resumed.config.fit.trainer.logger.init_args.id is None  # the saved config does not pin the id
        wandb.finish()
        # both pieces logged to the one W&B run (offline: two offline-run-*-abc123 folders, synced into one run),
        # the second from the step where the checkpoint was (8 batches an epoch) on
        pieces = offline_runs(out / "wb", "abc123")
        assert len(pieces) == 2 and sorted((out / "wb" / "wandb").glob("offline-run-*")) == pieces  # no other id
        first, second = (global_steps(p) for p in pieces)
        assert min(first) == 0 and min(second) >= 8 and max(second) == resumed.trainer.global_step - 1 == 15
        assert not any(artifacts(p) for p in pieces)  # --run.artifacts is off by default: nothing logged
        # started once more (the agent died after the end): the run's config, saved again by the resumed piece,
        # is still this command's, and nothing is trained twice
        again = run_cli(line)
        assert again.config.fit.ckpt_path == str(run_dir / "checkpoints" / "last.ckpt")
        assert again.trainer.current_epoch == 2 and again.trainer.global_step == resumed.trainer.global_step
        wandb.finish()
        # the same id with another experiment: refused before anything runs, naming the folder and the setting
        agent_env.delenv("WANDB_SWEEP_ID")  # a user re-running it by hand
        other = [*line, "--model.init_args.net.init_args.dropout=0.1"]
        with pytest.raises(ValueError, match=r"(?s)WANDB_RUN_ID=abc123: .*abc123 holds a run of another experiment.*"
                                             r"model.init_args.net.init_args.dropout: 0.3 -> 0.1"):
            run_cli(other)
    finally:
        wandb.finish()


def test_a_checkpoint_under_the_id_without_its_config_is_not_resumed_blindly(tmp_path, monkeypatch):
    """A last.ckpt in the id's folder with no config.yaml (not written by this zoo) cannot be checked: refused,
    with the explicit --ckpt_path that continues it anyway."""
    ckpt = tmp_path / "wb" / "zoo" / "xyz789" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"not read")
    monkeypatch.setenv("WANDB_RUN_ID", "xyz789")
    with pytest.raises(ValueError, match=rf"WANDB_RUN_ID=xyz789: {ckpt} exists but .*config.yaml does not.*"
                                         rf"--ckpt_path {ckpt}"):
        run_cli(["fit", "--config", CONFIGS / "lenet_reduced_mnist.yaml",
                 "--trainer.logger.init_args.save_dir", tmp_path / "wb"])


def test_the_agents_run_id_names_the_logger(tmp_path, monkeypatch):
    """WANDB_RUN_ID is the W&B logger's id (for this process: the saved config does not pin it); an explicit id wins."""
    from test_cli import built

    monkeypatch.setenv("WANDB_RUN_ID", "agent42")
    base = ["--config", CONFIGS / "lenet_reduced_mnist.yaml", "--trainer.logger.init_args.save_dir", tmp_path]
    cli = built(base)
    assert cli.trainer.logger.version == "agent42" and cli.config.trainer.logger.init_args.id is None
    assert built([*base, "--trainer.logger.init_args.id", "mine"]).trainer.logger.version == "mine"


def test_only_a_terminated_sweep_run_is_marked_preempting(monkeypatch):
    """Outside a sweep, or for another exception, a run is not marked (and exits as before)."""
    from types import SimpleNamespace
    from unittest import mock

    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from zoo.cli import MarkPreempting

    WandbLogger = type("WandbLogger", (), {})  # the CLI recognises W&B loggers by class name
    logger = WandbLogger()
    logger.experiment = mock.Mock()
    trainer = SimpleNamespace(loggers=[logger])
    monkeypatch.setattr(MarkPreempting, "marked", False)
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    MarkPreempting().on_exception(trainer, None, SIGTERMException())
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep9")
    MarkPreempting().on_exception(trainer, None, RuntimeError("a bug"))
    assert not MarkPreempting.marked and not logger.experiment.mark_preempting.called
    MarkPreempting().on_exception(trainer, None, SIGTERMException())
    assert MarkPreempting.marked and logger.experiment.mark_preempting.call_count == 1


def test_config_differences_name_each_setting_but_not_where_a_run_resumes_from():
    from zoo.cli import config_differences

    saved = {"ckpt_path": None, "trainer": {"max_epochs": 2, "logger": {"init_args": {"offline": True, "id": None}}},
             "checkpoint": {"mode": "max"}}
    now = {"ckpt_path": "x/last.ckpt", "checkpoint": {"mode": "min"},
           "trainer": {"max_epochs": 3, "logger": {"init_args": {"offline": False, "id": None}}}}
    assert config_differences(saved, now) == ["checkpoint.mode: 'max' -> 'min'", "trainer.max_epochs: 2 -> 3"]
    assert config_differences(saved, saved) == []


# --- artifacts ----------------------------------------------------------------------------------------
def test_run_artifacts_logs_the_config_and_the_best_checkpoint_offline(mnist_root, tmp_path):  # noqa: F811
    import wandb

    assert "WANDB_RUN_ID" not in os.environ

    cli = run_cli(lenet_args(mnist_root, tmp_path, "--trainer.max_epochs", "2", "--run.test_after_fit", "false",
                             "--trainer.logger.init_args.save_dir", tmp_path / "wb", "--run.artifacts", "true"))
    try:
        run_id = cli.trainer.logger.experiment.id
        assert cli.trainer.logger.experiment.settings.mode in ("offline", "dryrun")
        best = Path(cli.trainer.checkpoint_callback.best_model_path)
        # the saved config keeps offline: true (the switch to wandb's own offline mode was for this process)
        saved = yaml.safe_load((tmp_path / "wb" / "zoo" / run_id / "config.yaml").read_text())
        assert saved["trainer"]["logger"]["init_args"]["offline"] is True and saved["run"]["artifacts"] is True
    finally:
        wandb.finish()
    (piece,) = offline_runs(tmp_path / "wb", run_id)
    logged = artifacts(piece)
    models = [a for a in logged if a.type == "model"]
    (config,) = [a for a in logged if a.type == "config"]
    assert config.name == f"config-{run_id}" and [e.path for e in config.manifest.contents] == ["config.yaml"]
    (best_model,) = [a for a in models if "best" in a.aliases]
    assert best_model.name == f"model-{run_id}" and [e.path for e in best_model.manifest.contents] == ["model.ckpt"]
    assert json.loads(best_model.metadata)["original_filename"] == best.name
    (entry,) = best_model.manifest.contents  # a copy staged for `wandb sync`: later epochs cannot change it
    assert entry.size == best.stat().st_size and Path(entry.local_path).is_file()
