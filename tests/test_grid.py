"""The grid runner (zoo/tools/grid.py): expansion, commands, resume, failures, outputs."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import CONFIGS, REPO
from zoo.tools.grid import main, run_grid
from zoo.tools.grid_runs import build_command, cell_name, fold_summary, load_grid, say

# Stands in for `python -m zoo fit`: appends its argv to a journal, fails for real_per_class=13,
# else writes --run.results_file with test/acc = real/100 + seed/1000.
FAKE_FIT = '''
import json, sys
from pathlib import Path
argv = sys.argv[1:]
opt = lambda k: argv[argv.index(k) + 1]
with open(Path(opt("--run.results_file")).parent.parent / "journal.txt", "a") as f:
    f.write(" ".join(argv) + "\\n")
real = int(opt("--data.real_per_class"))
if real == 13:
    sys.exit("boom: real_per_class=13")
acc = real / 100 + int(opt("--seed_everything")) / 1000
Path(opt("--run.results_file")).parent.mkdir(parents=True, exist_ok=True)
Path(opt("--run.results_file")).write_text(json.dumps({"metrics": {"test/acc": acc, "val/acc": acc, "train/acc": 0.9,
                                                                 "train/seconds": real, "test/seconds": 2}}))
'''


def _grid(tmp_path: Path, **overrides) -> Path:
    fake = tmp_path / "fake_fit.py"
    fake.write_text(FAKE_FIT)
    spec = {"config": str(CONFIGS / "lenet_reduced_mnist.yaml"), "group": "g-test", "seeds": [0, 1, 2],
            "metric": "test/acc", "axes": {"data.real_per_class": [13, 30], "data.augmented_per_class": [0, 5]},
            "args": ["--trainer.max_epochs", "1"], "out": str(tmp_path / "out"),
            "command": ["python", str(fake)], **overrides}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_axes_expand_to_cartesian_product_with_readable_names(tmp_path):
    spec = load_grid(_grid(tmp_path))
    assert [c.name for c in spec.cells][:2] == ["real_per_class=13_augmented_per_class=0",
                                                "real_per_class=13_augmented_per_class=5"]
    assert len(spec.cells) == 4 and spec.keys == ["data.real_per_class", "data.augmented_per_class"]
    cmd = build_command(spec, spec.cells[1], 2)
    joined = " ".join(cmd)
    assert "--data.real_per_class 13 --data.augmented_per_class 5" in joined
    assert "--seed_everything 2" in joined and "--run.group g-test" in joined and "--trainer.max_epochs 1" in joined
    assert cmd[cmd.index("--run.results_file") + 1].endswith("runs/real_per_class=13_augmented_per_class=5-seed2.json")
    assert cell_name({"data.synthetic_path": "/a b/c.npz", "model.x": None}) == "synthetic_path=-a-b-c.npz_x=null"


def test_explicit_cells(tmp_path):
    path = _grid(tmp_path, axes=None)
    raw = yaml.safe_load(path.read_text())
    del raw["axes"]
    raw["cells"] = [{"data.real_per_class": 10}, {"data.real_per_class": 30, "data.synthetic_per_class": 2}]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    spec = load_grid(path)
    assert spec.keys == ["data.real_per_class", "data.synthetic_per_class"]
    assert "--data.synthetic_per_class" not in build_command(spec, spec.cells[0], 0)


@pytest.mark.parametrize("change, match", [
    ({"cells": [{"data.real_per_class": 1}]}, "exactly one of 'axes'"),
    ({"colour": "red"}, "unknown keys"),
    ({"config": "configs/does_not_exist.yaml"}, "does_not_exist.yaml"),
    ({"seeds": []}, "seeds"),
    ({"axes": {"data.real_per_class": []}}, "non-empty lists"),
    ({"axes": {"--data.real_per_class": [1]}}, "without dashes"),
])
def test_bad_grid_files_name_the_file_and_setting(tmp_path, change, match):
    path = _grid(tmp_path, **change)
    with pytest.raises((ValueError, FileNotFoundError), match=match) as err:
        load_grid(path)
    assert str(path) in str(err.value)


def test_grid_runs_records_failures_and_resumes(tmp_path, capsys):
    path = _grid(tmp_path)
    out = tmp_path / "out"
    result = run_grid(str(path))
    journal = (out / "journal.txt").read_text().splitlines()
    assert len(journal) == 12 and len(result.records) == 12
    assert len(result.failed) == 6 and {r["cell"] for r in result.failed} == {
        "real_per_class=13_augmented_per_class=0", "real_per_class=13_augmented_per_class=5"}
    assert "boom" in Path(result.failed[0]["log"]).read_text()

    rows = list(csv.DictReader(open(out / "runs.csv")))
    assert len(rows) == 12 and {r["status"] for r in rows} == {"ok", "failed"}
    ok = [r for r in rows if r["status"] == "ok"]
    assert all(float(r["test/acc"]) == pytest.approx(int(r["data.real_per_class"]) / 100 + int(r["seed"]) / 1000)
               for r in ok)
    mean, std, n = result.summary["real_per_class=30_augmented_per_class=5"]
    assert (mean, std, n) == (pytest.approx(0.301), pytest.approx(0.001), 3)
    table = (out / "table.md").read_text()
    # next to the metric: train accuracy and the fit / test wall times, as the original study tables had
    assert "| test/acc mean ± std | train/acc | train s | test s | runs ok | failed |" in table
    assert "| 30 | 5 | 0.3010 ± 0.0010 | 0.9000 | 30.0 | 2.0 | 3 | 0 |" in table
    assert "| 13 | 0 | n/a | n/a | n/a | n/a | 0 | 3 |" in table
    assert (out / "heatmap.png").stat().st_size > 1000

    # second invocation: finished runs are skipped, only the failed cell is tried again
    again = run_grid(str(path))
    journal2 = (out / "journal.txt").read_text().splitlines()[len(journal):]
    assert len(journal2) == 6 and all("--data.real_per_class 13" in line for line in journal2)
    assert sum(r["status"] == "skipped" for r in again.records) == 6
    assert again.summary == result.summary
    # a skipped run still reports the wall time it took when it ran, from its results JSON
    took = {(r["cell"], r["seed"]): r["seconds"] for r in result.records if r["status"] == "ok"}
    assert all(isinstance(s, float) for s in took.values())
    assert {(r["cell"], r["seed"]): r["seconds"] for r in again.records if r["status"] == "skipped"} == took
    first_ok = next(r for r in result.records if r["status"] == "ok")
    assert json.loads((out / "runs" / f"{first_ok['cell']}-seed{first_ok['seed']}.json").read_text())["grid"]["seconds"] \
        == first_ok["seconds"]

    # summary_only starts nothing and lists the runs that have no results as missing
    summary = run_grid(str(path), summary_only=True)
    assert len((out / "journal.txt").read_text().splitlines()) == len(journal) + 6
    assert sorted({r["status"] for r in summary.records}) == ["missing", "skipped"]
    assert summary.summary == result.summary
    rows = {(r["cell"], int(r["seed"])): r for r in csv.DictReader(open(out / "runs.csv"))}
    assert all(float(rows[key]["seconds"]) == seconds for key, seconds in took.items())


def test_runs_finished_before_json_timing_keep_seconds_from_the_previous_runs_csv(tmp_path):
    path = _grid(tmp_path, axes={"data.real_per_class": [30]}, seeds=[0])
    out = tmp_path / "out"
    run_grid(str(path))
    result = out / "runs" / "real_per_class=30-seed0.json"
    result.write_text(json.dumps({k: v for k, v in json.loads(result.read_text()).items() if k != "grid"}))
    rows = list(csv.DictReader(open(out / "runs.csv")))
    rows[0]["seconds"] = "123.4"
    with open(out / "runs.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert run_grid(str(path), summary_only=True).records[0]["seconds"] == 123.4


def test_list_valued_axis_gets_its_table_and_heatmap(tmp_path):
    """As configs/grids/masked_ae_bottleneck.yaml: split_ratios is a list per cell."""
    path = _grid(tmp_path, seeds=[0], axes={"data.real_per_class": [30, 40],
                                            "data.split_ratios": [[0.8, 0.1, 0.1], [0.7, 0.2, 0.1]]})
    result = run_grid(str(path))
    assert len(result.summary) == 4 and not result.failed
    assert "| 40 | [0.7, 0.2, 0.1] | 0.4000 (1 run) | 0.9000 | 40.0 | 2.0 | 1 | 0 |" in (tmp_path / "out" / "table.md").read_text()
    assert (tmp_path / "out" / "heatmap.png").stat().st_size > 1000


def test_dry_run_prints_commands_and_runs_nothing(tmp_path, capsys):
    path = _grid(tmp_path, seeds=[0])
    (tmp_path / "out" / "runs").mkdir(parents=True)
    (tmp_path / "out" / "runs" / "real_per_class=13_augmented_per_class=0-seed0.json").write_text("{}")
    with pytest.raises(SystemExit) as exit_:
        main([str(path), "--dry_run", "true"])
    assert exit_.value.code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("# skipped (finished):")
    assert all("--run.results_file" in line for line in lines)
    assert not (tmp_path / "out" / "journal.txt").exists()


def test_seeds_first_orders_runs_by_seed(tmp_path, capsys):
    path = _grid(tmp_path, seeds=[0, 1])
    run_grid(str(path), dry_run=True, seeds_first=True)
    seeds = [line.split("--seed_everything ")[1].split()[0] for line in capsys.readouterr().out.splitlines()]
    assert seeds == ["0"] * 4 + ["1"] * 4


def test_cli_exit_status_reports_failures(tmp_path):
    path = _grid(tmp_path, seeds=[0], axes={"data.real_per_class": [13]})
    with pytest.raises(SystemExit) as exit_:
        main([str(path), "--max_parallel", "2"])
    assert exit_.value.code == 1


def test_real_zoo_run_end_to_end(tmp_path, config_data, monkeypatch):
    """One real `python -m zoo fit` cell (fast_dev_run) writes its results where the grid reads them."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = tmp_path / "grid.yaml"
    out = tmp_path / "out"
    path.write_text(yaml.safe_dump({
        "config": str(CONFIGS / "lenet_reduced_mnist.yaml"), "group": "grid-e2e", "seeds": [0],
        "axes": {"data.real_per_class": [5]},
        "args": ["--trainer.fast_dev_run", "2", "--trainer.logger", "false", "--trainer.accelerator", "cpu",
                 "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path / "runs"),
                 "--data.test_per_class", "5"],
        "out": str(out)}))
    result = run_grid(str(path))
    assert [r["status"] for r in result.records] == ["ok"], (out / "logs" / "real_per_class=5-seed0.log").read_text()
    metrics = json.loads((out / "runs" / "real_per_class=5-seed0.json").read_text())["metrics"]
    assert 0.0 <= metrics["test/acc"] <= 1.0 and result.summary["real_per_class=5"][2] == 1
    assert "| 5 |" in (out / "table.md").read_text()


def test_out_override_reruns_a_finished_study_elsewhere(tmp_path):
    path = _grid(tmp_path, axes={"data.real_per_class": [30]}, seeds=[0, 1])
    run_grid(str(path))
    again = run_grid(str(path), out=str(tmp_path / "repro"))
    assert [r["status"] for r in again.records] == ["ok", "ok"]  # nothing skipped: the study ran again
    assert (tmp_path / "repro" / "table.md").exists() and (tmp_path / "repro" / "logs" / "real_per_class=30-seed0.log").exists()
    assert len(list((tmp_path / "repro" / "runs").glob("*.json"))) == 2
    assert len((tmp_path / "out" / "journal.txt").read_text().splitlines()) == 2  # the first study was left alone


def test_grid_file_given_as_config_is_a_clear_error(tmp_path):
    path = _grid(tmp_path)
    with pytest.raises(SystemExit, match="is a grid file: pass it as the argument"):
        main(["--config", str(path)])


def test_a_corrupt_results_file_is_named_with_what_to_do(tmp_path):
    path = _grid(tmp_path, axes={"data.real_per_class": [30]}, seeds=[0])
    run_grid(str(path))
    result = tmp_path / "out" / "runs" / "real_per_class=30-seed0.json"
    assert not list(result.parent.glob("*.tmp"))  # the timing was added in place, nothing left behind
    result.write_text('{"metrics": {"test/acc": 0.3')  # cut off mid-write
    with pytest.raises(ValueError, match=r"real_per_class=30-seed0.json is not valid JSON.*delete it to re-run"):
        run_grid(str(path))


FAKE_FOLD_FIT = '''
import json, sys
from pathlib import Path
argv = sys.argv[1:]
opt = lambda k: argv[argv.index(k) + 1]
with open(Path(opt("--run.results_file")).parent.parent / "journal.txt", "a") as f:
    f.write(" ".join(argv) + "\\n")
acc = {"a": 0.9, "b": 0.7}[opt("--data.test_speaker")] - (0.1 if "--data.trim_db" in argv else 0.0)
acc += 0.05 if Path(opt("--config")).stem == "cbam_audio" else 0.0
Path(opt("--run.results_file")).parent.mkdir(parents=True, exist_ok=True)
Path(opt("--run.results_file")).write_text(json.dumps({"metrics": {"test/acc": acc},
                                                       "confusion_matrix": [[3, 1], [0, 4]]}))
'''


def test_only_runs_the_matching_runs_and_summarises_the_rest(tmp_path, capsys):
    """``only``: a few folds of a long study, without a copy of its grid file."""
    path = _grid(tmp_path)
    out = tmp_path / "out"
    result = run_grid(str(path), only=["data.real_per_class=30", "seed=0", "seed=2"])
    journal = (out / "journal.txt").read_text().splitlines()
    assert len(journal) == 4 and all("--data.real_per_class 30" in line for line in journal)
    assert sorted(line.split("--seed_everything ")[1].split()[0] for line in journal) == ["0", "0", "2", "2"]
    assert sorted(r["status"] for r in result.records) == ["missing"] * 8 + ["ok"] * 4
    assert "[4/4]" in capsys.readouterr().out
    # then another seed: the finished runs are summarised, not redone
    again = run_grid(str(path), only=["data.real_per_class=30", "data.augmented_per_class=5", "seed=1"])
    assert len((out / "journal.txt").read_text().splitlines()) == 5
    assert again.summary["real_per_class=30_augmented_per_class=5"][2] == 3
    assert sorted(r["status"] for r in again.records) == ["missing"] * 7 + ["ok"] + ["skipped"] * 4
    rows = list(csv.DictReader(open(out / "runs.csv")))
    assert len(rows) == 12 and sum(r["status"] == "missing" for r in rows) == 7
    # a dry run prints only the chosen runs' commands
    run_grid(str(path), only=["data.augmented_per_class=0"], dry_run=True)
    printed = [ln for ln in capsys.readouterr().out.splitlines() if "--seed_everything" in ln]
    assert len(printed) == 6 and all("--data.augmented_per_class 0" in ln for ln in printed)


def test_runs_another_runner_finishes_meanwhile_are_in_the_summary(tmp_path, monkeypatch):
    """Two runners share a study (``only`` splits its folds): the one that ends last summarises both."""
    import shutil

    import zoo.tools.grid as grid_module

    path = _grid(tmp_path)
    runs = tmp_path / "out" / "runs"
    real = grid_module._run_one

    def run_one(spec, cell, seed, *args):
        record = real(spec, cell, seed, *args)
        if record["status"] == "ok":  # meanwhile, "another runner" finishes seed 1 of the same cell
            shutil.copy(runs / f"{cell.name}-seed{seed}.json", runs / f"{cell.name}-seed1.json")
        return record

    monkeypatch.setattr(grid_module, "_run_one", run_one)
    result = run_grid(str(path), only=["data.real_per_class=30", "data.augmented_per_class=5", "seed=0"])
    status = {r["seed"]: r["status"] for r in result.records if r["cell"] == "real_per_class=30_augmented_per_class=5"}
    assert status == {0: "ok", 1: "skipped", 2: "missing"}
    assert result.summary["real_per_class=30_augmented_per_class=5"][2] == 2


@pytest.mark.parametrize("only, match", [
    (["data.nope=3"], r"--only 'data.nope=3': expected key=value with a key of this grid, one of "
                      r"\['data.real_per_class', 'data.augmented_per_class', 'seed'\]"),
    (["real_per_class"], r"expected key=value"),
    (["data.real_per_class=31"], r"data.real_per_class=31: no run has it; data.real_per_class is one of \['13', '30'\]"),
    (["seed=7"], r"seed=7: no run has it"),
])
def test_only_names_a_key_or_value_the_grid_does_not_have(tmp_path, only, match):
    path = _grid(tmp_path)
    with pytest.raises(ValueError, match=r"--only"):
        run_grid(str(path), only=only, launcher="optuna")  # a search picks its own runs
    with pytest.raises(ValueError, match=match):
        run_grid(str(path), only=only)
    assert not (tmp_path / "out" / "journal.txt").exists()


def test_only_that_matches_no_cell_of_explicit_cells_is_an_error(tmp_path):
    path = _grid(tmp_path)
    raw = yaml.safe_load(path.read_text())
    del raw["axes"]
    raw["cells"] = [{"data.real_per_class": 30, "data.augmented_per_class": 0},
                    {"data.real_per_class": 13, "data.augmented_per_class": 5}]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ValueError, match=r"matches none of its 6 runs"):
        run_grid(str(path), only=["data.real_per_class=30", "data.augmented_per_class=5"])


def test_variants_config_axis_and_folds_summary(tmp_path):
    """Variants (named override sets), several base configs and a folds axis: the commands carry the
    right overrides, and folds.md gives mean +- std and the worst fold for every other-axes column."""
    fake = tmp_path / "fake_fit.py"
    fake.write_text(FAKE_FOLD_FIT)
    spec = {"config": str(CONFIGS / "cnn_audio.yaml"), "group": "g-folds", "seeds": [0], "metric": "test/acc",
            "variants": {"recipe": {}, "no-trim": {"data.trim_db": None}},
            "axes": {"config": [str(CONFIGS / "cnn_audio.yaml"), str(CONFIGS / "cbam_audio.yaml")],
                     "data.test_speaker": ["a", "b"]},
            "folds": "data.test_speaker", "percent": True, "out": str(tmp_path / "out"),
            "command": ["python", str(fake)]}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    grid = load_grid(path)
    assert grid.keys == ["variant", "config", "data.test_speaker"] and len(grid.cells) == 8
    no_trim = next(c for c in grid.cells if c.overrides["variant"] == "no-trim")
    cmd = build_command(grid, no_trim, 0)
    assert cmd[cmd.index("--config") + 1] == no_trim.overrides["config"]
    assert cmd[cmd.index("--data.trim_db") + 1] == "null" and "--variant" not in cmd and "--config" in cmd
    result = run_grid(str(path), max_parallel=2)
    assert not result.failed
    folds = (tmp_path / "out" / "folds.md").read_text()
    assert "| test_speaker | recipe cnn_audio | recipe cbam_audio | no-trim cnn_audio | no-trim cbam_audio |" in folds
    assert "| a | 90.00 | 95.00 | 80.00 | 85.00 |" in folds
    assert "| mean ± std | **80.00 ± 14.14** | **85.00 ± 14.14** | **70.00 ± 14.14** | **75.00 ± 14.14** |" in folds
    assert "| worst | 70.00 | 75.00 | 60.00 | 65.00 |" in folds
    assert (tmp_path / "out" / "confusion_recipe-cnn_audio.png").is_file()
    # a column with no finished run (a variant outside --only) reads n/a, not "nan ± nan"
    recipe_only = {c.name: (90.0, 0.0, 1) for c in grid.cells if c.overrides["variant"] == "recipe"}
    folds = fold_summary(grid, recipe_only).read_text()
    assert "| mean ± std | **90.00 ± 0.00** | **90.00 ± 0.00** | n/a | n/a |" in folds and "nan" not in folds


def test_each_progress_line_is_one_write_so_parallel_runs_lines_stay_apart(monkeypatch):
    # print() writes the text and the newline separately: two threads' lines came out as one
    writes = []

    class Stdout:
        def write(self, text):
            writes.append(text)

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", Stdout())
    say("started a (log: a.log)")
    say("[1/2] a: ok")
    assert writes == ["started a (log: a.log)\n", "[1/2] a: ok\n"]


@pytest.mark.parametrize("change, match", [
    ({"folds": "data.nope"}, r"'folds' must name one of the axes"),
    ({"variants": {"x": 3}}, r"'variants' must map names"),
    ({"axes": {"config": ["configs/missing.yaml"]}}, r"config 'configs/missing.yaml' of a cell does not exist"),
])
def test_bad_variants_folds_and_configs_are_named(tmp_path, change, match):
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        load_grid(_grid(tmp_path, **change))


# --- safe to kill, safe to run twice (issue 16 part 3) ------------------------------------------------
def _zoo_grid(tmp_path: Path, **overrides) -> Path:
    """A grid of real `python -m zoo fit` commands (only validated in these tests, never run)."""
    spec = {"config": str(CONFIGS / "lenet_reduced_mnist.yaml"), "group": "g-check", "seeds": [0],
            "axes": {"data.real_per_class": [5, 10]}, "out": str(tmp_path / "out"), **overrides}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.parametrize("change, match", [
    ({"axes": {"data.real_per_clas": [5, 10]}}, r"Option 'real_per_clas' is not accepted"),
    ({"axes": {"model.net.dropout": ["much"]}}, r"Parser key \"dropout\""),
    ({"variants": {"plain": {}, "odd": {"model.nope": 1}}}, r"variant 'odd'.*Option 'nope' is not accepted"),
    # each option valid alone, the combination refused by the DataModule's constructor (FSDD's speakers are men)
    ({"config": str(CONFIGS / "cnn_audio.yaml"), "axes": {"data.target": ["gender"]}},
     r"the data module refuses these settings: SpokenDigits: target='gender' is impossible with source='fsdd'"),
])
def test_a_bad_axis_key_or_value_stops_the_grid_before_any_run(tmp_path, change, match):
    path = _zoo_grid(tmp_path, **change)
    with pytest.raises(ValueError, match=f"(?s){match}") as err:
        run_grid(str(path))
    assert str(path) in str(err.value) and "none was started" in str(err.value)
    assert not (tmp_path / "out").exists()  # no log, no lock, no run
    with pytest.raises(SystemExit, match=f"(?s)^error: {path}.*{match}"):
        main([str(path), "--dry_run", "true"])


def test_commands_are_parsed_once_per_config_and_variant(tmp_path, monkeypatch, capsys):
    import zoo.cli

    parsed, real = [], zoo.cli.main
    monkeypatch.setattr(zoo.cli, "main", lambda args, **kw: parsed.append(args) or real(args, **kw))
    configs = [str(CONFIGS / "lenet_reduced_mnist.yaml"), str(CONFIGS / "lenet_cas.yaml")]
    path = _zoo_grid(tmp_path, axes={"config": configs, "data.real_per_class": [5, 10, 20]},
                     variants={"plain": {}, "dropout": {"model.net.dropout": 0.2}})
    run_grid(str(path), dry_run=True)
    assert len(capsys.readouterr().out.strip().splitlines()) == 12  # 12 commands, 4 parses
    assert len(parsed) == 4 and all(args[-1] == "--print_config" for args in parsed)
    assert sorted(args[args.index("--config") + 1] for args in parsed) == sorted(configs * 2)
    assert sum("--model.net.dropout" in args for args in parsed) == 2
    parsed.clear()
    run_grid(str(_grid(tmp_path)), dry_run=True)  # not a zoo command: the user's own program, not checked
    assert parsed == []


def test_a_metric_no_run_produced_is_an_error_naming_the_ones_that_exist(tmp_path):
    path = _grid(tmp_path, axes={"data.real_per_class": [30]}, seeds=[0], metric="test/accuracy")
    with pytest.raises(SystemExit, match=r"metric 'test/accuracy' is in no run's results; the runs produced "
                                         r"\['test/acc', 'test/seconds', 'train/acc', 'train/seconds', 'val/acc'\]"):
        main([str(path)])
    assert (tmp_path / "out" / "runs.csv").exists() and not (tmp_path / "out" / "table.md").exists()


def test_a_run_locked_by_a_live_runner_is_left_to_it_and_a_dead_runners_lock_is_taken_over(tmp_path):
    from zoo.tools.grid_runs import _lock_run

    path = _grid(tmp_path, axes={"data.real_per_class": [30, 40]}, seeds=[0])
    logs = tmp_path / "out" / "logs"
    logs.mkdir(parents=True)
    (logs / "real_per_class=40-seed0.lock").write_text("pid 999999 on elsewhere\n")  # its runner died
    fd, _ = _lock_run(logs / "real_per_class=30-seed0.lock")  # held: as by another runner, running it now
    try:
        result = run_grid(str(path))
    finally:
        os.close(fd)
    status = {r["cell"]: r["status"] for r in result.records}
    assert status["real_per_class=30"].startswith(f"running elsewhere (pid {os.getpid()} on ")
    assert status["real_per_class=40"] == "ok" and not result.failed
    journal = (tmp_path / "out" / "journal.txt").read_text()
    assert "--data.real_per_class 40" in journal and "--data.real_per_class 30" not in journal
    assert not (logs / "real_per_class=40-seed0.lock").exists()  # released when the run ended


# Stands in for a long `python -m zoo fit`: writes last.ckpt into its --checkpoint.dirpath (as after its
# first epoch) and its pid, then trains "forever"; resumed with --ckpt_path, it finishes at once.
SLOW_FIT = '''
import json, os, sys, time
from pathlib import Path
argv = sys.argv[1:]
opt = lambda k: argv[argv.index(k) + 1]
out = Path(opt("--run.results_file")).parent.parent
with open(out / "journal.txt", "a") as f:
    f.write(" ".join(argv) + "\\n")
if "--ckpt_path" in argv:
    Path(opt("--run.results_file")).parent.mkdir(parents=True, exist_ok=True)
    Path(opt("--run.results_file")).write_text(json.dumps({"metrics": {"test/acc": 0.5}}))
    sys.exit(0)
Path(opt("--checkpoint.dirpath")).mkdir(parents=True, exist_ok=True)
Path(opt("--checkpoint.dirpath"), "last.ckpt").write_text("epoch 0")
(out / "child.pid").write_text(str(os.getpid()))
time.sleep(120)
'''


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie nobody has reaped yet is dead too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _wait(condition, seconds: float) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_runs_die_with_the_runner_and_resume_from_their_last_checkpoint(tmp_path, sig):
    fake = tmp_path / "slow_fit.py"
    fake.write_text(SLOW_FIT)
    path = _grid(tmp_path, axes={"data.real_per_class": [30]}, seeds=[0], command=["python", str(fake)])
    out = tmp_path / "out"
    runner = subprocess.Popen([sys.executable, "-m", "zoo.tools.grid", str(path)], cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    child = None
    try:
        assert _wait((out / "child.pid").exists, 60), "the run never started"
        child = int((out / "child.pid").read_text())
        runner.send_signal(sig)
        assert runner.wait(30) == (143 if sig == signal.SIGTERM else -9)
        assert _wait(lambda: not _alive(child), 10), "the run outlived the runner"
    finally:
        runner.kill()
        if child is not None and _alive(child):
            os.kill(child, signal.SIGKILL)
    # started again: the interrupted run resumes from its last checkpoint (the dead runner's lock is taken over)
    result = run_grid(str(path))
    assert [r["status"] for r in result.records] == ["ok"]
    last = (out / "journal.txt").read_text().splitlines()[-1].split()
    ckpt = out / "logs" / "checkpoints" / "real_per_class=30-seed0" / "last.ckpt"
    assert last[last.index("--ckpt_path") + 1] == str(ckpt)
    assert "resumed from its last checkpoint" in (out / "logs" / "real_per_class=30-seed0.log").read_text()


def test_variants_alone_are_the_grid_axis(tmp_path):
    """A comparison of named variants (configs/grids/cats_dogs_augment.yaml) needs no other axis."""
    path = _grid(tmp_path, axes=None)
    raw = yaml.safe_load(path.read_text())
    del raw["axes"]
    raw["variants"] = {"augment": {}, "no-augment": {"model.augment": None}}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    spec = load_grid(path)
    assert [c.name for c in spec.cells] == ["variant=augment", "variant=no-augment"] and spec.keys == ["variant"]
    assert "--model.augment null" in " ".join(build_command(spec, spec.cells[1], 0))
    assert "--model.augment" not in build_command(spec, spec.cells[0], 0)


# --- every study grid of configs/grids ------------------------------------------------------------------------
GRIDS = sorted((CONFIGS / "grids").glob("*.yaml"))


def test_there_are_study_grids():
    assert len(GRIDS) >= 10, GRIDS


@pytest.mark.parametrize("grid", GRIDS, ids=[g.stem for g in GRIDS])
def test_every_run_of_every_study_grid_would_start(grid, monkeypatch):
    """Each distinct command of a shipped grid (every config and variant, with the keys its axes set) is parsed by
    the CLI, nothing runs: a misspelt key in a variant added for one study (e.g. a net's setting that must be
    addressed inside the task, ``model.init_args.net.init_args.<arg>``) fails here, not hours into the grid."""
    from zoo.tools.grid import validate_commands

    monkeypatch.chdir(REPO)
    assert validate_commands(load_grid(grid)) >= 1


# Stands in for `python -m zoo fit`: writes a result, and the OMP_NUM_THREADS it was started with next to it.
FAKE_THREADS_FIT = '''
import json, os, sys
from pathlib import Path
argv = sys.argv[1:]
result = Path(argv[argv.index("--run.results_file") + 1])
result.parent.mkdir(parents=True, exist_ok=True)
result.with_suffix(".threads").write_text(os.environ.get("OMP_NUM_THREADS", "unset"))
result.write_text(json.dumps({"metrics": {"test/acc": 0.5}}))
'''


@pytest.mark.parametrize("max_parallel, user_setting, expected", [
    (1, None, "unset"), (2, None, "2"), (3, None, "1"), (8, None, "1"), (2, "3", "3")])
def test_runs_side_by_side_share_the_cores_out_unless_the_user_set_threads(
        tmp_path, monkeypatch, max_parallel, user_setting, expected):
    # two PyTorch runs each starting a thread per core ran 1.8x slower than one at a time on 2 cores
    fake = tmp_path / "fake_threads.py"
    fake.write_text(FAKE_THREADS_FIT)
    path = _grid(tmp_path, command=["python", str(fake)], seeds=[0], axes={"data.real_per_class": [1, 2, 3]})
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)
    if user_setting is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", user_setting)
    assert not run_grid(str(path), max_parallel=max_parallel).failed
    seen = {p.read_text() for p in (tmp_path / "out" / "runs").glob("*.threads")}
    assert seen == {expected}
