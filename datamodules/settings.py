"""One vocabulary for DataModule settings: range types, the check that applies them, and old names.

Why: a setting's type hint is its only rule. jsonargparse enforces the hints at parse time (the CLI
names the bad key, e.g. ``--data.batch_size 0``); :func:`save_settings` applies the same hints when
a DataModule is built from plain Python, so no DataModule writes a hand check for a Literal or a range.

The shared names (every DataModule uses these and no other spelling):

* ``data_dir``: the data root; ``folder``: the dataset's folder under it; ``cache_dir``: derived files.
* ``normalization``: the value range / standardisation of the inputs.
* ``split`` (scheme), ``split_ratios``, ``val_fraction``, ``test_fraction``: how items are split;
  ``split_seed``: which items land in which split (and in subsets such as ``label_fraction``), nothing else;
  ``data_seed``: random draws that make data (augmented or generated items, pairings).
* ``batch_size``, ``num_workers``, ``predict_path``.

Settings saved under older names (in checkpoints) are mapped by :data:`RENAMED` / :func:`upgrade_settings`.
"""

from __future__ import annotations

import inspect
import os
import typing
from types import NoneType, UnionType

import torch
from jsonargparse.typing import restricted_number_type

__all__ = [
    "RENAMED",
    "ClosedUnitInterval",
    "LegacySettingsMixin",
    "NonNegativeFloat",
    "NonNegativeInt",
    "OpenUnitInterval",
    "PositiveFloat",
    "PositiveInt",
    "UnitFraction",
    "check_settings",
    "number_range",
    "save_settings",
    "upgrade_settings",
]

#: each range type's bounds as the errors of :func:`check_settings` state them ("> 0 and <= 1")
_BOUNDS: dict[type, str] = {}


def number_range(name: str, base: type, restrictions: list[tuple[str, int | float]]) -> type:
    """jsonargparse's ``restricted_number_type`` (all bounds must hold), remembering its bounds for the errors
    of :func:`check_settings`. Why: jsonargparse keeps them only in private attributes. jsonargparse registers
    each set of bounds once: the same bounds under the same name return that type (so ``PositiveInt`` below *is*
    jsonargparse's), under another name they are refused."""
    hint = restricted_number_type(name, base, restrictions)
    _BOUNDS[hint] = " and ".join(f"{op} {ref}" for op, ref in restrictions)
    return hint


PositiveInt = number_range("PositiveInt", int, [(">", 0)])
NonNegativeInt = number_range("NonNegativeInt", int, [(">=", 0)])
PositiveFloat = number_range("PositiveFloat", float, [(">", 0)])
NonNegativeFloat = number_range("NonNegativeFloat", float, [(">=", 0)])
#: a share strictly between none and all: (0, 1)
OpenUnitInterval = number_range("OpenUnitInterval", float, [(">", 0), ("<", 1)])
#: [0, 1]
ClosedUnitInterval = number_range("ClosedUnitInterval", float, [(">=", 0), ("<=", 1)])
#: a share that may be all of it: (0, 1]
UnitFraction = number_range("UnitFraction", float, [(">", 0), ("<=", 1)])

#: old setting name -> new, per DataModule class name (settings saved in checkpoints before issue 15)
RENAMED: dict[str, dict[str, str]] = {
    "MNISTDataModule": {"normalize": "normalization", "seed": "split_seed"},
    "SpokenDigits": {"normalize": "normalization", "seed": "split_seed"},
    "SpokenDigitImagePairs": {"seed": "split_seed"},
    "ImageFolderDataModule": {"root": "folder"},
    "VOC2007DataModule": {"root": "folder"},
    "STL10DataModule": {"root": "folder"},
    "SineWaves": {"seed": "data_seed"},
}
#: old values of a (class name, new setting) that mean another value now
OLD_VALUES: dict[tuple[str, str], dict] = {
    ("SpokenDigits", "normalization"): {True: "dataset", False: "none"},
}


def upgrade_settings(owner: str, settings: dict) -> dict:
    """``settings`` with old names (and values) replaced by the current ones; ``owner`` is a class name
    or class path. A current name already present wins over its old spelling."""
    name = owner.rsplit(".", 1)[-1]
    renames = RENAMED.get(name, {})
    out = {}
    for key, value in settings.items():
        new = renames.get(key, key)
        if new != key and new in settings:
            continue
        values = OLD_VALUES.get((name, new), {})
        out[new] = values.get(value, value) if isinstance(value, typing.Hashable) else value
    return out


def _plain(value):
    """A jsonargparse range-type value as the plain int/float it is (checkpoints are loaded weights-only,
    which refuses any other class)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int) and type(value) is not int:
        return int(value)
    if isinstance(value, float) and type(value) is not float:
        return float(value)
    return value


def _violation(hint, value) -> str | None:
    """Why ``value`` breaks ``hint`` (a Literal, a jsonargparse range type, a list of one of them, or a union
    of them and others); None when it fits or when the hint is one this check does not cover."""
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        allowed = typing.get_args(hint)
        return None if value in allowed else f"expected one of {list(allowed)}"
    if origin in (typing.Union, UnionType):
        args = typing.get_args(hint)
        if value is None:
            return None if NoneType in args else "expected a value, got None"
        reasons = [_violation(a, value) for a in args if a is not NoneType]
        return None if any(r is None for r in reasons) else "; or ".join(r for r in reasons if r)
    if origin in (list, tuple) and isinstance(value, (list, tuple)):
        items = [a for a in typing.get_args(hint) if a is not Ellipsis]
        whys = [_violation(items[0], v) for v in value] if len(items) == 1 else []  # list[X], tuple[X, ...]
        return next((f"each item {why}" for why in whys if why), None)
    ranged = hint in _BOUNDS or (isinstance(hint, type) and issubclass(hint, (int, float))
                                 and hint.__module__ == "jsonargparse.typing")  # jsonargparse's own range types
    if ranged and value is not None:  # a range type checks a value when it is built from it
        try:
            hint(value)
        except (TypeError, ValueError) as e:
            what = "an integer" if issubclass(hint, int) else "a number"
            return f"expected {what} {_BOUNDS[hint]}" if hint in _BOUNDS else f"expected {what} of {hint.__name__} ({e})"
    return None


def check_settings(owner: type, values: dict) -> None:
    """Check ``values`` against the Literal and range hints of ``owner.__init__``; the error names the
    setting, the value and what was expected."""
    hints = typing.get_type_hints(owner.__init__)
    for name, value in values.items():
        why = _violation(hints.get(name), value) if name in hints else None
        if why:
            raise ValueError(f"{owner.__name__}: {name}={value!r} is not allowed: {why}")


def save_settings(dm, ignore: tuple[str, ...] = ()) -> None:
    """``dm.save_hyperparameters()`` for the calling ``__init__``, after checking its arguments against
    their hints (:func:`check_settings`), with range-type values stored as plain numbers."""
    frame = inspect.currentframe().f_back
    # the class whose __init__ called us (a subclass may define its own __init__ and call ours)
    owner = next((c for c in type(dm).__mro__ if getattr(c.__dict__.get("__init__"), "__code__", None) is frame.f_code),
                 type(dm))
    params = [p for p in inspect.signature(owner.__init__).parameters if p != "self"]
    check_settings(owner, {p: frame.f_locals[p] for p in params if p in frame.f_locals})
    dm.save_hyperparameters(ignore=list(ignore), frame=frame)
    # again, as plain values, through the public API: it also refreshes the copy the loggers get (hparams_initial),
    # and keeps what LightningCLI added (_class_path, _instantiator)
    plain = {key: type(value)(map(_plain, value)) if type(value) in (list, tuple) else _plain(value)
             for key, value in dm.hparams.items()}
    dm.save_hyperparameters(plain, frame=frame)
    del frame


class LegacySettingsMixin:
    """``load_from_checkpoint`` that also reads settings saved under their old names (:data:`RENAMED`);
    Lightning would otherwise drop them silently and use the defaults."""

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, hparams_file=None, weights_only=True, **kwargs):
        """Weights-only unless the caller says otherwise: a checkpoint is a file from elsewhere, never unpickled."""
        saved = {}
        if isinstance(checkpoint_path, (str, os.PathLike)):  # a stream can be read only once: left to Lightning
            ckpt = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
            saved = dict(ckpt.get("datamodule_hyper_parameters") or {})
        upgraded = upgrade_settings(cls.__name__, saved)
        renamed = {k: v for k, v in upgraded.items() if k not in saved or saved[k] is not v}
        return super().load_from_checkpoint(checkpoint_path, map_location, hparams_file, weights_only=weights_only,
                                            **{**renamed, **kwargs})
