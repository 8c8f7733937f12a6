"""EncoderClassifier (checkpoint loading, freezing, modes, AUROC/ROC at test) and ImageClassifier."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from zoo.image_classifier import ImageClassifier
from zoo.masked_ae import MaskedAE
from zoo.transfer import EncoderClassifier


def _trainer(tmp_path, **kw):
    kw = {"max_epochs": 1, "enable_checkpointing": False, "enable_progress_bar": False,
          "enable_model_summary": False, "accelerator": "cpu", "logger": False, **kw}
    return L.Trainer(default_root_dir=tmp_path, **kw)


@pytest.fixture(scope="module")
def ae_checkpoint(tmp_path_factory):
    """A tiny conv MaskedAE trained for 40 steps (so its weights differ from a fresh init), saved by Lightning."""
    tmp_path = tmp_path_factory.mktemp("ae")
    torch.manual_seed(0)
    ae = MaskedAE(architecture="conv", image_size=8, conv_channels=(4, 8), bottleneck=4)
    loader = DataLoader(TensorDataset(torch.rand(16, 3, 8, 8), torch.zeros(16, dtype=torch.long)), batch_size=8)
    trainer = _trainer(tmp_path, max_steps=40, max_epochs=20, limit_val_batches=0)
    trainer.fit(ae, loader)
    path = tmp_path / "ae.ckpt"
    trainer.save_checkpoint(path)
    return path, ae


def _toy_classes(n=60, seed=0):
    """Three classes told apart by mean colour: learnable from any reasonable encoder."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.rand(n, 3, 8, 8, generator=g) * 0.3
    x[torch.arange(n), y] += 0.6
    return x, y


def test_encoder_loads_with_the_checkpoint_weights(ae_checkpoint):
    path, ae = ae_checkpoint
    clf = EncoderClassifier(str(path), mode="linear", num_classes=3)
    loaded, trained = clf.encoder.state_dict(), ae.encoder.state_dict()
    assert loaded.keys() == trained.keys()
    for k in trained:
        assert torch.equal(loaded[k], trained[k]), k
    fresh = MaskedAE(architecture="conv", image_size=8, conv_channels=(4, 8), bottleneck=4).encoder.state_dict()
    assert any(not torch.equal(fresh[k], trained[k]) for k in trained if trained[k].is_floating_point())
    assert clf.feature_dim == 4 * 2 * 2 and clf.image_shape == (3, 8, 8)


def test_checkpoint_with_cli_hyperparameters_loads(tmp_path, ae_checkpoint):
    """Checkpoints written by LightningCLI carry ``_class_path``/``_instantiator`` among the hyperparameters."""
    path, ae = ae_checkpoint
    ckpt = torch.load(path, weights_only=False)
    ckpt["hyper_parameters"].update({"_class_path": "zoo.masked_ae.MaskedAE", "_instantiator": "x.y"})
    cli_path = tmp_path / "cli.ckpt"
    torch.save(ckpt, cli_path)
    clf = EncoderClassifier(str(cli_path), num_classes=3)
    assert torch.equal(clf.encoder[0].weight, ae.encoder[0].weight)


@pytest.mark.parametrize("mode,frozen", [("linear", True), ("mlp", True), ("finetune", False)])
def test_modes_freeze_or_train_the_encoder(ae_checkpoint, mode, frozen):
    path, _ = ae_checkpoint
    clf = EncoderClassifier(str(path), mode=mode, mlp_layers=5, mlp_hidden=16, num_classes=3)
    assert all(p.requires_grad != frozen for p in clf.encoder.parameters())
    clf.train()
    assert clf.encoder.training == (not frozen)  # a frozen encoder keeps its batch-norm statistics
    linears = [m for m in clf.head.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == (1 if mode == "linear" else 6)
    before = {k: v.clone() for k, v in clf.encoder.state_dict().items()}
    x, y = _toy_classes(12)
    opt = clf.configure_optimizers()
    loss = torch.nn.functional.cross_entropy(clf(x), y)
    loss.backward()
    opt.step()
    changed = any(not torch.equal(before[k], v) for k, v in clf.encoder.state_dict().items())
    assert changed == (not frozen)


def test_encoder_lr_scale_sets_a_second_param_group(ae_checkpoint):
    path, _ = ae_checkpoint
    clf = EncoderClassifier(str(path), mode="finetune", encoder_lr_scale=0.1, num_classes=3,
                            optimizer=lambda p: torch.optim.SGD(p, lr=0.5))
    opt = clf.configure_optimizers()
    assert [g["lr"] for g in opt.param_groups] == [0.5, pytest.approx(0.05)]
    assert {id(p) for p in opt.param_groups[1]["params"]} == {id(p) for p in clf.encoder.parameters()}


def test_linear_probe_learns_and_test_reports_auroc_and_roc(tmp_path, ae_checkpoint):
    path, _ = ae_checkpoint
    torch.manual_seed(0)
    x, y = _toy_classes(60)
    loader = DataLoader(TensorDataset(x, y), batch_size=20, shuffle=True)
    clf = EncoderClassifier(str(path), mode="linear", num_classes=3, class_names=["r", "g", "b"],
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


def test_bad_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="encoder_checkpoint"):
        EncoderClassifier(str(tmp_path / "missing.ckpt"))
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"head.weight": torch.zeros(1)}}, other)
    with pytest.raises(ValueError, match="not a MaskedAE checkpoint"):
        EncoderClassifier(str(other))


def test_encoder_classifier_rejects_other_image_sizes(ae_checkpoint):
    clf = EncoderClassifier(str(ae_checkpoint[0]), num_classes=3)
    with pytest.raises(ValueError, match="image_size"):
        clf(torch.rand(2, 3, 16, 16))


def test_image_classifier_augments_only_in_training_and_learns():
    torch.manual_seed(0)
    model = ImageClassifier(channels=(8, 8, 16, 16), hidden=16, num_classes=3, dropout=0.0, translate=0.2)
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


def test_label_fraction_figure_draws_one_line_per_method():
    from zoo.transfer import label_fraction_figure

    fig = label_fraction_figure({"probe": {0.01: 0.2, 1.0: 0.5}, "scratch": {0.01: 0.15, 0.1: 0.3, 1.0: 0.6}},
                                goals={"probe goal": 0.45})
    lines = [ln for ln in fig.axes[0].get_lines() if ln.get_label() in ("probe", "scratch")]
    assert [len(ln.get_xdata()) for ln in lines] == [2, 3]
    assert list(lines[1].get_xdata()) == [1.0, 10.0, 100.0] and list(lines[1].get_ydata()) == [15.0, 30.0, 60.0]


def test_augmentation_stream_follows_the_run_seed_unless_pinned():
    x = torch.rand(4, 3, 32, 32)

    def augmented(run_seed: int, **kw) -> torch.Tensor:
        torch.manual_seed(run_seed)  # what seed_everything does
        return ImageClassifier(**kw).augment(x)

    assert torch.equal(augmented(0), augmented(0))
    assert not torch.equal(augmented(0), augmented(1)), "grid seeds must not share one augmentation stream"
    assert torch.equal(augmented(0, augment_seed=5), augmented(1, augment_seed=5))
