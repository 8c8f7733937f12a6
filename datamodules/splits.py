"""Every split of the zoo's DataModules, in one place, and the four Lightning loader hooks.

Splitting lives here so that each rule is written and tested once: per-class counts and hold-outs
(MNIST), stratified ratios, class-balanced label subsets and per-class limits (image folders),
stratified prefixes of a seeded order (spoken digits: clips stratified by speaker and digit, and
speaker-disjoint partitions stratified by gender).

Why not scikit-learn's ``StratifiedShuffleSplit`` / ``train_test_split(stratify=...)``: they draw
other index sets (their own per-class allocation and RNG), and every documented result of the
zoo (ReducedMNIST tables, CIFAR label fractions, FSDD and AudioMNIST-AZ folds) was measured on the
index sets drawn here. These functions reproduce those sets exactly (tested against recorded hashes).
They are seeded by the DataModule's ``split_seed``: the same seed gives the same split on every machine.

DataModules that hold ``train``/``val``/``test`` splits differ only in how they build a loader for a
split (:class:`SplitLoadersMixin`); predicting reads the test split, and only training shuffles.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader


# --- class-stratified splits of labelled items ------------------------------------------------------
def take_per_class(labels: torch.Tensor, counts: Sequence[int | None], generator: torch.Generator,
                   num_classes: int, what: str = "split") -> list[torch.Tensor]:
    """Disjoint index sets taking ``counts[j]`` random items of every class (``None`` = the rest).

    Each returned index set is shuffled across classes, so no consumer ever sees a class-sorted order
    (and "the last 10 %" can never be a single class). ``what`` names the caller in the error raised
    when a class has fewer items than requested.
    """
    parts: list[list[torch.Tensor]] = [[] for _ in counts]
    wanted = sum(n for n in counts if n is not None)
    for c in range(num_classes):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        if wanted > len(idx):
            raise ValueError(f"{what}: class {c} has only {len(idx)} images but {wanted} per class were requested "
                             f"({' + '.join(str(n) for n in counts if n is not None)})")
        start = 0
        for j, n in enumerate(counts):
            stop = len(idx) if n is None else start + n
            parts[j].append(idx[start:stop])
            start = stop
    out = []
    for p in parts:
        cat = torch.cat(p)
        out.append(cat[torch.randperm(len(cat), generator=generator)])
    return out


def holdout_per_class(labels: torch.Tensor, fraction: float, generator: torch.Generator,
                      num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rest, held)``: ``round(fraction * size)`` random items of each class held out (class sizes
    differ, so the share is taken class by class); both sets shuffled across classes."""
    held_parts, rest_parts = [], []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        n = round(fraction * len(idx))
        held_parts.append(idx[:n])
        rest_parts.append(idx[n:])
    rest = torch.cat(rest_parts)
    rest = rest[torch.randperm(len(rest), generator=generator)]
    held = torch.cat(held_parts)
    held = held[torch.randperm(len(held), generator=generator)]
    return rest, held


def stratified_split(labels: np.ndarray, ratios: Sequence[float], seed: int) -> list[np.ndarray]:
    """Split indices by ``ratios`` within each class (seeded), so every split keeps the class mix;
    each part is sorted. Class boundaries sit at ``round(cumulative ratio * class size)``."""
    ratios = np.asarray(ratios, dtype=float)
    if ratios.ndim != 1 or len(ratios) < 2 or (ratios < 0).any() or not np.isclose(ratios.sum(), 1.0):
        raise ValueError(f"split ratios must be non-negative and sum to 1, got {ratios.tolist()}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in ratios]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        bounds = np.round(np.cumsum(ratios) * len(idx)).astype(int)
        bounds[-1] = len(idx)
        for k, chunk in enumerate(np.split(idx, bounds[:-1])):
            parts[k].append(chunk)
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, dtype=int) for p in parts]


def balanced_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of a class-balanced, seeded subset holding ``fraction`` of the labels.

    Every class contributes the same count, ``round(fraction * N / num_classes)`` (at least one);
    a class with fewer items than that is an error rather than a silently unbalanced subset.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label_fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return np.arange(len(labels))
    classes = np.unique(labels)
    per_class = max(1, int(round(fraction * len(labels) / len(classes))))
    rng = np.random.default_rng(seed)
    keep = []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        if len(idx) < per_class:
            raise ValueError(f"label_fraction={fraction} needs {per_class} training images per class, but class "
                             f"{c} has only {len(idx)}")
        keep.append(rng.choice(idx, per_class, replace=False))
    return np.sort(np.concatenate(keep))


def limit_per_class(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """A seeded, sorted subset with at most ``limit`` items per class (quick runs and tests)."""
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(labels == c))[:limit] for c in np.unique(labels)]
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=int)


# --- stratified prefixes: clips by (speaker, digit), speakers by gender --------------------------------
def stratified_order(strata: Sequence, seed: int) -> list[int]:
    """A seeded ordering of indices such that every prefix is a stratified sample.

    Members of each stratum are shuffled and spread evenly over (0, 1) with a random offset
    (systematic sampling); sorting by that position means the first ``k`` indices contain each
    stratum close to its share (within one of it for two strata or for equal-sized ones; unequal
    strata beyond two can be off by a little more), and ``k`` is exact.
    """
    rng = np.random.default_rng(seed)
    groups: dict = defaultdict(list)
    for i, s in enumerate(strata):
        groups[s].append(i)
    pos = np.empty(len(strata))
    for s in sorted(groups, key=repr):
        members = groups[s]
        perm, offset = rng.permutation(len(members)), rng.random()
        for rank, j in enumerate(perm):
            pos[members[j]] = (rank + offset) / len(members)
    return [int(i) for i in np.argsort(pos, kind="stable")]


def share_count(fraction: float, n: int) -> int:
    """How many of ``n`` items a ``fraction`` holds out: ``round(fraction * n)``, at least one."""
    return max(1, round(fraction * n))


def stratified_chunks(strata: Sequence, sizes: Sequence[int | None], seed: int) -> list[list[int]]:
    """Consecutive chunks of :func:`stratified_order` with ``sizes`` (``None``: the rest), so each chunk
    is a stratified sample: e.g. ``[n_test, n_val, None]`` -> test, validation and training positions."""
    order = stratified_order(strata, seed)
    out, start = [], 0
    for n in sizes:
        stop = len(order) if n is None else start + n
        out.append(order[start:stop])
        start = stop
    return out


# --- loaders ------------------------------------------------------------------------------------------
class SplitLoadersMixin:
    def _loader(self, split: str, shuffle: bool) -> DataLoader:  # pragma: no cover - each DataModule's own
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
