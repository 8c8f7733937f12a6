"""Weights-only loading of checkpoints: a crafted file is refused before it can run any code.

``torch.load(weights_only=True)`` rebuilds only tensors and plain containers (dict, list, str, numbers);
a file asking for anything else (e.g. ``os.system`` via ``__reduce__``) is refused. Every checkpoint
``python -m zoo fit`` writes loads this way: LightningCLI stores the optimizer as its config (a dict
or a dotted name), and :class:`zoo.mfcc_repr.MFCCStatsSVM` stores its SVM as arrays. Checkpoints
written from Python (``Trainer.fit(LeNet5())``) hold the default optimizer *functions* among their
hyperparameters, so :func:`zoo_callables` allowlists those few: the weights-only unpickler can then
reference or call them, and all they do is build an optimizer from the parameters they are given.
"""

from __future__ import annotations

import pickle
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from zoo.optim import dcgan_adam, default_optimizer


def zoo_callables() -> list:
    """The zoo's default optimizer factories, which Python-written checkpoints hold as hyperparameters."""
    # the same functions under the names checkpoints written before the nets/tasks split pickled
    return [default_optimizer, dcgan_adam, (default_optimizer, "zoo.classifier.default_optimizer"),
            (dcgan_adam, "zoo.dcgan.dcgan_adam")]


@contextmanager
def zoo_safe_globals() -> Iterator[None]:
    """Allow :func:`zoo_callables` in weights-only loads inside the block (no global side effect)."""
    with torch.serialization.safe_globals(zoo_callables()):
        yield


def checkpoint_error(path: str | Path, err: BaseException, what: str = "checkpoint", hint: str = "") -> ValueError:
    """The ``ValueError`` for a file ``torch.load(weights_only=True)`` failed on, naming the file.

    A file that asks for a Python object (a pickle ``GLOBAL``) is *refused*; anything else is unreadable.
    Only the specific part of torch's message is kept: its advice to retry in the unsafe (full-unpickling)
    mode is exactly what must not be done with a file of unknown origin.
    """
    tail = f": {hint}" if hint else ""
    text = str(err)
    wanted = re.search(r"GLOBAL ([\w.]+)", text)
    if isinstance(err, pickle.UnpicklingError) and wanted:
        return ValueError(f"{what} {path} was refused: the zoo loads checkpoints weights-only (tensors and plain "
                          f"values) so that a file cannot run code, and this one asks for the Python object "
                          f"{wanted.group(1)!r}; use a checkpoint written by `python -m zoo fit`{tail}")
    detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    reason = detail.group(1) if detail else (text.strip().splitlines() or ["empty file"])[0].split(". ")[0]
    return ValueError(f"{what} {path} is not a readable checkpoint ({type(err).__name__}: {reason}){tail}")


def load_checkpoint(path: str | Path, what: str = "checkpoint", hint: str = "", map_location: Any = "cpu") -> dict:
    """``torch.load(path, weights_only=True)`` as a dict; any failure is a ``ValueError`` naming ``path``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist" + (f": {hint}" if hint else ""))
    try:
        with zoo_safe_globals():
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - refused, truncated, empty or not a torch file: one clear message
        raise checkpoint_error(path, e, what, hint) from e
    if not isinstance(ckpt, dict):
        raise ValueError(f"{what} {path} holds a {type(ckpt).__name__}, not a checkpoint dict" +
                         (f": {hint}" if hint else ""))
    return ckpt


def load_module(cls: type, path: str | Path, what: str = "checkpoint", hint: str = "", map_location: Any = "cpu",
                **overrides: Any):
    """``cls.load_from_checkpoint(path, weights_only=True, **overrides)``, with the same clear errors as
    :func:`load_checkpoint` (call that first to check the file and read its other entries)."""
    try:
        with zoo_safe_globals():
            return cls.load_from_checkpoint(path, map_location=map_location, weights_only=True, **overrides)
    except pickle.UnpicklingError as e:
        raise checkpoint_error(path, e, what, hint) from e
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{what} {path} failed to load as {cls.__module__}.{cls.__qualname__} ({e})") from e
