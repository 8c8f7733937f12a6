"""The grid engine behind ``python -m zoo.tools.grid`` and its launchers: grid files, the command of each
run, locks, running one run, summaries (table, heatmap, folds). The grid command (:mod:`zoo.tools.grid`) and
the other back-ends (:mod:`zoo.tools.launchers`) both build on it, so neither imports the other's caller."""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import itertools
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
DEFAULT_COMMAND = [sys.executable, "-m", "zoo", "fit"]
_KNOWN = {"config", "group", "seeds", "metric", "axes", "cells", "args", "out", "logs", "percent", "command",
          "variants", "folds", "search", "slurm"}


@dataclass
class Cell:
    name: str
    overrides: dict[str, Any]


@dataclass
class GridResult:
    """What :func:`run_grid` returns: ``summary[cell] = (mean, std, n)`` of the metric, and every run's record."""

    summary: dict[str, tuple[float, float, int]]
    records: list[dict[str, Any]]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["status"].startswith("failed")]


@dataclass
class GridSpec:
    path: Path
    config: str
    group: str
    seeds: list[int]
    metric: str
    out: Path
    cells: list[Cell]
    keys: list[str]
    args: list[str] = field(default_factory=list)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    folds: str | None = None
    logs: Path | None = None
    percent: bool = False
    command: list[str] = field(default_factory=lambda: list(DEFAULT_COMMAND))
    search: dict[str, Any] = field(default_factory=dict)  # Optuna / W&B random+bayes (zoo.tools.launchers)
    slurm: dict[str, Any] = field(default_factory=dict)  # submitit executor parameters (zoo.tools.launchers)


def _cli_value(value: Any) -> str:
    """A YAML value as jsonargparse reads it back from the command line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def cell_name(overrides: dict[str, Any]) -> str:
    """A file-name-safe, readable id such as ``real_per_class=300_augmented_per_class=1000``."""
    parts = [f"{k.rsplit('.', 1)[-1]}={Path(str(v)).stem if k == 'config' else _cli_value(v)}"
             for k, v in overrides.items()]
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "-", "_".join(parts)) or "base"


def load_grid(path: str | os.PathLike) -> GridSpec:
    """Read and validate a grid YAML; every error names the file and the offending setting."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"grid file {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    unknown = set(raw) - _KNOWN
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; expected some of {sorted(_KNOWN)}")
    for key in ("config", "group", "out"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ValueError(f"{path}: '{key}' must be a non-empty string, got {raw.get(key)!r}")
    config = raw["config"]
    if not Path(config).is_file():
        raise FileNotFoundError(f"{path}: base config {config!r} does not exist (paths are relative to the "
                                f"directory the grid is run from, {Path.cwd()})")
    seeds = raw.get("seeds", [0, 1, 2])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise ValueError(f"{path}: 'seeds' must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{path}: 'seeds' has duplicates: {seeds}")
    for key in ("search", "slurm"):
        if not isinstance(raw.get(key) or {}, dict):
            raise ValueError(f"{path}: '{key}' must be a mapping, got {raw[key]!r}")
    if "axes" in raw and "cells" in raw or not ("axes" in raw or "cells" in raw or raw.get("search")
                                                   or raw.get("variants")):
        raise ValueError(f"{path}: give exactly one of 'axes' (cartesian product) or 'cells' (explicit list)"
                         " (or only 'variants', or only a 'search' space)")
    variants = raw.get("variants") or {}
    if not isinstance(variants, dict) or not all(isinstance(v, dict) or v is None for v in variants.values()):
        raise ValueError(f"{path}: 'variants' must map names to mappings of override keys, got {variants!r}")
    variants = {str(k): dict(v or {}) for k, v in variants.items()}
    if variants and "axes" not in raw and "cells" not in raw:  # a comparison of variants only: one axis
        raw = {**raw, "axes": {"variant": list(variants)}}
        variants_only = True
    else:
        variants_only = False
    if "axes" in raw:
        axes = raw["axes"]
        if not isinstance(axes, dict) or not axes or not all(isinstance(v, list) and v for v in axes.values()):
            raise ValueError(f"{path}: 'axes' must map override keys to non-empty lists of values, got {axes!r}")
        if variants and not variants_only:
            axes = {"variant": list(variants), **axes}
        keys = list(axes)
        combos = [dict(zip(keys, values)) for values in itertools.product(*axes.values())]
    elif "cells" not in raw:  # a search-only grid: the grid itself is the base config's one cell
        keys, combos = [], [{}]
    else:
        combos = raw["cells"]
        if not isinstance(combos, list) or not combos or not all(isinstance(c, dict) for c in combos):
            raise ValueError(f"{path}: 'cells' must be a non-empty list of mappings, got {combos!r}")
        keys = list(dict.fromkeys(k for c in combos for k in c))
    for k in keys:
        if not isinstance(k, str) or k.startswith("-"):
            raise ValueError(f"{path}: override keys are CLI keys without dashes, like 'data.real_per_class'; "
                             f"got {k!r}")
    for c in combos:
        if "config" in c and not Path(c["config"]).is_file():
            raise FileNotFoundError(f"{path}: config {c['config']!r} of a cell does not exist")
        if "variant" in c and c["variant"] not in variants:
            raise ValueError(f"{path}: variant {c['variant']!r} is not one of 'variants': {sorted(variants)}")
    folds = raw.get("folds")
    if folds is not None and folds not in keys:
        raise ValueError(f"{path}: 'folds' must name one of the axes {keys}, got {folds!r}")
    cells = [Cell(cell_name(c), dict(c)) for c in combos]
    names = [c.name for c in cells]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{path}: cells {dupes} appear more than once")
    args = raw.get("args", [])
    if not isinstance(args, list):
        raise ValueError(f"{path}: 'args' must be a list of CLI tokens, got {args!r}")
    command = raw.get("command", DEFAULT_COMMAND)
    if not isinstance(command, list) or not command:
        raise ValueError(f"{path}: 'command' must be a non-empty list, got {command!r}")
    return GridSpec(path=path, config=config, group=raw["group"], seeds=seeds, metric=raw.get("metric", "test/acc"),
                    out=Path(raw["out"]), cells=cells, keys=keys, args=[str(a) for a in args],
                    logs=Path(raw["logs"]) if raw.get("logs") else Path(raw["out"]) / "logs",
                    percent=bool(raw.get("percent", False)), variants=variants, folds=folds,
                    command=[sys.executable if c == "python" else str(c) for c in command],
                    search=dict(raw.get("search") or {}), slurm=dict(raw.get("slurm") or {}))


def run_id(cell: Cell, seed: int) -> str:
    return f"{cell.name}-seed{seed}"


def checkpoint_dir(spec: GridSpec, cell: Cell, seed: int) -> Path:
    """Where a run keeps its checkpoints: a stable folder per run, so an interrupted run finds its last.ckpt."""
    return spec.logs / "checkpoints" / run_id(cell, seed)


def build_command(spec: GridSpec, cell: Cell, seed: int) -> list[str]:
    overrides = dict(cell.overrides)
    config = overrides.pop("config", spec.config)
    if "variant" in overrides:
        overrides = {**spec.variants[overrides.pop("variant")], **overrides}
    cmd = [*spec.command, "--config", config, *spec.args]
    for key, value in overrides.items():
        cmd += [f"--{key}", _cli_value(value)]
    ckpt_dir = checkpoint_dir(spec, cell, seed)
    cmd += ["--seed_everything", str(seed), "--run.group", spec.group,
            "--run.name", f"{spec.group}-{run_id(cell, seed)}",
            "--run.results_file", str(spec.out / "runs" / f"{run_id(cell, seed)}.json"),
            "--checkpoint.dirpath", str(ckpt_dir)]
    if (ckpt_dir / "last.ckpt").is_file():  # interrupted before: continue it
        cmd += ["--ckpt_path", str(ckpt_dir / "last.ckpt")]
    return cmd


def _is_zoo_command(command: list[str]) -> bool:
    return len(command) >= 4 and command[1:3] == ["-m", "zoo"]


def validate_commands(spec: GridSpec) -> int:
    """Parse one command per distinct (config, variant) with the zoo CLI, running nothing; returns how many.

    Each parse carries every override key the cells of that config and variant use (with the first
    value given), the grid's ``args`` and the runner's own options, so a misspelt axis key, a key of
    another model, or a value of the wrong type stops the grid before its first run. Commands other
    than ``python -m zoo ...`` are the user's own programs and are not checked.
    """
    if not _is_zoo_command(spec.command):
        return 0
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for cell in spec.cells:
        key = (cell.overrides.get("config", spec.config), cell.overrides.get("variant", ""))
        merged = groups.setdefault(key, {})
        for k, v in cell.overrides.items():
            merged.setdefault(k, v)
    for (config, variant), overrides in groups.items():
        cmd = build_command(spec, Cell("check", overrides), spec.seeds[0])
        errors = cli_errors(cmd[3:])
        if errors:
            which = f"config {config}" + (f", variant {variant!r}," if variant else "")
            raise ValueError(f"{spec.path}: the runs of {which} would not start, so none was started:\n{errors}")
    return len(groups)


def cli_errors(args: list[str]) -> str:
    """Parse ``python -m zoo <args>`` with the zoo CLI, running nothing: the parser's error (its useful
    lines), or "" when the command would start. Shared by every launcher that checks its commands."""
    from unittest import mock

    from zoo.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), mock.patch("sys.argv", ["zoo"]):
        try:
            main([*args, "--print_config"])
        except SystemExit as e:
            code = e.code
    if code in (0, None):
        refusal = _data_module_refusal(out.getvalue())
        return f"the data module refuses these settings: {refusal}" if refusal else ""
    text = err.getvalue()
    lines = [ln for ln in text[text.find("error:") + 6:].strip().splitlines()
             if ln.strip() and not ln.strip().startswith(_PARSER_NOISE)]
    return "\n".join(lines[:20]) or text.strip()[-2000:] or f"exit status {code}"


_PARSER_NOISE = ("Subtypes:", "Errors:", "Given value type:", "Given value:", "Does not validate against",
                 "- Expected a <class 'NoneType'>")


def _data_module_refusal(printed: str) -> str:
    """Build the DataModule of a parsed command (its constructor reads no files) and return why it refused, or
    "". The parser checks each option alone; combinations (``add_corpus`` with ``target=gender``) are the
    constructor's to refuse, and a grid should hear that before its first run, not from every run's log."""
    from jsonargparse import ArgumentParser
    from lightning.pytorch import LightningDataModule

    try:
        config = yaml.safe_load(printed)
    except yaml.YAMLError:  # something else printed too: the parse passed, and the runs will say the rest
        return ""
    data = config.get("data") if isinstance(config, dict) else None
    if not isinstance(data, dict) or "class_path" not in data:
        return ""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data")
    try:
        # ``instantiate`` since jsonargparse 4.49, which deprecates ``instantiate_classes`` (older ones have only that)
        instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
        instantiate(parser.parse_object({"data": data}))
    except (ValueError, TypeError) as e:
        lines = [ln.strip().removeprefix("- ") for ln in str(e).splitlines()
                 if ln.strip() and not ln.strip().startswith(_PARSER_NOISE)]
        return "\n".join(lines[:5]) or str(e)
    return ""


# Runs a cell's command in the cell's own session (process group) and kills that whole group - the run
# and anything it started, such as DDP workers - as soon as the runner is gone, however it died
# (its parent changes). Polling getppid() needs nothing platform-specific; 0.2 s is soon enough.
_SUPERVISOR = """
import os, signal, subprocess, sys, threading, time
runner = int(sys.argv[1])
def watch():
    while os.getppid() == runner:
        time.sleep(0.2)
    os.killpg(0, signal.SIGKILL)
threading.Thread(target=watch, daemon=True).start()
sys.exit(subprocess.call(sys.argv[2:]))
"""


def threads_per_run(max_parallel: int) -> int | None:
    """CPU threads for each of ``max_parallel`` runs side by side: the cores this process may use, shared out.

    Each PyTorch process otherwise starts one thread per core, so two runs on two cores fight over them
    (docs/scaling.md: two folds side by side took 51-54 s with every core each, 27 s with one). None for one
    run at a time, or when the user has set ``OMP_NUM_THREADS`` themselves."""
    if max_parallel <= 1 or "OMP_NUM_THREADS" in os.environ:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max_parallel)


class _Children:
    """The runs this runner started; :meth:`kill_all` ends them (their whole process groups).

    ``max_parallel``: how many run at once; each gets its share of the cores (:func:`threads_per_run`)."""

    def __init__(self, max_parallel: int = 1) -> None:
        self.max_parallel = max_parallel
        self._procs: set[subprocess.Popen] = set()
        self._lock = threading.RLock()  # also taken in a signal handler, in the thread it may interrupt
        self.stopping = False

    def run(self, cmd: list[str], log, poll=None) -> int | None:
        """Run ``cmd`` to completion with output to ``log``; None when the runner is stopping.

        ``poll()``, when given, is called about once a second while the run lives; when it returns True
        the run's process group is killed (Optuna pruning) and its negative exit status returned."""
        with self._lock:
            if self.stopping:
                return None
            threads = threads_per_run(self.max_parallel)
            env = os.environ | ({"OMP_NUM_THREADS": str(threads)} if threads else {})
            proc = subprocess.Popen([sys.executable, "-c", _SUPERVISOR, str(os.getpid()), *cmd], stdout=log,
                                    stderr=subprocess.STDOUT, env=env, start_new_session=True)
            self._procs.add(proc)
        try:
            while poll is not None:
                try:
                    return proc.wait(timeout=1.0)
                except subprocess.TimeoutExpired:
                    if poll():
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.killpg(proc.pid, signal.SIGKILL)
                        poll = None
            return proc.wait()
        finally:
            with self._lock:
                self._procs.discard(proc)

    def kill_all(self, wait: bool = True) -> None:
        """Kill every run's process group; ``wait=False`` in a signal handler, which may have interrupted
        ``Popen.wait`` (its lock is not reentrant)."""
        with self._lock:
            self.stopping = True
            procs = list(self._procs)
        for proc in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # the run's checkpoints are written at epoch ends
        for proc in procs if wait else ():
            proc.wait()


def _lock_run(path: Path) -> tuple[int | None, str]:
    """Take the lock of a run: ``(fd, "")`` or, when a live process holds it, ``(None, its pid and host)``.

    An ``flock`` on the file: the kernel drops it when its holder dies, however it dies, so a lock left by
    a dead runner is taken over without guessing from pids. The file says who holds it, for people."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip()
            os.close(fd)
            return None, holder or "another process"
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:  # not a file its last holder just removed
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    os.ftruncate(fd, 0)
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {since}\n".encode())
    return fd, ""


def _unlock_run(path: Path, fd: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # while still held: no other runner can be holding this file
    os.close(fd)


def _read_result(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        dict(data.get("metrics", {}))
        return data
    except (OSError, ValueError, AttributeError, TypeError) as e:
        raise ValueError(f"results file {path} is not valid JSON from --run.results_file ({e}); "
                         "delete it to re-run") from e


def _previous_seconds(spec: GridSpec) -> dict[tuple[str, int], Any]:
    """Wall seconds per (cell, seed) from an existing runs.csv: runs finished before the results
    JSON carried its own time."""
    try:
        with open(spec.out / "runs.csv", newline="") as fh:
            return {(row["cell"], int(row["seed"])): float(row["seconds"]) for row in csv.DictReader(fh)
                    if row.get("seconds")}
    except (OSError, KeyError, ValueError):
        return {}


def _run_one(spec: GridSpec, cell: Cell, seed: int, previous: dict[tuple[str, int], Any] | None = None,
             children: _Children | None = None) -> dict[str, Any]:
    previous = previous or {}
    rid = run_id(cell, seed)
    result = spec.out / "runs" / f"{rid}.json"
    log = spec.logs / f"{rid}.log"
    record: dict[str, Any] = {"cell": cell.name, **{k: cell.overrides.get(k, "") for k in spec.keys}, "seed": seed}

    def finished() -> dict[str, Any]:
        data = _read_result(result)
        seconds = data.get("grid", {}).get("seconds", previous.get((cell.name, seed), ""))
        return {**record, "status": "skipped", "returncode": 0, "seconds": seconds, "log": str(log),
                "metrics": dict(data.get("metrics", {}))}

    if result.exists():
        return finished()
    lock_path = log.with_suffix(".lock")
    fd, holder = _lock_run(lock_path)
    if fd is None:
        return {**record, "status": f"running elsewhere ({holder})", "returncode": "", "seconds": "",
                "log": str(log), "metrics": {}}
    try:
        if result.exists():  # finished by another runner while we looked
            return finished()
        return _start(spec, cell, seed, record, result, log, children or _Children())
    finally:
        _unlock_run(lock_path, fd)


def say(message: str) -> None:
    """One line to stdout in a single write: ``print`` writes the text and its newline separately, so two
    runs' threads announcing themselves at once ran their lines together."""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def _start(spec: GridSpec, cell: Cell, seed: int, record: dict[str, Any], result: Path, log: Path,
           children: _Children, poll=None) -> dict[str, Any]:
    rid = run_id(cell, seed)
    cmd = build_command(spec, cell, seed)
    resumed = "--ckpt_path" in cmd
    log.parent.mkdir(parents=True, exist_ok=True)
    say(f"{'resumed' if resumed else 'started'} {rid} (log: {log})")
    start = time.time()
    with open(log, "a" if resumed else "w") as fh:  # a resumed run's log keeps the interrupted part
        fh.write(("\n--- resumed from its last checkpoint ---\n" if resumed else "") + f"$ {' '.join(cmd)}\n\n")
        fh.flush()
        rc = children.run(cmd, fh, poll)
    if rc is None:
        return {**record, "status": "not started (runner stopped)", "returncode": "", "seconds": "",
                "log": str(log), "metrics": {}}
    seconds = round(time.time() - start, 1)
    if rc == 0 and result.exists():
        data = _read_result(result)
        metrics = dict(data.get("metrics", {}))
        # the run's wall time travels with its results, so a re-run that skips it still reports it;
        # replaced in one step, so an interrupt cannot leave half a file
        tmp = result.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({**data, "grid": {"seconds": seconds, "command": cmd}}, indent=2))
        os.replace(tmp, result)
        return {**record, "status": "ok", "returncode": 0, "seconds": seconds, "log": str(log), "metrics": metrics}
    status = "failed" if rc != 0 else "failed (no results file)"
    return {**record, "status": status, "returncode": rc, "seconds": seconds, "log": str(log), "metrics": {}}


def _number(value: Any) -> bool:
    """A usable metric value (a diverged run's results hold null for NaN)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _stats(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def summarize(spec: GridSpec, records: list[dict[str, Any]]) -> dict[str, tuple[float, float, int]]:
    """Write runs.csv, table.md and (two axes) heatmap.png; returns {cell: (mean, std, n)} of the metric."""
    spec.out.mkdir(parents=True, exist_ok=True)
    metric_keys = sorted({k for r in records for k in r["metrics"]})
    fields = ["cell", *spec.keys, "seed", "status", "returncode", "seconds", *metric_keys, "log"]
    with open(spec.out / "runs.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for r in records:
            writer.writerow({**{k: v for k, v in r.items() if k != "metrics"}, **r["metrics"]})
    if metric_keys and spec.metric not in metric_keys:  # runs finished, none of them has it: a typo, not n/a
        raise ValueError(f"{spec.path}: metric {spec.metric!r} is in no run's results; the runs produced "
                         f"{metric_keys} (see {spec.out / 'runs.csv'})")

    scale = 100.0 if spec.percent else 1.0
    fmt = "{:.2f}" if spec.percent else "{:.4f}"
    summary: dict[str, tuple[float, float, int]] = {}
    unit = " (%)" if spec.percent else ""
    names = " | ".join(k.rsplit(".", 1)[-1] for k in spec.keys)
    # the columns the original study tables had: train accuracy and train / test time next to the metric
    extra = [k for k in ("train/acc", "train/seconds", "test/seconds") if k != spec.metric and k in metric_keys]
    titles = {"train/acc": f"train/acc{unit}", "train/seconds": "train s", "test/seconds": "test s"}
    lines = [f"| {names} | {spec.metric}{unit} mean ± std | " + "".join(f"{titles[k]} | " for k in extra)
             + "runs ok | failed |", "|" + "---|" * (len(spec.keys) + 3 + len(extra))]
    for cell in spec.cells:
        rows = [r for r in records if r["cell"] == cell.name]
        values = [r["metrics"][spec.metric] * scale for r in rows if _number(r["metrics"].get(spec.metric))]
        failed = sum(r["status"].startswith("failed") for r in rows)
        cells = [_cli_value(cell.overrides.get(k, "")) for k in spec.keys]
        if values:
            mean, std = _stats(values)
            summary[cell.name] = (mean, std, len(values))
            text = f"{fmt.format(mean)} ± {fmt.format(std)}" if len(values) > 1 else f"{fmt.format(mean)} (1 run)"
        else:
            text = "n/a"
        columns = []
        for key in extra:
            got = [r["metrics"][key] for r in rows if _number(r["metrics"].get(key))]
            if not got:
                columns.append("n/a")
            elif key == "train/acc":
                columns.append(fmt.format(sum(got) / len(got) * scale))
            else:
                columns.append(f"{sum(got) / len(got):.1f}")
        lines.append(f"| {' | '.join(cells)} | {text} | " + "".join(f"{c} | " for c in columns)
                     + f"{len(values)} | {failed} |")
    header = (f"Grid `{spec.path}` (base config `{spec.config}`, W&B group `{spec.group}`), seeds {spec.seeds}; "
              f"std is the sample standard deviation over seeds; train/acc (last epoch) and the wall times of fit "
              f"(train s: training + validation) and test are means over seeds.\n\n")
    (spec.out / "table.md").write_text(header + "\n".join(lines) + "\n")
    if len(spec.keys) == 2:
        heatmap(spec, summary)
    if spec.folds:
        fold_summary(spec, summary)
    return summary


def fold_summary(spec: GridSpec, summary: dict[str, tuple[float, float, int]]) -> Path:
    """``folds.md``: one row per fold, one column per combination of the other axes (each value the
    mean over seeds), then mean ± std over folds and the worst fold; ``confusion_<column>.png``: the
    test confusion matrix of every fold, from the runs' results files (first seed)."""
    fmt = "{:.2f}" if spec.percent else "{:.4f}"
    others = [k for k in spec.keys if k != spec.folds]
    folds = list(dict.fromkeys(_cli_value(c.overrides[spec.folds]) for c in spec.cells))

    def column(cell: Cell) -> str:
        return " ".join(Path(str(cell.overrides[k])).stem if k == "config" else _cli_value(cell.overrides[k])
                        for k in others) or spec.metric

    columns = list(dict.fromkeys(column(c) for c in spec.cells))
    value = {(column(c), _cli_value(c.overrides[spec.folds])): summary[c.name][0]
             for c in spec.cells if c.name in summary}
    lines = [f"| {spec.folds.rsplit('.', 1)[-1]} | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for fold in folds:
        lines.append(f"| {fold} | " + " | ".join(fmt.format(value[(col, fold)]) if (col, fold) in value else "n/a"
                                                 for col in columns) + " |")
    means, worst = [], []
    for col in columns:
        vals = [value[(col, f)] for f in folds if (col, f) in value]
        if not vals:  # a variant not run yet (e.g. outside --only)
            means.append("n/a")
            worst.append("n/a")
            continue
        m, sd = _stats(vals)
        means.append(f"**{fmt.format(m)} ± {fmt.format(sd)}**" + ("" if len(vals) == len(folds) else f" ({len(vals)} folds)"))
        worst.append(fmt.format(min(vals)))
    lines += ["| mean ± std | " + " | ".join(means) + " |", "| worst | " + " | ".join(worst) + " |"]
    text = (f"{spec.metric}{' (%)' if spec.percent else ''} per fold ({spec.folds}), mean over seeds {spec.seeds}; "
            f"std over folds.\n\n" + "\n".join(lines) + "\n")
    path = spec.out / "folds.md"
    path.write_text(text)
    _fold_confusions(spec, folds, columns, column)
    return path


def _fold_confusions(spec: GridSpec, folds: list[str], columns: list[str], column) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    for col in columns:
        mats = {}
        for cell in spec.cells:
            result = spec.out / "runs" / f"{run_id(cell, spec.seeds[0])}.json"
            if column(cell) == col and result.exists():
                cm = _read_result(result).get("confusion_matrix")
                if cm:
                    mats[_cli_value(cell.overrides[spec.folds])] = np.asarray(cm)
        if not mats:
            continue
        fig, axes = plt.subplots(1, len(mats), figsize=(2.6 * len(mats), 2.9), squeeze=False)
        for ax, (fold, cm) in zip(axes[0], mats.items()):
            acc = np.trace(cm) / max(cm.sum(), 1)
            ax.imshow(cm / np.maximum(cm.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
            ax.set_title(f"{fold}: {100 * acc:.1f} %", fontsize=9)
            ax.set_xlabel("predicted", fontsize=8)
            ax.set_ylabel("true", fontsize=8)
            ax.set_xticks(range(len(cm)))
            ax.set_yticks(range(len(cm)))
            ax.tick_params(labelsize=6)
        fig.suptitle(f"{col}: test confusion per {spec.folds.rsplit('.', 1)[-1]} (seed {spec.seeds[0]})", fontsize=10)
        fig.tight_layout()
        fig.savefig(spec.out / f"confusion_{re.sub(r'[^A-Za-z0-9_.=+-]+', '-', col)}.png", dpi=110)
        plt.close(fig)


def heatmap(spec: GridSpec, summary: dict[str, tuple[float, float, int]]) -> Path:
    """Mean (and std) of the metric per cell, rows = first axis, columns = second axis."""
    import numpy as np

    import matplotlib.pyplot as plt

    from zoo.figures import save_figure

    # each cell's axis values as the command line spells them: lists (e.g. split_ratios) are not hashable
    at = {c.name: tuple(_cli_value(c.overrides.get(k)) for k in spec.keys) for c in spec.cells}
    rows = list(dict.fromkeys(r for r, _ in at.values()))
    cols = list(dict.fromkeys(col for _, col in at.values()))
    grid = np.full((len(rows), len(cols)), np.nan)
    text = [["" for _ in cols] for _ in rows]
    fmt = "{:.2f}" if spec.percent else "{:.4f}"
    for c in spec.cells:
        if c.name in summary:
            i, j = rows.index(at[c.name][0]), cols.index(at[c.name][1])
            mean, std, n = summary[c.name]
            grid[i, j] = mean
            text[i][j] = f"{fmt.format(mean)}\n± {fmt.format(std)}" if n > 1 else f"{fmt.format(mean)}\n(1 run)"
    fig, ax = plt.subplots(figsize=(1.5 * len(cols) + 2, 1.0 * len(rows) + 1.5))
    im = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel(spec.keys[1])
    ax.set_ylabel(spec.keys[0])
    finite = grid[np.isfinite(grid)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0
    for i in range(len(rows)):
        for j in range(len(cols)):
            if text[i][j]:
                ax.text(j, i, text[i][j], ha="center", va="center", fontsize=8,
                        color="black" if grid[i, j] > mid else "white")
    fig.colorbar(im, ax=ax, label=spec.metric + (" (%)" if spec.percent else ""))
    ax.set_title(f"{spec.group}: {spec.metric}, mean ± std over up to {len(spec.seeds)} seeds", fontsize=9)
    return save_figure(fig, spec.out / "heatmap.png")


@contextlib.contextmanager
def _runs_die_with_runner(children: _Children):
    """SIGTERM and SIGINT (and any error) end the running runs before the runner exits; SIGKILL of the
    runner is left to each run's supervisor. The signal becomes SystemExit(128 + signal number)."""

    def stop(signum, frame):
        children.kill_all(wait=False)
        raise SystemExit(128 + signum)

    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            handlers[sig] = signal.signal(sig, stop)
    try:
        yield
    finally:
        children.kill_all()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
