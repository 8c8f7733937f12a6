"""Every experiment config in ``configs/`` must survive a ``fast_dev_run`` (fit then test).

New configs are covered automatically. A config that needs something a test must build first
(e.g. a checkpoint to load) gets it from ``tests/config_hooks/<config_stem>.py``, which defines
``extra_args(tmp_path: Path) -> list[str]``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from lightning.pytorch.utilities.model_helpers import is_overridden

from conftest import CONFIGS, run_cli

CONFIG_FILES = sorted(CONFIGS.glob("*.yaml"))
HOOKS = Path(__file__).parent / "config_hooks"


def extra_args(config: Path, tmp_path: Path) -> list[str]:
    hook = HOOKS / f"{config.stem}.py"
    if not hook.exists():
        return []
    spec = importlib.util.spec_from_file_location(f"config_hook_{config.stem}", hook)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.extra_args(tmp_path))


def test_there_are_configs():
    assert CONFIG_FILES, f"no configs found in {CONFIGS}"


@pytest.mark.parametrize("config", CONFIG_FILES, ids=[c.stem for c in CONFIG_FILES])
def test_config_fast_dev_run(config: Path, tmp_path: Path, config_data):
    common = ["--config", config, "--trainer.fast_dev_run", "2", "--trainer.accelerator", "cpu",
              "--trainer.default_root_dir", tmp_path, "--trainer.enable_progress_bar", "false",
              *extra_args(config, tmp_path)]
    cli = run_cli(["fit", *common, "--run.test_after_fit", "false"])
    assert cli.trainer.state.finished, "fit did not finish"
    ckpt = cli.trainer.checkpoint_callback
    if ckpt is not None and ckpt.dirpath:  # a smoke run writes no checkpoint (it could replace a real run's)
        assert not list(Path(ckpt.dirpath).glob("*.ckpt")), sorted(Path(ckpt.dirpath).glob("*.ckpt"))
    assert "train/loss" in cli.trainer.callback_metrics or any(
        k.startswith("train/") for k in cli.trainer.callback_metrics), sorted(cli.trainer.callback_metrics)
    if is_overridden("test_step", cli.model):
        results = run_cli(["test", *common]).trainer.callback_metrics
        assert any(k.startswith("test/") for k in results), sorted(results)
