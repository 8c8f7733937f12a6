"""``python -m zoo.tools.ensemble``: the class probabilities of several predict runs, averaged per file."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from zoo.tools.ensemble import ensemble, main


def _write(path: Path, rows: list[dict], classes=("female", "male")) -> str:
    columns = ["path", "prediction", "probability", "label", "speaker", "error", *(f"probability_{c}" for c in classes)]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            probs = r.get("probs")
            full = {"error": r.get("error", ""), "label": r.get("label", ""), "speaker": r.get("speaker", ""), "path": r["path"]}
            if probs:
                best = max(range(len(classes)), key=lambda i: probs[i])
                full.update(prediction=classes[best], probability=f"{probs[best]:.4f}",
                            **{f"probability_{c}": f"{p:.6f}" for c, p in zip(classes, probs)})
            w.writerow(full)
    return str(path)


def test_averages_each_files_probabilities_and_scores_like_predict(tmp_path, capsys):
    """A clip the CNN gets wrong with little confidence and the SVM right with much comes out right; a file
    one model could not read keeps the reason, naming the model's file; the table scores classes and speakers."""
    cnn = _write(tmp_path / "cnn.csv", [
        {"path": "a.wav", "probs": [0.45, 0.55], "label": "female", "speaker": "05"},
        {"path": "b.wav", "probs": [0.20, 0.80], "label": "male", "speaker": "37"},
        {"path": "c.wav", "probs": [0.90, 0.10], "label": "female", "speaker": "22"},
        {"path": "d.wav", "error": "d.wav: empty file", "label": "male", "speaker": "37"}])
    svm = _write(tmp_path / "svm.csv", [
        {"path": "c.wav", "probs": [0.70, 0.30], "label": "female", "speaker": "22"},
        {"path": "a.wav", "probs": [0.95, 0.05], "label": "female", "speaker": "05"},
        {"path": "b.wav", "probs": [0.60, 0.40], "label": "male", "speaker": "37"},
        {"path": "d.wav", "error": "d.wav: empty file", "label": "male", "speaker": "37"}])
    out = tmp_path / "ens.csv"
    rows = ensemble(predictions=[cnn, svm], out=str(out))
    assert [(r["path"], r["prediction"], r["probability"]) for r in rows] == [
        ("a.wav", "female", "0.7000"), ("b.wav", "male", "0.6000"), ("c.wav", "female", "0.8000"), ("d.wav", "", "")]
    assert rows[3]["error"] == f"{cnn}: d.wav: empty file; {svm}: d.wav: empty file"
    with out.open() as f:
        written = list(csv.DictReader(f))
    assert list(written[0]) == ["path", "prediction", "probability", "label", "speaker", "error",
                                "probability_female", "probability_male"]
    assert [r["probability_male"] for r in written[:3]] == ["0.300000", "0.600000", "0.200000"]
    printed = capsys.readouterr().out
    assert "3 file(s) predicted, 1 failed" in printed and "accuracy on 3 labelled file(s): 100.00 %" in printed
    assert "balanced accuracy 100.00 %" in printed and "accuracy per speaker, worst first (3)" in printed
    # the command line reads the same arguments
    main(["--predictions", f"[{cnn}, {svm}]", "--out", str(tmp_path / "cli.csv")])
    assert (tmp_path / "cli.csv").read_text() == out.read_text()


def test_inputs_that_cannot_be_averaged_are_refused_naming_the_file(tmp_path):
    a = _write(tmp_path / "a.csv", [{"path": "x.wav", "probs": [0.4, 0.6]}])
    with pytest.raises(ValueError, match="two or more"):
        ensemble(predictions=[a])
    other_files = _write(tmp_path / "b.csv", [{"path": "y.wav", "probs": [0.4, 0.6]}])
    with pytest.raises(ValueError, match=r"b\.csv and .*a\.csv predicted other files, e\.g\. \['x\.wav', 'y\.wav'\]"):
        ensemble(predictions=[a, other_files])
    other_classes = _write(tmp_path / "c.csv", [{"path": "x.wav", "probs": [0.4, 0.6]}], classes=("cats", "dogs"))
    with pytest.raises(ValueError, match=r"c\.csv scores the classes \['cats', 'dogs'\]"):
        ensemble(predictions=[a, other_classes])
    relabelled = _write(tmp_path / "d.csv", [{"path": "x.wav", "probs": [0.4, 0.6], "label": "male"}])
    labelled = _write(tmp_path / "e.csv", [{"path": "x.wav", "probs": [0.4, 0.6], "label": "female"}])
    with pytest.raises(ValueError, match=r"disagree on the label of x\.wav: .*d\.csv: 'male', .*e\.csv: 'female'"):
        ensemble(predictions=[relabelled, labelled])
    old = tmp_path / "old.csv"  # before zoo 0.3.15: no per-class probabilities
    old.write_text("path,prediction,probability\nx.wav,male,0.6\n")
    with pytest.raises(ValueError, match=r"old\.csv: not a classifier's predictions file; expected .*probability_<class>"):
        ensemble(predictions=[a, str(old)])


def test_a_member_without_labels_or_speakers_takes_them_from_the_others_and_ties_go_to_the_first_class(tmp_path):
    """Files predicted once from class folders on a test split and once without: the label and speaker come from
    the member that has them. Members may list their classes in another order; a tie goes to the first class of
    the first file, as argmax would."""
    bare = _write(tmp_path / "bare.csv", [{"path": "x.wav", "probs": [0.3, 0.7]}])
    full = _write(tmp_path / "full.csv", [{"path": "x.wav", "probs": [0.3, 0.7], "label": "female", "speaker": "05"}],
                  classes=("male", "female"))
    (row,) = ensemble(predictions=[bare, full])
    assert (row["label"], row["speaker"], row["prediction"], row["probability"]) == ("female", "05", "female", "0.5000")
    other_speaker = _write(tmp_path / "other.csv", [{"path": "x.wav", "probs": [0.3, 0.7], "speaker": "22"}])
    with pytest.raises(ValueError, match="disagree on the speaker of x.wav"):
        ensemble(predictions=[full, other_speaker])
