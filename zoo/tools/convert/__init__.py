"""Rules that turn checkpoints written before the nets/tasks split (zoo < 0.2) into today's layout.

Each family's module defines ``RULES``: old ``_class_path`` -> ``rule(hparams, state_dict) -> (hparams,
state_dict)``. ``hparams`` are the checkpoint's ``hyper_parameters`` without ``_class_path`` and
``_instantiator``; a rule returns the new task's init args (nets as ``{"class_path", "init_args"}``) with
the new ``_class_path``, and the state dict with its keys renamed (a task holds its net as ``net.``).
The command is :mod:`zoo.tools.convert_checkpoint`.
"""

from __future__ import annotations

from typing import Any, Callable

Rule = Callable[[dict[str, Any], dict[str, Any]], tuple[dict[str, Any], dict[str, Any]]]


def split_args(hparams: dict[str, Any], net_args: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(net init args, task init args)``: the names in ``net_args`` go to the net, the rest to the task."""
    net = {k: v for k, v in hparams.items() if k in net_args}
    task = {k: v for k, v in hparams.items() if k not in net_args}
    return net, task


def prefix_keys(state_dict: dict[str, Any], prefix: str, keep: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every key gets ``prefix`` (e.g. ``"net."``) except those starting with one of ``keep``
    (metric states and other task-owned buffers)."""
    return {(k if k.startswith(keep) else prefix + k): v for k, v in state_dict.items()}


def all_rules() -> dict[str, Rule]:
    from zoo.tools.convert import classifiers, gan, autoencoders, mfcc  # noqa: PLC0415

    rules: dict[str, Rule] = {}
    for family in (classifiers, gan, autoencoders, mfcc):
        rules.update(family.RULES)
    return rules
