"""GAN task and DCGAN nets: the nets without Lightning, G/D agreement, manual-optimization mechanics,
sampling, export round trip, legacy conversion and the offline GAN metrics."""

from __future__ import annotations

import csv

import lightning as L
import numpy as np
import pytest
import torch
from conftest import CONFIGS
from torch.utils.data import DataLoader, TensorDataset

from zoo import compat
from zoo.metrics import ClassifierFeatures, classifier_fid, load_judge
from zoo.nets.dcgan import Discriminator, Generator, dcgan_init, slerp
from zoo.nets.lenet import LeNet5
from zoo.safe_load import load_checkpoint
from zoo.tasks.classifier import Classifier
from zoo.tasks.gan import GAN, load_gan
from zoo.tools.gan_eval import agreement, cas, losses
from zoo.tools.sample_export import load_samples, to_uint8
from zoo.tools.sample_export import main as export_main


def net_args(architecture: str = "mnist28", image_channels: int = 1, conditional: bool = False,
             conditioning: str = "concat", dropout: float | None = None, spectral_norm: bool = False,
             latent_dim: int = 8, width: int = 4) -> tuple[dict, dict]:
    """Init args of a tiny matching Generator and Discriminator (the old DCGAN's flat settings)."""
    classes = 10 if conditional else 0
    g = {"architecture": architecture, "latent_dim": latent_dim, "channels": image_channels, "width": width,
         "num_classes": classes}
    d = {"architecture": architecture, "channels": image_channels, "width": width, "num_classes": classes,
         "conditioning": conditioning, "dropout": dropout, "spectral_norm": spectral_norm}
    return g, d


NET_KEYS = ("architecture", "image_channels", "conditional", "conditioning", "dropout", "spectral_norm", "latent_dim",
            "width")


def tiny(**kw) -> GAN:
    """A tiny GAN built from Python (nets' settings as keywords, the rest go to the task)."""
    g, d = net_args(**{k: kw.pop(k) for k in NET_KEYS if k in kw})
    args = {"samples_per_row": 2, "interpolation_steps": 3}
    args.update(kw)
    return GAN(Generator(**g), Discriminator(**d), **args)


def as_cli(cls: type, config: dict) -> L.LightningModule:
    """``cls`` built from ``config`` as LightningCLI builds it, so its checkpoints record the nets'
    class_path configs and load by themselves (as those of ``python -m zoo fit`` do)."""
    return compat.build_as_cli(cls, config)


def cli_tiny(**kw) -> GAN:
    """``tiny`` built as LightningCLI builds it: its checkpoints load with ``load_gan`` / ``sample_export`` alone."""
    g, d = net_args(**{k: kw.pop(k) for k in NET_KEYS if k in kw})
    return as_cli(GAN, {"generator": {"class_path": "zoo.nets.dcgan.Generator", "init_args": g},
                        "discriminator": {"class_path": "zoo.nets.dcgan.Discriminator", "init_args": d},
                        "samples_per_row": 2, "interpolation_steps": 3, **kw})


def loader(n: int = 16, shape=(1, 28, 28), batch_size: int = 8, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *shape, generator=g) * 2 - 1
    y = torch.arange(n) % 10
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def trainer(**kw) -> L.Trainer:
    args = {"max_epochs": 1, "accelerator": "cpu", "logger": False, "enable_checkpointing": False,
                "enable_progress_bar": False, "enable_model_summary": False}
    args.update(kw)
    return L.Trainer(**args)


# --- the nets, without Lightning -----------------------------------------------------------------
@pytest.mark.parametrize("arch,channels,size", [("mnist28", 1, 28), ("dcgan64", 3, 64)])
@pytest.mark.parametrize("classes,conditioning", [(0, "concat"), (10, "concat"), (10, "projection"),
                                                   (10, "auxiliary")])
def test_nets_without_lightning(arch, channels, size, classes, conditioning):
    """Plain nn.Modules: shapes, the tanh range, one logit per image, and a plain optimizer step moves them."""
    g = Generator(arch, latent_dim=8, channels=channels, width=4, num_classes=classes)
    d = Discriminator(arch, channels=channels, width=4, num_classes=classes, conditioning=conditioning)
    assert not isinstance(g, L.LightningModule) and (g.image_size, d.image_size) == (size, size)
    labels = torch.tensor([0, 3, 9]) if classes else None
    x = g(torch.randn(3, 8), labels)
    assert x.shape == (3, channels, size, size) and x.min() >= -1 and x.max() <= 1
    logits = d(x, labels)
    assert logits.shape == (3,)
    first_conv = next(m for m in d.modules() if isinstance(m, torch.nn.Conv2d))
    # only "concat" shows D the label as extra input channels
    assert first_conv.in_channels == channels + (classes if conditioning == "concat" else 0)
    if conditioning == "auxiliary" and classes:
        adv, cls = d.forward_with_classes(x)
        assert adv.shape == (3,) and cls.shape == (3, classes)
    opt = torch.optim.SGD([*g.parameters(), *d.parameters()], lr=0.1)
    before = [p.detach().clone() for p in g.parameters()]
    d(g(torch.randn(3, 8), labels), labels).mean().backward()
    opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, g.parameters()))


def test_nets_check_their_inputs_and_arguments():
    g, d = Generator(width=4, num_classes=10), Discriminator(width=4, num_classes=10)
    with pytest.raises(ValueError, match="labels are required"):
        g(torch.randn(2, 100))
    with pytest.raises(ValueError, match="labels must be in 0..9"):
        g(torch.randn(1, 100), torch.tensor([10]))
    with pytest.raises(ValueError, match=r"latent codes of shape \(N, 100\)"):
        g(torch.randn(2, 8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="unconditional"):
        Generator(width=4)(torch.randn(2, 100), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"expects images of shape \(N, 1, 28, 28\)"):
        d(torch.zeros(2, 1, 64, 64), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="architecture must be one of"):
        Generator(architecture="mnist32")
    with pytest.raises(ValueError, match="conditioning"):
        Discriminator(num_classes=10, conditioning="film")
    with pytest.raises(ValueError, match="dropout"):
        Discriminator(dropout=1.0)
    with pytest.raises(ValueError, match="num_classes must be 0"):
        Generator(num_classes=1)
    with pytest.raises(ValueError, match="width must be >= 1"):
        Discriminator(width=0)


def test_dcgan_init_draws_the_papers_weights():
    g = Generator(width=8)
    g.apply(dcgan_init)
    conv = g.net[0]
    bn = g.project[1]
    assert conv.weight.std().item() == pytest.approx(0.02, rel=0.1) and abs(conv.weight.mean().item()) < 2e-3
    assert bn.weight.mean().item() == pytest.approx(1.0, abs=5e-3) and torch.all(bn.bias == 0)


@pytest.mark.parametrize("g_kw,d_kw,what", [
    ({"num_classes": 10}, {}, "num_classes: generator 10, discriminator 0"),
    ({"channels": 3}, {}, "channels: generator 3, discriminator 1"),
    ({"architecture": "dcgan64"}, {}, r"image_size: generator 64, discriminator 28 \(architecture 'dcgan64' vs 'mnist28'\)"),
])
def test_generator_and_discriminator_must_agree(g_kw, d_kw, what):
    with pytest.raises(ValueError, match=what):
        GAN(Generator(width=4, **g_kw), Discriminator(width=4, **d_kw))
    with pytest.raises(ValueError, match="no integer attribute"):
        GAN(torch.nn.Linear(2, 2), Discriminator(width=4))


def test_config_nets_disagreeing_fail_with_the_setting_named(tmp_path):
    from conftest import run_cli

    with pytest.raises(ValueError, match="disagree on num_classes"):
        run_cli(["fit", "--config", CONFIGS / "dcgan_mnist_conditional.yaml",
                 "--model.discriminator.init_args.num_classes", "0", "--trainer.fast_dev_run", "1",
                 "--trainer.default_root_dir", tmp_path])


@pytest.mark.parametrize("kw,golden", [
    ({"conditional": True, "conditioning": "projection"},
     {"generator.net.0.weight": [0.004695, -0.010128, 0.036773],
      "discriminator.project.weight": [0.000474, 0.010695, 0.008895]}),
    ({"architecture": "dcgan64", "image_channels": 3, "spectral_norm": True},
     {"generator.net.0.weight": [0.009151, -0.017389, -0.010003],
      "discriminator.net.0.parametrizations.weight.original": [0.02808, -0.00561, -0.025183],
      "discriminator.net.0.parametrizations.weight.0._u": [-0.657088, 0.659806, 0.042243]}),
])
def test_seeded_build_reproduces_the_old_dcgan_weights(kw, golden):
    """Seed 0 gives the weights the single-module zoo.dcgan.DCGAN (zoo < 0.2) drew with the same settings:
    G built, D built, then dcgan_init on G, then on D (values recorded from that version)."""
    torch.manual_seed(0)
    sd = tiny(**kw).state_dict()
    for key, values in golden.items():
        assert sd[key].flatten()[:3].tolist() == pytest.approx(values, abs=1e-6), key
    kept = Generator(width=4, latent_dim=8)
    before = {k: v.clone() for k, v in kept.state_dict().items()}
    GAN(kept, Discriminator(width=4), init_weights=False)  # e.g. a pretrained generator: left as it is
    assert all(torch.equal(before[k], v) for k, v in kept.state_dict().items())


class RecordingAdam(torch.optim.Adam):
    """Adam that appends ``(name, snapshot())`` to ``log`` at every step."""

    def __init__(self, params, name, log, snapshot):
        super().__init__(params, lr=2e-4, betas=(0.5, 0.999))
        self.name, self.log, self.snapshot = name, log, snapshot

    def step(self, closure=None):
        self.log.append((self.name, self.snapshot()))
        return super().step(closure)


@pytest.mark.parametrize("conditional", [False, True])
def test_one_manual_step_changes_both_networks(conditional):
    model = tiny(conditional=conditional)
    assert model.automatic_optimization is False
    assert model.latent_dim == model.generator.latent_dim == 8 and model.num_classes == (10 if conditional else 0)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    trainer(limit_train_batches=1, limit_val_batches=0).fit(model, loader())
    changed = {k: not torch.equal(before[k], v) for k, v in model.named_parameters()}
    assert all(v for k, v in changed.items() if k.startswith("generator.")), changed
    assert all(v for k, v in changed.items() if k.startswith("discriminator.")), changed
    assert {"train/d_loss", "train/g_loss"} <= set(trainer_metrics := model.trainer.callback_metrics), trainer_metrics


@pytest.mark.parametrize("arch,channels", [("mnist28", 1), ("dcgan64", 3)])
def test_auxiliary_classifier_variant(arch, channels):
    model = tiny(architecture=arch, image_channels=channels, conditional=True, conditioning="auxiliary")
    first_conv = next(m for m in model.discriminator.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == channels  # D must infer the class: no label maps as input
    adv, cls = model.discriminator.forward_with_classes(model.sample(labels=torch.tensor([1, 2])))
    assert adv.shape == (2,) and cls.shape == (2, 10)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    size = 28 if arch == "mnist28" else 64
    trainer(limit_train_batches=1, limit_val_batches=0).fit(model, loader(shape=(channels, size, size)))
    assert all(not torch.equal(before[k], v) for k, v in model.named_parameters()), "some weights did not move"
    assert {"train/d_cls_loss", "train/g_cls_loss"} <= set(model.trainer.callback_metrics)
    with pytest.raises(ValueError, match="no auxiliary classifier"):
        tiny(conditional=True).discriminator.forward_with_classes(torch.zeros(1, 1, 28, 28))


def test_d_steps_before_g_on_detached_fakes():
    log: list = []
    holder: dict = {}

    def snapshot():
        m = holder["model"]
        return {"g_grads_none": all(p.grad is None for p in m.generator.parameters()),
                "d_requires_grad": any(p.requires_grad for p in m.discriminator.parameters())}

    model = tiny(conditional=True,
                 discriminator_optimizer=lambda p: RecordingAdam(p, "D", log, snapshot),
                 generator_optimizer=lambda p: RecordingAdam(p, "G", log, snapshot))
    holder["model"] = model
    d_inputs = []
    model.discriminator.register_forward_pre_hook(lambda m, args: d_inputs.append(args[0].grad_fn is not None))
    trainer(limit_train_batches=2, limit_val_batches=0).fit(model, loader())
    assert [name for name, _ in log] == ["D", "G", "D", "G"]
    # first batch: D's backward must not reach the generator (fakes detached) ...
    assert log[0][1]["g_grads_none"], "the discriminator step produced generator gradients"
    # ... and during G's step D's weights are frozen by toggle_optimizer
    assert not log[1][1]["d_requires_grad"]
    # per batch D sees: real (no graph), detached fake (no graph); then G's step: fake with graph
    assert d_inputs == [False, False, True] * 2


@pytest.mark.parametrize("fp16", [False, True])
def test_gradient_clipping_is_applied(fp16):
    """The bound holds on the gradients the optimizer steps with; under 16-mixed they are unscaled first
    (clipping the loss-scaled gradients would shrink every step by the loss scale, 2**16)."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    norms = []

    class NormAtStep(torch.optim.Adam):
        """Records the gradient norm the update is made with (after the closure Lightning passes in fp32)."""

        def step(self, closure=None):
            if closure is not None:
                with torch.enable_grad():
                    closure()
            grads = [p.grad.float().norm() for g in self.param_groups for p in g["params"] if p.grad is not None]
            norms.append(float(torch.linalg.vector_norm(torch.stack(grads))))
            return super().step()

    model = tiny(gradient_clip_val=1e-3, discriminator_optimizer=lambda p: NormAtStep(p, lr=2e-4))
    plugins = [MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))] if fp16 else None
    trainer(limit_train_batches=2, limit_val_batches=0, plugins=plugins).fit(model, loader())
    # unclipped, D's gradient norm here is ~0.07: clipped, it sits at the bound
    assert len(norms) == 2 and all(0.9e-3 <= n <= 1e-3 * 1.001 for n in norms), norms


def test_schedulers_are_stepped_each_epoch():
    model = tiny(generator_scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, 1, 0.5),
                 discriminator_scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, 1, 0.1))
    fitted = trainer(max_epochs=2, limit_train_batches=1, limit_val_batches=0)
    fitted.fit(model, loader())
    assert [c.name for c in fitted.lr_scheduler_configs] == ["lr-discriminator", "lr-generator"]  # the LR monitor's keys
    opt_d, opt_g = model.optimizers()
    assert opt_g.param_groups[0]["lr"] == pytest.approx(2e-4 * 0.25)
    assert opt_d.param_groups[0]["lr"] == pytest.approx(2e-4 * 0.01)


@pytest.mark.parametrize("arch,channels,size", [("mnist28", 1, 28), ("dcgan64", 3, 64)])
def test_sample_shapes_range_and_label_errors(arch, channels, size):
    cond = tiny(architecture=arch, image_channels=channels, conditional=True)
    x = cond.sample(labels=torch.tensor([0, 3, 9]))
    assert x.shape == (3, channels, size, size) and x.min() >= -1 and x.max() <= 1
    with pytest.raises(ValueError, match="conditional"):
        cond.sample(n=2)
    with pytest.raises(ValueError, match="labels must be in 0..9"):
        cond.sample(labels=torch.tensor([10]))
    uncond = tiny(architecture=arch, image_channels=channels)
    assert uncond.sample(n=2).shape == (2, channels, size, size)
    with pytest.raises(ValueError, match="unconditional"):
        uncond.sample(labels=torch.tensor([1]))
    # discriminator gives one logit per image
    assert cond.discriminator(x, torch.tensor([0, 3, 9])).shape == (3,)


def test_figures_and_slerp():
    model = tiny(conditional=True)
    fig = model.sample_grid_figure()
    assert len([ax for ax in fig.axes if ax.images]) == 10 * 2  # one row of 2 per class
    fig = model.interpolation_figure()
    assert len([ax for ax in fig.axes if ax.images]) == 10 * 3
    z0, z1 = torch.randn(1, 8), torch.randn(1, 8)
    path = slerp(z0.expand(3, -1), z1.expand(3, -1), torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(path[0], z0[0], atol=1e-5) and torch.allclose(path[2], z1[0], atol=1e-5)


def test_bad_batches_raise_clear_errors():
    with pytest.raises(ValueError, match="minus_one_one"):
        trainer(limit_train_batches=1, limit_val_batches=0).fit(
            tiny(), DataLoader(TensorDataset(torch.rand(64, 1, 28, 28), torch.zeros(64, dtype=torch.long)),
                               batch_size=64))
    with pytest.raises(ValueError, match=r"expect images of shape \(B, 1, 28, 28\)"):
        trainer(limit_train_batches=1, limit_val_batches=0).fit(tiny(), loader(shape=(1, 32, 32)))
    unlabelled = DataLoader(TensorDataset(torch.rand(8, 1, 28, 28) * 2 - 1, torch.full((8,), -1)), batch_size=8)
    with pytest.raises(ValueError, match="needs labelled batches"):
        trainer(limit_train_batches=1, limit_val_batches=0).fit(tiny(conditional=True), unlabelled)
    with pytest.raises(ValueError, match="real_label"):
        tiny(real_label=0.5)
    with pytest.raises(ValueError, match="standing_batches"):
        tiny(standing_batches=-1)


@pytest.mark.parametrize("arch,channels,rate", [("mnist28", 1, 0.3), ("dcgan64", 3, 0.0)])
def test_default_dropout_is_each_architectures_published_one(arch, channels, rate):
    rates = [m.p for m in tiny(architecture=arch, image_channels=channels).discriminator.modules()
             if isinstance(m, torch.nn.Dropout)]
    assert rates == ([rate] * len(rates) if rate else []) and (rates or not rate)


def _checkpoint(model: GAN, path) -> str:
    t = trainer(limit_train_batches=1, limit_val_batches=0)
    size = model.image_size
    t.fit(model, loader(shape=(model.image_channels, size, size)))
    t.save_checkpoint(path)
    return str(path)


def test_export_import_round_trip(tmp_path):
    from datamodules.mnist import load_synthetic

    model = cli_tiny(conditional=True)
    ckpt = _checkpoint(model, tmp_path / "g.ckpt")
    out = tmp_path / "samples.npz"
    export_main(["--checkpoint", ckpt, "--per_class", "3", "--out", str(out), "--seed", "5"])
    images, labels = load_samples(out)
    assert images.dtype == np.uint8 and images.shape == (30, 28, 28)
    assert labels.tolist() == sorted(list(range(10)) * 3)
    # the file holds exactly what the reloaded generator draws for those labels and that noise,
    # after re-estimating its batch-norm statistics (the exporter's default)
    reloaded = load_gan(ckpt)
    reloaded.standing_statistics(batches=100, seed=5)
    z = torch.randn(30, 8, generator=torch.Generator().manual_seed(5))
    np.testing.assert_array_equal(images, to_uint8(reloaded.sample(labels=torch.from_numpy(labels), z=z)))
    running = tmp_path / "running.npz"
    export_main(["--checkpoint", ckpt, "--per_class", "3", "--out", str(running), "--seed", "5", "--standing_batches", "0"])
    np.testing.assert_array_equal(load_samples(running)[0],
                                  to_uint8(load_gan(ckpt).sample(labels=torch.from_numpy(labels), z=z)))
    # and it passes the MNIST DataModule's sample-file validation
    x, y = load_synthetic(out, per_class=3)
    assert x.shape == (30, 1, 28, 28) and sorted(y.tolist()) == labels.tolist()
    assert torch.allclose(torch.sort(x.flatten(1).sum(1)).values,
                          torch.sort(torch.from_numpy(images).float().div(255).flatten(1).sum(1)).values)


def test_export_refuses_unconditional_and_non_mnist_models(tmp_path):
    ckpt = _checkpoint(cli_tiny(), tmp_path / "u.ckpt")
    with pytest.raises(ValueError, match="unconditional"):
        export_main(["--checkpoint", ckpt, "--per_class", "2", "--out", str(tmp_path / "x.npz")])
    # a gray 64x64 conditional model would write a file the MNIST DataModule then rejects
    ckpt = _checkpoint(cli_tiny(architecture="dcgan64", image_channels=1, conditional=True), tmp_path / "g64.ckpt")
    with pytest.raises(ValueError, match="1-channel 64x64"):
        export_main(["--checkpoint", ckpt, "--per_class", "2", "--out", str(tmp_path / "x.npz")])
    assert not (tmp_path / "x.npz").exists()


def test_load_samples_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((4, 28, 28), np.float32), labels=np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="uint8"):
        load_samples(bad)
    np.savez(bad, pictures=np.zeros((4, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="expected arrays 'images' and 'labels'"):
        load_samples(bad)


# --- FID with own features ------------------------------------------------------------------------
def _feature_checkpoint(tmp_path) -> str:
    """A LeNet5 classifier checkpoint as ``python -m zoo fit`` writes it (class paths + DataModule normalisation)."""
    path = tmp_path / "lenet.ckpt"
    torch.manual_seed(0)  # the features of a barely trained net depend on its init: keep it fixed
    t = trainer(max_steps=1)
    t.fit(as_cli(Classifier, {"net": {"class_path": "zoo.nets.lenet.LeNet5"}}),
          DataLoader(TensorDataset(torch.randn(8, 1, 28, 28), torch.arange(8)), batch_size=8))
    t.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["datamodule_hyper_parameters"] = {"normalization": "standard"}
    torch.save(ckpt, path)
    return str(path)


def test_classifier_features_are_lenet_penultimate_layer():
    from datamodules.mnist import normalize

    lenet = LeNet5().eval()
    feats = ClassifierFeatures(lenet, "standard")
    assert feats.num_features == 84
    x = torch.rand(5, 1, 28, 28)
    assert torch.allclose(feats(x), lenet.features(normalize(x, "standard")))
    feats.train()
    assert not feats.classifier.training  # a frozen judge stays in eval mode
    with pytest.raises(ValueError, match="must be one of"):
        ClassifierFeatures(lenet, "imagenet")


def test_fid_zero_for_same_set_and_larger_for_other(tmp_path):
    fid = classifier_fid(_feature_checkpoint(tmp_path))
    g = torch.Generator().manual_seed(0)
    real = (torch.rand(300, 1, 28, 28, generator=g) < 0.2).float()  # sparse "strokes" on black
    fid.update(real, real=True)
    fid.update(real, real=False)
    same = float(fid.compute())
    fid.reset()
    fid.update(real, real=True)
    fid.update(0.5 + 0.5 * torch.rand(300, 1, 28, 28, generator=g), real=False)  # bright noise: far off
    other = float(fid.compute())
    assert abs(same) < 1e-3 and other > 100 * max(abs(same), 1e-4)


def test_classifier_features_bring_images_to_the_judges_input_shape(tmp_path):
    """A CIFAR-sized RGB judge scores 64x64 faces (and gray digits): resized, channels matched; the
    shape comes from the judge's checkpoint (image_size / image_channels of its DataModule)."""
    import torch.nn.functional as F

    from zoo.nets.convnet import ConvNet

    torch.manual_seed(0)
    judge = Classifier(ConvNet(in_channels=3, channels=(4, 8, 8, 8), hidden=16, num_classes=10)).eval()
    feats = ClassifierFeatures(judge, "zero_one", (3, 32, 32))
    faces = torch.rand(4, 3, 64, 64)
    small = F.interpolate(faces, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    assert feats.num_features == 8 and feats(faces).shape == (4, 8)  # ConvNet.features: the pooled conv features
    assert torch.allclose(feats(faces), feats(small), atol=1e-6)
    gray = torch.rand(4, 1, 32, 32)
    assert torch.allclose(feats(gray), feats(gray.expand(-1, 3, -1, -1)))
    with pytest.raises(ValueError, match=r"\(N, 1 or 3, H, W\)"):
        feats(torch.rand(4, 2, 32, 32))
    with pytest.raises(ValueError, match="input_shape"):
        ClassifierFeatures(judge, "zero_one", (2, 32, 32))
    path = tmp_path / "cifar.ckpt"
    t = trainer(max_steps=1)
    t.fit(as_cli(Classifier, {"net": {"class_path": "zoo.nets.convnet.ConvNet",
                                      "init_args": {"in_channels": 3, "channels": [4, 8, 8, 8], "hidden": 16}}}),
          DataLoader(TensorDataset(torch.rand(8, 3, 32, 32), torch.arange(8)), batch_size=8))
    t.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["datamodule_hyper_parameters"] = {"normalization": "zero_one", "image_size": 32, "image_channels": 3}
    torch.save(ckpt, path)
    assert ClassifierFeatures.from_checkpoint(path).input_shape == (3, 32, 32)
    assert ClassifierFeatures.from_checkpoint(_feature_checkpoint(tmp_path)).input_shape == (1, 28, 28)  # MNIST runs


def test_sample_diversity_is_near_one_for_data_like_samples_and_zero_for_collapse():
    from zoo.metrics import SampleDiversity

    g = torch.Generator().manual_seed(0)
    real, other = torch.rand(64, 3, 16, 16, generator=g), torch.rand(64, 3, 16, 16, generator=g)
    one_image = other[:1].expand(64, -1, -1, -1)
    for fake, low, high in ((other, 0.95, 1.05), (one_image, 0.0, 1e-6), (torch.zeros_like(real), 0.0, 1e-6),
                            (0.2 * other, 0.15, 0.25)):  # washed out: a fifth of the spread
        m = SampleDiversity()
        m.update(real, real=True)
        m.update(fake, real=False)
        assert low <= float(m.compute()) <= high
    with pytest.raises(ValueError, match="needs batches"):
        SampleDiversity().compute()


def _squares(n: int, seed: int) -> torch.Tensor:
    """64x64 RGB images in [-1, 1]: one coloured 24x24 square per image at a random place."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((n, 3, 64, 64), -1.0)
    for i in range(n):
        r, c = torch.randint(0, 40, (2,), generator=g).tolist()
        x[i, :, r:r + 24, c:c + 24] = torch.rand(3, 1, 1, generator=g) * 2 - 1
    return x


def test_training_step_is_the_pytorch_dcgan_example_step():
    """The task's manual-optimisation step (Lightning, toggle_optimizer, one G forward for both updates) gives
    the same D and G losses, step by step, as the plain loop of PyTorch's DCGAN example on the same nets,
    batches and noise: a collapse cannot come from the loop itself."""
    import copy

    import torch.nn.functional as F

    torch.manual_seed(0)
    model = GAN(Generator("dcgan64", 16, 3, 8), Discriminator("dcgan64", 3, 8), standing_batches=0,
                samples_per_row=2, interpolation_steps=3)
    G, D = copy.deepcopy(model.generator), copy.deepcopy(model.discriminator)
    steps, b = 3, 8
    data, noise = _squares(steps * b, 0), torch.randn(steps, b, 16)
    drawn = iter(noise)
    model._noise = lambda n: next(drawn)
    seen = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append((float(trainer.callback_metrics["train/d_loss"]), float(trainer.callback_metrics["train/g_loss"])))

    trainer(max_epochs=1, limit_val_batches=0, callbacks=[Record()], log_every_n_steps=1).fit(
        model, DataLoader(TensorDataset(data), batch_size=b))
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    ones, zeros = torch.ones(b), torch.zeros(b)
    for step in range(steps):
        x, fake = data[step * b:(step + 1) * b], G(noise[step])
        opt_d.zero_grad()
        d_loss = F.binary_cross_entropy_with_logits(D(x), ones) + F.binary_cross_entropy_with_logits(D(fake.detach()), zeros)
        d_loss.backward()
        opt_d.step()
        opt_g.zero_grad()
        g_loss = F.binary_cross_entropy_with_logits(D(fake), ones)
        g_loss.backward()
        opt_g.step()
        assert seen[step] == pytest.approx((d_loss.item(), g_loss.item()), rel=1e-5)
    for mine, theirs in ((model.generator, G), (model.discriminator, D)):
        for a, c in zip(mine.parameters(), theirs.parameters()):
            assert torch.allclose(a, c, atol=1e-6)


@pytest.mark.parametrize("standing_batches,collapsed", [(50, False), (0, True)])
def test_briefly_trained_dcgan64_samples_do_not_collapse(standing_batches, collapsed):
    """The collapse of the first anime runs (every grid image the same): after 16 DCGAN-paper steps the
    eval-mode samples of G vary (val/diversity ~0.12) with standing statistics; on its lagging running
    averages (standing_batches=0, what those runs drew) they are one image (~0.001). The alarm fires."""
    torch.manual_seed(0)
    model = GAN(Generator("dcgan64", 16, 3, 8), Discriminator("dcgan64", 3, 8), standing_batches=standing_batches,
                samples_per_row=2, interpolation_steps=3)
    t = trainer(max_epochs=4, num_sanity_val_steps=0)
    t.fit(model, DataLoader(TensorDataset(_squares(64, 0)), batch_size=16, shuffle=True),
          DataLoader(TensorDataset(_squares(32, 1)), batch_size=16))
    diversity = float(t.callback_metrics["val/diversity"])
    assert (diversity < 0.01) if collapsed else (diversity > 0.05)


def test_gan_logs_val_fid_with_feature_checkpoint(tmp_path):
    model = tiny(conditional=True, fid_features=_feature_checkpoint(tmp_path))
    assert model.monitor == ("val/fid", "min")
    t = trainer(limit_train_batches=1, limit_val_batches=2, num_sanity_val_steps=0)
    t.fit(model, loader(), loader(seed=1))
    assert torch.isfinite(t.callback_metrics["val/fid"]) and "val/d_loss" in t.callback_metrics
    # the feature network is not stored in the GAN checkpoint, and loading works without it
    t.save_checkpoint(tmp_path / "gan.ckpt")
    sd = load_checkpoint(tmp_path / "gan.ckpt")["state_dict"]
    assert not any(k.startswith(("val_fid.", "test_fid.")) for k in sd)
    # saved from Python, the checkpoint holds no nets' configs: they are passed again
    g, d = net_args(conditional=True)
    loaded = load_gan(str(tmp_path / "gan.ckpt"), generator=Generator(**g), discriminator=Discriminator(**d))
    assert loaded.val_fid is None and not loaded.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
    with pytest.raises(ValueError, match="does not record its generator and discriminator"):
        load_gan(str(tmp_path / "gan.ckpt"))


def test_without_fid_only_last_checkpoint_is_kept(tmp_path):
    from zoo.callbacks import BestCheckpoint

    model = tiny()
    assert model.monitor is None  # val/d_loss says as much about D as about G: no "best" epoch
    ckpt = BestCheckpoint(dirpath=tmp_path)
    seen = []  # last.ckpt must exist from the first epoch on: nothing lost on a crash

    class Watch(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            seen.append((tmp_path / "last.ckpt").exists())

    t = trainer(max_epochs=3, limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=0,
                enable_checkpointing=True, callbacks=[ckpt, Watch()])
    t.fit(model, loader(), loader(seed=1))
    assert seen == [False, True, True]
    assert load_checkpoint(tmp_path / "last.ckpt")["epoch"] == 2
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["last.ckpt"]
    assert ckpt.best_model_path == ""


def test_label_agreement_counts_judge_hits(tmp_path):
    from datamodules.mnist import normalize

    judge = _feature_checkpoint(tmp_path)
    model, _ = load_judge(judge)
    images = (torch.rand(40, 28, 28, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    with torch.no_grad():
        pred = model(normalize(images.unsqueeze(1).float().div(255), "standard")).argmax(1)
    np.savez(tmp_path / "same.npz", images=images.numpy(), labels=pred.numpy())
    np.savez(tmp_path / "off.npz", images=images.numpy(), labels=((pred + 1) % 10).numpy())
    assert agreement(samples=str(tmp_path / "same.npz"), judge=judge)["agreement"] == 1.0
    assert agreement(samples=str(tmp_path / "off.npz"), judge=judge)["agreement"] == 0.0


def test_load_gan_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.ckpt does not exist"):
        load_gan(tmp_path / "missing.ckpt")
    path = _checkpoint(cli_tiny(), tmp_path / "gan.ckpt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["hyper_parameters"]["_class_path"] = "zoo.dcgan.DCGAN"
    torch.save(ckpt, tmp_path / "old.ckpt")
    with pytest.raises(ValueError, match="zoo.tools.convert_checkpoint --src .*old.ckpt"):
        load_gan(tmp_path / "old.ckpt")
    del ckpt["state_dict"]
    torch.save(ckpt, tmp_path / "empty.ckpt")
    with pytest.raises(ValueError, match="has no state_dict"):
        load_gan(tmp_path / "empty.ckpt")


# --- CAS and loss curves --------------------------------------------------------------------------
def test_cas_rewards_correct_labels_only(tmp_path, config_data, monkeypatch):
    """On real MNIST, or on the fixture digits (a class-dependent bright block) without ../shared."""
    from datamodules.mnist import MNISTDataModule

    monkeypatch.chdir(tmp_path)  # CAS trains throwaway classifiers: it must leave nothing in the working directory

    x, y = MNISTDataModule(real_per_class=100, normalization="zero_one").split("train")
    images = (x[:, 0] * 255).round().to(torch.uint8).numpy()
    good, shuffled = tmp_path / "good.npz", tmp_path / "shuffled.npz"
    np.savez(good, images=images, labels=y.numpy())
    np.savez(shuffled, images=images, labels=np.random.default_rng(0).permutation(y.numpy()))
    recipe = str(CONFIGS / "lenet_cas.yaml")
    right = cas(samples=str(good), per_class=100, epochs=5, batch_size=32, test_per_class=100, seeds=1, recipe=recipe)["cas"]
    wrong = cas(samples=str(shuffled), per_class=100, epochs=5, batch_size=32, test_per_class=100, seeds=1,
                recipe=recipe)["cas"]
    assert right > 0.8 and wrong < 0.3, (right, wrong)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.npz", "shuffled.npz"]


def test_loss_curve_figure(tmp_path):
    path = tmp_path / "metrics.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "train/d_loss", "train/g_loss", "val/d_loss"])
        for s in range(0, 40, 2):
            w.writerow([s, 1.3 - s / 100, 0.7 + s / 100, ""])
        w.writerow([40, "", "", 1.2])
    losses(metrics_csv=str(path), out=str(tmp_path / "losses.png"))
    assert (tmp_path / "losses.png").stat().st_size > 1000
    from PIL import Image

    losses(metrics_csv=str(path), out=str(tmp_path / "with_eval.png"), eval_metrics=["val/d_loss"])
    one, two = Image.open(tmp_path / "losses.png"), Image.open(tmp_path / "with_eval.png")
    assert two.width > 1.4 * one.width and two.height == one.height  # a panel per evaluation metric
    with pytest.raises(ValueError, match="no column 'val/fid'"):
        losses(metrics_csv=str(path), out=str(tmp_path / "x.png"), eval_metrics=["val/fid"])
    with pytest.raises(ValueError, match="no column 'train/d_loss'"):
        path.write_text("step,loss\n0,1\n")
        losses(metrics_csv=str(path), out=str(tmp_path / "x.png"))


@pytest.mark.parametrize("arch,channels", [("mnist28", 1), ("dcgan64", 3)])
def test_projection_discriminator_scores_the_label(arch, channels):
    model = tiny(architecture=arch, image_channels=channels, conditional=True, conditioning="projection")
    d = model.discriminator
    first_conv = next(m for m in d.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == channels  # the label enters only through the projection term
    torch.nn.init.normal_(d.project.weight)  # make the class embeddings clearly different
    size = 28 if arch == "mnist28" else 64
    x = torch.rand(2, channels, size, size) * 2 - 1
    d.eval()
    a, b = d(x, torch.tensor([0, 0])), d(x, torch.tensor([3, 3]))
    assert a.shape == (2,) and not torch.allclose(a, b), "the score must depend on the requested class"
    with pytest.raises(ValueError, match="labels are required"):
        d(x)
    d.train()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    trainer(limit_train_batches=1, limit_val_batches=0).fit(model, loader(shape=(channels, size, size)))
    assert all(not torch.equal(before[k], v) for k, v in model.named_parameters()), "some weights did not move"
    with pytest.raises(ValueError, match="conditioning"):
        tiny(conditional=True, conditioning="film")


def test_standing_statistics_average_training_mode_batches():
    model = tiny(conditional=True)
    bn = next(m for m in model.generator.modules() if isinstance(m, torch.nn.BatchNorm1d))
    seen = []
    hook = bn.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach()))
    model.standing_statistics(batches=3, batch_size=16, seed=0)
    hook.remove()
    assert len(seen) == 3 and bn.momentum == 0.1 and model.generator.training  # settings restored
    torch.testing.assert_close(bn.running_mean, torch.stack([x.mean(0) for x in seen]).mean(0))
    torch.testing.assert_close(bn.running_var, torch.stack([x.var(0) for x in seen]).mean(0))
    assert int(bn.num_batches_tracked) == 3
    with pytest.raises(ValueError, match="batch_size"):
        model.standing_statistics(batch_size=1)


def test_evaluation_refreshes_generator_statistics_once_per_step():
    model = tiny(conditional=True, standing_batches=2)
    bn = next(m for m in model.generator.modules() if isinstance(m, torch.nn.BatchNorm1d))
    t = trainer(limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=0)
    t.fit(model, loader(), loader(seed=1))
    # standing statistics: a plain average of exactly 2 batches, recomputed after the last step
    assert int(bn.num_batches_tracked) == 2 and model._bn_fresh_at == model.global_step
    calls = []
    model.standing_statistics = lambda **kw: calls.append(kw)
    model._refresh_bn()  # same step: nothing to redo
    assert calls == []
    assert tiny(standing_batches=0).hparams.standing_batches == 0
    with pytest.raises(ValueError, match="standing_batches"):
        tiny(standing_batches=-1)


@pytest.mark.parametrize("arch,channels", [("mnist28", 1), ("dcgan64", 3)])
def test_spectral_norm_discriminator(arch, channels):
    model = tiny(architecture=arch, image_channels=channels, spectral_norm=True)
    d = model.discriminator
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules())
    layers = [m for m in d.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert layers and all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in layers)
    size = 28 if arch == "mnist28" else 64
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    trainer(limit_train_batches=2, limit_val_batches=0).fit(model, loader(shape=(channels, size, size)))
    assert all(not torch.equal(before[k], v) for k, v in model.named_parameters()), "some weights did not move"
    d.train()
    for _ in range(30):  # power iterations run in training-mode forwards
        d(torch.randn(2, channels, size, size))
    for m in layers:
        w = m.weight.detach().flatten(1)
        assert torch.linalg.matrix_norm(w, ord=2) == pytest.approx(1.0, rel=0.05)


def test_one_sided_label_smoothing_targets_only_real_images(monkeypatch):
    """real_label=0.9: D's targets are 0.9 for real images, 0 for fakes, and G still aims at 1."""
    import zoo.tasks.gan as gan_task

    targets = []
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def recording(logits, target, *args, **kwargs):
        targets.append(sorted(set(target.flatten().tolist())))
        return bce(logits, target, *args, **kwargs)

    monkeypatch.setattr(gan_task.F, "binary_cross_entropy_with_logits", recording)
    trainer(limit_train_batches=1, limit_val_batches=0).fit(tiny(real_label=0.9), loader())
    assert targets[:3] == [[pytest.approx(0.9)], [0.0], [1.0]]  # D on real, D on fake, G's step


# --- checkpoints of zoo < 0.2 ---------------------------------------------------------------------
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
OLD_KEYS = {  # the state-dict keys zoo.dcgan.DCGAN wrote (read from checkpoints of that version)
    "projection28": ["fixed_z", "fixed_labels", "interp_z", "generator.project.0.weight",
                     *[f"generator.project.1.{k}" for k in _BN], "generator.net.0.weight",
                     *[f"generator.net.1.{k}" for k in _BN], "generator.net.3.weight",
                     *[f"generator.net.4.{k}" for k in _BN], "generator.net.6.weight", "generator.net.6.bias",
                     "discriminator.project.weight", "discriminator.net.0.weight", "discriminator.net.0.bias",
                     "discriminator.net.3.weight", "discriminator.net.3.bias", "discriminator.net.7.weight",
                     "discriminator.net.7.bias"],
    "spectral64": [f"discriminator.net.{i}.parametrizations.weight.{p}" for i in (0, 2, 4, 6, 8)
                   for p in ("original", "0._u", "0._v")],
}


@pytest.mark.parametrize("case,old", [
    ("projection28", {"architecture": "mnist28", "image_channels": 1, "conditional": True, "num_classes": 10,
                      "conditioning": "projection", "dropout": None, "spectral_norm": False}),
    ("spectral64", {"architecture": "dcgan64", "image_channels": 3, "conditional": False, "num_classes": 10,
                    "conditioning": "concat", "dropout": 0.0, "spectral_norm": True}),
])
def test_old_dcgan_checkpoint_converts_to_the_same_model(tmp_path, case, old):
    """A checkpoint as zoo.dcgan.DCGAN wrote it (flat hyperparameters, its optimizer by its old dotted name)
    becomes GAN(generator=Generator, discriminator=Discriminator) that samples and judges exactly the same."""
    from zoo.tools.convert_checkpoint import convert_checkpoint

    kw = {k: v for k, v in old.items() if k != "num_classes"}
    model = cli_tiny(**kw, standing_batches=0)
    src = _checkpoint(model, tmp_path / "model.ckpt")
    ckpt = torch.load(src, weights_only=True)
    keys = list(ckpt["state_dict"])
    assert keys == OLD_KEYS[case] if case == "projection28" else [k for k in keys if k.startswith("discriminator")] \
        == OLD_KEYS[case], keys  # the nets kept the old sub-module names: the weights need no renaming
    ckpt["hyper_parameters"] = {
        "_class_path": "zoo.dcgan.DCGAN", **old, "latent_dim": 8, "width": 4, "aux_weight": 1.0, "real_label": 1.0,
        "generator_optimizer": "zoo.dcgan.dcgan_adam", "discriminator_optimizer": "zoo.dcgan.dcgan_adam",
        "generator_scheduler": None, "discriminator_scheduler": None, "gradient_clip_val": None,
        "gradient_clip_algorithm": "norm", "fid_features": None, "sample_every_n_epochs": 1, "samples_per_row": 2,
        "interpolation_steps": 3, "standing_batches": 0, "seed": 0,
        "_instantiator": "lightning.pytorch.cli.instantiate_module"}
    torch.save(ckpt, tmp_path / "old.ckpt")
    with pytest.raises(ValueError, match="convert it once"):
        load_gan(tmp_path / "old.ckpt")

    convert_checkpoint(src=str(tmp_path / "old.ckpt"), dst=str(tmp_path / "new.ckpt"))
    hp = torch.load(tmp_path / "new.ckpt", weights_only=True)["hyper_parameters"]
    classes = 10 if old["conditional"] else 0
    assert hp["_class_path"] == "zoo.tasks.gan.GAN" and hp["generator_optimizer"] == "zoo.optim.dcgan_adam"
    assert hp["generator"] == {"class_path": "zoo.nets.dcgan.Generator", "init_args": {
        "architecture": old["architecture"], "latent_dim": 8, "channels": old["image_channels"], "width": 4,
        "num_classes": classes}}
    assert hp["discriminator"]["init_args"] == {
        "architecture": old["architecture"], "channels": old["image_channels"], "width": 4, "num_classes": classes,
        "conditioning": old["conditioning"], "dropout": old["dropout"], "spectral_norm": old["spectral_norm"]}
    converted = load_gan(tmp_path / "new.ckpt")
    model.eval()
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([0, 1, 5, 9]) if classes else None
    x = model.sample(z=z, labels=labels)
    torch.testing.assert_close(converted.sample(z=z, labels=labels), x, rtol=0, atol=0)
    torch.testing.assert_close(converted.discriminator(x, labels), model.discriminator(x, labels), rtol=0, atol=0)
    torch.testing.assert_close(converted.fixed_z, model.fixed_z, rtol=0, atol=0)
