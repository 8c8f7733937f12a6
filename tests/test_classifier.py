"""The Classifier task around any net: it learns, augments training batches only, takes its class count
from the net, reloads from a Python-trained checkpoint when given the net again; and checkpoints of the
classes it replaced (zoo < 0.2: CNN, CBAMNet, ImageClassifier, LeNet5, MnistCNN, SpatialAttentionCNN)
convert to it with identical outputs."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from zoo.checkpoints import load_cli_checkpoint
from zoo.nets.convnet import ConvNet
from zoo.nets.lenet import LeNet5, MnistCNN
from zoo.safe_load import load_checkpoint, load_module
from zoo.tasks.classifier import Classifier
from zoo.tools.convert_checkpoint import convert_checkpoint


def _trainer(root: Path, **kw) -> L.Trainer:
    kw = {"accelerator": "cpu", "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
          "enable_model_summary": False, "default_root_dir": root, **kw}
    return L.Trainer(**kw)


def _digits(n: int = 40, seed: int = 0) -> TensorDataset:
    """28x28 noise with a bright block whose row says the class (4 classes)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    x = 0.3 * torch.randn(n, 1, 28, 28, generator=g)
    for i, c in enumerate(y.tolist()):
        x[i, 0, 4 + 5 * c:8 + 5 * c, 8:16] += 3.0
    return TensorDataset(x, y)


class CountingAugment(nn.Module):
    """Adds noise and counts the batches it saw: stands in for BatchAugment."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x + 0.05 * torch.randn_like(x)


def test_learns_with_a_trainer_and_augments_training_batches_only(tmp_path):
    torch.manual_seed(0)
    augment = CountingAugment()
    model = Classifier(LeNet5(num_classes=4), augment=augment,
                       optimizer=lambda p: torch.optim.Adam(p, lr=3e-3))
    train, val = DataLoader(_digits(), batch_size=8, shuffle=True), DataLoader(_digits(seed=1), batch_size=20)
    trainer = _trainer(tmp_path, max_epochs=8, num_sanity_val_steps=0)
    trainer.fit(model, train, val)
    assert augment.calls == 8 * 5  # every training batch, never a validation batch
    assert trainer.callback_metrics["val/acc"].item() >= 0.9
    trainer.test(model, val)
    assert augment.calls == 8 * 5 and trainer.callback_metrics["test/acc"].item() >= 0.9
    assert model.last_test_per_class["0"]["support"] == 10 and len(model.last_test_confusion) == 4
    out = model.predict_step(next(iter(val)), 0)
    assert out["probs"].shape == (20, 4) and torch.allclose(out["probs"].sum(1), torch.ones(20))


class _NamedData(L.LightningDataModule):
    def __init__(self, class_names: list[str]) -> None:
        super().__init__()
        self.class_names = class_names

    def test_dataloader(self) -> DataLoader:
        return DataLoader(_digits(), batch_size=20)


@pytest.mark.parametrize("given", [None, ["w", "x", "y", "z"]], ids=["from-the-data", "the-model's"])
def test_per_class_results_are_named_by_the_model_else_by_the_data(tmp_path, given):
    """A config that gives the model no class names (a grid over cnn_audio.yaml for gender) still reports
    "female"/"male" per class when the data names its classes; names the model was given win. Data that names
    another number of classes than the model scores is not used."""
    model = Classifier(LeNet5(num_classes=4), class_names=given)
    _trainer(tmp_path).test(model, datamodule=_NamedData(["a", "b", "c", "d"]))
    assert list(model.last_test_per_class) == (given or ["a", "b", "c", "d"])
    assert {r["support"] for r in model.last_test_per_class.values()} == {10}
    model = Classifier(LeNet5(num_classes=4))
    _trainer(tmp_path).test(model, datamodule=_NamedData(["a", "b"]))
    assert list(model.last_test_per_class) == ["0", "1", "2", "3"]


def test_mixup_mixes_inputs_and_targets_per_sample_and_still_learns(tmp_path):
    class Recorder(nn.Module):
        num_classes = 4

        def __init__(self) -> None:
            super().__init__()
            self.linear, self.seen = nn.Linear(2, 4), []

        def forward(self, x):
            self.seen.append(x.detach().clone())
            return self.linear(x)

    torch.manual_seed(0)
    model = Classifier(Recorder(), mixup=0.4)
    x, y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]), torch.tensor([0, 1, 2])
    torch.manual_seed(1)
    loss = model.training_step((x, y), 0)
    torch.manual_seed(1)  # the same draws, by hand
    lam = torch.distributions.Beta(0.4, 0.4).sample((3,))
    other = torch.randperm(3)
    torch.testing.assert_close(model.net.seen[-1], lam[:, None] * x + (1 - lam[:, None]) * x[other])
    logits = model.net.linear(model.net.seen[-1])
    expected = (lam * nn.functional.cross_entropy(logits, y, reduction="none")
                + (1 - lam) * nn.functional.cross_entropy(logits, y[other], reduction="none")).mean()
    torch.testing.assert_close(loss, expected)
    assert not torch.allclose(lam, lam[:1].expand(3))  # one lam per sample, not one per batch
    model.validation_step((x, y), 0)
    torch.testing.assert_close(model.net.seen[-1], x)  # validation inputs go in as they are
    with pytest.raises(ValueError, match="mixup is Beta's alpha"):
        Classifier(Recorder(), mixup=-0.1)
    # validation is never mixed, and the task still learns the block digits
    model = Classifier(LeNet5(num_classes=4), mixup=0.2, optimizer=lambda p: torch.optim.Adam(p, lr=3e-3))
    trainer = _trainer(tmp_path, max_epochs=10, num_sanity_val_steps=0)
    trainer.fit(model, DataLoader(_digits(), batch_size=8, shuffle=True), DataLoader(_digits(seed=1), batch_size=20))
    assert trainer.callback_metrics["val/acc"].item() >= 0.9


def test_mixup_refuses_sequences_with_lengths():
    class WithLengths(nn.Module):
        num_classes = 3

        def forward(self, x, lengths):
            return x[:, :3]

    with pytest.raises(ValueError, match="mixup=0.2 mixes whole inputs"):
        Classifier(WithLengths(), mixup=0.2).training_step((torch.randn(4, 5), torch.ones(4), torch.zeros(4).long()), 0)


def test_number_of_classes_comes_from_the_net():
    assert Classifier(ConvNet(num_classes=7)).num_classes == 7
    assert Classifier(MnistCNN(num_classes=3), class_names=["a", "b", "c"]).class_names == ["a", "b", "c"]
    with pytest.raises(ValueError, match="no integer num_classes attribute"):
        Classifier(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)))
    assert Classifier(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), num_classes=10).num_classes == 10
    with pytest.raises(ValueError, match=r"num_classes=2 \+ extra_classes=0 but the net ConvNet has num_classes=10 outputs"):
        Classifier(ConvNet(num_classes=10), num_classes=2)
    with pytest.raises(ValueError, match="class_names has 2 entries but num_classes=10"):
        Classifier(LeNet5(), class_names=["a", "b"])


def test_extra_classes_train_but_are_never_validated_or_predicted(tmp_path):
    """Training-only classes (another corpus's words, SpokenDigits(add_corpus=...)): the net has more outputs,
    the task's metrics and predictions see only its own classes."""
    g = torch.Generator().manual_seed(2)
    extra_x = 0.3 * torch.randn(20, 1, 28, 28, generator=g)
    extra_y = 4 + torch.arange(20) % 2  # labels 4 and 5: blocks in the right half
    for i, c in enumerate(extra_y.tolist()):
        extra_x[i, 0, 4 + 5 * (c - 4):8 + 5 * (c - 4), 18:26] += 3.0
    x, y = _digits().tensors
    train = TensorDataset(torch.cat([x, extra_x]), torch.cat([y, extra_y]))
    model = Classifier(LeNet5(num_classes=6), extra_classes=2, optimizer=lambda p: torch.optim.Adam(p, lr=3e-3))
    assert model.num_classes == 4 and model.class_names == ["0", "1", "2", "3"]

    class WithExtra(L.LightningDataModule):
        def __init__(self, extra: int) -> None:
            super().__init__()
            self.extra_class_names = [f"other/{i}" for i in range(extra)]

        def train_dataloader(self):
            return DataLoader(train, batch_size=8, shuffle=True)

        def val_dataloader(self):
            return DataLoader(_digits(seed=1), batch_size=20)

    trainer = _trainer(tmp_path, max_epochs=10, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=WithExtra(2))
    assert trainer.callback_metrics["val/acc"].item() >= 0.9
    out = model.predict_step(next(iter(DataLoader(_digits(seed=1), batch_size=20))), 0)
    assert out["probs"].shape == (20, 4) and torch.allclose(out["probs"].sum(1), torch.ones(20))
    assert model(extra_x).argmax(1).ge(4).float().mean() >= 0.9  # the extra classes were learned too
    with pytest.raises(ValueError, match="the data adds 3 training-only classes but extra_classes=2"):
        _trainer(tmp_path, max_epochs=1).fit(model, datamodule=WithExtra(3))
    with pytest.raises(ValueError, match="num_classes=4 \\+ extra_classes=1 but the net LeNet5 has num_classes=6"):
        Classifier(LeNet5(num_classes=6), num_classes=4, extra_classes=1)


def test_extra_batch_elements_reach_the_net():
    class WithLengths(nn.Module):
        num_classes = 3

        def forward(self, x, lengths):
            return x[:, :3] * lengths[:, None]

    model = Classifier(WithLengths())
    x, lengths, y = torch.randn(4, 5), torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([0, 1, 2, 0])
    logits, target = model._logits_and_target((x, lengths, y))
    assert torch.equal(logits, x[:, :3] * lengths[:, None]) and torch.equal(target, y)


def test_views_of_a_test_batch_average_their_probabilities(tmp_path):
    """Test-time augmentation by the data (SpokenDigits(test_warps=...)): a list of inputs is views of the same
    samples; test metrics and predictions read the mean of their probabilities, over the task's classes only."""
    model = Classifier(LeNet5(num_classes=6), extra_classes=2).eval()
    x, y = _digits(n=8).tensors
    x2 = torch.flip(x, dims=[-1])
    with torch.no_grad():
        p1, p2 = (model(v)[:, :4].softmax(-1) for v in (x, x2))
        one, _ = model._eval_logits_and_target((x, y))
        same, _ = model._eval_logits_and_target(([x, x], y))
        both, target = model._eval_logits_and_target(([x, x2], y))
        out = model.predict_step(([x, x2], y), 0)
    torch.testing.assert_close(same.softmax(-1), one.softmax(-1))
    torch.testing.assert_close(both.softmax(-1), (p1 + p2) / 2)
    assert torch.equal(target, y)
    torch.testing.assert_close(out["probs"], (p1 + p2) / 2)
    assert torch.equal(out["pred"], ((p1 + p2) / 2).argmax(-1))
    trainer = _trainer(tmp_path)
    trainer.test(model, DataLoader(TensorDataset(x, y), batch_size=8), verbose=False)
    plain = trainer.callback_metrics["test/loss"].item()

    class TwoViews(L.LightningDataModule):
        def test_dataloader(self):
            return DataLoader(TensorDataset(x, y), batch_size=8)

        def on_after_batch_transfer(self, batch, dataloader_idx):
            return [batch[0], batch[0]], batch[1]

    trainer.test(model, datamodule=TwoViews(), verbose=False)
    assert trainer.callback_metrics["test/loss"].item() == pytest.approx(plain, rel=1e-5)


def test_load_from_checkpoint_of_a_python_run_takes_the_net_again(tmp_path):
    """From plain Python the live net is not pickled into the hyperparameters (the checkpoint stays
    weights-only loadable): the weights come back into the net passed to load_from_checkpoint."""
    torch.manual_seed(0)
    model = Classifier(MnistCNN(channels=(4, 8, 8), hidden=8, attention="spatial", num_classes=4),
                       label_smoothing=0.1)
    trainer = _trainer(tmp_path, max_steps=3)
    trainer.fit(model, DataLoader(_digits(), batch_size=8))
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    assert "net" not in load_checkpoint(tmp_path / "run.ckpt")["hyper_parameters"]
    again = load_module(Classifier, tmp_path / "run.ckpt",
                        net=MnistCNN(channels=(4, 8, 8), hidden=8, attention="spatial", num_classes=4))
    assert again.label_smoothing == 0.1 and again.num_classes == 4
    x = _digits(6, seed=3).tensors[0]
    assert torch.equal(again.eval()(x), model.eval()(x))
    with pytest.raises(ValueError, match=r"run\.ckpt failed to load as zoo\.tasks\.classifier\.Classifier.*net"):
        load_module(Classifier, tmp_path / "run.ckpt")


# --- checkpoints of zoo < 0.2 --------------------------------------------------------------------------------
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
HEAD = ["head.2.weight", "head.2.bias", "head.5.weight", "head.5.bias"]


def conv_bn(prefix: str) -> list[str]:
    return [f"{prefix}.0.weight", *(f"{prefix}.1.{s}" for s in BN)]


def cbam(prefix: str) -> list[str]:
    return [f"{prefix}.channel.mlp.0.weight", f"{prefix}.channel.mlp.2.weight", f"{prefix}.spatial.conv.weight"]


# the state-dict keys the old classes wrote (read off checkpoints of zoo 32e2a39): the nets must keep them
OLD_KEYS = {
    "CNN": [k for i in range(4) for k in conv_bn(f"features.{i}.0")] + HEAD,
    "CBAMNet": [k for i in range(4) for k in conv_bn(f"features.{i}.0") + cbam(f"features.{i}.1")] + HEAD,
    "LeNet5": [f"{m}.{i}.{p}" for m, i in (("conv", 0), ("conv", 3), ("fc", 0), ("fc", 3), ("out", 1))
               for p in ("weight", "bias")],
    "MnistCNN": conv_bn("block1.0") + conv_bn("block2.0") + conv_bn("block3") + HEAD,
    "SpatialAttentionCNN": conv_bn("block1.0") + ["block1.1.conv.weight"] + conv_bn("block2.0")
                           + ["block2.1.conv.weight"] + conv_bn("block3") + HEAD,
}
OLD_KEYS["ImageClassifier"] = OLD_KEYS["CNN"]
ADAMW = {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.002, "weight_decay": 0.0005}}
COSINE = {"class_path": "torch.optim.lr_scheduler.CosineAnnealingLR", "init_args": {"T_max": 10}}
SMALL4 = {"channels": [4, 8, 8, 16], "hidden": 8, "dropout": 0.3, "num_classes": 10, "channels_last": True}
# old class path -> (its saved hyperparameters, the net it is now, input shape)
LEGACY = {
    "zoo.audio_cnn.CNN": ({"in_channels": 1, **SMALL4}, ConvNet(in_channels=1, **SMALL4), (3, 1, 32, 24)),
    "zoo.audio_cnn.CBAMNet": ({"in_channels": 1, **SMALL4, "reduction": 4, "attention_kernel": 5},
                              ConvNet(in_channels=1, **SMALL4, attention="cbam", reduction=4, attention_kernel=5),
                              (3, 1, 32, 24)),
    "zoo.image_classifier.ImageClassifier": (
        {"in_channels": 3, **SMALL4, "augment": True, "hflip": 0.5, "contrast": 0.2, "translate": 0.1,
         "augment_seed": None}, ConvNet(in_channels=3, **SMALL4), (3, 3, 16, 16)),
    "zoo.mnist_classifiers.LeNet5": ({"in_channels": 1, "activation": "tanh", "dropout": 0.1, "num_classes": 10},
                                     LeNet5(activation="tanh", dropout=0.1), (3, 1, 28, 28)),
    "zoo.mnist_classifiers.MnistCNN": ({"in_channels": 1, "channels": [4, 8, 8], "hidden": 8, "dropout": 0.3,
                                        "num_classes": 10}, MnistCNN(channels=(4, 8, 8), hidden=8), (3, 1, 28, 28)),
    "zoo.mnist_classifiers.SpatialAttentionCNN": (
        {"in_channels": 1, "channels": [4, 8, 8], "hidden": 8, "dropout": 0.3, "num_classes": 10,
         "attention_kernel": 3}, MnistCNN(channels=(4, 8, 8), hidden=8, attention="spatial", attention_kernel=3),
        (3, 1, 28, 28)),
}


def _old_checkpoint(path: Path, class_path: str, net_hparams: dict, net: nn.Module) -> dict:
    """What ``python -m zoo fit`` of zoo < 0.2 wrote: the old class, its flat init args, the layers'
    weights at the top level of the state dict (random values, also in the BatchNorm statistics)."""
    g = torch.Generator().manual_seed(1)
    state = {k: (torch.randn(v.shape, generator=g).abs() + 0.5 if "running_var" in k else
                 torch.randn(v.shape, generator=g)) if v.is_floating_point() else v
             for k, v in net.state_dict().items()}
    task = {"class_names": [f"c{i}" for i in range(10)], "label_smoothing": 0.1}
    if not class_path.endswith("ImageClassifier"):  # it did not save its optimizer
        task |= {"optimizer": ADAMW, "scheduler": COSINE}
    hparams = {"_class_path": class_path, **net_hparams, **task,
               "_instantiator": "lightning.pytorch.cli.instantiate_module"}
    torch.save({"state_dict": state, "hyper_parameters": hparams, "epoch": 3, "global_step": 40,
                "pytorch-lightning_version": L.__version__,
                "datamodule_hyper_parameters": {"normalize": "standard"}}, path)
    return state


@pytest.mark.parametrize("class_path", LEGACY)
def test_an_old_checkpoint_converts_to_the_same_function(class_path, tmp_path, capsys):
    net_hparams, net, shape = LEGACY[class_path]
    old_name = class_path.rsplit(".", 1)[-1]
    assert list(net.state_dict()) == OLD_KEYS[old_name], "the net's layout no longer matches the old checkpoints"
    state = _old_checkpoint(tmp_path / "old.ckpt", class_path, net_hparams, net)
    with pytest.raises(ValueError, match=rf"{class_path}.*convert_checkpoint --src .*old\.ckpt"):
        load_cli_checkpoint(tmp_path / "old.ckpt")  # refused, with the command that converts it

    convert_checkpoint(src=str(tmp_path / "old.ckpt"), dst=str(tmp_path / "new" / "new.ckpt"))
    assert f"({class_path}) -> " in capsys.readouterr().out
    model, data_hp = load_cli_checkpoint(tmp_path / "new" / "new.ckpt")
    assert type(model) is Classifier and type(model.net) is type(net) and data_hp == {"normalize": "standard"}
    assert model.class_names == [f"c{i}" for i in range(10)] and model.label_smoothing == 0.1
    net.load_state_dict(state)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(model(x), net.eval()(x))
    saved = load_checkpoint(tmp_path / "new" / "new.ckpt")
    assert saved["epoch"] == 3 and saved["global_step"] == 40  # the rest of the checkpoint is kept
    if class_path.endswith("ImageClassifier"):  # its augmentation flags became a BatchAugment module
        assert type(model.augment).__name__ == "BatchAugment"
        assert (model.augment.hflip, model.augment.contrast, model.augment.translate) == (0.5, 0.2, 0.1)
        assert model.augment.padding_mode == "reflection"
    else:
        assert model.augment is None
        opt = model.optimizer(model.parameters())
        assert type(opt) is torch.optim.AdamW and opt.defaults["lr"] == 0.002


def test_convert_refuses_a_checkpoint_that_is_not_old(tmp_path):
    torch.manual_seed(0)
    model = Classifier(LeNet5())
    trainer = _trainer(tmp_path, max_steps=1)
    trainer.fit(model, DataLoader(_digits(8), batch_size=8))
    trainer.save_checkpoint(tmp_path / "new.ckpt")
    with pytest.raises(ValueError, match=r"new\.ckpt is not a checkpoint of an old zoo class.*zoo\.audio_cnn\.CNN"):
        convert_checkpoint(src=str(tmp_path / "new.ckpt"), dst=str(tmp_path / "out.ckpt"))
    assert not (tmp_path / "out.ckpt").exists()
