"""``python -m zoo.tools.grid configs/grids/<name>.yaml``: run a whole study grid, one zoo run per cell and seed.

Why a runner instead of a shell loop: a study is only comparable if every cell is the *same*
experiment with one override changed, every run lands in the same W&B group, a crash in one
cell does not lose the others, and re-running the command resumes instead of starting over.

Grid YAML::

    config: configs/lenet_reduced_mnist.yaml   # base zoo config; each run is `python -m zoo fit --config ...`
    group: reduced-mnist-real-x-aug            # --run.group of every run (W&B group)
    seeds: [0, 1, 2]                           # --seed_everything of each run
    metric: test/acc                           # the number tabulated (mean +- std over seeds)
    axes:                                      # cartesian product of CLI override keys -> values
      data.real_per_class: [300, 700, 1000]
      data.augmented_per_class: [0, 1000, 2000, 3000]
    # or, instead of axes, explicit cells:
    # cells: [{data.real_per_class: 300, data.synthetic_per_class: 1000}, ...]
    args: ["--trainer.max_epochs", "10"]       # extra CLI overrides for every run
    out: docs/results/reduced_mnist_real_x_aug
    logs: runs/grid_logs/reduced_mnist_real_x_aug  # optional, default <out>/logs
    percent: true                              # optional: show the metric x100 in the table/heatmap
    # optional: named sets of overrides, one more axis ('variant', first) - e.g. an ablation; alone, the only axis
    # variants: {full: {}, no-trim: {data.trim_db: null}}
    # optional: an axis of cross-validation folds; folds.md gives mean +- std over them (and worst)
    # folds: data.test_speaker
    # an axis (or cell key) 'config' runs other base configs: axes: {config: [configs/a.yaml, ...]}
    # optional, for other launchers (zoo/tools/launchers.py, docs/scaling.md): a search space for
    # --launcher optuna / wandb-sweep --method random|bayes, and submitit resources for --launcher slurm
    # search: {params: {model.init_args.optimizer.init_args.lr: {low: 1.0e-4, high: 0.1, log: true}}, trials: 20}
    # slurm: {slurm_partition: gpu, gpus_per_node: 1, timeout_min: 120}

Each run writes ``<out>/runs/<cell>-seed<N>.json`` (``--run.results_file``) and its console output to
``<logs>/<cell>-seed<N>.log``. A run whose JSON exists is skipped; failed runs are reported,
recorded in ``runs.csv`` and retried on the next invocation. Outputs: ``runs.csv`` (one row per run),
``table.md`` (mean +- std per cell) and, for two-axis grids, ``heatmap.png``.

Safe to kill and to run twice:

* Before anything runs, every distinct (config, variant) command is parsed by the zoo CLI (for
  ``python -m zoo`` commands): an axis key that is not an option, or a value of the wrong type, is an
  error naming it, not N failed runs.
* A run is locked while it runs (``<logs>/<cell>-seed<N>.lock``, next to its log, holding pid and
  host): a second runner skips it. The lock is an ``flock``, released by the kernel however the runner dies, so a lock
  left by a dead runner is simply taken over.
* Runs die with the runner: each runs in its own process group under a small supervisor that kills the
  group when the runner exits, whatever the cause (SIGTERM, Ctrl-C, an error, even SIGKILL).
* Each run keeps its checkpoints in ``<logs>/checkpoints/<cell>-seed<N>/``; a run that was interrupted
  resumes from its ``last.ckpt`` (``--ckpt_path``): same logs, same W&B run, same numbers as if it had
  not been interrupted. Delete that folder (and the results JSON) to run a cell again from scratch.
* A ``metric`` that no run produced is an error that lists the metrics the runs did produce.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import yaml

from zoo.tools.grid_runs import (GridResult, _Children, _cli_value, _number, _previous_seconds, _run_one,
                                 _runs_die_with_runner, build_command, load_grid, run_id, say, summarize,
                                 validate_commands)


def run_grid(grid: str, dry_run: bool = False, max_parallel: int = 1, seeds_first: bool = False,
             summary_only: bool = False, out: str | None = None,
             args: list[str | int | float | bool | None] | None = None,
             launcher: Literal["local", "slurm", "submitit-local", "wandb-sweep", "optuna"] = "local",
             partition: str | None = None, gpus_per_job: int | None = None, time_min: int | None = None,
             cpus_per_job: int | None = None, method: Literal["grid", "random", "bayes"] | None = None,
             only: list[str] | None = None) -> GridResult:
    """Run every (cell, seed) of a grid YAML that has no results yet, then write runs.csv, table.md, heatmap.png.

    Args:
        grid: path of the grid YAML (see the module docstring for its keys).
        dry_run: only print the commands that would run (finished runs are marked as skipped).
        max_parallel: how many runs at once (each is a separate process; local runs share the CPU cores out
            through ``OMP_NUM_THREADS`` unless it is set).
        seeds_first: run the first seed of every cell, then the second, ... so that an interrupted
            grid still covers every cell (default: all seeds of a cell, then the next cell).
        summary_only: run nothing; write runs.csv / table.md / heatmap.png from the finished runs
            (runs without results are listed as "missing").
        out: results (and logs, in ``<out>/logs``) go here instead of the grid's ``out``: a study
            whose results are committed re-runs from scratch with ``--out runs/repro/<name>``.
        args: more CLI overrides for every run, after the grid's own ``args`` (e.g. ``--args
            '[--trainer.logger, false]'`` on a machine without W&B); a finished run is not redone.
        launcher: where the runs run (docs/scaling.md). ``local``: processes on this machine.
            ``slurm``: one submitit job per run (a job array), this command waits and then writes the
            same outputs as ``local``; ``submitit-local``: the same jobs as local processes (to try it).
            ``wandb-sweep``: write W&B sweep files for the grid (or its ``search`` space) and print the
            ``wandb sweep`` / ``wandb agent`` commands, running nothing. ``optuna``: search the grid's
            ``search`` space; ``max_parallel`` trials at once, and any number of these commands on
            other machines may share its journal file.
        partition: SLURM partition (else the grid's ``slurm: {slurm_partition: ...}``).
        gpus_per_job: GPUs per job (``gpus_per_node``).
        time_min: time limit per job in minutes (``timeout_min``); a job that reaches it is requeued and
            its run resumes from its last checkpoint.
        cpus_per_job: CPU cores per job (``cpus_per_task``).
        method: W&B sweep method (default ``grid`` over the axes; ``random``/``bayes`` also sample
            the grid's ``search`` space).
        only: run only the runs whose cell matches every ``key=value`` (an axis key, ``variant`` or ``seed``;
            values of one key are alternatives), e.g. ``--only '[variant=full, data.test_speaker=theo,
            data.test_speaker=lucas, seed=1]'``: a few folds of a long study. The other runs are not started,
            and the summary lists them as finished or missing, as ``summary_only`` does.
    """
    if max_parallel < 1:
        raise ValueError(f"max_parallel must be >= 1, got {max_parallel}")
    spec = load_grid(grid)
    if out is not None:
        spec = dataclasses.replace(spec, out=Path(out), logs=Path(out) / "logs")
    if args:
        spec = dataclasses.replace(spec, args=[*spec.args, *map(_cli_value, args)])
    if launcher in ("wandb-sweep", "optuna"):
        if only:
            raise ValueError(f"--only picks runs of the grid; --launcher {launcher} searches or sweeps instead")
        from zoo.tools import launchers

        if launcher == "wandb-sweep":
            launchers.write_sweeps(spec, method or ("bayes" if spec.search and not spec.cells[0].overrides else "grid"))
            return GridResult({}, [])
        return launchers.optuna_search(spec, max_parallel=max_parallel, dry_run=dry_run, summary_only=summary_only)
    if not summary_only:
        validate_commands(spec)
    if seeds_first:
        jobs = [(cell, seed) for seed in spec.seeds for cell in spec.cells]
    else:
        jobs = [(cell, seed) for cell in spec.cells for seed in spec.seeds]
    if len(spec.seeds) < 3:
        print(f"note: {spec.path} uses {len(spec.seeds)} seed(s); a study needs >= 3 per cell", file=sys.stderr)
    jobs, rest = _select(spec, jobs, only) if only else (jobs, [])
    if dry_run:
        for cell, seed in jobs:
            done = (spec.out / "runs" / f"{run_id(cell, seed)}.json").exists()
            print(("# skipped (finished): " if done else "") + " ".join(build_command(spec, cell, seed)))
        return GridResult({}, [])

    total = len(jobs)
    counter = itertools.count(1)
    previous = _previous_seconds(spec)
    if summary_only:
        rest, jobs = rest + jobs, []
    children = _Children(max_parallel)

    def work(job):
        record = _run_one(spec, *job, previous, children)
        value = record["metrics"].get(spec.metric)
        shown = f"{spec.metric}={value:.4f}" if _number(value) else f"see {record['log']}"
        say(f"[{next(counter)}/{total}] {run_id(*job)}: {record['status']} {shown}")
        return record

    records = []
    if launcher in ("slurm", "submitit-local") and jobs:
        from zoo.tools import launchers

        resources = {"slurm_partition": partition, "gpus_per_node": gpus_per_job, "timeout_min": time_min,
                     "cpus_per_task": cpus_per_job}
        records += launchers.submit_runs(spec, jobs, "slurm" if launcher == "slurm" else "local", max_parallel,
                                         {k: v for k, v in resources.items() if v is not None}, previous)
    elif jobs:
        with _runs_die_with_runner(children):
            if max_parallel == 1:
                records += [work(job) for job in jobs]
            else:
                with ThreadPoolExecutor(max_parallel) as pool:
                    records += list(pool.map(work, jobs))
    # runs not started (summary_only, or outside `only`): their results if finished, else "missing"; read after
    # this runner's own runs, so those another runner finished meanwhile are summarised too
    for cell, seed in rest:
        if (spec.out / "runs" / f"{run_id(cell, seed)}.json").exists():
            records.append(_run_one(spec, cell, seed, previous))  # reads the finished run, starts nothing
        else:
            records.append({"cell": cell.name, **{k: cell.overrides.get(k, "") for k in spec.keys}, "seed": seed,
                            "status": "missing", "returncode": "", "seconds": "",
                            "log": str(spec.logs / f"{run_id(cell, seed)}.log"), "metrics": {}})
    order = {cell.name: i for i, cell in enumerate(spec.cells)}
    records.sort(key=lambda r: (order[r["cell"]], spec.seeds.index(r["seed"])))
    result = GridResult(summarize(spec, records), records)
    failed = result.failed
    print(f"wrote {spec.out / 'runs.csv'}, {spec.out / 'table.md'}"
          + (f", {spec.out / 'heatmap.png'}" if len(spec.keys) == 2 else ""))
    if failed:
        print(f"{len(failed)} of {total} runs failed: " + ", ".join(f"{r['cell']}-seed{r['seed']} ({r['log']})"
                                                                     for r in failed), file=sys.stderr)
    return result


def _select(spec, jobs: list, only: list[str]) -> tuple[list, list]:
    """``jobs`` split into the (cell, seed) runs whose cell matches every ``key=value`` of ``only`` (values of one
    key: any of them) and the rest, each in the grid's order."""
    names = [*spec.keys, "seed"]
    wanted: dict[str, set[str]] = {}
    for item in only:
        key, sep, value = str(item).partition("=")
        if not sep or key not in names:
            raise ValueError(f"{spec.path}: --only {item!r}: expected key=value with a key of this grid, one of {names}")
        wanted.setdefault(key, set()).add(value)
    value = lambda cell, seed, key: str(seed) if key == "seed" else _cli_value(cell.overrides.get(key, ""))  # noqa: E731
    for key, values in wanted.items():
        known = {value(cell, seed, key) for cell, seed in jobs}
        if values - known:
            raise ValueError(f"{spec.path}: --only {key}={sorted(values - known)[0]}: no run has it; "
                             f"{key} is one of {sorted(known)}")
    picked = [all(value(cell, seed, k) in v for k, v in wanted.items()) for cell, seed in jobs]
    if not any(picked):  # e.g. explicit cells where no cell has both values
        raise ValueError(f"{spec.path}: --only {list(only)} matches none of its {len(jobs)} runs")
    return [j for j, p in zip(jobs, picked) if p], [j for j, p in zip(jobs, picked) if not p]


def main(args: list[str] | None = None) -> None:
    """Exit status 1 when any run failed, so scripts notice."""
    from jsonargparse import auto_cli

    from zoo.figures import use_file_backend

    use_file_backend()
    argv = list(sys.argv[1:] if args is None else args)
    given = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"] + \
        [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    for path in given:  # `--config` (as for `python -m zoo fit`) reads the runner's own options, not a grid
        raw = yaml.safe_load(Path(path).read_text()) if Path(path).is_file() else None
        if isinstance(raw, dict) and ("axes" in raw or "cells" in raw):
            sys.exit(f"{path} is a grid file: pass it as the argument, python -m zoo.tools.grid {path} "
                     "(--config reads the runner's own options, such as max_parallel)")
    try:
        result = auto_cli(run_grid, args=args)
    except (ValueError, FileNotFoundError) as e:  # a bad grid, command or metric: the message is the answer
        sys.exit(f"error: {e}")
    sys.exit(1 if result.failed else 0)


if __name__ == "__main__":
    main()
