"""Device-resident batches (``--data.device_resident true``) of MNIST / ReducedMNIST, the image folders, the
spoken-digit features and the sine waves: the same data as the DataLoader path, an epoch order that is a
function of the run's seed and the epoch, DistributedSampler's shards, and identical training to the DataLoader
path when both see the same order. Real MNIST under ``../shared`` when it is there, else the IDX fixture of
``tests/data_fixtures.py``; the other datasets are always tiny fixtures (cats-dogs, FSDD) or generated."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from audio_fixtures import write_fsdd
from data_fixtures import mnist_data_dir, write_cats_dogs
from datamodules.batches import DeviceBatches as SharedDeviceBatches
from datamodules.images import ImageFolderDataModule
from datamodules.mnist import DeviceBatches, MNISTDataModule
from datamodules.sines import SineWaves
from datamodules.spoken_digits import SpokenDigits
from zoo import compat
from zoo.nets.autoencoders import LSTMAutoencoder
from zoo.nets.convnet import ConvNet
from zoo.nets.lenet import LeNet5
from zoo.tasks.autoencoder import Autoencoder
from zoo.tasks.classifier import Classifier

SETTINGS = dict(real_per_class=50, test_per_class=20, val_fraction=0.2, augmented_per_class=30, batch_size=64,
                eval_batch_size=100, split_seed=0)


def fake_trainer(rank: int = 0, world_size: int = 1, device: str = "cpu"):
    """What the datamodule reads from its trainer: the device and, under DDP, this process's shard."""
    shard = {"num_replicas": world_size, "rank": rank} if world_size > 1 else None
    return SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)), distributed_sampler_kwargs=shard)


def resident(rank: int = 0, world_size: int = 1, **kw) -> MNISTDataModule:
    dm = MNISTDataModule(**{**SETTINGS, **kw}, device_resident=True)
    dm.trainer = fake_trainer(rank, world_size)
    dm.setup("fit")
    return dm


def epoch(loader, e: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    (loader.batch_sampler.sampler if hasattr(loader.batch_sampler, "sampler") else loader.sampler).set_epoch(e)
    return list(loader)


def same(a, b) -> bool:
    """Two lists of batches (tuples of tensors: (x, y), or (feats, lengths, y)) are identical."""
    return len(a) == len(b) and all(len(p) == len(q) and all(torch.equal(s, t) for s, t in zip(p, q))
                                    for p, q in zip(a, b))


@pytest.fixture(autouse=True)
def no_run_seed(monkeypatch):
    """Outside a seeded run the epoch order follows the data seed (0 here); earlier tests may have seeded one."""
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)


@pytest.fixture(scope="module")
def mnist_data(tmp_path_factory):
    """Real MNIST when ../shared has it, else the IDX fixture; ``ZOO_DATA_DIR`` points at it."""
    yield from mnist_data_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def plain(mnist_data):
    dm = MNISTDataModule(**SETTINGS)
    dm.setup()
    return dm


def test_same_splits_and_evaluation_batches_as_the_dataloader_path(plain):
    dm = resident()
    for name in ("train", "val", "test"):  # augmentation included: it is made the same way on the device
        assert all(torch.equal(a, b) for a, b in zip(dm.split(name), plain.split(name)))
    assert same(list(dm.val_dataloader()), list(plain.val_dataloader()))
    assert same(list(dm.test_dataloader()), list(plain.test_dataloader()))
    assert isinstance(dm.train_dataloader(), DeviceBatches)


def test_an_epoch_serves_every_image_once_in_an_order_fixed_by_seed_and_epoch(plain):
    loader = resident().train_dataloader()
    x, y = plain.split("train")
    batches = epoch(loader, 3)
    assert [len(b[1]) for b in batches] == [64] * 12 + [800 - 12 * 64] and len(loader) == 13
    assert torch.equal(torch.cat([b[0] for b in batches]).flatten(1).sum(1).sort().values,
                       x.flatten(1).sum(1).sort().values)
    assert same(batches, epoch(resident().train_dataloader(), 3)), "a new run (or a resumed one) must see the same epoch"
    assert not torch.equal(batches[0][1], epoch(loader, 4)[0][1])
    other_seed = DeviceBatches(x, y, 64, shuffle=True, seed=1)
    other_seed.set_epoch(3)
    assert not torch.equal(batches[0][1], next(iter(other_seed))[1])
    dropped = resident(drop_last=True).train_dataloader()
    assert len(dropped) == 12 == len(list(dropped))


def test_the_runs_seed_orders_the_epochs(plain, monkeypatch):
    """seed_everything (as Lightning's DistributedSampler uses it), so runs of a seed study differ in order too."""
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    x, y = plain.split("train")
    expected = DeviceBatches(x, y, 64, shuffle=True, seed=7)
    assert torch.equal(resident().train_dataloader().indices(), expected.indices())


def test_uneven_split_is_padded_like_distributed_sampler():
    x, y = torch.arange(101.0).view(-1, 1), torch.arange(101)
    for rank in range(3):
        mine = DeviceBatches(x, y, 8, shuffle=True, seed=5, rank=rank, world_size=3)
        sampler = DistributedSampler(TensorDataset(x, y), num_replicas=3, rank=rank, seed=5)
        for e in (0, 7):
            mine.set_epoch(e), sampler.set_epoch(e)
            assert mine.indices().tolist() == list(sampler)
        assert len(mine) == -(-34 // 8)


# --- every device-resident DataModule: MNIST, image folders, spoken digits (log-mel, MFCC), sines ------------
CASES = ["mnist", "images", "logmel", "mfcc", "sines"]
#: spoken-digit settings whose augmentation (run batched on the device after transfer) the fit test exercises
AUDIO_AUG = dict(normalization="utterance", time_crop=0.8, spec_augment=True, num_masks=1, mask_width=2, vtlp=0.1,
                 noise_snr=(10.0, 20.0))


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory) -> Path:
    """cats-dogs (2 classes, own train/test split) and FSDD (2 speakers x 10 digits x 8 takes), tiny."""
    root = tmp_path_factory.mktemp("resident_data")
    write_cats_dogs(root, per_class=8, size=16)
    write_fsdd(root, speakers=("alice", "bob"), takes=range(8))
    return root


@pytest.fixture
def make(request, fixture_root):
    """``make(case, **kw)``: a fresh DataModule of ``case`` on the tiny data (not set up)."""
    def make(case: str, **kw):
        if case == "mnist":
            request.getfixturevalue("mnist_data")
            return MNISTDataModule(**{**SETTINGS, **kw})
        if case == "images":  # minus_one_one: the conversion is more than a division
            return ImageFolderDataModule(**{**dict(folder="cats-dogs", data_dir=str(fixture_root), image_size=8,
                                                   cache_dir=str(fixture_root / "cache"), batch_size=5,
                                                   normalization="minus_one_one"), **kw})
        if case in ("logmel", "mfcc"):
            extra = dict(n_mels=16, frames=16) if case == "logmel" else dict(n_mfcc=8, normalization="dataset")
            return SpokenDigits(**{**dict(source="fsdd", feature=case, data_dir=str(fixture_root), val_fraction=0.25,
                                          cache_dir=str(fixture_root / "cache"), batch_size=16, progress=False),
                                   **extra, **kw})
        assert case == "sines"
        return SineWaves(**{**dict(n_train=37, n_val=12, n_test=12, length=16, batch_size=8), **kw})

    return make


def set_up(dm, rank: int = 0, world_size: int = 1):
    dm.trainer = fake_trainer(rank, world_size)
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("world_size", [1, 2])
@pytest.mark.parametrize("split", ["train", "val", "test"])
@pytest.mark.parametrize("case", CASES)
def test_batches_equal_the_dataloader_paths_under_lightnings_distributed_sampler(make, case, split, world_size,
                                                                                 monkeypatch):
    """What Lightning runs under DDP (and, with one replica, what a DataLoader of the same order serves): a
    DistributedSampler seeded with the run's seed in the DataLoader path. Each rank's device-resident batches
    are exactly that rank's DataLoader batches (converted, padded and cut as that path does), and the shards
    of the two ranks together are the whole split."""
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    get, shuffle = f"{split}_dataloader", split == "train"
    plain = set_up(make(case))
    seen = []
    for rank in range(world_size):
        mine = getattr(set_up(make(case, device_resident=True), rank, world_size), get)()
        assert isinstance(mine, SharedDeviceBatches) and mine.world_size == world_size
        loader = getattr(plain, get)()
        theirs = compat.with_sampler(loader, DistributedSampler(loader.dataset, num_replicas=world_size, rank=rank,
                                                                seed=7, shuffle=shuffle))
        for e in (0, 1):
            assert same(epoch(mine, e), epoch(theirs, e)), f"rank {rank}, epoch {e}"
        if world_size == 1 and not shuffle:  # evaluation batches: the plain DataLoader, no sampler swapped in
            assert same(list(mine), list(getattr(plain, get)()))
        assert len(mine) == len(list(mine)) == len(theirs)
        seen.append(mine.indices())
    n = len(loader.dataset)
    if world_size == 2:
        assert len(seen[0]) == len(seen[1]) == -(-n // 2)
    assert sorted(set(torch.cat(seen).tolist())) == list(range(n))


@pytest.mark.parametrize("case", CASES)
def test_predict_stays_a_dataloader(make, case):
    """Lightning predicts a DataLoader's test split exactly once under DDP; DeviceBatches would pad it."""
    assert isinstance(set_up(make(case, device_resident=True)).predict_dataloader(), DataLoader)


@pytest.mark.parametrize("case", ["mnist", "images", "logmel", "sines"])
def test_fit_is_identical_to_the_dataloader_path_given_the_same_epoch_order(make, case):
    """On one device the DataLoader path draws each epoch's order from a generator (the global RNG's
    RandomSampler; SineWaves' own seeded one); given the device-resident order instead (a DistributedSampler
    of one, what DDP uses), training is identical: weights and metrics, dropout, batch norm and the
    spoken digits' batched augmentation (warp, noise, crop, masks) included."""

    def same_order(dm):
        class SameOrder(type(dm)):
            def train_dataloader(self):
                loader = super().train_dataloader()
                return compat.with_sampler(loader, DistributedSampler(loader.dataset, num_replicas=1, rank=0,
                                                                      seed=int(os.environ["PL_GLOBAL_SEED"])))

        dm.__class__ = SameOrder
        return dm

    def model():
        if case == "mnist":
            return Classifier(LeNet5(dropout=0.1))
        if case == "sines":
            return Autoencoder(LSTMAutoencoder(hidden_size=8, latent_size=2), probe_folds=0, tsne_samples=0)
        return Classifier(ConvNet(in_channels=3 if case == "images" else 1, channels=(4, 4, 4, 4), hidden=8,
                                  dropout=0.2, num_classes=2 if case == "images" else 10, channels_last=False))

    class Spy(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            self.loader = trainer.train_dataloader

    kw = AUDIO_AUG if case == "logmel" else {}
    runs = {}
    for name, dm in (("resident", make(case, device_resident=True, **kw)), ("dataloader", same_order(make(case, **kw)))):
        L.seed_everything(3)
        net, spy = model(), Spy()
        trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, callbacks=[spy])
        trainer.fit(net, datamodule=dm)
        runs[name] = (net.state_dict(), {k: float(v) for k, v in trainer.callback_metrics.items()}, spy.loader)
    (w1, m1, loader1), (w2, m2, loader2) = runs["resident"], runs["dataloader"]
    assert isinstance(loader1, DeviceBatches) and not isinstance(loader2, DeviceBatches)
    assert m1 == m2 and ({"val/mse", "train/mse"} if case == "sines" else {"val/acc", "val/loss", "train/acc"}) <= set(m1)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("case", ["images", "logmel", "mfcc", "sines"])
def test_on_a_gpu_the_batches_live_there_and_equal_the_cpu_ones(make, case):
    dm = make(case, device_resident=True)
    dm.trainer = fake_trainer(device="cuda")
    dm.setup("fit")
    plain = set_up(make(case))
    for get in ("train_dataloader", "val_dataloader"):
        mine, loader = getattr(dm, get)(), getattr(plain, get)()
        sampler = DistributedSampler(loader.dataset, num_replicas=1, rank=0, seed=mine.seed,
                                     shuffle=get == "train_dataloader")
        theirs = compat.with_sampler(loader, sampler)
        batches = epoch(mine, 1)
        assert all(t.is_cuda for b in batches for t in b)
        assert same([tuple(t.cpu() for t in b) for b in batches], epoch(theirs, 1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_a_gpu_the_splits_and_augmentation_live_there(plain):
    dm = MNISTDataModule(**SETTINGS, device_resident=True)
    dm.trainer = fake_trainer(device="cuda")
    dm.setup("fit")
    x, y = dm.split("train")
    assert x.is_cuda and y.is_cuda
    assert torch.allclose(x.cpu(), plain.split("train")[0], atol=1e-4)  # grid_sample rounding may differ
    bx, by = next(iter(dm.train_dataloader()))
    assert bx.is_cuda and by.is_cuda


@pytest.mark.parametrize("cls", [MNISTDataModule, ImageFolderDataModule, SpokenDigits, SineWaves])
def test_device_resident_needs_no_worker_processes(cls):
    with pytest.raises(ValueError, match=f"{cls.__name__}: device_resident=True .* needs num_workers=0, got 2"):
        cls(device_resident=True, num_workers=2)


def test_a_run_resumed_after_an_interruption_ends_as_the_uninterrupted_one(mnist_data, tmp_path, monkeypatch):
    """The epoch order depends on seed and epoch only, so resuming from last.ckpt replays the same batches."""
    from conftest import CONFIGS, run_cli

    def fit(name: str, *extra) -> Path:
        out = tmp_path / name
        run_cli(["fit", "--config", CONFIGS / "lenet_reduced_mnist.yaml", "--data.device_resident", "true",
                 "--data.real_per_class", "12", "--data.test_per_class", "5", "--data.batch_size", "16",
                 "--model.init_args.net.init_args.dropout", "0.3", "--trainer.max_epochs", "3",
                 "--model.init_args.scheduler.init_args.T_max", "3",
                 "--trainer.accelerator", "cpu", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                 "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", out,
                 "--checkpoint.dirpath", out, "--run.test_after_fit", "false", *extra])
        return out / "last.ckpt"

    whole = fit("whole")
    step = Classifier.training_step

    def interrupted(self, batch, batch_idx):
        if (self.current_epoch, batch_idx) == (1, 5):
            raise RuntimeError("interrupted")
        return step(self, batch, batch_idx)

    with monkeypatch.context() as m:
        m.setattr(Classifier, "training_step", interrupted)
        with pytest.raises(RuntimeError, match="interrupted"):
            fit("cut")
    resumed = fit("cut", "--ckpt_path", tmp_path / "cut" / "last.ckpt")
    a, b = (torch.load(p, weights_only=True)["state_dict"] for p in (whole, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
