"""Where datasets and caches live; one rule for every DataModule.

Dataset folders use the same names as the reference copy (``MNIST/``, ``fsdd/``,
``cifar10-jpeg/``, ``anime-faces/``, ...), so pointing ``ZOO_DATA_DIR`` at one folder serves
every DataModule. Dataset folders are treated as read-only: derived files go to the cache dir.
"""

from __future__ import annotations

import os
from pathlib import Path


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir``, else ``$ZOO_DATA_DIR``, else ``./data``."""
    return Path(data_dir or os.environ.get("ZOO_DATA_DIR") or "data").expanduser()


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$ZOO_CACHE_DIR``, else ``~/.cache/zoo``; created on demand."""
    path = Path(cache_dir or os.environ.get("ZOO_CACHE_DIR") or Path.home() / ".cache" / "zoo").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is missing and downloading was not allowed; the message says how to fix it."""


def missing_dataset(name: str, expected: Path, setting: str | None = "--data.download true",
                    hint: str | None = None) -> DatasetNotFoundError:
    """``setting``: the option that allows a download, or None for a dataset that has none; ``hint``: where
    to get one that cannot be downloaded (a login-only source)."""
    fix = f", or allow the download with {setting}" if setting else ""
    return DatasetNotFoundError(
        f"{name} not found: expected it at {expected}. Point --data.data_dir (or $ZOO_DATA_DIR) at the folder "
        f"that contains it{fix}." + (f" {hint}" if hint else "")
    )
