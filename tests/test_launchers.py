"""Back-ends of the grid runner (zoo/tools/launchers.py): submitit jobs, W&B sweep files, Optuna searches."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import CONFIGS, REPO
from test_grid import SLOW_FIT, _grid, _wait
from zoo.tools.grid import load_grid, run_grid
from zoo.tools.launchers import GridRunJob, check_sweep, sweep_command_lines, write_sweeps

pytest.importorskip("submitit")
pytest.importorskip("optuna")


def _rows(path: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "log")} for r in csv.DictReader(open(path))]


# --- submitit -----------------------------------------------------------------------------------
def test_submitit_jobs_give_the_local_launchers_outputs(tmp_path, capsys):
    """The same fake-fit grid (one cell fails) through submitit's local executor and through the local
    launcher: the same records, runs.csv (bar timings and log paths) and table.md."""
    path = _grid(tmp_path, seeds=[0])
    local = run_grid(str(path), max_parallel=2, out=str(tmp_path / "local"))
    jobs = run_grid(str(path), max_parallel=2, out=str(tmp_path / "jobs"), launcher="submitit-local")
    assert "submitted 4 jobs (local)" in capsys.readouterr().out
    assert jobs.summary == local.summary and len(jobs.failed) == len(local.failed) == 2
    assert [(r["cell"], r["seed"], r["status"], r["metrics"]) for r in jobs.records] == \
        [(r["cell"], r["seed"], r["status"], r["metrics"]) for r in local.records]
    assert _rows(tmp_path / "jobs" / "runs.csv") == _rows(tmp_path / "local" / "runs.csv")
    assert (tmp_path / "jobs" / "table.md").read_text() == (tmp_path / "local" / "table.md").read_text()
    assert list((tmp_path / "jobs" / "logs" / "submitit").glob("*_submitted.pkl"))
    # again: the finished runs are read, not submitted; only the failed cell's runs go out again
    again = run_grid(str(path), out=str(tmp_path / "jobs"), launcher="submitit-local")
    assert "submitted 2 jobs" in capsys.readouterr().out and again.summary == local.summary


def test_a_preempted_submitit_job_is_requeued_and_its_run_resumes(tmp_path):
    """A job signalled as SLURM does before preemption or its time limit (USR2) requeues itself
    (GridRunJob.checkpoint) and the run continues from the last.ckpt the interrupted run left."""
    import submitit

    fake = tmp_path / "slow_fit.py"
    fake.write_text(SLOW_FIT)
    spec = load_grid(_grid(tmp_path, axes={"data.real_per_class": [30]}, seeds=[0], command=["python", str(fake)]))
    executor = submitit.LocalExecutor(folder=tmp_path / "submitit")
    # the local executor signals its job (USR2) signal_delay_s before timeout_min, as SLURM does: here 10 s
    # after the start, when the run has written its last.ckpt
    executor.update_parameters(timeout_min=0.3, signal_delay_s=8)
    job = executor.submit(GridRunJob(), spec, spec.cells[0], 0)
    out = tmp_path / "out"
    assert _wait((out / "child.pid").exists, 10), "the run did not start in time"
    record = job.result()
    assert record["status"] == "ok" and record["metrics"] == {"test/acc": 0.5}
    runs = (out / "journal.txt").read_text().splitlines()
    assert len(runs) == 2 and "--ckpt_path" not in runs[0]
    ckpt = out / "logs" / "checkpoints" / "real_per_class=30-seed0" / "last.ckpt"
    assert f"--ckpt_path {ckpt}" in runs[1]
    assert "resumed from its last checkpoint" in (out / "logs" / "real_per_class=30-seed0.log").read_text()


# --- W&B sweeps ---------------------------------------------------------------------------------
def _zoo_grid(tmp_path: Path, **overrides) -> Path:
    spec = {"config": str(CONFIGS / "lenet_reduced_mnist.yaml"), "group": "g-sweep", "seeds": [0, 1],
            "axes": {"data.real_per_class": [5, 10], "model.init_args.net.init_args.dropout": [0.0, 0.3]},
            "args": ["--trainer.max_epochs", "2"], "out": str(tmp_path / "out"), **overrides}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_a_grid_sweep_runs_every_cell_and_seed_and_every_line_parses(tmp_path, capsys):
    path = _zoo_grid(tmp_path, variants={"plain": {}, "smooth": {"model.init_args.label_smoothing": 0.2}})
    run_grid(str(path), launcher="wandb-sweep")
    files = sorted((tmp_path / "out" / "sweeps").glob("*.yaml"))
    assert [f.name for f in files] == ["g-sweep_plain.yaml", "g-sweep_smooth.yaml"]
    assert "wandb agent" in capsys.readouterr().out
    sweep = yaml.safe_load(files[1].read_text())
    assert sweep["method"] == "grid" and sweep["metric"] == {"name": "val/acc", "goal": "maximize"}
    assert sweep["parameters"] == {"data.real_per_class": {"values": [5, 10]},
                                   "model.init_args.net.init_args.dropout": {"values": [0.0, 0.3]},
                                   "seed_everything": {"values": [0, 1]}}
    cmd = sweep["command"]
    assert cmd[cmd.index("--config") + 1] == str(CONFIGS / "lenet_reduced_mnist.yaml") and cmd[-1] == "${args}"
    # nothing of one run: the agent's WANDB_RUN_ID names each run's folder and W&B run, and resumes it
    assert not [a for a in cmd if a.startswith(("--ckpt_path", "--checkpoint.dirpath", "--trainer.logger.init_args"))]
    assert cmd[cmd.index("--model.init_args.label_smoothing") + 1] == "0.2" and "--variant" not in cmd
    lines = sweep_command_lines(sweep)
    assert len(lines) == 8 and len({tuple(ln) for ln in lines}) == 8  # 2 x 2 cells x 2 seeds, as the grid
    assert lines[0][-3:] == ["--data.real_per_class=5", "--model.init_args.net.init_args.dropout=0.0", "--seed_everything=0"]
    assert check_sweep(sweep, str(path)) == 4  # every cell parsed (one seed's lines)


def test_a_sweep_whose_lines_would_not_start_is_refused(tmp_path):
    # a value of the wrong type: the line and the option are named, no sweep file is written
    path = _zoo_grid(tmp_path, axes={"data.real_per_class": [5, 10], "model.init_args.net.init_args.dropout": ["high"]})
    with pytest.raises(ValueError, match=r"(?s)would run `python -m zoo fit .*--model.init_args.net.init_args.dropout=high .*`, which does not start.*Parser key \"dropout\""):
        run_grid(str(path), launcher="wandb-sweep")
    assert not (tmp_path / "out" / "sweeps").exists()
    cells = _zoo_grid(tmp_path, axes=None)
    raw = yaml.safe_load(cells.read_text())
    del raw["axes"]
    cells.write_text(yaml.safe_dump({**raw, "cells": [{"data.real_per_class": 5}, {"data.real_per_class": 10,
                                                                                  "model.init_args.net.init_args.dropout": 0.1}]}))
    with pytest.raises(ValueError, match="explicit 'cells'"):
        run_grid(str(cells), launcher="wandb-sweep")


@pytest.mark.parametrize("args", [["--checkpoint.dirpath", "ckpts"], ["--ckpt_path=last"],
                                  ["--trainer.logger.init_args.id", "run1"]])
def test_a_sweep_command_naming_one_runs_files_is_refused(tmp_path, args):
    """One command for every run of a sweep: a checkpoint folder or W&B id in it would make each run resume the
    previous one. Without them each run's folder is named by the agent's WANDB_RUN_ID (tests/test_wandb_runs.py)."""
    path = _zoo_grid(tmp_path, args=["--trainer.max_epochs", "2", *args])
    with pytest.raises(ValueError, match=rf"runs one command for all its runs; --{args[0][2:].split('=')[0]} in it"):
        run_grid(str(path), launcher="wandb-sweep")
    assert not (tmp_path / "out" / "sweeps").exists()


SEARCH = {"params": {"model.init_args.optimizer.init_args.lr": {"low": "1e-4", "high": 0.1, "log": True},
                     "data.init_args.batch_size": {"choices": [32, 64, 128]},
                     "trainer.max_epochs": {"low": 1, "high": 4}},
          "trials": 4, "metric": "val/acc"}


def test_a_bayes_sweep_samples_the_search_space_and_its_draws_parse(tmp_path):
    path = _zoo_grid(tmp_path, axes=None, search=SEARCH)
    raw = yaml.safe_load(path.read_text())
    del raw["axes"]
    path.write_text(yaml.safe_dump(raw))
    (sweep_path,) = write_sweeps(load_grid(path), "bayes")
    sweep = yaml.safe_load(sweep_path.read_text())
    assert sweep["parameters"] == {
        "model.init_args.optimizer.init_args.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 0.1},
        "data.init_args.batch_size": {"values": [32, 64, 128]},
        "trainer.max_epochs": {"distribution": "int_uniform", "min": 1, "max": 4},
        "seed_everything": {"value": 0}}
    lines = sweep_command_lines(sweep, n_random=20)
    lrs = [float(a.split("=")[1]) for ln in lines for a in ln if a.startswith("--model.init_args.optimizer")]
    assert min(lrs) == 1e-4 and max(lrs) == 0.1 and all(1e-4 <= v <= 0.1 for v in lrs)
    epochs = {a for ln in lines for a in ln if a.startswith("--trainer.max_epochs=")}
    assert epochs <= {f"--trainer.max_epochs={i}" for i in range(1, 5)} and len(epochs) > 1
    assert check_sweep(sweep, str(path), n_random=3) == 5
    bad = {**SEARCH, "params": {**SEARCH["params"], "data.init_args.batch_size": {"choices": [64, "lots"]}}}
    path.write_text(yaml.safe_dump({**raw, "search": bad}))
    with pytest.raises(ValueError, match=r"(?s)--data.init_args.batch_size=lots.*batch_size"):
        write_sweeps(load_grid(path), "random")


# --- Optuna -------------------------------------------------------------------------------------
# Stands in for `python -m zoo fit` in a search: appends its argv to a journal, then "trains" 5 epochs,
# writing val/acc per epoch where --trainer.callbacks+= (EpochMetricLog) says. The first two runs
# and every even-numbered run do well (0.9), the others badly (0.1): a median pruner stops the bad ones.
FAKE_TRIAL = '''
import json, sys, time
from pathlib import Path
argv = sys.argv[1:]
opt = lambda k: argv[argv.index(k) + 1]
out = Path(opt("--run.results_file")).parent.parent
with open(out / "journal.txt", "a") as f:
    f.write(" ".join(argv) + "\\n")
index = len((out / "journal.txt").read_text().splitlines()) - 1
callback = json.loads(next(a for a in argv if a.startswith("--trainer.callbacks+="))[21:])["init_args"]
acc = 0.9 if index < 2 or index % 2 == 0 else 0.1
for epoch in range(5):
    time.sleep(0.5)
    acc += 0.01
    with open(callback["path"], "a") as f:
        f.write(json.dumps({"epoch": epoch, "value": acc}) + "\\n")
Path(opt("--run.results_file")).parent.mkdir(parents=True, exist_ok=True)
Path(opt("--run.results_file")).write_text(json.dumps({"metrics": {"val/acc": acc, "test/acc": acc - 0.05}}))
'''


def _search_grid(tmp_path: Path, trials: int) -> Path:
    fake = tmp_path / "fake_trial.py"
    fake.write_text(FAKE_TRIAL)
    search = {**SEARCH, "trials": trials, "pruner": {"n_startup_trials": 2, "n_warmup_steps": 1}}
    path = _grid(tmp_path, seeds=[0], search=search, command=["python", str(fake)])
    raw = yaml.safe_load(path.read_text())
    del raw["axes"]  # a search-only grid
    path.write_text(yaml.safe_dump(raw))
    return path


def test_two_optuna_workers_share_one_study_without_lost_or_duplicated_trials(tmp_path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = _search_grid(tmp_path, trials=8)
    workers = [subprocess.Popen([sys.executable, "-m", "zoo.tools.grid", str(path), "--launcher", "optuna"], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    logs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], logs
    assert all("trial " in log for log in logs), logs  # both workers ran trials
    out = tmp_path / "out"
    study = optuna.load_study(study_name="g-test",
                              storage=JournalStorage(JournalFileBackend(str(out / "optuna.journal"))))
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(8))
    states = [t.state.name for t in trials]
    assert set(states) <= {"COMPLETE", "PRUNED"} and "PRUNED" in states and "COMPLETE" in states
    runs = (out / "journal.txt").read_text().splitlines()
    names = [ln.split("--run.name ")[1].split()[0] for ln in runs]
    assert sorted(names) == sorted(f"g-test-trial{i}-seed0" for i in range(8))  # each trial one run, once
    for t in trials:
        result = out / "runs" / f"trial{t.number}-seed0.json"
        if t.state.name == "PRUNED":  # killed: fewer epochs, no results
            assert not result.exists() and len(t.intermediate_values) < 5
        else:
            assert t.value == pytest.approx(json.loads(result.read_text())["metrics"]["val/acc"])
            assert sorted(t.intermediate_values) == [0, 1, 2, 3, 4]
        lr = t.params["model.init_args.optimizer.init_args.lr"]
        assert 1e-4 <= lr <= 0.1 and f"--model.init_args.optimizer.init_args.lr {lr}" in runs[names.index(
            f"g-test-trial{t.number}-seed0")]
    table = (out / "search.md").read_text()
    assert "8 trials" in table and f"val/acc = {study.best_value:.4f}" in table
    assert len(list(csv.DictReader(open(out / "trials.csv")))) == 8
    # the budget is spent: another worker runs nothing more
    again = run_grid(str(path), launcher="optuna")
    assert len(again.records) == 8 and len((out / "journal.txt").read_text().splitlines()) == 8


def test_a_trial_whose_worker_died_is_asked_again_and_its_run_resumes(tmp_path):
    """A worker killed mid-trial leaves a RUNNING trial whose run lock nobody holds: the next worker
    marks it failed (not counted), asks again for the same parameters, and that run continues from the
    dead run's last.ckpt."""
    fake = tmp_path / "slow_fit.py"
    fake.write_text(SLOW_FIT.replace('Path(opt("--run.results_file")).write_text(json.dumps({"metrics": {"test/acc": 0.5}}))',
                                     'Path(opt("--run.results_file")).write_text(json.dumps({"metrics": {"val/acc": 0.5}}))'))
    path = _search_grid(tmp_path, trials=1)
    raw = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**raw, "command": ["python", str(fake)]}))
    out = tmp_path / "out"
    worker = subprocess.Popen([sys.executable, "-m", "zoo.tools.grid", str(path), "--launcher", "optuna"], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert _wait((out / "child.pid").exists, 60), "the trial never started"
        worker.kill()
        worker.wait(30)
    finally:
        worker.kill()
    time.sleep(0.5)  # the supervisor notices its runner is gone
    result = run_grid(str(path), launcher="optuna")
    assert [r["status"] for r in result.records] == ["ok"] and result.records[0]["cell"] == "trial0"
    first, second = (out / "journal.txt").read_text().splitlines()
    assert "--ckpt_path" not in first and "trial0-seed0/last.ckpt" in second.split("--ckpt_path ")[1]
    assert first.split("--model.init_args.optimizer.init_args.lr ")[1].split()[0] == \
        second.split("--model.init_args.optimizer.init_args.lr ")[1].split()[0]
