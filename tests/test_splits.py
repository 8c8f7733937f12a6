"""Every split rule of datamodules/splits.py: properties (stratified, disjoint, seeded) and the exact
index sets the documented results were measured on (hashes recorded before the split code moved here)."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SHARED_DATA
from datamodules.images import ImageFolderDataModule
from datamodules.mnist import MNISTDataModule
from datamodules.splits import (balanced_subset, holdout_per_class, limit_per_class, share_count, stratified_chunks,
                                stratified_order, stratified_split, take_per_class)
from datamodules.spoken_digits import SpokenDigits


def digest(indices) -> str:
    a = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices, dtype=np.int64)
    return hashlib.sha1(a.tobytes()).hexdigest()[:16]


def split_digests(root: Path, speaker: str) -> dict[str, list[str]]:
    """Digests of the train/val/test index sets the configs and grids use, on the data root ``root``."""
    out = {}
    for name, kw in (("mnist-reduced", dict(real_per_class=1000, test_per_class=200)), ("mnist-full", {}),
                     ("mnist-reduced-seed2", dict(real_per_class=300, test_per_class=200, split_seed=2))):
        dm = MNISTDataModule(data_dir=str(root), **kw)
        dm.setup()
        out[name] = [digest(dm.indices[k]) for k in ("train", "val", "test")]
    for name, folder, kw in (("cifar-own", "cifar10-jpeg", {}),
                             ("cifar-ratios", "cifar10-jpeg", dict(split_ratios=[0.8, 0.1, 0.1])),
                             ("cifar-labels40", "cifar10-jpeg", dict(label_fraction=0.4)),
                             ("anime", "anime-faces/images", dict(split_ratios=[0.9, 0.05, 0.05], limit_per_class=50))):
        dm = ImageFolderDataModule(folder=folder, data_dir=str(root), **kw)
        _, labels, own, _ = dm._scan()
        keep = dm.limit_indices(np.asarray(labels), None if own is None else np.asarray(own))
        own_kept = None if own is None else np.asarray(own)[keep]
        out[name] = [digest(keep)] + [digest(s) for s in dm.split_indices(np.asarray(labels)[keep], own_kept)]
    for name, kw in (("fsdd-official", {}), ("fsdd-speaker", dict(split="speaker", test_speaker=speaker))):
        dm = SpokenDigits(data_dir=str(root), progress=False, **kw)
        _, clips = dm._locate()
        out[name] = [digest(v) for v in dm._split(clips).values()]
    for seed in range(5):
        dm = SpokenDigits(data_dir=str(root), progress=False, source="audiomnist", folder="AudioMNIST-AZ",
                          target="gender", split_seed=seed)
        _, clips = dm._locate()
        keep = dm._with_gender(clips)
        out[f"az-gender-{seed}"] = [digest([keep[i] for i in v]) for v in dm._split([clips[i] for i in keep]).values()]
    return out


#: digests of the index sets, recorded with the split code of commit aedbac0 (before it moved to
#: datamodules/splits.py): "real" on ../shared/data, "fixture" on tests/data_fixtures.write_all (re-record
#: the fixture ones if write_all changes a dataset's size)
RECORDED = {
    "real": {
        "mnist-reduced": ["56f7aebf1d903c4e", "7616e52e922376ef", "9252f831332bd7b3"],
        "mnist-full": ["6d6e7f28c4d89fd1", "f55bc9999198b36b", "d22a917a5c58a80c"],
        "mnist-reduced-seed2": ["85a1be2de6a31005", "b323576415d92c78", "4a2aeab77160c095"],
        "cifar-own": ["3ef7fa89b3419cd0", "030ed8435638736d", "21172f9a529b2ce8", "3fa0b8939f8de68a"],
        "cifar-ratios": ["3ef7fa89b3419cd0", "cf48bb7da2eb1459", "c43ddc3061ffa84a", "4bb9cfffb62278f7"],
        "cifar-labels40": ["3ef7fa89b3419cd0", "b46a39bfc7d3ca87", "21172f9a529b2ce8", "3fa0b8939f8de68a"],
        "anime": ["7bc8d720398cdb38", "f41bc2e1383922a6", "5d6c4c47b0220415", "957c038c8f8c2908"],
        "fsdd-official": ["b7e57ea2837eaea2", "5ca5192f6c00fa79", "ca2eb526a19f4403"],
        "fsdd-speaker": ["dad13fb822ba696d", "9a16e2e4a4a945db", "50d087af59a452d7"],
        "az-gender-0": ["5a24d7aed67ee881", "188d4f44267e68d1", "38bf665424fe27b0"],
        "az-gender-1": ["ae4bd14d3c131f16", "7669f4bf0bfe497b", "8cda47a4516375f9"],
        "az-gender-2": ["ba308cd67b12db70", "f30a07cc9fb3e219", "6189eec3bf9b447c"],
        "az-gender-3": ["08a28a8183fd22f4", "b32d898716421d51", "2680ad9991544808"],
        "az-gender-4": ["d53c37fdedf3df28", "c446d40774000e21", "58336350b18d55bd"],
    },
    "fixture": {
        "mnist-reduced": ["bf33e94683e99d3a", "f411f817e0afc70b", "35b805bb6965e6d4"],
        "mnist-full": ["95723b6b2b6e411f", "f80990b9421b45c0", "d127b78d5a77363d"],
        "mnist-reduced-seed2": ["9aa69e60ad80420a", "2a32ec592a68014e", "780573c4bdafa894"],
        "cifar-own": ["89431f9892ff02e8", "0be3dfec2728747b", "e0837125cfa40e55", "c41b54d59b0cc273"],
        "cifar-ratios": ["89431f9892ff02e8", "ab2d004b76e86113", "ea9ccfc8d30f08c2", "9ae68e42f3d01ac7"],
        "cifar-labels40": ["89431f9892ff02e8", "360f21ca6a642ad0", "e0837125cfa40e55", "c41b54d59b0cc273"],
        "anime": ["34cc8e247902e0e3", "f41bc2e1383922a6", "5d6c4c47b0220415", "957c038c8f8c2908"],
        "fsdd-official": ["aed45828cb76f871", "111aab8c51327baa", "d81b540e62a699fa"],
        "fsdd-speaker": ["87500625807fe8f9", "f83e8516b8fa95ab", "2e0994fdf1fe8be3"],
        "az-gender-0": ["e875475706d19151", "e97d7eb5bf50ee40", "c6573ad150be4256"],
        "az-gender-1": ["08f53712fe7106c6", "bb60b2281c976bdc", "edb7b7a14bff5ad2"],
        "az-gender-2": ["91d94dafd4777aab", "7081d20fae752d48", "4ac2b9380c9cd23f"],
        "az-gender-3": ["d6d54b2aa433b46e", "7081d20fae752d48", "1a9f6727baf57d89"],
        "az-gender-4": ["2662a083e430be1f", "e97d7eb5bf50ee40", "8ca549cd2e62fedf"],
    },
}


def test_split_indices_of_the_data_root_are_the_recorded_ones(config_data):
    """The splits every documented result was measured on are drawn exactly as before (on the real data
    when present; else on the fixtures, so a fresh clone checks the same rules)."""
    real = config_data == SHARED_DATA
    found = split_digests(config_data, speaker="theo" if real else "alice")
    expected = RECORDED["real" if real else "fixture"]
    assert {k: v for k, v in found.items() if v != expected[k]} == {}


def test_split_functions_draw_the_recorded_indices():
    labels = np.random.default_rng(0).integers(0, 7, 503)
    found = {
        "ratios": [digest(p) for p in stratified_split(labels, [0.7, 0.2, 0.1], 1)],
        "balanced": digest(balanced_subset(labels, 0.3, 1)),
        "limit": digest(limit_per_class(labels, 20, 1)),
        "order": digest(stratified_order([(int(a) % 3, int(a)) for a in labels], 1)),
        "per_class": [digest(p) for p in take_per_class(torch.as_tensor(labels), [30, 10, None],
                                                        torch.Generator().manual_seed(1), num_classes=7)],
    }
    assert found == {
        "ratios": ["c71dca81abd5cd8a", "85716b34aa12d844", "4a4d03f89f766f48"],
        "balanced": "088effc20c3b27ad",
        "limit": "98c3e07357678ffc",
        "order": "9acd4ab2663cb9ed",
        "per_class": ["83aa73702793b056", "adfa9e71e15204d5", "ec103ffcb009b913"],
    }


# --- properties ---------------------------------------------------------------------------------------
def test_take_per_class_counts_disjoint_shuffled_and_short_class_named():
    labels = torch.arange(4).repeat_interleave(torch.tensor([10, 12, 9, 15]))
    a, b, rest = take_per_class(labels, [3, 2, None], torch.Generator().manual_seed(0), num_classes=4, what="demo")
    assert torch.bincount(labels[a]).tolist() == [3] * 4 and torch.bincount(labels[b]).tolist() == [2] * 4
    assert torch.bincount(labels[rest]).tolist() == [5, 7, 4, 10]
    every = torch.cat([a, b, rest])
    assert len(every) == len(labels) and len(torch.unique(every)) == len(labels)
    assert not torch.equal(labels[a], labels[a].sort().values), "shuffled across classes"
    with pytest.raises(ValueError, match=r"demo: class 2 has only 9 images but 10 per class were requested \(10\)"):
        take_per_class(labels, [10], torch.Generator().manual_seed(0), num_classes=4, what="demo")


def test_holdout_per_class_takes_the_share_of_each_class():
    labels = torch.arange(3).repeat_interleave(torch.tensor([40, 25, 11]))
    rest, held = holdout_per_class(labels, 0.2, torch.Generator().manual_seed(0), num_classes=3)
    assert torch.bincount(labels[held]).tolist() == [8, 5, 2]  # round(0.2 * size) per class
    assert sorted(torch.cat([rest, held]).tolist()) == list(range(76))
    again, _ = holdout_per_class(labels, 0.2, torch.Generator().manual_seed(0), num_classes=3)
    other, _ = holdout_per_class(labels, 0.2, torch.Generator().manual_seed(1), num_classes=3)
    assert torch.equal(rest, again) and not torch.equal(rest, other)


def test_stratified_chunks_are_consecutive_stratified_prefixes():
    strata = ["f"] * 19 + ["m"] * 40  # the AudioMNIST-AZ speakers
    test, val, train = stratified_chunks(strata, [share_count(0.2, 59), share_count(0.1, 59), None], seed=0)
    assert (len(test), len(val), len(train)) == (12, 6, 41)
    assert test + val + train == stratified_order(strata, seed=0)
    assert abs(Counter(strata[i] for i in test)["f"] - 12 * 19 / 59) <= 1
    assert share_count(0.01, 10) == 1 and share_count(0.25, 10) == 2  # at least one; round half to even


def test_limit_per_class_keeps_at_most_the_limit_sorted():
    labels = np.array([0] * 5 + [1] * 2 + [2] * 9)
    keep = limit_per_class(labels, 3, seed=0)
    assert np.bincount(labels[keep]).tolist() == [3, 2, 3] and (np.diff(keep) > 0).all()
    assert (keep == limit_per_class(labels, 3, seed=0)).all() and len(limit_per_class(labels[:0], 3, 0)) == 0
