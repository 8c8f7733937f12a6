"""Back-ends of ``python -m zoo.tools.grid GRID --launcher ...`` beyond one machine (docs/scaling.md).

* ``slurm`` / ``submitit-local``: every run of the grid a submitit job (:func:`submit_runs`).
* ``wandb-sweep``: W&B sweep files whose command is ``python -m zoo fit`` (:func:`write_sweeps`).
* ``optuna``: a search of the grid's ``search`` space, shared through a journal file (:func:`optuna_search`).

Why they reuse ``zoo.tools.grid`` instead of starting runs their own way: a run is then the same run whichever
back-end starts it - the same command, results file, log, lock and checkpoint folder - so the summary
table is the same, and a run that was interrupted (a preempted job, a killed worker) resumes from its
``last.ckpt`` into the same logs and W&B run. submitit, optuna and wandb are imported inside the
functions: ``python -m zoo`` imports every zoo module, and none of them needs these.
"""

from __future__ import annotations

import csv
import dataclasses
import fcntl
import itertools
import json
import math
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from zoo.tools.grid_runs import (Cell, GridResult, GridSpec, _Children, _cli_value, _is_zoo_command, _lock_run, _number,
                      _read_result, _run_one, _runs_die_with_runner, _start, _unlock_run, build_command,
                      cli_errors, run_id, say, validate_commands)


# --- SLURM through submitit ------------------------------------------------------------------------
class GridRunJob:
    """One run of a grid as a submitit job: ``_run_one`` as ``python -m zoo.tools.grid`` would call it.

    ``checkpoint`` makes it requeueable: on preemption or at its time limit submitit calls it and
    requeues the same call; the run's process group dies with the job (the grid's supervisor) and the
    requeued job resumes it from its ``last.ckpt`` (``build_command`` adds ``--ckpt_path``)."""

    def __call__(self, spec: GridSpec, cell: Cell, seed: int) -> dict[str, Any]:
        return _run_one(spec, cell, seed)

    def checkpoint(self, *args: Any, **kwargs: Any):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


def submit_runs(spec: GridSpec, jobs: list[tuple[Cell, int]], cluster: str, max_parallel: int,
                resources: dict[str, Any], previous: dict) -> list[dict[str, Any]]:
    """Submit the unfinished runs as one job array, wait for them, return the records ``local`` would.

    Resources: the grid's ``slurm:`` mapping (any submitit ``AutoExecutor`` parameter), overridden by
    the command-line flags. Job files go to ``<logs>/submitit/``; each run's own log is where ``local``
    writes it. Finished runs are read here, not submitted."""
    import submitit

    records, pending = {}, []
    for cell, seed in jobs:
        if (spec.out / "runs" / f"{run_id(cell, seed)}.json").exists():
            records[(cell.name, seed)] = _run_one(spec, cell, seed, previous)
        else:
            pending.append((cell, seed))
    executor = submitit.AutoExecutor(folder=spec.logs / "submitit", cluster=cluster)
    params = {"timeout_min": 60, **spec.slurm, **resources}
    executor.update_parameters(name=spec.group, slurm_array_parallelism=max_parallel, **params)
    with executor.batch():
        submitted = [executor.submit(GridRunJob(), spec, cell, seed) for cell, seed in pending]
    if submitted:
        print(f"submitted {len(submitted)} jobs ({cluster}): {submitted[0].job_id} ...; their files: "
              f"{spec.logs / 'submitit'}", flush=True)
    by_id = {job.job_id: run for job, run in zip(submitted, pending)}
    poll = 1 if cluster == "local" else 15  # seconds; SLURM is asked through sacct
    for n, job in enumerate(submitit.helpers.as_completed(submitted, poll_frequency=poll), 1):
        cell, seed = by_id[job.job_id]
        try:
            record = job.result()
        except Exception as e:  # noqa: BLE001 - the job itself died (node failure, out of memory, cancelled)
            record = {"cell": cell.name, **{k: cell.overrides.get(k, "") for k in spec.keys}, "seed": seed,
                      "status": "failed (job)", "returncode": "", "seconds": "", "metrics": {},
                      "log": str(job.paths.stderr)}
            print(f"job {job.job_id} failed: {str(e).strip().splitlines()[-1] if str(e).strip() else e!r}",
                  file=sys.stderr)
        value = record["metrics"].get(spec.metric)
        print(f"[{n}/{len(submitted)}] {run_id(cell, seed)}: {record['status']}"
              + (f" {spec.metric}={value:.4f}" if _number(value) else ""), flush=True)
        records[(cell.name, seed)] = record
    return [records[(cell.name, seed)] for cell, seed in jobs]


# --- search spaces ---------------------------------------------------------------------------------
def _axis_values(spec: GridSpec, key: str) -> list[Any]:
    """The values an axis takes, in grid order (lists and mappings as the command line spells them)."""
    return list(dict.fromkeys(_cli_value(v) if isinstance(v, (list, dict)) else v
                              for v in (c.overrides[key] for c in spec.cells if key in c.overrides)))


def search_space(spec: GridSpec) -> dict[str, dict[str, Any]]:
    """``search.params`` checked: ``{key: {low, high[, log][, step]} | {choices: [...]}}``; without it
    the grid's axes, each a list of choices. Numbers written ``1e-4`` (a string to YAML) are read as floats."""
    raw = spec.search.get("params")
    if raw is None:
        return {k: {"choices": _axis_values(spec, k)} for k in spec.keys}
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{spec.path}: 'search.params' must map override keys to ranges or choices, got {raw!r}")
    space = {}
    for key, dist in raw.items():
        if isinstance(dist, dict) and isinstance(dist.get("choices"), list) and dist["choices"]:
            space[key] = {"choices": list(dist["choices"])}
            continue
        try:
            low, high = (d if isinstance(d, int) else float(d) for d in (dist["low"], dist["high"]))
            assert low < high and not isinstance(low, bool) and set(dist) <= {"low", "high", "log", "step"}
        except (TypeError, KeyError, ValueError, AssertionError):
            raise ValueError(f"{spec.path}: search parameter {key!r} must be {{low: L, high: H[, log: true]"
                             f"[, step: S]}} with L < H, or {{choices: [...]}}; got {dist!r}") from None
        space[key] = {"low": low, "high": high, "log": bool(dist.get("log", False)), "step": dist.get("step")}
    return space


def _samples(space: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Points that cover the space for a parse check: each choice once, each range's ends and middle."""
    n = max([3] + [len(d["choices"]) for d in space.values() if "choices" in d])
    points = []
    for i in range(n):
        point = {}
        for key, d in space.items():
            if "choices" in d:
                point[key] = d["choices"][i % len(d["choices"])]
            else:
                lo, hi = d["low"], d["high"]
                mid = math.sqrt(lo * hi) if d["log"] else (lo + hi) / 2
                v = (lo, hi, mid)[i % 3]
                point[key] = int(round(v)) if isinstance(lo, int) and isinstance(hi, int) else float(v)
        points.append(point)
    return points


def _search_settings(spec: GridSpec) -> tuple[str, str, int]:
    metric = spec.search.get("metric", spec.metric.replace("test/", "val/", 1))
    direction = spec.search.get("direction", "maximize")
    trials = spec.search.get("trials", 20)
    if direction not in ("maximize", "minimize") or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"{spec.path}: search needs direction maximize|minimize and trials >= 1, got "
                         f"{direction!r}, {trials!r}")
    return metric, direction, trials


# --- W&B sweeps ----------------------------------------------------------------------------------
def _sweep_parameter(d: dict[str, Any]) -> dict[str, Any]:
    if "choices" in d:
        return {"values": d["choices"]}
    is_int = isinstance(d["low"], int) and isinstance(d["high"], int)
    kind = ("q_log_uniform_values" if d["log"] else "int_uniform") if is_int else \
        ("log_uniform_values" if d["log"] else "uniform")
    extra = {"q": d["step"]} if d.get("step") else {"q": 1} if is_int and d["log"] else {}
    return {"distribution": kind, "min": d["low"], "max": d["high"], **extra}


# options that name one run's files or W&B run: in a sweep command, shared by every run of the sweep
_ONE_RUN_OPTIONS = ("ckpt_path", "checkpoint.dirpath", "trainer.logger.init_args.id",
                    "trainer.logger.init_args.version")


def _refuse_one_run_options(spec: GridSpec) -> None:
    """A sweep command with ``--checkpoint.dirpath``, ``--ckpt_path`` or a W&B id would give all its runs one
    checkpoint folder or W&B run, and each would resume the previous one. Without them, a run's folder is
    ``<save_dir>/<project>/<WANDB_RUN_ID>/`` and ``python -m zoo fit`` resumes it when the agent starts it
    again under its id (``zoo.cli``)."""
    given = [str(a)[2:].split("=", 1)[0] for a in spec.args if str(a).startswith("--")]
    given += [k for v in spec.variants.values() for k in v] + list(spec.keys)
    for key in given:
        if key in _ONE_RUN_OPTIONS:
            raise ValueError(f"{spec.path}: a W&B sweep runs one command for all its runs; --{key} in it would give "
                             "them one checkpoint folder or W&B run. Leave it out: each run gets "
                             "<save_dir>/<project>/<its WANDB_RUN_ID>/ and resumes from there when started again")


def sweep_configs(spec: GridSpec, method: str) -> dict[str, dict[str, Any]]:
    """One W&B sweep configuration per (config, variant) of the grid: ``{file stem: sweep}``.

    Why one per (config, variant): the agent appends the sampled parameters as ``--key=value``
    (``${args}``) to a fixed command, and a variant is a set of overrides, a config a ``--config``
    that must come first - both belong in the command, not in ``${args}``. The other axes and the seeds
    are parameters (``values``); ``random``/``bayes`` sweeps also sample the ``search`` ranges.

    The command names nothing of one run (:func:`_refuse_one_run_options`): the agent's ``WANDB_RUN_ID`` does.
    A run stopped by SIGTERM is marked preempting (W&B requeues it under its id) and resumes from its
    ``last.ckpt`` when an agent starts it again; no ``--ckpt_path`` is needed for that."""
    if method not in ("grid", "random", "bayes"):
        raise ValueError(f"W&B sweep method must be grid, random or bayes, got {method!r}")
    _refuse_one_run_options(spec)
    spelt = {tuple(_cli_value(c.overrides.get(k, "<unset>")) for k in spec.keys) for c in spec.cells}
    if spelt != set(itertools.product(*([_cli_value(v) for v in _axis_values(spec, k)] for k in spec.keys))):
        raise ValueError(f"{spec.path}: a W&B sweep is a product of parameters; this grid lists explicit "
                         "'cells' - write them as 'axes' to sweep them")
    metric, direction, _ = _search_settings(spec)
    params = {k: {"values": _axis_values(spec, k)} for k in spec.keys if k not in ("config", "variant")}
    if method != "grid":
        params.update({k: _sweep_parameter(d) for k, d in search_space(spec).items() if spec.search.get("params")})
    elif spec.search.get("params") and not params:
        raise ValueError(f"{spec.path}: a grid sweep needs 'axes'; for the 'search' space use --method random|bayes")
    # a grid sweep runs every seed; a random/bayes one compares settings on the first seed only
    params["seed_everything"] = {"values": list(spec.seeds)} if method == "grid" else {"value": spec.seeds[0]}
    prefix = [c if c != sys.executable else "${interpreter}" for c in spec.command]
    sweeps = {}
    for config, variant in dict.fromkeys((c.overrides.get("config", spec.config), c.overrides.get("variant"))
                                         for c in spec.cells):
        fixed = spec.variants.get(variant, {}) if variant else {}
        command = ["${env}", *prefix, "--config", config, *spec.args,
                   *itertools.chain.from_iterable((f"--{k}", _cli_value(v)) for k, v in fixed.items()),
                   "--run.group", spec.group, "${args}"]
        name = "_".join(p for p in (spec.group, Path(config).stem if "config" in spec.keys else "", variant or "") if p)
        sweeps[name] = {"name": name, "method": method,
                        "metric": {"name": metric, "goal": direction}, "parameters": params, "command": command}
    return sweeps


def sweep_command_lines(sweep: dict[str, Any], n_random: int = 0, seed: int = 0) -> list[list[str]]:
    """The argument lists (after ``python -m zoo``) the agent would run: every point of the grid's
    values, plus ``n_random`` random draws of the ranges; ``--key=value`` formatted by wandb's own
    ``create_sweep_command_args`` (its str() of the value: ``None``, ``True``, ``[1, 2]``)."""
    try:
        from wandb.sdk.launch.sweeps.utils import create_sweep_command_args
    except ImportError:  # a wandb that moved it: its documented format
        def create_sweep_command_args(command):
            return {"args": [f"--{k}={v['value']}" for k, v in command["args"].items()]}
    rng = random.Random(seed)
    params = {k: {"values": [p["value"]]} if "value" in p else p for k, p in sweep["parameters"].items()}

    def draw(p):
        if "values" in p:
            return rng.choice(p["values"])
        lo, hi = p["min"], p["max"]
        if p["distribution"] in ("log_uniform_values", "q_log_uniform_values"):
            v = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        else:
            v = rng.uniform(lo, hi)
        return round(v / p["q"]) * p["q"] if "q" in p else v if "int" not in p["distribution"] else round(v)

    grid_keys = [k for k, p in params.items() if "values" in p]
    points = [dict(zip(grid_keys, vals)) for vals in itertools.product(*(params[k]["values"] for k in grid_keys))]
    ranged = [k for k in params if k not in grid_keys]
    if ranged:  # each range at its ends, then random draws
        ends = [{**points[i % len(points)], **{k: params[k][("min", "max")[j]] for k in ranged}} for j, i in
                ((0, 0), (1, len(points) - 1))]
        points = ends + [{k: draw(p) for k, p in params.items()} for _ in range(n_random)]
    elif n_random:
        points = [{k: draw(p) for k, p in params.items()} for _ in range(n_random)] + points
    lines = []
    for point in points:
        args = create_sweep_command_args({"args": {k: {"value": v} for k, v in point.items()}})["args"]
        cmd = [a for part in sweep["command"] for a in (args if part == "${args}" else [part]) if a != "${env}"]
        lines.append(cmd[cmd.index("zoo") + 1:] if "zoo" in cmd else cmd)
    return lines


def check_sweep(sweep: dict[str, Any], where: str, n_random: int = 8) -> int:
    """Parse every command line of a grid sweep (and ``n_random`` draws of a random/bayes one) with the
    zoo CLI; an error names the first that would not start. Returns how many were parsed."""
    lines = sweep_command_lines(sweep, n_random=0 if sweep["method"] == "grid" else n_random)
    # the seed never changes whether a line parses: one seed's lines are parsed
    seed = [a for a in lines[0] if a.startswith("--seed_everything=")]
    lines = [ln for ln in lines if not any(a.startswith("--seed_everything=") and a not in seed for a in ln)]
    lines = list(dict.fromkeys(map(tuple, lines)))
    for line in lines:
        errors = cli_errors(list(line))
        if errors:
            raise ValueError(f"{where}: sweep {sweep['name']!r} would run `python -m zoo {' '.join(line)}`, "
                             f"which does not start:\n{errors}")
    return len(lines)


def write_sweeps(spec: GridSpec, method: str) -> list[Path]:
    """Write ``<out>/sweeps/<name>.yaml`` for the grid after parsing their command lines; print how to
    start them. W&B sweeps need W&B online (``wandb login``); the runs log with ``WANDB_MODE=online``."""
    out = spec.out / "sweeps"
    paths = []
    for name, sweep in sweep_configs(spec, method).items():
        if _is_zoo_command(spec.command):
            check_sweep(sweep, str(spec.path))
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{name}.yaml"
        path.write_text(f"# written by python -m zoo.tools.grid {spec.path} --launcher wandb-sweep --method {method}\n"
                        + yaml.safe_dump(sweep, sort_keys=False))
        paths.append(path)
        print(f"wrote {path}\n  wandb sweep --project zoo {path}        # prints the sweep id\n"
              f"  WANDB_MODE=online wandb agent <entity>/zoo/<sweep id>   # on every machine, as often as you like")
    return paths


# --- Optuna -------------------------------------------------------------------------------------
def _epoch_log(spec: GridSpec, rid: str) -> Path:
    return spec.logs / f"{rid}.epochs.jsonl"


def _callback_arg(path: Path, metric: str) -> str:
    spec = {"class_path": "zoo.callbacks.EpochMetricLog", "init_args": {"path": str(path), "metric": metric}}
    return "--trainer.callbacks+=" + json.dumps(spec)


@dataclasses.dataclass
class _Study:
    spec: GridSpec
    space: dict[str, dict[str, Any]]
    metric: str
    trials: int
    storage: Path
    study: Any = None


def _open_study(spec: GridSpec, metric: str, direction: str, storage: Path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    pruner_args = spec.search.get("pruner", {"n_startup_trials": 3, "n_warmup_steps": 1})
    pruner = optuna.pruners.MedianPruner(**pruner_args) if pruner_args else optuna.pruners.NopPruner()
    sampler = optuna.samplers.TPESampler(n_startup_trials=spec.search.get("startup_trials", 5), constant_liar=True)
    storage.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(storage):
        return optuna.create_study(study_name=spec.search.get("study", spec.group),
                                   storage=JournalStorage(JournalFileBackend(str(storage))), load_if_exists=True,
                                   direction=direction, pruner=pruner, sampler=sampler)


class _file_lock:
    """``flock`` on ``<journal>.ask.lock``: asking for a trial (count, ask, lock its run) is one step for all
    workers of all machines sharing the journal, so none asks for a trial past the budget. Released by
    the kernel when its holder dies."""

    def __init__(self, journal: Path):
        self.path = journal.with_name(journal.name + ".ask.lock")  # optuna's own lock is <journal>.lock
        self._thread_lock = threading.Lock()  # flock is per open file, each enter opens its own

    def __enter__(self):
        self._thread_lock.acquire()
        self.fd = open(self.path, "a")
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        self.fd.close()
        self._thread_lock.release()


def _root(trial) -> int:
    """The trial whose run this trial is: itself, or the one it resumes (a dead worker's trial, asked again)."""
    return trial.user_attrs.get("resumes", trial.number)


def _trial_run(trial) -> str:
    return f"trial{_root(trial)}"


def _requeue_orphans(st: _Study, seed: int) -> None:
    """A RUNNING trial whose run lock nobody holds lost its worker (killed, machine gone): mark it failed
    (``requeued``: not counted) and ask again for its parameters; the new trial continues its run from
    the run's ``last.ckpt``. Called holding the ask lock, under which live workers lock their runs."""
    from optuna.trial import TrialState

    for t in st.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        lock = st.spec.logs / f"{_trial_run(t)}-seed{seed}.lock"
        fd, _ = _lock_run(lock)
        if fd is None:
            continue
        _unlock_run(lock, fd)
        st.study._storage.set_trial_user_attr(t._trial_id, "requeued", True)
        st.study.tell(t.number, state=TrialState.FAIL)
        st.study.enqueue_trial(t.params, user_attrs={"resumes": _root(t)})
        say(f"trial {t.number} lost its worker: asked again, its run resumes")


def _counted(study) -> int:
    return sum(not t.user_attrs.get("requeued") for t in study.get_trials(deepcopy=False))


def _suggest(trial, key: str, d: dict[str, Any]):
    if "choices" in d:
        return trial.suggest_categorical(key, d["choices"])
    if isinstance(d["low"], int) and isinstance(d["high"], int):
        return trial.suggest_int(key, d["low"], d["high"], log=d["log"], step=d.get("step") or 1)
    return trial.suggest_float(key, d["low"], d["high"], log=d["log"], step=d.get("step"))


def _one_trial(st: _Study, lock: _file_lock, children: _Children) -> bool:
    """Ask for, run and tell one trial; False when the study has its trials."""
    from optuna.trial import TrialState

    spec, seed = st.spec, st.spec.seeds[0]
    with lock:
        _requeue_orphans(st, seed)
        if _counted(st.study) >= st.trials and not st.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return False  # (a waiting trial is counted already: asking takes it)
        trial = st.study.ask()
        cell = Cell(_trial_run(trial), {k: _suggest(trial, k, d) for k, d in st.space.items()})
        rid = run_id(cell, seed)
        lock_path = spec.logs / f"{rid}.lock"
        fd, holder = _lock_run(lock_path)
    try:
        if fd is None:  # cannot happen while every worker locks under the ask lock; never run a run twice
            st.study.tell(trial, state=TrialState.FAIL)
            print(f"trial {trial.number}: its run {rid} is held by {holder}", file=sys.stderr)
            return True
        epochs = _epoch_log(spec, rid)
        trial_spec = dataclasses.replace(spec, args=[*spec.args, _callback_arg(epochs, st.metric)])
        record = {"cell": cell.name, "seed": seed, "trial": trial.number, **cell.overrides}
        reported, pruned = set(), []

        def poll() -> bool:
            lines = epochs.read_text().splitlines() if epochs.exists() else []
            for line in lines:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # being written
                if row["epoch"] not in reported and _number(row["value"]):
                    reported.add(row["epoch"])
                    trial.report(row["value"], row["epoch"])
            if reported and trial.should_prune():
                pruned.append(max(reported))
            return bool(pruned)

        result = spec.out / "runs" / f"{rid}.json"
        if result.exists():  # its run finished but the trial was not told (the worker died just then)
            record = {**record, **{"status": "ok", "metrics": _read_result(result).get("metrics", {})}}
        else:
            record = _start(trial_spec, cell, seed, record, result, spec.logs / f"{rid}.log", children, poll)
        poll()
        value = record["metrics"].get(st.metric)
        if pruned:
            st.study.tell(trial, state=TrialState.PRUNED)
            record["status"] = f"pruned (epoch {pruned[0]})"
        elif record["status"] == "ok" and _number(value):
            trial.set_user_attr("metrics", record["metrics"])
            st.study.tell(trial, value)
        else:
            st.study.tell(trial, state=TrialState.FAIL)
        say(f"trial {trial.number} ({rid}): {record['status']}" + (f" {st.metric}={value:.4f}" if _number(value)
                                                                    and not pruned else ""))
        return True
    finally:
        if fd is not None:
            _unlock_run(lock_path, fd)


def optuna_search(spec: GridSpec, max_parallel: int = 1, dry_run: bool = False,
                  summary_only: bool = False) -> GridResult:
    """Run trials of the grid's ``search`` until the study has ``trials`` of them, ``max_parallel`` at a
    time; other commands on the same journal (``search.storage``, default ``<out>/optuna.journal``)
    share the budget. Writes ``trials.csv`` and ``search.md`` (best trial and its command)."""
    metric, direction, n_trials = _search_settings(spec)
    space = search_space(spec)
    if not space:
        raise ValueError(f"{spec.path}: --launcher optuna needs 'search: {{params: ...}}' (or 'axes')")
    storage = Path(spec.search.get("storage", spec.out / "optuna.journal"))
    seed = spec.seeds[0]
    check = [Cell(f"check{i}", point) for i, point in enumerate(_samples(space))]
    check_spec = dataclasses.replace(spec, cells=check[:2] if len(check) > 1 else check, args=[
        *spec.args, _callback_arg(_epoch_log(spec, "check"), metric)])
    for cell in check_spec.cells:  # the lows (and first choices), then the highs: each must start
        validate_commands(dataclasses.replace(check_spec, cells=[cell]))
    if dry_run:
        print(" ".join(build_command(check_spec, check[0], seed)))
        return GridResult({}, [])
    st = _Study(spec, space, metric, n_trials, storage, _open_study(spec, metric, direction, storage))
    if not summary_only:
        lock, children = _file_lock(storage), _Children(max_parallel)

        def worker():
            while _one_trial(st, lock, children):
                pass

        with _runs_die_with_runner(children):
            threads = [threading.Thread(target=worker) for _ in range(max(1, max_parallel))]
            for i, t in enumerate(threads):
                t.start()
                time.sleep(0.5 if i + 1 < len(threads) else 0)  # the first asks first: fewer identical samples
            for t in threads:
                t.join()
    return _write_search(st, direction)


def _write_search(st: _Study, direction: str) -> GridResult:
    from optuna.trial import TrialState

    spec = st.spec
    trials = [t for t in st.study.get_trials() if not t.user_attrs.get("requeued")]
    keys = list(st.space)
    records = []
    for t in trials:
        metrics = t.user_attrs.get("metrics", {})
        status = {TrialState.COMPLETE: "ok", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}.get(
            t.state, t.state.name.lower())
        records.append({"cell": _trial_run(t), "trial": t.number, **{k: t.params.get(k, "") for k in keys},
                        "seed": spec.seeds[0], "status": status, "value": t.value if t.value is not None else "",
                        "epochs": len(t.intermediate_values), "metrics": metrics})
    spec.out.mkdir(parents=True, exist_ok=True)
    with open(spec.out / "trials.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["trial", "cell", *keys, "seed", "status", "value", "epochs",
                                                *sorted({m for r in records for m in r["metrics"]})])
        writer.writeheader()
        for r in records:
            writer.writerow({**{k: _cli_value(v) if isinstance(v, (list, dict)) else v
                                for k, v in r.items() if k != "metrics"}, **r["metrics"]})
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = sum(t.state == TrialState.PRUNED for t in trials)
    lines = [f"Optuna study `{st.study.study_name}` ({st.storage}), grid `{spec.path}`: {len(trials)} trials, "
             f"{len(done)} complete, {pruned} pruned, {len(trials) - len(done) - pruned} other; "
             f"{direction} {st.metric} (last epoch), seed {spec.seeds[0]}.\n"]
    if done:
        best = st.study.best_trial
        overrides = " ".join(f"--{k} {_cli_value(v)}" for k, v in best.params.items())
        test = best.user_attrs.get("metrics", {}).get(spec.metric)
        lines += [f"Best: trial {best.number}, {st.metric} = {best.value:.4f}"
                  + (f", {spec.metric} = {test:.4f}" if _number(test) else "") + f"\n\n    {overrides}\n",
                  "Confirm it over several seeds: put these values in a grid (or the config) and run "
                  "`python -m zoo.tools.grid` on it.\n"]
    lines += [f"| trial | {' | '.join(k.rsplit('.', 1)[-1] for k in keys)} | status | epochs | {st.metric} | {spec.metric} |",
              "|" + "---|" * (len(keys) + 5)]
    for r in records:
        test = r["metrics"].get(spec.metric)
        lines.append(f"| {r['trial']} | " + " | ".join(_cli_value(r[k]) if not isinstance(r[k], float) else f"{r[k]:.3g}"
                                                        for k in keys)
                     + f" | {r['status']} | {r['epochs']} | "
                     + (f"{r['value']:.4f}" if _number(r["value"]) else "") + " | "
                     + (f"{test:.4f}" if _number(test) else "") + " |")
    (spec.out / "search.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {spec.out / 'trials.csv'}, {spec.out / 'search.md'}")
    summary = {r["cell"]: (r["value"], 0.0, 1) for r in records if _number(r["value"])}
    return GridResult(summary, records)
