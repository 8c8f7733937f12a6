"""Predicting on a user's own files: which files, which label their folder gives, which failed and why.

Every classifier DataModule takes ``predict_path`` (a file, a folder searched recursively, or a glob)
and turns the files it names into :class:`PredictItem` records, in a stable order. Files that cannot
be used (unreadable, empty, silent, too short, wrong format) keep their record with an ``error``, so
one bad file costs its own row, not the run. A file inside a folder named like a class
(``7/rec.wav``, ``seven/rec.wav``, ``cats/x.jpg``) gets that class as its ``label``, so the prediction
writer can score the run.
"""

from __future__ import annotations

import glob
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass
class PredictItem:
    """One file of a predict run: its class index from the folder name (None when the folder is not a
    class), the reason it could not be used (None when it could), and its speaker where the data knows it
    (a test split's clips), so the writer can score each voice."""

    path: str
    label: int | None = None
    error: str | None = None
    speaker: str | None = None


def find_files(pattern: str, suffixes: Sequence[str]) -> list[Path]:
    """The files ``pattern`` names, sorted: the file itself, every file with one of ``suffixes`` under a
    folder (recursively, hidden files skipped; the others are named in a warning), or the matches of a glob
    (``**`` recurses)."""
    path = Path(pattern).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file()
                 and not any(part.startswith(".") for part in p.relative_to(path).parts)]
        found = [p for p in files if p.suffix.lower() in suffixes]
        other = sorted(p for p in files if p.suffix.lower() not in suffixes)
        if other:  # a recording in a format we do not read must not vanish without a word
            shown = ", ".join(str(p) for p in other[:5]) + (f" and {len(other) - 5} more" if len(other) > 5 else "")
            log.warning("predict_path=%r: skipped %d file(s) that are not %s: %s (convert them first, e.g. "
                        "ffmpeg -i rec.xyz rec.wav)", pattern, len(other), "/".join(suffixes), shown)
    else:
        found = [Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file()]
    if not found:
        what = "folder" if path.is_dir() else "file or glob"
        raise FileNotFoundError(f"predict_path={pattern!r}: no {'/'.join(suffixes)} files found in that {what}; "
                                f"expected a file, a folder (searched recursively) or a glob such as 'recs/**/*.wav'")
    return sorted(found)


def label_from_folder(path: Path, class_names: Sequence[str]) -> int | None:
    """The class a file's folder names: a class name (any case) or a class index (``7/x.wav``)."""
    folder = path.parent.name.lower()
    names = [n.lower() for n in class_names]
    if folder in names:
        return names.index(folder)
    if folder.isdigit() and int(folder) < len(class_names):
        return int(folder)
    return None


def load_items(pattern: str, paths: Iterable[Path], class_names: Sequence[str], load: Callable[[Path], T],
               errors: tuple[type[Exception], ...]) -> tuple[list[PredictItem], list[T]]:
    """Load every file with ``load``; a file that raises one of ``errors`` is recorded with the message
    and skipped. Returns all items and the loaded values of the good ones, in the same order; when no
    file of ``predict_path=pattern`` is usable, a ``ValueError`` quotes the first reasons."""
    items, values = [], []
    for p in paths:
        item = PredictItem(str(p), label_from_folder(p, class_names))
        try:
            values.append(load(p))
        except errors as e:
            item.error = str(e)
        items.append(item)
    if not values:
        raise ValueError(f"predict_path={pattern!r}: none of the {len(items)} file(s) could be used: "
                         + "; ".join(it.error for it in items[:3]))
    return items, values


def check_saved_settings(owner: str, saved: dict, mine: dict) -> None:
    """Refuse a checkpoint whose data settings (``saved``) differ from this run's (``mine``): predicting with
    other features or image conversion than training used would give wrong answers without any error."""
    differ = {k: (saved[k], v) for k, v in mine.items() if k in saved and saved[k] != v}
    if differ:
        raise ValueError(f"{owner}: the checkpoint was trained with other data settings than this run's: "
                         + ", ".join(f"{k}={a!r} (checkpoint) vs {b!r} (now)" for k, (a, b) in differ.items())
                         + "; use the config the checkpoint was trained with")


def good_labels(items: Sequence[PredictItem]) -> list[int]:
    """Targets of the usable items (-1 where the folder gave no label), batch order."""
    return [-1 if it.label is None else it.label for it in items if it.error is None]
