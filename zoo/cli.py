"""``python -m zoo fit|validate|test|predict --config configs/<name>.yaml``.

A thin :class:`~lightning.pytorch.cli.LightningCLI` in subclass mode. Before parsing, every module
of the ``zoo`` and ``datamodules`` packages is imported so that each LightningModule and
LightningDataModule can be chosen by its short class name (``--model Classifier --model.net zoo.nets.convnet.ConvNet``).

Defaults a user expects, all overridable from a config or the command line:

* W&B logging that needs no account: offline unless ``WANDB_MODE=online`` (or
  ``--trainer.logger.init_args.offline false``). ``--trainer.logger CSVLogger`` or
  ``TensorBoardLogger`` switch backends. Runs get a readable name and the ``--run.group`` /
  ``--run.tags`` of the config, and the full resolved config is stored with the run.
* ``checkpoint``: best checkpoint on the module's own ``monitor`` metric, plus ``last.ckpt``.
* ``lr_monitor``: learning rate per epoch; a progress bar (Lightning's default).
* ``--run.test_after_fit`` (on): ``fit`` ends by testing the best checkpoint, so one command
  gives the final ``test/`` metrics; ``--run.results_file out.json`` stores them for scripts.
* ``seed_everything: 0`` so that a config is a reproducible experiment.
* ``predict --ckpt_path ... --data.predict_path FILES``: predictions on a user's own files, printed
  and written to ``--run.predictions_file`` (:class:`~zoo.callbacks.PredictionWriter`).
* With ``--ckpt_path`` (any subcommand), LightningCLI builds the model from the checkpoint's own
  hyperparameters, which its weights need; each model setting of the command that they override is named
  on stderr (:func:`check_ckpt_path`).
* Resume: ``fit --config X --ckpt_path <run>/checkpoints/last.ckpt`` continues the *same* run: the
  checkpoint records each logger's version (:class:`~zoo.callbacks.ResumeState`), so CSV/TensorBoard
  logs stay in their ``version_N``, W&B continues its run id (``resume="allow"``, offline too), the
  checkpoint folder is the same one (ModelCheckpoint keeps its best score), and the random generators
  are restored, so the metrics equal an uninterrupted run's (``tests/test_resume.py``).
  ``--ckpt_path last`` is the newest ``last.ckpt`` of the run this command describes:
  ``--checkpoint.dirpath D``: ``D/last.ckpt``; CSV/TensorBoard first logger: any
  ``<save_dir>/<group>/<name>/version_*/checkpoints/`` (only the given ``version`` when one is set);
  W&B: any ``<save_dir>/<project>/<id>/checkpoints/`` whose ``config.yaml`` has the same run name and
  group (only the given ``id`` when one is set); no logger: ``<default_root_dir>/checkpoints/``. When
  there is none, ``fit`` says where it looked and trains from scratch; ``validate|test|predict`` fail.
* ``WANDB_RUN_ID`` (set by a W&B sweep agent for each run, or by a user re-running a run): the W&B logger
  uses that id (unless ``--trainer.logger.init_args.id`` is given), so the run's folder is
  ``<save_dir>/<project>/<WANDB_RUN_ID>/`` (config, checkpoints), and ``fit`` resumes from that folder's
  ``last.ckpt`` by itself into the same W&B run: a preempted sweep run that is started again continues.
  The folder's ``config.yaml`` must be this command's config; a different experiment under the same id
  is refused, naming the folder and the settings that differ (:func:`config_differences`). In a sweep
  (``WANDB_SWEEP_ID``), a SIGTERM marks the W&B run preempting and exits with 143, so that W&B requeues it
  under its id (:class:`MarkPreempting`).
* ``--run.artifacts true``: the resolved config (``config-<run id>``, type ``config``) and the checkpoints
  (Lightning's ``log_model``: ``model-<run id>``, type ``model``, alias ``best`` on the best one) are
  logged as W&B artifacts, offline too (stored with the offline run, uploaded by ``wandb sync``).
* A NaN or infinite training loss stops the run naming the learning rate
  (:class:`~zoo.callbacks.StopOnNonFiniteLoss`); the results file never holds NaN (null instead).
* ``int | float`` trainer options read an integer as a number of batches and a decimal as a
  fraction, as Lightning's Python API does: ``--trainer.limit_train_batches 1`` is one batch,
  ``1.0`` all of them (:func:`zoo.compat.prefer_int_over_float`).
"""

from __future__ import annotations

import atexit
import fnmatch
import importlib
import json
import math
import os
import pkgutil
import signal
import sys
import time
from pathlib import Path

import yaml
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.model_helpers import is_overridden

from zoo import compat
from zoo.callbacks import BestCheckpoint, PredictionWriter, ResumeState, SafeLearningRateMonitor, StopOnNonFiniteLoss
from zoo.figures import use_file_backend
from zoo.safe_load import load_checkpoint

PACKAGES = ("zoo", "datamodules")
_SKIP = {"zoo.cli", "zoo.__main__", "zoo.tools"}


def import_all(packages=PACKAGES) -> list[str]:
    """Import every module of the zoo so LightningCLI can resolve short class names."""
    names = []
    for pkg_name in packages:
        pkg = importlib.import_module(pkg_name)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=pkg_name + "."):
            if info.name in _SKIP or info.name.startswith("zoo.tools.") or info.name.rsplit(".", 1)[-1].startswith("_"):
                continue
            importlib.import_module(info.name)
            names.append(info.name)
    return names


def _expand(path) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(str(path))))  # as TensorBoard resolves its log_dir


_CLAIMED: list[Path] = []


def claim_version(parent: Path) -> int:
    """Create and return the next free ``parent/version_N``.

    Lightning picks the version when the logger is first asked and creates the folder only when it
    first writes, seconds later; two runs started together (two folds of one study) both got
    ``version_0`` and interleaved their metrics and checkpoints. ``mkdir`` either creates the folder
    or fails, so exactly one process gets each version. A claimed folder that is still empty when the
    process ends (the run failed before writing, or never logged) is removed again.
    """
    parent = _expand(parent)
    parent.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name[8:]) for p in parent.glob("version_*") if p.name[8:].isdigit()]
    version = max(taken, default=-1) + 1
    while True:
        try:
            (parent / f"version_{version}").mkdir()
        except FileExistsError:
            version += 1
            continue
        if not _CLAIMED:
            atexit.register(release_unused_versions)
        _CLAIMED.append(parent / f"version_{version}")
        return version


def release_unused_versions() -> None:
    """Remove the claimed version folders nothing was written to."""
    while _CLAIMED:
        try:
            _CLAIMED.pop().rmdir()  # only succeeds on an empty folder
        except OSError:
            pass


def check_ckpt_path(path, model_cfg) -> None:
    """Before LightningCLI reads the checkpoint's hyperparameters into the config: a checkpoint of zoo < 0.2
    (one LightningModule per network) fails with the command that converts it, and every model setting of
    this command that the checkpoint's own values will replace is named on stderr.

    Why name them: LightningCLI builds the model from the checkpoint's hyperparameters (so that its weights
    fit), which silently drops what the command said, e.g. ``--model.init_args.net.init_args.pool_height 8``
    on predict or a new learning rate on a resumed fit."""
    from zoo.checkpoints import refuse_legacy

    hp = load_checkpoint(path, hint="pass a checkpoint written by `python -m zoo fit`").get("hyper_parameters")
    refuse_legacy(hp, path, "--ckpt_path")
    replaced = model_settings_replaced(hp, model_cfg)
    if replaced:
        print(f"--ckpt_path {path}: the model is built with the checkpoint's own settings, which its weights need; "
              f"these of this command (its config, arguments or defaults) are not used: {'; '.join(replaced)}",
              file=sys.stderr)


def model_settings_replaced(saved, model_cfg) -> list[str]:
    """``model.<key>: <now> (command) -> <saved> (checkpoint)`` for every model setting that a checkpoint's
    hyperparameters (``saved``) give another value than the parsed ``model_cfg`` (``class_path``/``init_args``:
    the command's config, arguments and defaults). Where a whole block differs (another class, or ``null``
    against a ``class_path`` block) the block is named once; settings the checkpoint does not record are not."""
    if not isinstance(saved, dict) or model_cfg is None:
        return []
    now = _plain(model_cfg.as_dict() if hasattr(model_cfg, "as_dict") else dict(model_cfg))
    theirs = _plain({"class_path": saved.get("_class_path", now.get("class_path")),
                     "init_args": {k: v for k, v in saved.items() if not k.startswith("_")}})
    out: list[str] = []
    _differences(theirs, now, "model", out)
    return out


def _differences(saved, now, key: str, out: list[str]) -> None:
    if saved == now or (saved != saved and now != now):  # NaN is NaN
        return
    same_class = not isinstance(saved, dict) or not isinstance(now, dict) or saved.get("class_path") == now.get("class_path")
    if isinstance(saved, dict) and isinstance(now, dict) and same_class:
        for k in sorted(saved.keys() & now.keys()):
            _differences(saved[k], now[k], f"{key}.{k}", out)
    elif isinstance(saved, list) and isinstance(now, list) and len(saved) == len(now) \
            and any(isinstance(v, (dict, list)) for v in saved + now):
        for i, (a, b) in enumerate(zip(saved, now)):
            _differences(a, b, f"{key}.{i}", out)
    else:
        out.append(f"{key}: {_short(now)} (command) -> {_short(saved)} (checkpoint)")


def _plain(value):
    """A setting as YAML holds it: lists for tuples, strings for paths, dicts for namespaces (a checkpoint
    and a parsed config may store the same value either way)."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _short(value) -> str:
    """A value for the note: a ``class_path`` block by its class, anything else as its repr (at most 80 chars)."""
    if isinstance(value, dict) and "class_path" in value:
        return f"{value['class_path']}(...)"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def provenance() -> dict:
    """Git commit (with a flag for uncommitted changes) and the versions that decide a run's numbers."""
    import platform
    import subprocess

    import lightning
    import torch
    import torchmetrics

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True,
                                  text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    # changed or new code and configs (docs and results do not change what a run computes)
    changed = git("status", "--porcelain", "--untracked-files=all", "--", "*.py", "*.yaml", "*.yml", "*.toml")
    return {"git_commit": commit, "git_dirty": bool(changed) if commit else None,
            "python": platform.python_version(), "torch": torch.__version__, "lightning": lightning.__version__,
            "torchmetrics": torchmetrics.__version__}


def wandb_offline_default() -> bool:
    return os.environ.get("WANDB_MODE", "offline").lower() not in ("online", "run")


def _is_wandb(logger) -> bool:
    return type(logger).__name__ == "WandbLogger"


def _configured_loggers(cfg) -> list:
    """The ``class_path``/``init_args`` namespaces of the configured loggers (none for true/false/null)."""
    logger = cfg.trainer.get("logger")
    if logger is None or isinstance(logger, bool):
        return []
    return [lg for lg in (logger if isinstance(logger, list) else [logger]) if hasattr(lg, "class_path")]


def _finite(value):
    """``value`` with every NaN or infinite float replaced by None: JSON has no NaN, and a reader that
    meets the ``NaN`` Python writes fails (or, worse, tabulates it)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def wandb_run_id() -> str | None:
    """The W&B run this process was started for: ``WANDB_RUN_ID`` (a sweep agent sets it for each run it
    starts, and wandb itself would log to it); None when unset or empty."""
    return os.environ.get("WANDB_RUN_ID") or None


# settings that may differ between the pieces of one run: where it resumes from, and whether it logs online
_NOT_THE_EXPERIMENT = ("ckpt_path", "trainer.logger.*.offline", "trainer.logger.*.mode")


def _flat(value, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict) and value:
        return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}{key}.").items()}
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return {k: v for i, item in enumerate(value) for k, v in _flat(item, f"{prefix}{i}.").items()}
    return {prefix[:-1]: value}


def config_differences(saved: dict, current: dict) -> list[str]:
    """``key: saved -> current`` for every setting (dotted key) two resolved configs disagree on, except
    those that do not change the experiment (``ckpt_path``, the logger's ``offline`` / ``mode``)."""
    a, b = _flat(saved), _flat(current)
    return [f"{k}: {a.get(k, '<unset>')!r} -> {b.get(k, '<unset>')!r}" for k in sorted(a.keys() | b.keys())
            if a.get(k) != b.get(k) and not any(fnmatch.fnmatchcase(k, p) for p in _NOT_THE_EXPERIMENT)]


def _wandb_project_dir(args) -> Path:
    """``<save_dir>/<project>``: where WandbLogger puts each run's ``<id>/`` folder (config, checkpoints)."""
    return _expand(args.save_dir or ".") / str(args.get("project") or "lightning_logs")


def _same_wandb_run(config_file: Path, name: str | None, group: str | None) -> bool:
    """Whether the config a W&B run saved next to its checkpoints names this run (name and group)."""
    try:
        saved = yaml.safe_load(config_file.read_text()) or {}
        logger = saved["trainer"]["logger"]
        logger = logger[0] if isinstance(logger, list) else logger
        return logger["init_args"].get("name") == name and (saved.get("run") or {}).get("group") == group
    except (OSError, yaml.YAMLError, KeyError, TypeError, IndexError, AttributeError):
        return False


def log_config_artifact(run, path: Path) -> None:
    """Log the resolved config file as the W&B artifact ``config-<run id>`` (type ``config``, file
    ``config.yaml``): a run's exact settings stay with it on the W&B server, next to its ``model`` artifacts.
    Offline, wandb keeps a copy with the run and ``wandb sync`` uploads it."""
    import wandb

    artifact = wandb.Artifact(f"config-{run.id}", type="config", metadata={"source": str(path)})
    artifact.add_file(str(path), name="config.yaml")
    run.log_artifact(artifact)


class LoggerSaveConfigCallback(SaveConfigCallback):
    """Also stores the full resolved config with the run (W&B config panel + ``zoo_config.yaml`` run file).

    With W&B first, Lightning would write ``config.yaml`` to the logger's ``save_dir``, one file that every
    run overwrites; it goes to the run's own folder instead, ``<save_dir>/<project>/<run id>/``, where its
    checkpoints also go unless ``--checkpoint.dirpath`` sends them elsewhere.
    """

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._per_run = self.save_to_log_dir and bool(trainer.loggers) and _is_wandb(trainer.loggers[0])
        if self._per_run:
            self.save_to_log_dir = False  # written per run by save_config
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer, pl_module, stage: str) -> None:
        text = self.parser.dump(self.config, skip_none=False)
        config = yaml.safe_load(text)
        for i, logger in enumerate(trainer.loggers):
            if _is_wandb(logger):
                run = logger.experiment
                run.config.update(config, allow_val_change=True)
                Path(run.dir, "zoo_config.yaml").write_text(text)
                if i == 0 and getattr(self, "_per_run", False):
                    run_dir = Path(logger.save_dir or ".", str(logger.name), str(logger.version))
                    run_dir.mkdir(parents=True, exist_ok=True)
                    (run_dir / self.config_filename).write_text(text)
                if (config.get("run") or {}).get("artifacts"):
                    log_config_artifact(run, Path(run.dir, "zoo_config.yaml"))
            else:
                logger.log_hyperparams({"config": config})


class MarkPreempting(Callback):
    """In a W&B sweep (``WANDB_SWEEP_ID`` set), a run stopped by SIGTERM (preemption, a time limit: Lightning
    stops at the end of the batch with ``SIGTERMException``) marks its W&B run as preempting, and :func:`main`
    exits with status 143 instead of Lightning's 0: W&B then requeues the run under the same id, and the
    agent that gets it starts it again, which resumes from its ``last.ckpt`` (``WANDB_RUN_ID``)."""

    marked = False  # read by main(): a marked run must not exit 0, or W&B counts it as finished

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or not os.environ.get("WANDB_SWEEP_ID"):
            return
        for logger in trainer.loggers:
            if _is_wandb(logger):
                logger.experiment.mark_preempting()
                MarkPreempting.marked = True


class ZooCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--run.name", type=str | None, default=None,
                            help="Run name for the logger (default: <Model>-<Data>-seed<N>); CSV and "
                                 "TensorBoard logs go to <group>/<name>/version_N when it is given.")
        parser.add_argument("--run.group", type=str | None, default=None,
                            help="Group of runs belonging to one study (W&B group).")
        parser.add_argument("--run.tags", type=list[str], default=[], help="Tags for filtering runs on W&B.")
        parser.add_argument("--run.test_after_fit", type=bool, default=True,
                            help="After fit, test the best checkpoint so one command yields test/ metrics.")
        parser.add_argument("--run.results_file", type=str | None, default=None,
                            help="Write the final val/ and test/ metrics of this run to this JSON file.")
        parser.add_argument("--run.artifacts", type=bool, default=False,
                            help="W&B: also log the resolved config (artifact config-<run id>) and the checkpoints "
                                 "(model-<run id>, alias 'best' on the best one) as W&B artifacts; offline they "
                                 "are stored with the run and uploaded by `wandb sync`.")
        parser.add_argument("--run.predictions_file", type=str | None, default=None,
                            help="predict: write one CSV row per file here (classifiers: path,prediction,"
                                 "probability[,label][,speaker][,error],probability_<class>... (every class's, 6 decimals); image "
                                 "generators such as AudioToImageVAE: path,image[,prediction,probability][,label][,error]"
                                 "[,probability_<class>...], with the PNGs in <stem>_images/ and a "
                                 "contact sheet <stem>_montage.png beside it); the table and, for files in "
                                 "class-named folders, the accuracy are printed either way. Without "
                                 "--data.predict_path SpokenDigits predicts its test split, with each "
                                 "clip's label and speaker, and the table adds each class's recall and each "
                                 "speaker's accuracy.")
        parser.add_lightning_class_args(BestCheckpoint, "checkpoint")
        parser.add_lightning_class_args(SafeLearningRateMonitor, "lr_monitor")
        parser.set_defaults({"lr_monitor.logging_interval": "epoch"})
        compat.prefer_int_over_float(parser)  # --trainer.limit_train_batches 1 is one batch, 1.0 all of them

    def parse_arguments(self, parser, args) -> None:
        given = sys.argv[1:] if args is None else args
        self._command = ["python", "-m", "zoo", *map(str, given)] if isinstance(given, (list, tuple)) else None
        super().parse_arguments(parser, args)
        # before LightningCLI reads the checkpoint's hyperparameters: `last` must be a file by then
        subcommand = self.config.get("subcommand")
        cfg = self.config[subcommand] if subcommand else self.config
        self._fill_logger_defaults(cfg)
        folders = self._wandb_env_folders(cfg) if subcommand else None
        if subcommand == "fit" and folders and cfg.get("ckpt_path") in (None, "last"):
            cfg.ckpt_path = self._resume_wandb_env_run(cfg, subcommand, *folders)
        elif subcommand and cfg.get("ckpt_path") == "last":
            cfg.ckpt_path = self._last_checkpoint(cfg, subcommand)
        if subcommand and cfg.get("ckpt_path") and Path(cfg.ckpt_path).is_file():
            check_ckpt_path(cfg.ckpt_path, cfg.get("model"))

    def _fill_logger_defaults(self, cfg) -> None:
        """Loggers write under ``default_root_dir`` unless given a ``save_dir``; runs get the zoo's names
        (``Classifier-ConvNet-SpokenDigits-seed0``: the task, its net, the data)."""
        model = str(cfg.model.class_path).rsplit(".", 1)[-1] if cfg.get("model") else "model"
        net = cfg.model.get("init_args", {}).get("net") if cfg.get("model") else None
        if net is not None and net.get("class_path"):
            model += "-" + str(net.class_path).rsplit(".", 1)[-1]
        data = str(cfg.data.class_path).rsplit(".", 1)[-1] if cfg.get("data") else "data"
        name = cfg.run.name or f"{model}-{data}-seed{cfg.seed_everything}"
        root = cfg.trainer.get("default_root_dir")
        for lg in _configured_loggers(cfg):
            args = lg.init_args
            if "save_dir" in args and args.save_dir in (None, ".") and root:  # not given: files go under root
                args.save_dir = str(root)
            if lg.class_path.endswith("WandbLogger"):
                args.name = args.get("name") or name
                if cfg.run.get("artifacts") and not args.get("log_model"):
                    args.log_model = True  # Lightning logs the checkpoints when training ends
                if cfg.run.group:
                    args.group = cfg.run.group
                if cfg.run.tags:
                    args.tags = list(cfg.run.tags)
            elif lg.class_path.endswith(("CSVLogger", "TensorBoardLogger")):
                if args.get("name") in (None, "lightning_logs"):
                    # <group>/<run name>/version_N: a named run never overwrites another one's logs
                    args.name = "/".join(part for part in (cfg.run.group, cfg.run.name) if part) or name

    def _last_checkpoint(self, cfg, subcommand: str) -> str | None:
        """``--ckpt_path last``: the newest ``last.ckpt`` of the run this command describes (module docstring)."""
        root = _expand(cfg.trainer.get("default_root_dir") or ".")
        loggers, logger = _configured_loggers(cfg), cfg.trainer.get("logger")
        if cfg.checkpoint.get("dirpath"):
            dirs, where = [_expand(cfg.checkpoint.dirpath)], str(_expand(cfg.checkpoint.dirpath))
        elif logger is False or (isinstance(logger, list) and not loggers):
            dirs, where = [root / "checkpoints"], str(root / "checkpoints")
        elif not loggers:  # null/true: Lightning's default logger, <root>/lightning_logs/version_N
            where = f"{root}/lightning_logs/version_*/checkpoints"
            dirs = list(root.glob("lightning_logs/version_*/checkpoints"))
        elif loggers[0].class_path.endswith("WandbLogger"):
            args = loggers[0].init_args
            base = _wandb_project_dir(args)
            run_id = args.get("id") or wandb_run_id()
            if run_id:
                dirs, where = [base / run_id / "checkpoints"], str(base / run_id / "checkpoints")
            else:
                dirs = [d / "checkpoints" for d in base.glob("*")
                        if _same_wandb_run(d / "config.yaml", args.name, cfg.run.group)]
                where = f"{base}/*/checkpoints of W&B runs named {args.name!r} in group {cfg.run.group!r}"
        else:
            args = loggers[0].init_args
            base = _expand(args.save_dir or ".") / str(args.get("name") or "lightning_logs")
            version = args.get("version")
            folder = "version_*" if version is None else version if isinstance(version, str) else f"version_{version}"
            dirs, where = list(base.glob(f"{folder}/checkpoints")), f"{base}/{folder}/checkpoints"
        found = [d / "last.ckpt" for d in dirs if (d / "last.ckpt").is_file()]
        if found:
            return str(max(found, key=lambda p: p.stat().st_mtime_ns))
        if subcommand != "fit":
            raise FileNotFoundError(f"--ckpt_path last: no last.ckpt of this run in {where}")
        print(f"--ckpt_path last: no last.ckpt of this run in {where}; training from scratch", file=sys.stderr)
        return None

    def _wandb_env_folders(self, cfg) -> tuple[Path, Path] | None:
        """``(run folder, checkpoint folder)`` of the run ``WANDB_RUN_ID`` names, when that id decides them: the
        first logger is W&B and is given no id of its own. The run folder holds its ``config.yaml``; the
        checkpoints are in its ``checkpoints/`` unless ``--checkpoint.dirpath`` puts them elsewhere."""
        loggers, run_id = _configured_loggers(cfg), wandb_run_id()
        if not run_id or not loggers or not loggers[0].class_path.endswith("WandbLogger") \
                or loggers[0].init_args.get("id"):
            return None
        args = loggers[0].init_args
        run_dir = _wandb_project_dir(args) / run_id
        return run_dir, _expand(cfg.checkpoint.dirpath) if cfg.checkpoint.get("dirpath") else run_dir / "checkpoints"

    def _resume_wandb_env_run(self, cfg, subcommand: str, run_dir: Path, ckpt_dir: Path) -> str | None:
        """``fit`` under ``WANDB_RUN_ID``: the ``last.ckpt`` of that run's folder when there is one (None: from
        scratch), once the folder's saved config is this command's.

        Why by itself, without ``--ckpt_path last``: a sweep agent (or a requeued job) starts a preempted run
        again with the same command and id; starting it from scratch would overwrite its checkpoints and
        log a second history into the same W&B run. Why the config check: the id alone does not say the
        experiment is the same (a reused id, an edited command); continuing another one would be silent."""
        last, saved = ckpt_dir / "last.ckpt", run_dir / "config.yaml"
        how = f"WANDB_RUN_ID={wandb_run_id()}"
        if saved.is_file():
            current = yaml.safe_load(self.parser.dump(self.config, skip_none=False))[subcommand]
            differ = config_differences(yaml.safe_load(saved.read_text()) or {}, current)
            if differ:
                raise ValueError(
                    f"{how}: {run_dir} holds a run of another experiment; its config.yaml and this command differ "
                    f"in (saved -> now):\n  " + "\n  ".join(differ[:10]) + ("\n  ..." if len(differ) > 10 else "")
                    + f"\nRun this command under another WANDB_RUN_ID, or move {run_dir} away to start the id anew.")
        elif last.is_file():
            raise ValueError(f"{how}: {last} exists but {saved} does not, so it cannot be checked to be this "
                             f"experiment; pass --ckpt_path {last} to continue it anyway, or move it away.")
        if last.is_file():
            print(f"{how}: resuming from {last} (same W&B run, same folder)", file=sys.stderr)
            return str(last)
        if cfg.get("ckpt_path") == "last":
            print(f"--ckpt_path last: no last.ckpt of this run in {ckpt_dir}; training from scratch", file=sys.stderr)
        return None

    def _resumed_loggers(self, ckpt_path: str) -> list[dict]:
        """The logger versions a checkpoint recorded (:class:`~zoo.callbacks.ResumeState`)."""
        state = load_checkpoint(ckpt_path, hint="pass a checkpoint written by `python -m zoo fit`")
        self._resumed_epoch = int(state.get("epoch", 0))
        loggers = (state.get("callbacks") or {}).get(ResumeState.__name__, {}).get("loggers")
        if loggers is None:
            print(f"{ckpt_path} does not record its run (written before the zoo did): the resumed run logs to a "
                  "new version", file=sys.stderr)
        return loggers or []

    def before_instantiate_classes(self) -> None:
        cfg = self._cfg()
        loggers = _configured_loggers(cfg)
        resumed = self._resumed_loggers(cfg.ckpt_path) if self.subcommand == "fit" and cfg.get("ckpt_path") else []
        claimed: dict[Path, int] = {}  # a CSV and a TensorBoard logger of one run share their version
        self._claimed_versions = []  # (init_args, key, value before): for this process only, restored afterwards

        def claim(args, key: str, value) -> None:
            self._claimed_versions.append((args, key, args.get(key)))
            setattr(args, key, value)

        for i, lg in enumerate(loggers):
            args, kind = lg.init_args, lg.class_path.rsplit(".", 1)[-1]
            before = resumed[i]["version"] if i < len(resumed) and resumed[i].get("type") == kind else None
            if kind == "WandbLogger":
                run_id = wandb_run_id() or before
                if run_id is not None and not args.get("id"):  # the same W&B run continues (or the agent's)
                    if before not in (None, run_id):
                        print(f"{cfg.ckpt_path} was written by W&B run {before}; it continues as W&B run "
                              f"{run_id} (WANDB_RUN_ID)", file=sys.stderr)
                    claim(args, "id", run_id)
                    claim(args, "resume", "allow")
                if args.get("log_model") and args.get("offline"):
                    # Lightning refuses log_model with offline=True ("cannot be uploaded"), yet an offline
                    # run stores artifacts and `wandb sync` uploads them: ask wandb itself for offline mode
                    claim(args, "offline", False)
                    claim(args, "mode", "offline")
            elif kind in ("CSVLogger", "TensorBoardLogger") and args.get("version") is None:
                if before is not None:  # the same version folder continues
                    claim(args, "version", before)
                    self._continued_logs = True
                elif rank_zero_only.rank == 0 and not cfg.trainer.get("fast_dev_run"):
                    parent = _expand(args.save_dir or ".") / args.name
                    if parent not in claimed:
                        claimed[parent] = claim_version(parent)
                    claim(args, "version", claimed[parent])

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        # the claimed version was for this process only: the saved config keeps "next free version", so a
        # run started again from it (`--config .../config.yaml`) claims its own instead of reusing this one
        for args, key, value in reversed(getattr(self, "_claimed_versions", [])):
            setattr(args, key, value)
        if getattr(self, "_continued_logs", False) and rank_zero_only.rank == 0:
            for logger in self.trainer.loggers:  # one metrics.csv for the whole run
                if type(logger).__name__ == "CSVLogger":
                    compat.continue_csv_log(logger, self._resumed_epoch)

    def instantiate_trainer(self, **kwargs):
        """As LightningCLI's, but ``--trainer.enable_checkpointing false`` drops the default checkpoint
        callback instead of failing on it, and predict has none: it saves nothing, and restored from a
        checkpoint written elsewhere it would only warn that its folder changed."""
        config = {**compat.cli_get(self, self.config_init, "trainer", default={}), **kwargs}
        callbacks = [compat.cli_get(self, self.config_init, key) for key in compat.cli_parser(self).callback_keys]
        if self.subcommand == "predict":
            config["enable_checkpointing"] = False
            callbacks.append(PredictionWriter(self._cfg().run.predictions_file))
        if config.get("enable_checkpointing") is False:
            callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
        callbacks += [ResumeState(), StopOnNonFiniteLoss(), MarkPreempting()]
        return compat.cli_build_trainer(self, config, callbacks)

    def _cfg(self):
        """The parsed config of the running subcommand (the whole config when built without one)."""
        return self.config[self.subcommand] if self.subcommand else self.config

    def before_fit(self) -> None:
        self._started = time.perf_counter()

    def after_fit(self) -> None:
        run = self._cfg().run
        # the last epoch's train/ and val/ values (test/ ones below are of the best checkpoint), and the
        # wall time of fit (training + validation) and of test: the columns a study table reports
        self._fit_metrics = {**self._scalar_metrics(("train/", "val/")),
                             "train/seconds": time.perf_counter() - self._started}
        if run.test_after_fit and is_overridden("test_step", self.model) and self.datamodule is not None \
                and is_overridden("test_dataloader", self.datamodule):
            best = getattr(self.trainer.checkpoint_callback, "best_model_path", "") if not self.trainer.fast_dev_run else ""
            self.before_test()
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path="best" if best else None)
            self._fit_metrics["test/seconds"] = time.perf_counter() - self._test_started
        self._write_results()

    def before_test(self) -> None:
        self._test_started = time.perf_counter()

    def after_test(self) -> None:
        self._fit_metrics = {"test/seconds": time.perf_counter() - self._test_started}
        self._write_results()

    def after_validate(self) -> None:
        self._write_results()

    def _scalar_metrics(self, prefixes: tuple[str, ...]) -> dict[str, float]:
        return {k: float(v) for k, v in self.trainer.callback_metrics.items()
                if k.startswith(prefixes) and getattr(v, "numel", lambda: 1)() == 1}

    def _write_results(self) -> None:
        path = self._cfg().run.results_file
        if not path or not self.trainer.is_global_zero:
            return
        metrics = {**getattr(self, "_fit_metrics", {}), **self._scalar_metrics(("val/", "test/"))}
        callback = self.trainer.checkpoint_callback
        ckpt = getattr(callback, "best_model_path", None)
        score = getattr(callback, "best_model_score", None)
        # val/ metrics are those of the last epoch; test/ ones are of the best checkpoint, whose
        # own validation score is recorded separately so the two are never confused.
        best = {"monitor": callback.monitor, "score": float(score)} if score is not None else None
        cfg = self._cfg()
        record = {"metrics": metrics, "best_checkpoint": ckpt or None, "best": best,
                  "epochs": self.trainer.current_epoch, "seed": cfg.get("seed_everything"), "command": self._command}
        if getattr(self.model, "last_test_confusion", None) is not None:
            record["confusion_matrix"] = self.model.last_test_confusion
            record["per_class"] = getattr(self.model, "last_test_per_class", None)
        # enough to redo the run without the logger's files; a failure here must not cost the metrics
        try:
            record["provenance"] = provenance()
        except Exception as e:  # noqa: BLE001
            record["provenance"] = {"error": repr(e)}
        try:
            record["config"] = yaml.safe_load(compat.cli_parser(self).dump(cfg, skip_none=False))
        except Exception as e:  # noqa: BLE001
            record["config"] = {"error": repr(e)}
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(_finite(record), indent=2, default=str, allow_nan=False))


def default_trainer() -> dict:
    return {
        "default_root_dir": "runs",
        "logger": {
            "class_path": "lightning.pytorch.loggers.WandbLogger",
            "init_args": {"project": "zoo", "offline": wandb_offline_default()},  # save_dir: default_root_dir
        },
    }


def main(args: list[str] | None = None, run: bool = True) -> ZooCLI:
    import_all()
    use_file_backend()
    MarkPreempting.marked = False
    try:
        return ZooCLI(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=0,
            trainer_defaults=default_trainer(),
            save_config_callback=LoggerSaveConfigCallback,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            args=args,
            run=run,
        )
    except SIGTERMException:
        # Lightning ends a terminated fit with SystemExit(None), exit status 0; W&B requeues a preempting
        # sweep run only when it exits with another status
        if MarkPreempting.marked:
            raise SystemExit(128 + signal.SIGTERM) from None
        raise


if __name__ == "__main__":
    main()
