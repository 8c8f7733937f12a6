"""TransferClassifier (encoder checkpoints old and new, freezing, modes, AUROC/ROC at test, legacy
EncoderClassifier checkpoints), the EncoderWithHead net, and the from-scratch Classifier with injected
augmentation that the transfer curve is compared with."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from datamodules.augment import BatchAugment
from zoo.nets.convnet import ConvNet
from zoo.nets.masked_ae import EncoderWithHead, MaskedAENet
from zoo.safe_load import load_checkpoint, load_module
from zoo.tasks.classifier import Classifier
from zoo.tasks.masked_ae import MaskedAE
from zoo.tasks.transfer import TransferClassifier, load_pretrained_net
from zoo.tools.convert_checkpoint import convert_checkpoint

AE_ARGS = {"architecture": "conv", "image_size": 8, "channels": 3, "conv_channels": [4, 8], "bottleneck": 4}


def _trainer(tmp_path, **kw):
    kw = {"max_epochs": 1, "enable_checkpointing": False, "enable_progress_bar": False,
          "enable_model_summary": False, "accelerator": "cpu", "logger": False, **kw}
    return L.Trainer(default_root_dir=tmp_path, **kw)


@pytest.fixture(scope="module")
def ae_checkpoint(tmp_path_factory):
    """A tiny conv MaskedAE trained for 40 steps (so its weights differ from a fresh init), saved by Lightning
    with the net recorded as `python -m zoo fit` records it (class_path and init_args)."""
    tmp_path = tmp_path_factory.mktemp("ae")
    torch.manual_seed(0)
    net = MaskedAENet(**AE_ARGS)
    ae = MaskedAE(net)
    loader = DataLoader(TensorDataset(torch.rand(16, 3, 8, 8), torch.zeros(16, dtype=torch.long)), batch_size=8)
    trainer = _trainer(tmp_path, max_steps=40, max_epochs=20, limit_val_batches=0)
    trainer.fit(ae, loader)
    python_path = tmp_path / "python.ckpt"
    trainer.save_checkpoint(python_path)
    ckpt = load_checkpoint(python_path)
    ckpt["hyper_parameters"] = {"_class_path": "zoo.tasks.masked_ae.MaskedAE",
                                "net": {"class_path": "zoo.nets.masked_ae.MaskedAENet", "init_args": AE_ARGS},
                                "mask_type": "pixel", "_instantiator": "lightning.pytorch.cli.instantiate_module"}
    path = tmp_path / "ae.ckpt"
    torch.save(ckpt, path)
    return path, net


def _toy_classes(n=60, seed=0):
    """Three classes told apart by mean colour: learnable from any reasonable encoder."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.rand(n, 3, 8, 8, generator=g) * 0.3
    x[torch.arange(n), y] += 0.6
    return x, y


def _assert_same_weights(loaded: torch.nn.Module, trained: torch.nn.Module):
    a, b = loaded.state_dict(), trained.state_dict()
    assert a.keys() == b.keys()
    for k in b:
        assert torch.equal(a[k], b[k]), k


def test_encoder_loads_with_the_checkpoint_weights(ae_checkpoint):
    path, net = ae_checkpoint
    clf = TransferClassifier(str(path), mode="linear", num_classes=3)
    _assert_same_weights(clf.encoder, net.encoder)
    fresh = MaskedAENet(**AE_ARGS).encoder.state_dict()
    trained = net.encoder.state_dict()
    assert any(not torch.equal(fresh[k], trained[k]) for k in trained if trained[k].is_floating_point())
    assert isinstance(clf.net, EncoderWithHead)
    assert clf.net.feature_dim == 4 * 2 * 2 and clf.net.input_shape == (3, 8, 8)


def test_encoder_checkpoint_written_before_the_split_loads_unconverted(tmp_path, ae_checkpoint):
    """An old zoo.masked_ae.MaskedAE checkpoint (flat hyperparameters, encoder./decoder. weights) still works."""
    _, net = ae_checkpoint
    old = tmp_path / "old.ckpt"
    torch.save({"state_dict": dict(net.state_dict()), "pytorch-lightning_version": L.__version__,
                "hyper_parameters": {"_class_path": "zoo.masked_ae.MaskedAE", **AE_ARGS, "hidden": 1024,
                                     "mask_type": "patch", "mask_ratio": 0.5}}, old)
    clf = TransferClassifier(str(old), mode="mlp", mlp_hidden=8, num_classes=3)
    _assert_same_weights(clf.encoder, net.encoder)
    assert clf.net.input_shape == (3, 8, 8)


def test_encoder_checkpoint_errors(tmp_path, ae_checkpoint):
    with pytest.raises(FileNotFoundError, match="encoder_checkpoint .*missing.ckpt does not exist: train one"):
        TransferClassifier(str(tmp_path / "missing.ckpt"))
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"head.weight": torch.zeros(1)}}, other)
    with pytest.raises(ValueError, match="not a MaskedAE checkpoint"):
        TransferClassifier(str(other))
    # written from Python, a task checkpoint holds the net's weights but not its config
    ckpt = load_checkpoint(ae_checkpoint[0])
    del ckpt["hyper_parameters"]["net"]
    torch.save(ckpt, tmp_path / "python.ckpt")
    with pytest.raises(ValueError, match="does not record its net"):
        load_pretrained_net(tmp_path / "python.ckpt")
    # a net config that does not fit the weights
    ckpt["hyper_parameters"]["net"] = {"class_path": "zoo.nets.masked_ae.MaskedAENet",
                                       "init_args": {**AE_ARGS, "bottleneck": 5}}
    torch.save(ckpt, tmp_path / "mismatch.ckpt")
    with pytest.raises(ValueError, match="do not fit the recorded net"):
        load_pretrained_net(tmp_path / "mismatch.ckpt")
    ckpt["hyper_parameters"]["net"] = {"class_path": "evil_pkg.Net", "init_args": {}}
    torch.save(ckpt, tmp_path / "evil.ckpt")
    with pytest.raises(ValueError, match="'evil_pkg.Net', which is neither a zoo nor a torch class"):
        load_pretrained_net(tmp_path / "evil.ckpt")


@pytest.mark.parametrize("mode,frozen", [("linear", True), ("mlp", True), ("finetune", False)])
def test_modes_freeze_or_train_the_encoder(ae_checkpoint, mode, frozen):
    path, _ = ae_checkpoint
    clf = TransferClassifier(str(path), mode=mode, mlp_layers=5, mlp_hidden=16, num_classes=3)
    assert all(p.requires_grad != frozen for p in clf.encoder.parameters())
    clf.train()
    assert clf.encoder.training == (not frozen)  # a frozen encoder keeps its batch-norm statistics
    linears = [m for m in clf.net.head.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == (1 if mode == "linear" else 6)
    before = {k: v.clone() for k, v in clf.encoder.state_dict().items()}
    x, y = _toy_classes(12)
    opt = clf.configure_optimizers()
    loss = torch.nn.functional.cross_entropy(clf(x), y)
    loss.backward()
    opt.step()
    changed = any(not torch.equal(before[k], v) for k, v in clf.encoder.state_dict().items())
    assert changed == (not frozen)


def test_head_has_the_studied_structure(ae_checkpoint):
    """Linear, BatchNorm1d, ReLU, Dropout per hidden layer, then the output layer: the module layout of the
    runs in docs/masked_ae.md, so their seeded initialisation and checkpoints carry over."""
    clf = TransferClassifier(str(ae_checkpoint[0]), mode="mlp", mlp_layers=2, mlp_hidden=16, dropout=0.3,
                             num_classes=3)
    kinds = [type(m).__name__ for m in clf.net.head]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Dropout"] * 2 + ["Linear"]
    assert clf.net.head[3].p == 0.3 and clf.net.head[0].in_features == 16 and clf.net.head[-1].out_features == 3
    assert isinstance(clf.net.feature_norm, torch.nn.BatchNorm1d) and not clf.net.feature_norm.affine
    with pytest.raises(ValueError, match="mlp_layers must be >= 1"):
        TransferClassifier(str(ae_checkpoint[0]), mode="mlp", mlp_layers=0)


def test_encoder_with_head_is_usable_without_lightning():
    torch.manual_seed(0)
    ae = MaskedAENet(**AE_ARGS)
    net = EncoderWithHead(ae.encoder, ae.input_shape, num_classes=3, hidden=8, layers=1, freeze_encoder=True)
    x, y = _toy_classes(30)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=0.05)
    net.train()
    assert not net.encoder.training
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::6]
    with pytest.raises(ValueError, match=r"trained on inputs of shape \(3, 8, 8\)"):
        net(torch.rand(2, 3, 16, 16))


def test_encoder_lr_scale_sets_a_second_param_group(ae_checkpoint):
    path, _ = ae_checkpoint
    clf = TransferClassifier(str(path), mode="finetune", encoder_lr_scale=0.1, num_classes=3,
                             optimizer=lambda p: torch.optim.SGD(p, lr=0.5))
    opt = clf.configure_optimizers()
    assert [g["lr"] for g in opt.param_groups] == [0.5, pytest.approx(0.05)]
    assert {id(p) for p in opt.param_groups[1]["params"]} == {id(p) for p in clf.encoder.parameters()}


def test_augment_true_is_the_studied_augmentation_and_a_module_is_used_as_given(ae_checkpoint):
    path, _ = ae_checkpoint
    clf = TransferClassifier(str(path), mode="finetune", augment=True, num_classes=3)
    a = clf.augment
    assert isinstance(a, BatchAugment) and (a.hflip, a.contrast, a.translate) == (0.5, 0.2, 0.1)
    assert a.padding_mode == "reflection" and clf.hparams.augment is True
    given = BatchAugment(hflip=1.0)
    assert TransferClassifier(str(path), augment=given, num_classes=3).augment is given
    assert TransferClassifier(str(path), augment=False, num_classes=3).augment is None


def test_linear_probe_learns_and_test_reports_auroc_and_roc(tmp_path, ae_checkpoint):
    path, _ = ae_checkpoint
    torch.manual_seed(0)
    x, y = _toy_classes(60)
    loader = DataLoader(TensorDataset(x, y), batch_size=20, shuffle=True)
    clf = TransferClassifier(str(path), mode="linear", num_classes=3, class_names=["r", "g", "b"],
                             optimizer=lambda p: torch.optim.Adam(p, lr=0.05))
    with torch.no_grad():
        clf.eval()
        before = torch.nn.functional.cross_entropy(clf(x), y).item()
    clf.train()  # Lightning keeps the per-module train/eval modes it finds at fit start
    trainer = _trainer(tmp_path, max_epochs=15, logger=CSVLogger(tmp_path))
    trainer.fit(clf, loader)
    clf.eval()
    with torch.no_grad():
        after = torch.nn.functional.cross_entropy(clf(x), y).item()
    assert after < 0.5 * before, (before, after)
    results = trainer.test(clf, DataLoader(TensorDataset(x, y), batch_size=30), verbose=False)[0]
    assert results["test/acc"] > 0.8 and results["test/auroc"] > 0.9, results
    assert list(tmp_path.rglob("test_roc*.png")) and list(tmp_path.rglob("test_confusion_matrix*.png"))


def test_transfer_checkpoint_reloads_from_its_hyperparameters(tmp_path, ae_checkpoint):
    """The task's arguments are plain values (its net is built from them), so a Python-written checkpoint
    reloads without passing anything again."""
    path, _ = ae_checkpoint
    torch.manual_seed(0)
    x, y = _toy_classes(12)
    clf = TransferClassifier(str(path), mode="finetune", mlp_hidden=8, mlp_layers=1, augment=True, num_classes=3)
    trainer = _trainer(tmp_path, max_steps=2)
    trainer.fit(clf, DataLoader(TensorDataset(x, y), batch_size=6))
    trainer.save_checkpoint(tmp_path / "clf.ckpt")
    again = load_module(TransferClassifier, tmp_path / "clf.ckpt")  # weights-only
    assert again.mode == "finetune" and isinstance(again.augment, BatchAugment)
    clf.eval(), again.eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x), clf(x))


def test_legacy_encoder_classifier_checkpoint_converts_to_the_same_model(tmp_path, ae_checkpoint):
    """An old zoo.transfer.EncoderClassifier checkpoint: flat hyperparameters with augmentation flags, the
    encoder/feature_norm/head weights at the top level."""
    from zoo.checkpoints import load_cli_checkpoint

    path, _ = ae_checkpoint
    torch.manual_seed(0)
    ref = TransferClassifier(str(path), mode="mlp", mlp_hidden=8, mlp_layers=2, num_classes=3).eval()
    ref.net.feature_norm.running_mean.uniform_()  # statistics that must come along
    old_state = {k[len("net."):]: v for k, v in ref.state_dict().items()}  # the old class's layout
    assert {k.split(".")[0] for k in old_state} == {"encoder", "feature_norm", "head"}
    old_hparams = {"_class_path": "zoo.transfer.EncoderClassifier", "encoder_checkpoint": str(path), "mode": "mlp",
                   "mlp_hidden": 8, "mlp_layers": 2, "dropout": 0.2, "feature_batchnorm": True,
                   "encoder_lr_scale": 1.0, "augment": True, "hflip": 0.5, "contrast": 0.2, "translate": 0.1,
                   "augment_seed": None, "num_classes": 3, "class_names": ["r", "g", "b"], "label_smoothing": 0.1,
                   "_instantiator": "lightning.pytorch.cli.instantiate_module"}
    src = tmp_path / "old.ckpt"
    torch.save({"state_dict": old_state, "hyper_parameters": old_hparams,
                "pytorch-lightning_version": L.__version__}, src)
    model, _ = load_cli_checkpoint(convert_checkpoint(src=str(src), dst=str(tmp_path / "new.ckpt")))
    assert isinstance(model, TransferClassifier) and model.class_names == ["r", "g", "b"]
    assert model.label_smoothing == 0.1 and isinstance(model.augment, BatchAugment)
    x, _ = _toy_classes(6)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))
    # other augmentation flags than the studies' become an explicit BatchAugment
    old_hparams.update(hflip=0.0, augment_seed=3)
    torch.save({"state_dict": old_state, "hyper_parameters": old_hparams,
                "pytorch-lightning_version": L.__version__}, src)
    model, _ = load_cli_checkpoint(convert_checkpoint(src=str(src), dst=str(tmp_path / "new2.ckpt")))
    assert model.augment.hflip == 0.0 and model.augment.translate == 0.1
    saved = torch.load(tmp_path / "new2.ckpt", weights_only=True)["hyper_parameters"]["augment"]
    assert saved["class_path"] == "datamodules.augment.BatchAugment" and saved["init_args"]["seed"] == 3


def test_label_fraction_figure_draws_one_line_per_method():
    from zoo.tasks.transfer import label_fraction_figure

    fig = label_fraction_figure({"probe": {0.01: 0.2, 1.0: 0.5}, "scratch": {0.01: 0.15, 0.1: 0.3, 1.0: 0.6}},
                                goals={"probe goal": 0.45})
    lines = [ln for ln in fig.axes[0].get_lines() if ln.get_label() in ("probe", "scratch")]
    assert [len(ln.get_xdata()) for ln in lines] == [2, 3]
    assert list(lines[1].get_xdata()) == [1.0, 10.0, 100.0] and list(lines[1].get_ydata()) == [15.0, 30.0, 60.0]


# --- the from-scratch reference: Classifier(ConvNet) with injected augmentation -------------------
def _image_classifier(**augment) -> Classifier:
    net = ConvNet(in_channels=3, channels=(8, 8, 16, 16), hidden=16, num_classes=3, dropout=0.0)
    return Classifier(net, augment=BatchAugment(hflip=0.5, contrast=0.2, value_range=(0.0, 1.0),
                                                padding_mode="reflection", **{"translate": 0.2, **augment}))


def test_scratch_classifier_augments_only_in_training_and_learns():
    torch.manual_seed(0)
    model = _image_classifier()
    x, y = _toy_classes(30)
    x = torch.nn.functional.interpolate(x, size=16)
    seen = []
    model.augment.register_forward_hook(lambda m, i, o: seen.append((i[0].clone(), o.clone())))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    losses = []
    for step in range(30):
        loss = model.training_step((x, y), step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert len(seen) == 30 and not torch.equal(seen[0][0], seen[0][1])  # augmentation changed the batch
    assert losses[-1] < 0.5 * losses[0], losses[::6]
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # no augmentation outside training
    assert len(seen) == 30
    assert model(x).shape == (30, 3)


def test_augmentation_stream_follows_the_run_seed_unless_pinned():
    x = torch.rand(4, 3, 32, 32)

    def augmented(run_seed: int, **kw) -> torch.Tensor:
        torch.manual_seed(run_seed)  # what seed_everything does
        return _image_classifier(**kw).augment(x)

    assert torch.equal(augmented(0), augmented(0))
    assert not torch.equal(augmented(0), augmented(1)), "grid seeds must not share one augmentation stream"
    assert torch.equal(augmented(0, seed=5), augmented(1, seed=5))
