"""MNISTDataModule (splits, augmentation, synthetic mixing, errors) and the MNIST classifiers.

The data tests run on real MNIST under ``../shared`` when it is there, else on the IDX fixture of
``tests/data_fixtures.py`` (``mnist_data``); only the assertions of the real dataset's sizes need the real data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datamodules.mnist import (MNIST_MEAN, RAW_FILES, MNISTDataModule, denormalize, load_mnist, load_synthetic,
                               normalize, write_idx)
from data_fixtures import mnist_data_dir
from datamodules.paths import DatasetNotFoundError
from zoo import compat
from zoo.layers import CBAM, SpatialAttention
from zoo.nets.lenet import LeNet5, MnistCNN
from zoo.tasks.classifier import Classifier


@pytest.fixture(scope="module")
def mnist_data(tmp_path_factory):
    """Real MNIST when ../shared has it, else the IDX fixture; ``ZOO_DATA_DIR`` points at it."""
    yield from mnist_data_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def reduced(mnist_data):
    dm = MNISTDataModule(real_per_class=50, test_per_class=20, val_fraction=0.2, augmented_per_class=30,
                         batch_size=64, split_seed=0)
    dm.setup()
    return dm


def _synthetic_npz(path, per_class=5, dtype=np.uint8, shape=(28, 28), classes=range(10)):
    labels = np.repeat(np.array(list(classes)), per_class)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (len(labels), *shape)).astype(dtype)
    if np.issubdtype(dtype, np.floating):
        images = images / 255.0
    np.savez(path, images=images, labels=labels)
    return path


# --- splits -------------------------------------------------------------------------------------
def test_reduced_splits_are_balanced_disjoint_and_real_only_outside_train(reduced):
    (xt, yt), (_, yv), (_, ys) = reduced.split("train"), reduced.split("val"), reduced.split("test")
    assert xt.shape == (10 * (50 + 30), 1, 28, 28) and xt.dtype == torch.float32 and yt.dtype == torch.int64
    assert torch.bincount(yt).tolist() == [80] * 10
    assert torch.bincount(yv).tolist() == [10] * 10, "validation must be stratified over all classes"
    assert torch.bincount(ys).tolist() == [20] * 10
    assert torch.bincount(reduced.train_sources.long()).tolist() == [500, 300]
    train_idx, val_idx = reduced.indices["train"], reduced.indices["val"]
    assert len(set(train_idx.tolist()) & set(val_idx.tolist())) == 0
    assert len(set(train_idx.tolist())) == 500
    # classes are mixed in every order a consumer sees, never sorted blocks
    assert len(set(yv[:20].tolist())) > 3 and len(set(yt[:20].tolist())) > 3


def test_splits_are_seeded_and_test_subset_ignores_training_options(reduced, mnist_data):
    same = MNISTDataModule(real_per_class=50, test_per_class=20, val_fraction=0.2, augmented_per_class=30, split_seed=0)
    same.setup()
    assert torch.equal(same.split("train")[0], reduced.split("train")[0])
    other = MNISTDataModule(real_per_class=50, test_per_class=20, val_fraction=0.2, split_seed=1)
    other.setup()
    assert not torch.equal(other.indices["train"].sort().values, reduced.indices["train"].sort().values)
    plain = MNISTDataModule(real_per_class=20, test_per_class=20, val_fraction=0.2, split_seed=0)
    plain.setup()
    assert torch.equal(plain.indices["test"], reduced.indices["test"]), "test set must not depend on training options"


def full_split_sizes() -> tuple[int, int, int, torch.Tensor]:
    dm = MNISTDataModule(val_fraction=0.1)
    dm.setup()
    n_train, n_val, n_test = (len(dm.split(s)[1]) for s in ("train", "val", "test"))
    return n_train, n_val, n_test, torch.bincount(dm.split("val")[1], minlength=10)


def test_full_mnist_split_is_stratified(mnist_data):
    n_train, n_val, n_test, val_counts = full_split_sizes()
    total, tests = len(load_mnist(train=True)[1]), len(load_mnist(train=False)[1])
    assert n_train + n_val == total and abs(n_val - total // 10) <= 5 and n_test == tests
    per_class = torch.bincount(load_mnist(train=True)[1], minlength=10) / 10  # each class's own 10 %
    assert (val_counts - per_class).abs().max() <= 0.1 * per_class.max()


def test_full_real_mnist_is_54k_6k_10k(shared_data, mnist_data):
    n_train, n_val, n_test, val_counts = full_split_sizes()
    assert n_train + n_val == 60000 and abs(n_val - 6000) <= 5 and n_test == 10000
    assert (val_counts > 500).all() and (val_counts < 700).all()


def test_loader_serves_every_training_image_once_per_epoch(reduced):
    batches = list(reduced.train_dataloader())
    assert all(x.shape[1:] == (1, 28, 28) and x.dtype == torch.float32 for x, _ in batches)
    assert [len(y) for _, y in batches] == [64] * 12 + [800 - 12 * 64]
    seen = torch.cat([x for x, _ in batches]).flatten(1).sum(1).sort().values
    assert torch.allclose(seen, reduced.split("train")[0].flatten(1).sum(1).sort().values)



def test_ddp_resharding_keeps_whole_batches_and_covers_the_split(reduced):
    """Lightning swaps a DistributedSampler into the loader under DDP: each process must still get
    batches (not single images), and the two shards together must cover every training image."""
    from torch.utils.data import DistributedSampler

    loader = reduced.train_dataloader()
    seen = []
    for rank in range(2):
        shard = compat.with_sampler(loader, DistributedSampler(loader.dataset, num_replicas=2, rank=rank, seed=0))
        batches = list(shard)
        assert [len(y) for _, y in batches] == [64] * 6 + [400 - 6 * 64]
        assert batches[0][0].shape == (64, 1, 28, 28)
        seen.append(torch.cat([x for x, _ in batches]).flatten(1).sum(1))
    assert torch.allclose(torch.cat(seen).sort().values, reduced.split("train")[0].flatten(1).sum(1).sort().values)

def test_augmented_images_are_new_warps_of_real_images_of_their_class(reduced, mnist_data):
    x, y = reduced.split("train")
    src = reduced.train_sources
    real, aug = denormalize(x[src == 0], "standard"), denormalize(x[src == 1], "standard")
    assert aug.min() >= -1e-5 and aug.max() <= 1 + 1e-5
    assert torch.cdist(aug.flatten(1), real.flatten(1)).min() > 0.5, "an augmented image is a copy of a real one"
    # with the warp switched off every augmented image is exactly a real image of the same label
    ident = MNISTDataModule(real_per_class=20, test_per_class=5, augmented_per_class=15, aug_degrees=0,
                            aug_translate=0, aug_crop_scale=(1.0, 1.0), aug_crop_ratio=(1.0, 1.0))
    ix, iy = ident.split("train")
    isrc = ident.train_sources
    dist = torch.cdist(ix[isrc == 1].flatten(1), ix[isrc == 0].flatten(1))
    assert dist.min(1).values.max() < 0.1  # cdist round-off; distinct digits are > 3 apart
    assert torch.equal(iy[isrc == 0][dist.argmin(1)], iy[isrc == 1])


@pytest.mark.parametrize("mode, lo, hi", [("zero_one", 0, 1), ("minus_one_one", -1, 1)])
def test_normalize_ranges_and_round_trip(mnist_data, mode, lo, hi):
    dm = MNISTDataModule(real_per_class=10, test_per_class=5, normalization=mode)
    x, _ = dm.split("val")
    peak = load_mnist(train=True)[0].max().item() / 255  # 1 in real MNIST, 250/255 in the fixture
    assert x.min().item() == pytest.approx(lo) and x.max().item() == pytest.approx(lo + (hi - lo) * peak)
    x01 = torch.rand(3, 1, 28, 28)
    for m in ("zero_one", "minus_one_one", "standard"):
        assert torch.allclose(denormalize(normalize(x01, m), m), x01, atol=1e-6)
    assert normalize(torch.full((1,), MNIST_MEAN), "standard").abs().item() < 1e-6


# --- synthetic files ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, shape", [(np.uint8, (28, 28)), (np.float32, (1, 28, 28))])
def test_synthetic_file_is_mixed_into_training(mnist_data, tmp_path, dtype, shape, monkeypatch):
    path = _synthetic_npz(tmp_path / "s.npz", per_class=6, dtype=dtype, shape=shape)
    x, y = load_synthetic(path, per_class=4)
    assert x.shape == (40, 1, 28, 28) and x.min() >= 0 and x.max() <= 1 and torch.bincount(y).tolist() == [4] * 10
    everything, labels = load_synthetic(path, per_class=6)
    dm = MNISTDataModule(real_per_class=10, test_per_class=5, synthetic_per_class=6, synthetic_path=str(path),
                         normalization="zero_one")
    said = []
    monkeypatch.setattr("datamodules.mnist.rank_zero_info", said.append)
    tx, ty = dm.split("train")
    assert said == ["MNISTDataModule: train 160 (100 real, 60 synthetic), val 10, test 50"]  # what the run trains on
    src = dm.train_sources
    assert torch.bincount(src.long()).tolist() == [100, 0, 60]
    order = lambda t: t.flatten(1).sum(1).argsort()  # noqa: E731
    mixed = tx[src == 2]
    assert torch.allclose(mixed[order(mixed)], everything[order(everything)], atol=1e-6)
    assert torch.equal(ty[src == 2][order(mixed)], labels[order(everything)])


@pytest.mark.parametrize("problem, match", [
    ("shape", r"shape \(N, 28, 28\)"),
    ("range", r"must lie in \[0, 1\]"),
    ("missing_class", r"fewer samples.*\{7: 0\}"),
    ("label_range", "labels must be in 0..9"),
    ("keys", "expected arrays 'images' and 'labels'"),
    ("length", "to match 'images'"),
])
def test_bad_synthetic_files_name_the_file_and_the_problem(tmp_path, problem, match):
    path = tmp_path / f"bad_{problem}.npz"
    labels = np.repeat(np.arange(10), 3)
    images = np.zeros((30, 28, 28), np.uint8)
    if problem == "shape":
        images = np.zeros((30, 32, 32), np.uint8)
    elif problem == "range":
        images = np.full((30, 28, 28), 2.0, np.float32)
    elif problem == "missing_class":
        labels[labels == 7] = 1
    elif problem == "label_range":
        labels[0] = 10
    elif problem == "length":
        labels = labels[:-1]
    arrays = {"pictures": images, "labels": labels} if problem == "keys" else {"images": images, "labels": labels}
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=match) as err:
        load_synthetic(path, per_class=2)
    assert str(path) in str(err.value)


def test_missing_synthetic_file_and_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_synthetic(tmp_path / "nope.npz", per_class=1)
    with pytest.raises(ValueError, match="synthetic_path"):
        MNISTDataModule(synthetic_per_class=10)


# --- IDX files ----------------------------------------------------------------------------------
def _idx_tree(root, n_train=20, n_test=10):
    """A tiny MNIST in torchvision's raw layout; returns the training images written."""
    images = np.random.default_rng(0).integers(0, 256, (n_train + n_test, 28, 28), dtype=np.uint8)
    for (img, lab), part in ((RAW_FILES[:2], images[:n_train]), (RAW_FILES[2:], images[n_train:])):
        write_idx(root / "MNIST" / "raw" / img, part)
        write_idx(root / "MNIST" / "raw" / lab, np.arange(len(part)) % 10)
    return images[:n_train]


def test_idx_files_round_trip(tmp_path):
    written = _idx_tree(tmp_path)
    x, y = load_mnist(tmp_path, train=True)
    assert x.dtype == torch.uint8 and torch.equal(x, torch.from_numpy(written))
    assert y.dtype == torch.int64 and y.tolist() == [i % 10 for i in range(20)]
    assert load_mnist(tmp_path, train=False)[0].shape == (10, 28, 28)


@pytest.mark.parametrize("file, cut, match", [
    (RAW_FILES[0], lambda b: b[:-100], r"truncated IDX file: its header says 20x28x28 uint8 values, expected 15696 "
                                       r"bytes, got 15596"),
    (RAW_FILES[0], lambda b: b"", r"empty IDX file: expected at least a 4-byte header, got 0 bytes"),
    (RAW_FILES[0], lambda b: b[:10], r"truncated IDX file: expected a 16-byte header, got 10 bytes"),
    (RAW_FILES[1], lambda b: b + b"\0", r"oversized IDX file: .* expected 28 bytes, got 29"),
    (RAW_FILES[1], lambda b: b"\x1f\x8b" + b[2:], r"not an IDX file"),  # e.g. still gzipped
])
def test_truncated_or_empty_idx_file_names_the_file_and_the_sizes(tmp_path, file, cut, match):
    _idx_tree(tmp_path)
    path = tmp_path / "MNIST" / "raw" / file
    path.write_bytes(cut(path.read_bytes()))
    with pytest.raises(ValueError, match=match) as err:
        MNISTDataModule(data_dir=str(tmp_path), real_per_class=1, test_per_class=1).setup()
    assert str(path) in str(err.value)


def test_label_count_must_match_the_images(tmp_path):
    _idx_tree(tmp_path)
    write_idx(tmp_path / "MNIST" / "raw" / RAW_FILES[1], np.zeros(19, np.uint8))
    with pytest.raises(ValueError, match=f"{RAW_FILES[1]}: expected 20 labels"):
        load_mnist(tmp_path, train=True)


# --- bad settings -------------------------------------------------------------------------------
def test_missing_dataset_names_the_expected_path(tmp_path):
    dm = MNISTDataModule(data_dir=str(tmp_path), real_per_class=10)
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "MNIST" / "raw")):
        dm.setup()


@pytest.mark.parametrize("kwargs, match", [
    (dict(val_fraction=0.0), "val_fraction"),
    (dict(real_per_class=0), "real_per_class"),
    (dict(augmented_per_class=-1), "augmented_per_class"),
    (dict(normalization="bogus"), "normalization"),
    (dict(on_device=True, num_workers=2), "num_workers"),
    (dict(aug_crop_scale=(0.5, 1.5)), "crop_scale"),
])
def test_bad_settings_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MNISTDataModule(**kwargs)


def test_too_many_images_per_class_names_the_class(mnist_data):
    dm = MNISTDataModule(real_per_class=5500, val_fraction=0.1)  # real MNIST has 5,421 fives
    with pytest.raises(ValueError, match=r"class \d has only \d+ images"):
        dm.setup()


# --- models -------------------------------------------------------------------------------------
NETS = {"lenet": LeNet5, "cnn": MnistCNN, "sa-cnn": lambda **kw: MnistCNN(attention="spatial", **kw),
        "cbam-cnn": lambda **kw: MnistCNN(attention="cbam", **kw)}


@pytest.mark.parametrize("name", NETS)
def test_nets_map_digits_to_logits(name):
    net = NETS[name]().eval()
    assert net(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert NETS[name](num_classes=4)(torch.randn(2, 1, 28, 28)).shape == (2, 4)
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        net(torch.randn(3, 1, 32, 32))


def test_lenet_features_and_tanh_variant():
    model = LeNet5(activation="tanh").eval()
    assert model.features(torch.randn(2, 1, 28, 28)).shape == (2, 84)
    assert isinstance(model.conv[1], torch.nn.Tanh) and isinstance(model.conv[2], torch.nn.AvgPool2d)
    assert isinstance(LeNet5().conv[1], torch.nn.ReLU)
    with pytest.raises(ValueError, match="dropout must be in"):
        LeNet5(dropout=1.0)


def test_the_cli_refuses_an_activation_lenet_does_not_have(capsys):
    """The type hint (Literal) is the check: jsonargparse rejects the value before anything is built."""
    from conftest import CONFIGS, run_cli

    with pytest.raises(SystemExit) as exc:
        run_cli(["fit", "--config", CONFIGS / "lenet_reduced_mnist.yaml", "--model.init_args.net.init_args.activation",
                 "gelu", "--print_config"])
    assert exc.value.code != 0 and "gelu" in capsys.readouterr().err


@pytest.mark.parametrize("attention, gate, per_gate", [("spatial", SpatialAttention, 2 * 7 * 7),
                                                        ("cbam", CBAM, None)])
def test_attention_cnn_differs_from_the_plain_cnn_only_by_two_gates(attention, gate, per_gate):
    torch.manual_seed(0)
    plain, gated = MnistCNN(), MnistCNN(attention=attention)
    gates = [m for m in gated.modules() if isinstance(m, gate)]
    assert len(gates) == 2 and not any(isinstance(m, (SpatialAttention, CBAM)) for m in plain.modules())
    extra = sum(p.numel() for g in gates for p in g.parameters())
    assert sum(p.numel() for p in gated.parameters()) - sum(p.numel() for p in plain.parameters()) == extra
    if per_gate:
        assert extra == 2 * per_gate


def test_spatial_attention_maps_are_the_gates_the_forward_pass_applies():
    torch.manual_seed(0)
    sa = MnistCNN(attention="spatial", attention_kernel=5).eval()
    x = torch.randn(2, 1, 28, 28)
    maps = sa.attention_maps(x)
    assert [m.shape for m in maps] == [(2, 1, 28, 28), (2, 1, 14, 14)]
    assert all(((m > 0) & (m < 1)).all() for m in maps)
    assert sa.block1[1].conv.kernel_size == (5, 5)
    seen = []  # what the gates compute inside forward()
    hooks = [g.register_forward_hook(lambda m, inp, out: seen.append(m.gate(inp[0])))
             for g in (sa.block1[1], sa.block2[1])]
    with torch.no_grad():
        sa(x)
    for h in hooks:
        h.remove()
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(maps, seen))
    for attention in ("none", "cbam"):
        with pytest.raises(ValueError, match="attention='spatial'"):
            MnistCNN(attention=attention).attention_maps(x)


def test_bad_net_settings_name_the_setting():
    with pytest.raises(ValueError, match="three conv blocks"):
        MnistCNN(channels=(8, 16))
    with pytest.raises(ValueError, match="MnistCNN dropout"):
        MnistCNN(dropout=-0.1)


@pytest.mark.parametrize("name", ["lenet", "sa-cnn"])
def test_classifiers_learn_a_fixed_batch(reduced, name):
    torch.manual_seed(0)
    x, y = reduced.split("train")
    x, y = x[:32], y[:32]
    small = {} if name == "lenet" else {"channels": (8, 16, 16), "hidden": 32}
    model = Classifier(NETS[name](**small), optimizer=lambda p: torch.optim.Adam(p, lr=3e-3))
    opt = model.configure_optimizers()
    model.train()
    losses = []
    for _ in range(30):
        loss = model.training_step((x, y), 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses


class Frozen(Classifier):
    """LeNet-5 that never changes (lr 0) and may skip classifying in early epochs."""

    def __init__(self, classify_from_epoch: int = 0):
        super().__init__(LeNet5(), optimizer=lambda p: torch.optim.SGD(p, lr=0.0))
        self.classify_from_epoch = classify_from_epoch

    def training_step(self, batch, batch_idx):
        if self.current_epoch < self.classify_from_epoch:  # "pretraining": no classification
            return self(batch[0]).sum() * 0.0
        return super().training_step(batch, batch_idx)


def test_train_acc_is_the_epoch_accuracy_logged_once_and_skipped_when_nothing_was_classified(reduced):
    """With a frozen model (lr 0) the epoch's train/acc must equal its accuracy on the training split;
    an epoch whose step never updates the metric (e.g. autoencoder pretraining) logs none and warns not."""
    import warnings

    import lightning as L

    torch.manual_seed(0)
    model = Frozen()
    x, y = reduced.split("train")
    with torch.no_grad():
        expected = (model(x).argmax(1) == y).float().mean().item()
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, datamodule=reduced)
    assert trainer.callback_metrics["train/acc"].item() == pytest.approx(expected, abs=1e-6)

    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*compute.*called before.*update")
        trainer.fit(Frozen(classify_from_epoch=1), datamodule=reduced)
    assert "train/acc" not in trainer.callback_metrics


def test_classifier_balanced_accuracy_and_label_smoothing():
    """test/balanced_acc averages per-class recall (unlike test/acc on imbalanced data); the loss is
    cross-entropy with the configured label smoothing."""
    import torch.nn.functional as F

    model = Classifier(LeNet5(), label_smoothing=0.1)
    y = torch.tensor([0] * 8 + [1] * 2)
    logits = torch.zeros(10, 10)
    logits[:, 0] = 5.0  # every image called a 0: all eight 0s right, both 1s wrong
    metrics = model.test_metrics(logits, y)
    assert metrics["test/acc"].item() == pytest.approx(0.8)
    assert metrics["test/balanced_acc"].item() == pytest.approx(0.5)  # recall 1.0 for 0s, 0.0 for 1s
    smoothed = F.cross_entropy(logits, y, label_smoothing=0.1)
    assert torch.allclose(model._loss(logits, y), smoothed)
    assert not torch.allclose(smoothed, F.cross_entropy(logits, y))
