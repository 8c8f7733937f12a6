"""Average the class probabilities of several ``python -m zoo predict`` runs over the same files.

``python -m zoo.tools.ensemble --predictions '[cnn.csv, svm.csv]' --out ensemble.csv``

Why a tool over prediction files and not a model: the models worth combining read different features of the
same recording (the gender CNN log-mel images, the SVM pitch and formant statistics), so no one DataModule
feeds both; each runs its own ``predict`` with its own checkpoint, and this averages what they wrote (the
``probability_<class>`` columns of :class:`zoo.callbacks.PredictionWriter`). The output is a predictions CSV
like theirs, and the same table is printed: with labels the accuracy, each class's recall and the balanced
accuracy; with speakers (a test split) each speaker's accuracy.

The average is unweighted: an SVM's "probabilities" are a softmax of its decision values, a confidence on
its own scale, so any weight would be one more setting to choose on the test data
(docs/spoken_digits.md#gender-from-real-voices measured the plain mean).
"""

from __future__ import annotations

import csv
from pathlib import Path

from zoo.callbacks import PredictionWriter

PREFIX = "probability_"


def read_predictions(path: str | Path) -> tuple[list[str], dict[str, dict]]:
    """A predictions CSV: its class names (from the ``probability_<class>`` columns) and its rows by path."""
    path = Path(path)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        rows = list(reader)
    names = [c[len(PREFIX):] for c in columns if c.startswith(PREFIX)]
    if "path" not in columns or not names:
        raise ValueError(f"{path}: not a classifier's predictions file; expected the columns path, ... and "
                         f"probability_<class> for every class (written by `python -m zoo predict "
                         f"--run.predictions_file` since zoo 0.3.15), got {columns}")
    by_path: dict[str, dict] = {}
    for r in rows:
        if r["path"] in by_path:
            raise ValueError(f"{path}: {r['path']} has two rows")
        by_path[r["path"]] = r
    return names, by_path


def ensemble(*, predictions: list[str], out: str | None = None, show: int = 20) -> list[dict]:
    """Average the class probabilities of ``predictions`` (CSVs of ``zoo predict`` over the same files), write
    ``out`` (when given) and print the table; returns the rows.

    Args:
        predictions: two or more predictions CSVs with the same files and the same classes.
        out: CSV to write (path, prediction, probability, label, speaker and error where any row has one, and
            every class's probability; an image generator's ``image`` column is not carried over); None: only
            print the table.
        show: how many rows the printed table shows.
    """
    if len(predictions) < 2:
        raise ValueError(f"ensemble: give two or more predictions files, got {predictions}")
    first_names, first = read_predictions(predictions[0])
    members = [(predictions[0], first)]
    for p in predictions[1:]:
        names, rows = read_predictions(p)
        if sorted(names) != sorted(first_names):
            raise ValueError(f"ensemble: {p} scores the classes {names}, {predictions[0]} {first_names}")
        if set(rows) != set(first):
            only = sorted(set(rows) ^ set(first))
            raise ValueError(f"ensemble: {p} and {predictions[0]} predicted other files, e.g. {only[:3]} "
                             f"({len(only)} in one only); predict the same files with each model")
        members.append((p, rows))
    out_rows = []
    for path in first:  # the first file's order
        rows = [m[path] for _, m in members]
        row = {"path": path, "prediction": "", "probability": "", "label": _agreed(path, "label", members, rows),
               "speaker": _agreed(path, "speaker", members, rows), "error": ""}
        errors = [f"{p}: {r['error']}" for (p, _), r in zip(members, rows) if r.get("error")]
        if errors:
            row["error"] = "; ".join(errors)
        else:
            mean = {n: sum(float(r[PREFIX + n]) for r in rows) / len(rows) for n in first_names}
            best = max(first_names, key=lambda n: mean[n])  # ties: the first class, as argmax
            row.update({"prediction": best, "probability": f"{mean[best]:.4f}"},
                       **{PREFIX + n: f"{mean[n]:.6f}" for n in first_names})
        out_rows.append(row)
    columns = ["path", "prediction", "probability"]
    columns += [c for c in ("label", "speaker", "error") if any(r[c] for r in out_rows)]
    columns += [PREFIX + n for n in first_names]
    writer = PredictionWriter(out, show=show)
    writer.rows, writer.class_names = out_rows, list(first_names)
    writer.finish(columns)
    return out_rows


def _agreed(path: str, column: str, members: list[tuple[str, dict]], rows: list[dict]) -> str:
    """The one value of ``column`` the members give ``path`` (a member without the column gives none)."""
    given = {p: r[column] for (p, _), r in zip(members, rows) if r.get(column)}
    if len(set(given.values())) > 1:
        raise ValueError(f"ensemble: the files disagree on the {column} of {path}: "
                         + ", ".join(f"{p}: {v!r}" for p, v in given.items()))
    return next(iter(given.values()), "")


def main(args: list[str] | None = None):
    from jsonargparse import auto_cli

    return auto_cli(ensemble, args=args)


if __name__ == "__main__":
    main()
