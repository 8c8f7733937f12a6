"""MFCC representations (issue 3): the batched greedy merge against the per-utterance reference, merge
orders on hand-made sequences, every method's shapes, learning on a tiny batch (also as plain nets without
Lightning), staged training, the SVM baseline (digit and gender), checkpoint round trips, conversion of
checkpoints written before the nets/tasks split, and code export."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from audio_fixtures import digit_tone, write_audiomnist, write_fsdd
from conftest import run_cli
from zoo.checkpoints import load_cli_checkpoint
from zoo.layers import mlp_head
from zoo.nets.mfcc import (FlatAE, FrameConvNet, MeanMFCC, MFCCStats, PairAutoencoder, RecursivePairAE, frame_mask,
                           greedy_merge, greedy_merge_reference, masked_mean_std, mfcc_statistics, sequential_encode)
from zoo.safe_load import load_checkpoint, load_module
from zoo.tasks.mfcc_repr import CodeWriter, MFCCStatsSVM, StagedClassifier
from zoo.tools.convert_checkpoint import convert_checkpoint

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def random_batch(B=12, T=20, D=13, seed=0, dtype=torch.float64, min_len=1):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, T + 1, (B,), generator=g)
    lengths[0] = T
    x = torch.randn(B, T, D, generator=g, dtype=dtype) * frame_mask(lengths, T).unsqueeze(-1)
    return x, lengths


class MeanPairAE:
    """Hand-made 'autoencoder': the code is the pair's mean, the score its squared distance."""

    def encode(self, left, right):
        return (left + right) / 2

    def recon_error(self, code, left, right):
        return ((left - right) ** 2).sum(-1)

    def score(self, left, right):
        return self.encode(left, right), self.recon_error(None, left, right)

    def error(self, left, right):
        return self.score(left, right)[1]


def as_batch(seqs, T):
    lengths = torch.tensor([len(s) for s in seqs])
    x = torch.zeros(len(seqs), T, 1, dtype=torch.float64)
    for b, s in enumerate(seqs):
        x[b, :len(s), 0] = torch.tensor(s, dtype=torch.float64)
    return x, lengths


# --- greedy merge --------------------------------------------------------------------------------
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("grad", [False, True])
def test_batched_greedy_merge_equals_reference(normalize, grad):
    torch.manual_seed(0)
    ae = PairAutoencoder(13, 16, normalize_codes=normalize).double()
    x, lengths = random_batch(B=16, T=24, seed=int(normalize))
    with torch.set_grad_enabled(grad):
        res = greedy_merge(ae, x, lengths)
    assert res.codes.shape == (16, 13) and res.order.shape == (16, 23)
    with torch.no_grad():
        for b in range(16):
            code, order = greedy_merge_reference(ae, x[b, :lengths[b]])
            got = res.order[b]
            assert got[got >= 0].tolist() == order, f"utterance {b}"
            assert (got[len(order):] == -1).all()
            torch.testing.assert_close(res.codes[b], code)


def test_batched_greedy_merge_gradients_equal_reference():
    torch.manual_seed(1)
    ae = PairAutoencoder(13, 8, normalize_codes=True).double()
    x, lengths = random_batch(B=5, T=9, seed=3)
    greedy_merge(ae, x, lengths).codes.pow(2).sum().backward()
    batched = [p.grad.clone() for p in ae.encoder.parameters()]  # scoring (decoder) carries no gradient
    ae.zero_grad()
    sum(greedy_merge_reference(ae, x[b, :lengths[b]])[0].pow(2).sum() for b in range(5)).backward()
    for g, p in zip(batched, ae.encoder.parameters()):
        torch.testing.assert_close(g, p.grad)


@pytest.mark.parametrize("grad", [False, True])
def test_greedy_merge_runs_under_autocast_and_keeps_the_input_dtype(grad):
    """bf16-mixed: the faithful pair AE (plain Linear output) returns bf16 codes into a float32 merge state."""
    torch.manual_seed(0)
    ae = PairAutoencoder(13, 16)
    x, lengths = random_batch(B=6, T=10, seed=4)
    x = x.float()
    with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=torch.bfloat16):
        res = greedy_merge(ae, x, lengths, with_recon=True)
    assert res.codes.dtype == x.dtype and res.recon.dtype == x.dtype
    assert torch.isfinite(res.codes).all() and torch.isfinite(res.recon).all()
    assert ((res.order >= 0).sum(1) == lengths - 1).all()


def test_greedy_order_on_hand_made_sequences():
    seqs = [[0, 10, 11, 30],   # (10,11) closest -> [0,10.5,30] -> (0,10.5) -> root
            [0, 1, 2, 3],      # all ties -> leftmost first: [0.5,2,3] -> (2,3) -> root
            [5, 0],            # padding zeros next to 0 must never be merged
            [7],               # one frame: nothing to merge, the code is the frame
            [0, 4, 5, 20]]
    x, lengths = as_batch(seqs, T=4)
    res = greedy_merge(MeanPairAE(), x, lengths)
    assert res.order.tolist() == [[1, 0, 0], [0, 1, 0], [0, -1, -1], [-1, -1, -1], [1, 0, 0]]
    assert res.codes[:, 0].tolist() == pytest.approx([(0 + 10.5) / 2 / 2 + 15, (0.5 + 2.5) / 2, 2.5, 7.0,
                                                      ((0 + 4.5) / 2 + 20) / 2])
    for b, s in enumerate(seqs):  # the reference agrees on the hand-made cases too
        code, order = greedy_merge_reference(MeanPairAE(), x[b, :len(s)])
        assert order == [o for o in res.order[b].tolist() if o >= 0]


def test_sequential_encode_is_left_to_right():
    x, lengths = as_batch([[1, 3, 5], [4, 8], [2]], T=3)
    x[1, 2] = 100.0  # padding content must not leak in
    codes, _ = sequential_encode(MeanPairAE(), x, lengths)
    assert codes[:, 0].tolist() == pytest.approx([((1 + 3) / 2 + 5) / 2, 6.0, 2.0])


def test_masked_statistics_ignore_padding():
    x, lengths = random_batch(B=4, T=6, dtype=torch.float32)
    noisy = x + 50 * (~frame_mask(lengths, 6)).unsqueeze(-1)
    for b in range(4):
        real = x[b, :lengths[b]]
        mean, std = masked_mean_std(noisy, lengths)
        torch.testing.assert_close(mean[b], real.mean(0))
        torch.testing.assert_close(std[b], real.std(0, unbiased=False))
    assert mfcc_statistics(noisy, lengths).shape == (4, 52)
    assert mfcc_statistics(noisy, lengths, deltas=False).shape == (4, 26)


# --- the nets and the staged task --------------------------------------------------------------------
def nets():
    return {
        "mean": MeanMFCC(hidden=32, num_classes=4),
        "flat": FlatAE(max_frames=12, code_dim=8, ae_hidden=[32], hidden=32, num_classes=4),
        "seq_faithful": RecursivePairAE("sequential", "faithful", ae_hidden=16, hidden=32, num_classes=4),
        "seq_improved": RecursivePairAE("sequential", "improved", ae_hidden=16, hidden=32, num_classes=4),
        "greedy_faithful": RecursivePairAE("greedy", "faithful", ae_hidden=16, hidden=32, num_classes=4),
        "greedy_improved": RecursivePairAE("greedy", "improved", ae_hidden=16, hidden=32, num_classes=4),
    }


# the training stages each configs/mfcc_*.yaml sets (faithful: AE epochs, then a frozen encoder)
STAGES = {"mean": {}, "flat": {"freeze_encoder": False, "recon_weight": 0.1},
          "seq_faithful": {"ae_epochs": 10, "freeze_encoder": True}, "seq_improved": {"recon_weight": 1.0},
          "greedy_faithful": {"ae_epochs": 10, "freeze_encoder": True}, "greedy_improved": {"recon_weight": 1.0}}


def models():
    return {name: StagedClassifier(net, **STAGES[name]) for name, net in nets().items()}


CODE_DIMS = {"mean": 13, "flat": 8, "seq_faithful": 13, "seq_improved": 13, "greedy_faithful": 13,
             "greedy_improved": 13}


@pytest.mark.parametrize("name", list(CODE_DIMS))
def test_shapes(name):
    model = models()[name].eval()
    x, lengths = random_batch(B=5, T=15, dtype=torch.float32)  # T > max_frames for FlatAE: cut, with a warning
    with pytest.warns(UserWarning, match="max_frames") if name == "flat" else torch.no_grad():
        assert model.net.encode(x, lengths).shape == (5, CODE_DIMS[name])
    assert model(x, lengths).shape == (5, 4)
    out = model.predict_step((x, lengths, torch.zeros(5, dtype=torch.long)), 0)
    assert out["code"].shape == (5, CODE_DIMS[name]) and out["pred"].shape == (5,)


def tiny_task(n=16, T=10, seed=0):
    """Four classes, each a different constant offset on a few coefficients, varied lengths."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    lengths = torch.randint(3, T + 1, (n,), generator=g)
    x = 0.3 * torch.randn(n, T, 13, generator=g)
    x[torch.arange(n), :, y] += 2.0
    x = x * frame_mask(lengths, T).unsqueeze(-1)
    return x, lengths, y


@pytest.mark.parametrize("name", ["mean", "flat", "seq_improved", "greedy_improved"])
def test_learns_a_tiny_batch(name):
    torch.manual_seed(0)
    model = models()[name]
    model.net.head[2].p = model.net.head[5].p = 0.0  # no dropout: a deterministic fit
    batch = tiny_task()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        loss = model.training_step(batch, 0)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.4 * losses[0], losses[::8]
    with torch.no_grad():
        assert (model(*batch[:2]).argmax(-1) == batch[2]).float().mean() >= 0.9


@pytest.mark.parametrize("merge", ["sequential", "greedy"])
def test_faithful_mode_pretrains_the_pair_ae_then_freezes_it(merge, tmp_path):
    torch.manual_seed(0)
    net = RecursivePairAE(merge, "faithful", ae_hidden=16, hidden=32, num_classes=4)
    model = StagedClassifier(net, ae_epochs=1, freeze_encoder=True)
    x, lengths, y = tiny_task(n=32)
    data = DataLoader(list(zip(x, lengths, y)), batch_size=8)
    snapshots = {}

    class Snap(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            snapshots[trainer.current_epoch] = ({k: v.clone() for k, v in pl_module.net.ae.state_dict().items()},
                                                {k: v.clone() for k, v in pl_module.net.head.state_dict().items()})

    start_ae = {k: v.clone() for k, v in net.ae.state_dict().items()}
    start_head = {k: v.clone() for k, v in net.head.state_dict().items()}
    pair_loss_before = net.pretrain_loss(x, lengths).item()
    L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, callbacks=[Snap()]).fit(model, data)
    ae0, head0 = snapshots[0]
    ae1, head1 = snapshots[1]
    assert any(not torch.equal(start_ae[k], ae0[k]) for k in ae0)          # epoch 0: the AE trains...
    assert all(torch.equal(start_head[k], head0[k]) for k in head0)        # ...the head does not
    assert all(torch.equal(ae0[k], ae1[k]) for k in ae1)                   # epoch 1: the AE is frozen...
    assert any(not torch.equal(head0[k], head1[k]) for k in head1)         # ...the head trains
    assert net.pretrain_loss(x, lengths).item() < pair_loss_before


def test_improved_mode_normalises_codes_and_faithful_does_not():
    x, lengths = random_batch(B=6, T=10, dtype=torch.float32, min_len=2)
    codes = RecursivePairAE("greedy", "improved").encode(x, lengths)
    torch.testing.assert_close(codes.mean(-1), torch.zeros(6), atol=1e-5, rtol=0)
    assert not isinstance(RecursivePairAE("greedy", "faithful").ae.norm, torch.nn.LayerNorm)


def test_bad_input_is_rejected():
    model = MeanMFCC()
    with pytest.raises(ValueError, match="feature mfcc"):
        model(torch.randn(2, 1, 64, 64), torch.tensor([3, 3]))
    with pytest.raises(ValueError, match="n_mfcc"):
        model(torch.randn(2, 5, 20), torch.tensor([3, 3]))
    with pytest.raises(ValueError, match="lengths"):
        model(torch.randn(2, 5, 13), torch.tensor([0, 6]))
    with pytest.raises(ValueError, match="num_classes"):
        MeanMFCC(num_classes=1)
    with pytest.raises(ValueError, match="ae_epochs"):
        StagedClassifier(MeanMFCC(), ae_epochs=-1)
    with pytest.raises(ValueError, match="has no represent"):
        StagedClassifier(torch.nn.Linear(13, 4), num_classes=4)
    with pytest.raises(NotImplementedError, match="set ae_epochs to 0"):
        StagedClassifier(MeanMFCC(), ae_epochs=1).training_step(tiny_task(), 0)


def test_head_is_the_old_mlp_and_built_before_the_autoencoder():
    """zoo.layers.mlp_head(layers=2) is the pre-split head layer for layer, and the nets build it first, so a
    seeded run starts from the weights it started from before the split."""
    head = MeanMFCC(hidden=32, dropout=0.3, num_classes=4).head
    assert [type(m).__name__ for m in head] == ["Linear", "ReLU", "Dropout"] * 2 + ["Linear"]
    assert [tuple(m.weight.shape) for m in head if isinstance(m, torch.nn.Linear)] == [(32, 13), (32, 32), (4, 32)]
    assert head[2].p == head[5].p == 0.3
    assert isinstance(MeanMFCC(hidden=0, num_classes=4).head, torch.nn.Linear)
    for make in (lambda: FlatAE(max_frames=5, code_dim=6, ae_hidden=[8], hidden=16, num_classes=3),
                 lambda: RecursivePairAE("greedy", "improved", ae_hidden=8, hidden=16, num_classes=3)):
        code_dim = make().code_dim
        torch.manual_seed(0)
        expected = mlp_head(code_dim, 3, 16, layers=2, dropout=0.1)
        torch.manual_seed(0)
        net = make()
        assert all(torch.equal(a, b) for a, b in zip(net.head.state_dict().values(),
                                                     expected.state_dict().values()))


def test_nets_train_without_lightning():
    """A net is a plain nn.Module: pre-train its autoencoder, then its head, in a hand-written loop."""
    torch.manual_seed(0)
    net = FlatAE(max_frames=10, code_dim=8, ae_hidden=[32], hidden=32, dropout=0.0, num_classes=4)
    assert not any(isinstance(m, L.LightningModule) for m in net.modules())
    x, lengths, y = tiny_task()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    first = net.pretrain_loss(x, lengths).item()
    for _ in range(40):
        loss = net.pretrain_loss(x, lengths)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(net(x, lengths), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (net(x, lengths).argmax(-1) == y).float().mean() >= 0.9
    stats = MFCCStats(deltas=True)
    assert stats(x, lengths).shape == (16, 52) and not list(stats.parameters())


def test_staged_checkpoint_round_trip_from_python(tmp_path):
    """From plain Python the net is not in the hyperparameters: load_from_checkpoint takes it again."""
    torch.manual_seed(0)
    model = StagedClassifier(RecursivePairAE("sequential", "improved", ae_hidden=8, hidden=16, num_classes=4),
                             recon_weight=0.5)
    assert dict(model.hparams) == {"ae_epochs": 0, "freeze_encoder": False, "recon_weight": 0.5,
                                   "num_classes": None, "class_names": None, "label_smoothing": 0.0,
                                   "optimizer": model.hparams.optimizer, "scheduler": None}
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    x, lengths, y = tiny_task()
    trainer.fit(model, DataLoader(list(zip(x, lengths, y)), batch_size=8))
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    again = load_module(StagedClassifier, tmp_path / "m.ckpt",  # weights-only
                        net=RecursivePairAE("sequential", "improved", ae_hidden=8, hidden=16, num_classes=4))
    assert again.recon_weight == 0.5
    model.eval(), again.eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x, lengths), model(x, lengths), rtol=0, atol=0)


# --- SVM baseline ----------------------------------------------------------------------------------
def svm_fit_and_eval(model, train, test):
    model.fit_svm(model.features(*train[:2]).double().numpy(), train[2].numpy())
    return (model(*test[:2]).argmax(-1) == test[2]).float().mean().item()


def test_svm_digits_and_gender_on_synthetic_features():
    assert svm_fit_and_eval(MFCCStatsSVM(num_classes=4), tiny_task(64, seed=0), tiny_task(32, seed=1)) >= 0.95
    # gender: a binary label carried by the frame-to-frame variability, not the mean

    def gender_task(n, seed):
        y = torch.arange(n) % 2
        x = torch.randn(n, 12, 13, generator=torch.Generator().manual_seed(seed)) * (0.3 + y[:, None, None])
        return x, torch.full((n,), 12), y

    model = MFCCStatsSVM(num_classes=2, class_names=["female", "male"])
    assert svm_fit_and_eval(model, gender_task(60, 0), gender_task(40, 1)) >= 0.95
    assert model(*gender_task(4, 2)[:2]).shape == (4, 2)


def test_svm_checkpoint_round_trip_and_unfitted_error(tmp_path):
    train, test = tiny_task(64, seed=0), tiny_task(16, seed=1)
    model = MFCCStatsSVM(num_classes=4)
    with pytest.raises(RuntimeError, match="not fitted"):
        model(*test[:2])
    svm_fit_and_eval(model, train, test)
    ckpt = {}
    model.on_save_checkpoint(ckpt)
    torch.save(ckpt, tmp_path / "svm.ckpt")
    again = MFCCStatsSVM(num_classes=4)
    again.on_load_checkpoint(torch.load(tmp_path / "svm.ckpt", weights_only=True))
    torch.testing.assert_close(again(*test[:2]), model(*test[:2]))


def write_gendered_audiomnist(root: Path) -> Path:
    """AudioMNIST layout, 4 male + 4 female speakers; female voices an octave up (digit tones x2)."""
    def signal(digit: int, speaker: int, take: int, gender: str) -> np.ndarray:
        sig = digit_tone(digit, speaker % 4, take, 16000)  # stored at 8 kHz: an octave down
        if gender == "female":  # an octave up again: read the same samples twice as fast
            sig = np.interp(np.arange(0, len(sig), 2.0), np.arange(len(sig)), sig).astype(np.float32)
        return sig

    genders = {f"{s + 1:02d}": "male" if s < 4 else "female" for s in range(8)}
    return write_audiomnist(root, genders, takes=range(2), sample_rate=8000, signal=signal)


def test_svm_gender_through_the_cli_on_fixtures(tmp_path):
    root = write_gendered_audiomnist(tmp_path / "data")
    out = tmp_path / "results.json"
    cli = run_cli(["fit", "--config", CONFIGS / "mfcc_svm.yaml", "--data.source", "audiomnist", "--data.target",
                   "gender", "--data.data_dir", root, "--data.test_fraction", "0.25", "--data.val_fraction", "0.25",
                   "--model.num_classes", "2", "--trainer.logger", "false", "--trainer.default_root_dir", tmp_path,
                   "--trainer.enable_progress_bar", "false", "--data.progress", "false", "--run.results_file", out])
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["test/acc"] >= 0.9, metrics
    assert metrics["train/acc"] >= 0.9, metrics  # the fit's own accuracy, a torchmetrics object
    assert not cli.model.train_acc.update_count, "reset after logging: the next fit starts afresh"
    best = json.loads(out.read_text())["best_checkpoint"]
    assert best, "the fitted SVM must be checkpointed"
    # the checkpoint names its class and data settings: it loads on its own (weights-only), same decisions
    model, data_hp = load_cli_checkpoint(best)
    assert isinstance(model, MFCCStatsSVM) and data_hp["target"] == "gender"
    x, lengths, _ = next(iter(cli.datamodule.test_dataloader()))
    torch.testing.assert_close(model(x, lengths), cli.model(x, lengths), rtol=0, atol=0)


def test_staged_cli_checkpoint_loads_on_its_own(tmp_path):
    """A checkpoint of `python -m zoo fit` records the net as its config: it rebuilds without the config file."""
    root = write_fsdd(tmp_path / "data", takes=range(6))
    out = tmp_path / "results.json"
    cli = run_cli(["fit", "--config", CONFIGS / "mfcc_flat_ae.yaml", "--data.data_dir", root,
                   "--model.net.init_args.max_frames", "30", "--model.ae_epochs", "1", "--trainer.max_epochs", "2",
                   "--trainer.logger", "false", "--trainer.default_root_dir", tmp_path, "--data.progress", "false",
                   "--trainer.enable_progress_bar", "false", "--run.test_after_fit", "false",
                   "--run.results_file", out])
    best = json.loads(out.read_text())["best_checkpoint"]
    model, _ = load_cli_checkpoint(best)
    assert isinstance(model, StagedClassifier) and isinstance(model.net, FlatAE) and model.net.max_frames == 30
    assert (model.ae_epochs, model.freeze_encoder) == (1, True)
    x, lengths, _ = next(iter(cli.datamodule.test_dataloader()))
    cli.model.load_state_dict(load_checkpoint(best)["state_dict"])  # the trained run's weights at its best epoch
    cli.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x, lengths), cli.model(x, lengths), rtol=0, atol=0)


def test_num_classes_mismatch_is_reported(tmp_path):
    root = write_gendered_audiomnist(tmp_path / "data")
    with pytest.raises(ValueError, match="num_classes 2"):
        run_cli(["fit", "--config", CONFIGS / "mfcc_mean.yaml", "--data.source", "audiomnist",
                 "--data.target", "gender", "--data.data_dir", root, "--data.test_fraction", "0.25",
                 "--data.val_fraction", "0.25", "--trainer.logger", "false", "--trainer.fast_dev_run", "1",
                 "--trainer.default_root_dir", tmp_path, "--data.progress", "false"])


# --- export ----------------------------------------------------------------------------------------
def test_predict_exports_codes(tmp_path):
    root = write_fsdd(tmp_path / "data", takes=range(6))
    out = tmp_path / "codes.npz"
    run_cli(["predict", "--config", CONFIGS / "mfcc_greedy_improved.yaml", "--data.data_dir", root,
             "--trainer.logger", "false", "--trainer.default_root_dir", tmp_path, "--data.progress", "false",
             "--trainer.enable_progress_bar", "false", "--trainer.callbacks+=CodeWriter",
             "--trainer.callbacks.output_path", out])
    codes = np.load(out)
    n_test = 3 * 10 * 5  # FSDD official split: takes 0-4 of each speaker and digit
    assert codes["code"].shape == (n_test, 13)
    assert codes["target"].shape == codes["pred"].shape == codes["length"].shape == (n_test,)
    assert np.isfinite(codes["code"]).all()
    with pytest.raises(ValueError, match=".npz"):
        CodeWriter("codes.csv")


def test_svm_refuses_more_than_one_process_before_ddp_wraps_it():
    from types import SimpleNamespace

    svm = MFCCStatsSVM()
    svm.trainer = SimpleNamespace(world_size=2)  # the public setter
    with pytest.raises(ValueError, match="--trainer.devices 1"):
        svm.setup("fit")
    svm.trainer = SimpleNamespace(world_size=1)
    svm.setup("fit")  # one process: fine


# --- checkpoints written before the nets/tasks split --------------------------------------------------
LEGACY_OPTIMIZER = {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.002, "weight_decay": 0.0001}}
TASK_HP = {"num_classes": 4, "class_names": None, "label_smoothing": 0.0, "optimizer": LEGACY_OPTIMIZER,
           "scheduler": None}


def _legacy(path: Path, class_path: str, hparams: dict, state_dict: dict, **extra) -> Path:
    """An old-format checkpoint as ``python -m zoo fit`` wrote it: flat hyperparameters (the CLI config of
    the old class), the weights at the top level (the old classes held head/ae/encoder themselves)."""
    torch.save({"state_dict": dict(state_dict), "pytorch-lightning_version": L.__version__, "epoch": 2,
                "hyper_parameters": {"_class_path": class_path, **hparams,
                                     "_instantiator": "lightning.pytorch.cli.instantiate_module"}, **extra}, path)
    return path


@pytest.mark.parametrize("class_path, hparams, make_net, stages", [
    ("zoo.mfcc_repr.MeanMFCC", {"n_mfcc": 13, "hidden": 16, "dropout": 0.2},
     lambda: MeanMFCC(hidden=16, dropout=0.2, num_classes=4),
     {"ae_epochs": 0, "freeze_encoder": False, "recon_weight": 0.0}),
    ("zoo.mfcc_repr.FlatAE", {"n_mfcc": 13, "max_frames": 12, "code_dim": 6, "ae_hidden": [16], "hidden": 16,
                              "dropout": 0.1, "ae_epochs": 3, "freeze_encoder": True, "recon_weight": 0.0},
     lambda: FlatAE(max_frames=12, code_dim=6, ae_hidden=[16], hidden=16, num_classes=4),
     {"ae_epochs": 3, "freeze_encoder": True, "recon_weight": 0.0}),
    ("zoo.mfcc_repr.SequentialAE", {"mode": "faithful", "n_mfcc": 13, "ae_hidden": 8, "hidden": 16, "dropout": 0.1,
                                    "ae_epochs": 10, "recon_weight": 1.0},
     lambda: RecursivePairAE("sequential", "faithful", ae_hidden=8, hidden=16, num_classes=4),
     {"ae_epochs": 10, "freeze_encoder": True, "recon_weight": 1.0}),
    ("zoo.mfcc_repr.GreedyPairAE", {"mode": "improved", "n_mfcc": 13, "ae_hidden": 8, "hidden": 16, "dropout": 0.1,
                                    "ae_epochs": 0, "recon_weight": 0.5},
     lambda: RecursivePairAE("greedy", "improved", ae_hidden=8, hidden=16, num_classes=4),
     {"ae_epochs": 0, "freeze_encoder": False, "recon_weight": 0.5}),
])
def test_legacy_checkpoint_converts_to_the_same_model(tmp_path, class_path, hparams, make_net, stages):
    torch.manual_seed(0)
    old_net = make_net().eval()  # the old class held the same modules under the same names
    src = _legacy(tmp_path / "old.ckpt", class_path, {**hparams, **TASK_HP}, old_net.state_dict())
    with pytest.raises(ValueError, match="zoo.tools.convert_checkpoint --src"):
        load_cli_checkpoint(src)
    dst = convert_checkpoint(src=str(src), dst=str(tmp_path / "new.ckpt"))
    model, _ = load_cli_checkpoint(dst)
    assert isinstance(model, StagedClassifier) and type(model.net) is type(old_net)
    assert {k: model.hparams[k] for k in stages} == stages
    opt = model.optimizer(model.parameters())
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["lr"] == 0.002
    assert (model.ae_epochs, model.freeze_encoder, model.recon_weight) == tuple(stages.values())
    new = torch.load(dst, weights_only=True)
    assert new["epoch"] == 2 and set(new["state_dict"]) == {f"net.{k}" for k in old_net.state_dict()}
    x, lengths, _ = tiny_task(8)
    with torch.no_grad():
        torch.testing.assert_close(model(x, lengths), old_net(x, lengths), rtol=0, atol=0)


def test_legacy_svm_checkpoint_converts_and_keeps_its_svm(tmp_path):
    train, test = tiny_task(64, seed=0), tiny_task(16, seed=1)
    fitted = MFCCStatsSVM(num_classes=4, C=3.0)
    svm_fit_and_eval(fitted, train, test)
    extra = {}
    fitted.on_save_checkpoint(extra)
    hp = {"deltas": True, "C": 3.0, "gamma": "scale", "kernel": "rbf", "n_mfcc": 13, "num_classes": 4,
          "class_names": None, "class_weight": None}
    src = _legacy(tmp_path / "old_svm.ckpt", "zoo.mfcc_repr.MFCCStatsSVM", hp, {}, **extra)
    dst = convert_checkpoint(src=str(src), dst=str(tmp_path / "svm.ckpt"))
    model, _ = load_cli_checkpoint(dst)
    assert isinstance(model, MFCCStatsSVM) and model.hparams.C == 3.0 and model.svm is not None
    torch.testing.assert_close(model(*test[:2]), fitted(*test[:2]), rtol=0, atol=0)


def test_mfcc_stats_pitch_summary_and_bad_widths():
    x = torch.randn(3, 7, 13 + 2)
    lengths = torch.tensor([7, 5, 2])
    both, pitch_only = MFCCStats(13, deltas=True, pitch=True), MFCCStats(13, pitch=True, mfcc=False)
    assert both(x, lengths).shape == (3, both.out_dim) == (3, 4 * 13 + 3)
    out = pitch_only(x, lengths)
    assert out.shape == (3, 3)
    torch.testing.assert_close(out[1], torch.stack([x[1, :5, 13].mean(), x[1, :5, 13].std(correction=0), x[1, :5, 14].mean()]))  # population std, as mfcc_statistics
    with pytest.raises(ValueError, match="13 MFCCs \\+ 2 pitch columns"):
        pitch_only(torch.randn(3, 7, 13), lengths)
    with pytest.raises(ValueError, match="summarise nothing"):
        MFCCStats(13, pitch=False, mfcc=False)


def test_mfcc_stats_formant_summary_and_bad_widths():
    x = torch.randn(3, 7, 13 + 2 + 3)
    lengths = torch.tensor([7, 5, 2])
    voice = MFCCStats(13, pitch=True, formants=True, mfcc=False)
    out = voice(x, lengths)
    assert out.shape == (3, voice.out_dim) == (3, 3 + 3)
    torch.testing.assert_close(out[:, :3], MFCCStats(13, pitch=True, mfcc=False)(x[..., :15], lengths))
    torch.testing.assert_close(out[1, 3:], x[1, :5, 15:].mean(0))  # the formants' means
    assert MFCCStats(13, formants=True)(x[..., [*range(13), 15, 16, 17]], lengths).shape == (3, 4 * 13 + 3)
    with pytest.raises(ValueError, match="13 MFCCs \\+ 2 pitch \\+ 3 formant columns"):
        voice(x[..., :15], lengths)
    with pytest.raises(ValueError, match="2 pitch and 3 formant columns .*formants: true"):  # a net told of neither
        MFCCStats(13)(x, lengths)


VOWELS = [(300.0, 2200.0, 2900.0), (700.0, 1200.0, 2600.0), (450.0, 1000.0, 2400.0)]  # /i/, /a/, /u/-like


#: 12 AudioMNIST-AZ fixture speakers, 01 female, 02 male, alternating
GENDERS_12 = {f"{s + 1:02d}": "male" if s % 2 else "female" for s in range(12)}


def _write_speakers(root: Path, signal) -> Path:
    """An AudioMNIST-AZ-layout corpus of :data:`GENDERS_12` at 8 kHz, digits 0-2, two takes each."""
    return write_audiomnist(root, GENDERS_12, digits=range(3), takes=range(2), sample_rate=8000,
                            folder="AudioMNIST-AZ", signal=signal)


def _write_vowel_speakers(root: Path, female_pitch: float) -> Path:
    """12 speakers saying three vowels, women's formants 20 % higher; women's pitch from ``female_pitch`` Hz, men's
    from 140 Hz. Returns the data root."""
    from audio_fixtures import vowel

    def say(d: int, s: int, k: int, gender: str):
        scale = (1.0 if gender == "male" else 1.2) * (1 + 0.01 * (s % 3))
        base = 140.0 if gender == "male" else female_pitch
        return vowel(base + 5 * s + 3 * k, [f * scale for f in VOWELS[d]], 0.4, seed=s * 10 + d)

    return _write_speakers(root, say)


def test_formant_svm_tells_long_from_short_vocal_tracts_at_the_same_pitch(tmp_path):
    """Male and female fixture voices share one pitch range (140-200 Hz) and differ only in their vocal tract
    (female formants 20 % higher, three vowels): pitch statistics cannot separate them, formant means can, and
    they reach the SVM through the CLI."""
    _write_vowel_speakers(tmp_path / "data", female_pitch=140.0)
    scores = {}
    for formants in (False, True):  # pitch statistics alone, or formant means alone
        out, flags = tmp_path / f"results_{formants}.json", [str(formants).lower(), str(not formants).lower()]
        run_cli(["fit", "--config", CONFIGS / "gender_svm_audiomnist.yaml", "--data.data_dir", tmp_path / "data",
                 "--data.formant_features", flags[0], "--model.init_args.formants", flags[0],
                 "--data.pitch_features", flags[1], "--model.init_args.pitch", flags[1],
                 "--data.test_fraction", "0.34", "--data.val_fraction", "0.17", "--trainer.logger", "false",
                 "--trainer.default_root_dir", tmp_path / str(formants), "--trainer.enable_progress_bar", "false",
                 "--data.progress", "false", "--run.results_file", out])
        scores[formants] = json.loads(out.read_text())["metrics"]["test/balanced_acc"]
    assert scores[True] == 1.0 and scores[False] < 0.9, scores


def _gender_predictions_from_the_checkpoint_alone(tmp_path: Path, config: str, *fit_args) -> dict[str, dict]:
    """Fit ``config`` on the vowel speakers, delete the corpus, then predict a user's recordings in class folders:
    ``female/me.wav`` (16 kHz, stereo, 24-bit; a woman's pitch and formants) and ``male/him.flac`` (48 kHz).
    Returns the predictions CSV's rows by file name."""
    import csv
    import shutil

    import soundfile as sf
    from audio_fixtures import vowel

    data = _write_vowel_speakers(tmp_path / "data", female_pitch=200.0)
    base = ["--config", CONFIGS / config, "--trainer.logger", "false", "--trainer.default_root_dir", tmp_path,
            "--trainer.enable_progress_bar", "false", "--data.progress", "false", "--data.cache_dir", tmp_path / "cache"]
    cli = run_cli(["fit", *base, "--data.data_dir", data, "--run.test_after_fit", "false", *fit_args])
    ckpt = cli.trainer.checkpoint_callback.last_model_path or cli.trainer.checkpoint_callback.best_model_path
    shutil.rmtree(data)
    recs = tmp_path / "recs"
    woman = vowel(230.0, [f * 1.2 for f in VOWELS[1]], 0.5, sample_rate=16000, seed=99)
    (recs / "female").mkdir(parents=True), (recs / "male").mkdir()
    sf.write(recs / "female" / "me.wav", np.stack([woman, 0.5 * woman], 1), 16000, subtype="PCM_24")
    sf.write(recs / "male" / "him.flac", vowel(150.0, VOWELS[0], 0.5, sample_rate=48000, seed=98), 48000, format="FLAC")
    out = tmp_path / "gender.csv"
    run_cli(["predict", *base, "--data.data_dir", tmp_path / "gone", "--ckpt_path", ckpt,
             "--data.predict_path", recs, "--run.predictions_file", out])
    return {Path(r["path"]).name: r for r in csv.DictReader(out.open())}


def test_shipped_gender_svm_predicts_files_from_its_checkpoint_alone(tmp_path):
    """Pitch and formant settings travel in the checkpoint: with the corpus deleted, a 16 kHz stereo WAV and a
    48 kHz FLAC in ``female/`` and ``male/`` folders are read, converted and classified as training did."""
    rows = _gender_predictions_from_the_checkpoint_alone(tmp_path, "gender_svm_audiomnist.yaml")
    assert {n: (r["label"], r["prediction"]) for n, r in rows.items()} == {
        "me.wav": ("female", "female"), "him.flac": ("male", "male")}


def test_pitch_svm_tells_low_from_high_voices_through_the_cli(tmp_path):
    """The shipped gender config (pitch statistics and formants) on an AudioMNIST-layout fixture whose male voices
    are at 105-158 Hz and female ones at 190-250 Hz, with the same spectral shape: pitch is the only cue, and the
    formant means, alike for both sexes, must not drown it."""
    from audio_fixtures import voiced_tone

    _write_speakers(tmp_path / "data", lambda d, s, k, gender: voiced_tone(
        ((100.0 if gender == "male" else 190.0) + 5 * s) * (1 + 0.02 * k), 0.4, 8000, seed=s * 10 + d))
    out = tmp_path / "results.json"
    run_cli(["fit", "--config", CONFIGS / "gender_svm_audiomnist.yaml", "--data.data_dir", tmp_path / "data",
             "--data.test_fraction", "0.34", "--data.val_fraction", "0.17", "--trainer.logger", "false",
             "--trainer.default_root_dir", tmp_path, "--trainer.enable_progress_bar", "false",
             "--data.progress", "false", "--run.results_file", out])
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["test/balanced_acc"] == 1.0, metrics


def test_gender_cnn_with_tts_voices_predicts_files_from_its_checkpoint_alone(tmp_path):
    """The gender CNN config (log-mel, espeak-ng voices of both sexes in training) predicts from its checkpoint
    alone: the CSV names the classes and carries the folders' labels."""
    rows = _gender_predictions_from_the_checkpoint_alone(
        tmp_path, "gender_cnn_audiomnist.yaml", "--trainer.max_epochs", "2", "--data.voices", "[en-us+f2, en-us+m3]",
        "--data.rates", "[175]", "--data.pitches", "[50]")
    assert {n: r["label"] for n, r in rows.items()} == {"me.wav": "female", "him.flac": "male"}
    assert {r["prediction"] for r in rows.values()} <= {"female", "male"}
    assert all(0.5 <= float(r["probability"]) <= 1.0 for r in rows.values())


def test_frame_cnn_gives_a_clip_the_same_output_alone_or_padded_in_a_batch():
    """No padding statistics: a clip cut to its own length, alone, gets the logits it gets zero-padded in a
    batch of longer clips (eval mode), and a constant input trains through the std pooling without NaN."""
    net = FrameConvNet(n_mfcc=13, pitch=True, formants=True, num_classes=2).eval()
    x, lengths = random_batch(B=4, T=30, D=18, dtype=torch.float32, min_len=3)
    x = x + 100.0 * ~frame_mask(lengths, 30).unsqueeze(-1)  # whatever the padding holds is not read
    with torch.no_grad():
        batched = net(x, lengths)
        alone = torch.cat([net(x[i:i + 1, :int(n)], lengths[i:i + 1]) for i, n in enumerate(lengths)])
    assert batched.shape == (4, 2) and net.encode(x, lengths).shape == (4, 256)
    torch.testing.assert_close(batched, alone, rtol=1e-4, atol=1e-5)
    net.train()
    loss = net(torch.zeros(2, 5, 18), torch.tensor([5, 2])).logsumexp(-1).sum()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_frame_cnn_reads_only_the_voice_columns_without_mfcc_and_rejects_other_widths():
    net = FrameConvNet(n_mfcc=13, pitch=True, formants=True, mfcc=False, num_classes=2).eval()
    x, lengths = random_batch(B=3, T=12, D=18, dtype=torch.float32, min_len=2)
    other = x.clone()
    other[..., :13] = torch.randn(3, 12, 13)
    with torch.no_grad():
        torch.testing.assert_close(net(x, lengths), net(other, lengths))
        other[..., 13] += 1.0  # the log pitch
        assert not torch.allclose(net(x, lengths), net(other, lengths))
    with pytest.raises(ValueError, match=r"expects 18 numbers per frame, got 15.*--data.formant_features"):
        net(x[..., :15], lengths)
    with pytest.raises(ValueError, match="would read no column"):
        FrameConvNet(pitch=False, formants=False, mfcc=False)
    with pytest.raises(ValueError, match="odd kernel_size"):
        FrameConvNet(kernel_size=4)
    with pytest.raises(ValueError, match="n_mfcc >= 1"):
        FrameConvNet(n_mfcc=0)
    with pytest.raises(ValueError, match="the data has 2 pitch and 3 formant columns"):  # the siblings' hint
        FrameConvNet(n_mfcc=13)(x, lengths)
    with pytest.raises(ValueError, match="dropout"):
        FrameConvNet(dropout=1.0)


def test_frame_cnn_learns_how_the_pitch_moves_not_only_its_level():
    """Two classes whose pitch column has the same values in every clip, rising in one class and falling in
    the other: per-clip statistics (the SVM's features) cannot tell them apart, the convolutions can."""
    torch.manual_seed(0)
    n, T = 32, 16
    y = torch.arange(n) % 2
    ramp = torch.linspace(-1, 1, T)
    x = 0.05 * torch.randn(n, T, 4)
    x[:, :, 2] += torch.where(y[:, None] == 1, ramp, ramp.flip(0))  # the pitch column (n_mfcc=2)
    x[:, :, 3] = 1.0  # voiced
    lengths = torch.full((n,), T)
    stats = MFCCStats(n_mfcc=2, deltas=False, pitch=True, mfcc=False)(x, lengths)
    assert torch.allclose(stats[y == 0].mean(0), stats[y == 1].mean(0), atol=0.05)
    net = FrameConvNet(n_mfcc=2, pitch=True, channels=(16, 16), hidden=32, dropout=0.0, num_classes=2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(60):
        loss = F.cross_entropy(net(x, lengths), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert (net(x, lengths).argmax(-1) == y).all()


def test_gender_frame_cnn_predicts_files_from_its_checkpoint_alone(tmp_path):
    """The frame-CNN gender config: pitch and formant settings and the normalisation travel in the checkpoint;
    with the corpus deleted, a 16 kHz stereo 24-bit WAV and a 48 kHz FLAC in class folders are classified."""
    rows = _gender_predictions_from_the_checkpoint_alone(
        tmp_path, "gender_framecnn_audiomnist.yaml", "--trainer.max_epochs", "15")
    assert {n: (r["label"], r["prediction"]) for n, r in rows.items()} == {
        "me.wav": ("female", "female"), "him.flac": ("male", "male")}
