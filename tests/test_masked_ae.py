"""MaskedAENet and the MaskedAE task: exact, seeded masks; corruption; both architectures; loss on masked
pixels; learning (with and without Lightning); metrics and the reconstruction figure through a real Trainer;
legacy zoo.masked_ae.MaskedAE checkpoints."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from zoo.nets.masked_ae import MaskedAENet
from zoo.tasks.masked_ae import MaskedAE, corrupt, make_mask, pixel_accuracy
from zoo.tools.convert_checkpoint import convert_checkpoint


def _ae(architecture: str = "dense", image_size: int = 8, hidden: int = 16, bottleneck: int = 4,
        conv_channels=(8, 16), **task) -> MaskedAE:
    net = MaskedAENet(architecture=architecture, image_size=image_size, hidden=hidden, bottleneck=bottleneck,
                      conv_channels=conv_channels)
    return MaskedAE(net, **task)


@pytest.mark.parametrize("mask_type,ratio,size", [("pixel", 0.2, 10), ("pixel", 0.6, 10), ("patch", 0.4, 20),
                                                   ("patch", 0.8, 20), ("pixel", 0.4, 32), ("patch", 0.6, 32)])
def test_mask_hides_exactly_the_requested_fraction(mask_type, ratio, size):
    g = torch.Generator().manual_seed(0)
    mask = make_mask((5, 3, size, size), ratio, mask_type, patch_size=4, generator=g)
    assert mask.shape == (5, 1, size, size) and mask.dtype == torch.bool
    cells = size * size if mask_type == "pixel" else (size // 4) ** 2
    hidden = mask.flatten(1).sum(1)
    # every sample hides round(ratio * cells) cells: exactly the ratio when it divides evenly, else within half a cell
    cell_pixels = 1 if mask_type == "pixel" else 16
    assert (hidden == round(ratio * cells) * cell_pixels).all(), hidden
    assert ((hidden.float() / (size * size) - ratio).abs() <= 0.5 / cells + 1e-9).all()
    if size in (10, 20):
        assert (hidden.float() / (size * size) == ratio).all()
    assert not torch.equal(mask[0], mask[1])  # masks differ between samples
    if mask_type == "patch":  # every 4x4 grid cell is fully hidden or fully visible
        n = size // 4
        blocks = mask.view(5, n, 4, n, 4).float().mean((2, 4))
        assert set(blocks.unique().tolist()) <= {0.0, 1.0}


def test_mask_is_deterministic_for_a_seed():
    a = make_mask((4, 3, 16, 16), 0.5, "pixel", generator=torch.Generator().manual_seed(7))
    b = make_mask((4, 3, 16, 16), 0.5, "pixel", generator=torch.Generator().manual_seed(7))
    c = make_mask((4, 3, 16, 16), 0.5, "pixel", generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    ae = _ae(mask_type="patch", patch_size=2, noise_sigma=0.1, mask_seed=3)
    x = torch.rand(2, 3, 8, 8)
    c1, m1 = ae.corrupt_batch(x, torch.Generator().manual_seed(3))
    c2, m2 = ae.corrupt_batch(x, torch.Generator().manual_seed(3))
    assert torch.equal(c1, c2) and torch.equal(m1, m2)


def test_corrupt_masks_then_adds_noise():
    x = torch.rand(3, 3, 16, 16)
    mask = make_mask(x.shape, 0.5, "pixel", generator=torch.Generator().manual_seed(1))
    out = corrupt(x, mask, noise_sigma=0.0, mask_value=0.25)
    m = mask.expand_as(x)
    assert (out[m] == 0.25).all() and torch.equal(out[~m], x[~m])
    noisy = corrupt(x, torch.zeros_like(mask), noise_sigma=0.2, generator=torch.Generator().manual_seed(0))
    assert abs((noisy - x).std().item() - 0.2) < 0.02
    with pytest.raises(ValueError, match="divisible"):
        make_mask((1, 3, 10, 10), 0.5, "patch", patch_size=4)
    with pytest.raises(ValueError, match="mask_ratio"):
        make_mask((1, 3, 8, 8), 1.5)


@pytest.mark.parametrize("architecture,code_shape", [("dense", (32,)), ("conv", (32, 4, 4))])
def test_architectures_shapes_and_attributes(architecture, code_shape):
    net = MaskedAENet(architecture=architecture, image_size=16, hidden=64, bottleneck=32, conv_channels=(8, 16))
    x = torch.rand(2, 3, 16, 16)
    code = net.encoder(x)
    assert tuple(code.shape[1:]) == code_shape
    recon = net.decoder(code)
    assert recon.shape == x.shape and 0 <= recon.min() and recon.max() <= 1
    assert net.encode(x).shape == (2, int(torch.tensor(code_shape).prod())) and net.input_shape == (3, 16, 16)
    torch.testing.assert_close(net(x), recon)
    with pytest.raises(ValueError, match="image_size"):
        MaskedAE(net).training_step((torch.rand(2, 3, 8, 8), torch.zeros(2)), 0)
    with pytest.raises(ValueError, match=r"divisible by 2\^2"):
        MaskedAENet(architecture="conv", image_size=18, conv_channels=(8, 16))


def test_dense_has_three_hidden_layers_around_the_bottleneck():
    net = MaskedAENet(architecture="dense", image_size=8, hidden=40, bottleneck=16)
    widths = [m.out_features for m in [*net.encoder, *net.decoder] if isinstance(m, torch.nn.Linear)]
    assert widths == [40, 16, 40, 3 * 8 * 8]


def test_loss_on_masked_pixels_ignores_visible_ones():
    ae = _ae(loss_on="masked")
    x = torch.rand(2, 3, 8, 8)
    mask = make_mask(x.shape, 0.5, "pixel", generator=torch.Generator().manual_seed(0))
    recon = x.clone()
    recon[~mask.expand_as(x)] = 0.0  # wrong only where visible
    assert ae._loss(recon, x, mask).item() == 0.0
    assert _ae()._loss(recon, x, mask).item() > 0
    with pytest.raises(ValueError, match="loss_on='masked'"):
        _ae(mask_type="none", loss_on="masked")
    # 3 % of 16 patches of 8x8 rounds to none hidden: the masked loss would be a mean over nothing (NaN)
    with pytest.raises(ValueError, match="hides none of the 16 cells"):
        _ae(image_size=32, mask_type="patch", patch_size=8, mask_ratio=0.03, loss_on="masked")
    _ae(image_size=32, mask_type="patch", patch_size=8, mask_ratio=0.04, loss_on="masked")  # hides 1
    with pytest.raises(ValueError, match="divisible by patch_size=3"):
        _ae(image_size=32, mask_type="patch", patch_size=3)


@pytest.mark.parametrize("architecture", ["dense", "conv"])
def test_loss_decreases_on_a_fixed_batch(architecture):
    torch.manual_seed(0)
    ae = _ae(architecture, image_size=16, hidden=64, bottleneck=16, mask_ratio=0.3)
    x = torch.rand(8, 1, 1, 1) * torch.ones(8, 3, 16, 16)  # flat-colour images: learnable in few steps
    opt = torch.optim.Adam(ae.parameters(), lr=3e-3)
    losses = []
    for step in range(40):
        gen = torch.Generator().manual_seed(step)
        corrupted, mask = ae.corrupt_batch(x, gen)
        loss = ae._loss(ae(corrupted), x, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::8]


def test_pixel_accuracy_counts_values_within_tolerance():
    x = torch.zeros(1, 1, 2, 2)
    recon = torch.tensor([[[[0.05, 0.2], [-0.1, 0.5]]]])
    assert pixel_accuracy(recon, x).mean().item() == 0.5


def test_trainer_logs_all_metrics_and_the_figure(tmp_path):
    torch.manual_seed(0)
    data = TensorDataset(torch.rand(16, 3, 8, 8), torch.zeros(16, dtype=torch.long))
    loader = DataLoader(data, batch_size=8)
    ae = _ae(num_figure_images=4)
    trainer = L.Trainer(max_epochs=1, logger=CSVLogger(tmp_path), enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(ae, loader, loader)
    metrics = trainer.callback_metrics
    for name in ("train/loss", "val/loss", "val/mse", "val/mae", "val/psnr", "val/ssim", "val/pixel_acc"):
        assert name in metrics, sorted(metrics)
    # PSNR uses data_range=1: it must match 10 log10(1 / MSE)
    assert abs(metrics["val/psnr"].item() - 10 * torch.log10(1 / metrics["val/mse"]).item()) < 1e-3
    assert 0 <= metrics["val/pixel_acc"].item() <= 1
    results = trainer.test(ae, loader, verbose=False)[0]
    assert {"test/mse", "test/ssim", "test/psnr"} <= set(results)
    figures = list(tmp_path.rglob("*reconstructions*.png"))
    assert any("val" in f.name for f in figures) and any("test" in f.name for f in figures), figures


def test_training_masks_follow_the_run_seed_unless_pinned():
    x = torch.rand(2, 3, 32, 32)

    def training_mask_seed(run_seed: int, **kw) -> int:
        torch.manual_seed(run_seed)  # what seed_everything does
        model = _ae(image_size=32, hidden=32, bottleneck=8, **kw)
        model.training_step((x,), 0)  # outside a trainer: self.log only warns
        return model._train_gen.initial_seed()

    assert training_mask_seed(0) == 0 and training_mask_seed(7) == 7
    assert training_mask_seed(0, mask_seed=3) == training_mask_seed(7, mask_seed=3) == 3


def test_validation_masks_are_the_same_every_time():
    """val/mse picks the best checkpoint: it must not depend on the global random state."""
    torch.manual_seed(0)
    model = _ae()
    data = DataLoader(TensorDataset(torch.rand(6, 3, 8, 8)), batch_size=3)
    seen = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
        seen.append(trainer.validate(model, data, verbose=False)[0])
    assert seen[0]["val/mse"] == seen[1]["val/mse"] and seen[0]["val/loss"] == seen[1]["val/loss"]


def test_net_learns_without_lightning():
    """A plain torch loop on a masked batch: the net needs no task."""
    torch.manual_seed(0)
    net = MaskedAENet(architecture="conv", image_size=16, conv_channels=(8, 16), bottleneck=8)
    x = torch.rand(8, 1, 1, 1) * torch.ones(8, 3, 16, 16)
    mask = make_mask(x.shape, 0.3, "patch", patch_size=4, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.mse_loss(net(corrupt(x, mask)), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::8]


def test_legacy_checkpoint_converts_to_the_same_model(tmp_path):
    """An old ``zoo.masked_ae.MaskedAE`` checkpoint (flat hyperparameters, encoder/decoder weights at the top)."""
    from zoo.checkpoints import load_cli_checkpoint

    torch.manual_seed(0)
    net_args = {"architecture": "conv", "image_size": 8, "channels": 3, "bottleneck": 4, "hidden": 1024,
                "conv_channels": [4, 8]}
    old = MaskedAENet(**net_args)  # the old class built the same encoder/decoder in the same order
    old.train()(torch.rand(4, 3, 8, 8))  # batch-norm running statistics that must come along
    task_args = {"mask_type": "patch", "mask_ratio": 0.25, "patch_size": 2, "noise_sigma": 0.05, "mask_value": 0.5,
                 "loss_on": "masked", "mask_seed": 7, "num_figure_images": 3}
    src = tmp_path / "old.ckpt"
    torch.save({"state_dict": dict(old.state_dict()), "pytorch-lightning_version": L.__version__,
                "hyper_parameters": {"_class_path": "zoo.masked_ae.MaskedAE", **net_args, **task_args,
                                     "_instantiator": "lightning.pytorch.cli.instantiate_module"}}, src)
    with pytest.raises(ValueError, match="convert it once with `python -m zoo.tools.convert_checkpoint"):
        load_cli_checkpoint(src)
    model, _ = load_cli_checkpoint(convert_checkpoint(src=str(src), dst=str(tmp_path / "new.ckpt")))
    assert isinstance(model, MaskedAE) and isinstance(model.net, MaskedAENet)
    assert {k: getattr(model, k) for k in task_args} == task_args
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(x), old.eval()(x))
        _, mask = model.corrupt_batch(x, torch.Generator().manual_seed(1))
        assert torch.equal(mask, make_mask(x.shape, 0.25, "patch", 2, torch.Generator().manual_seed(1)))
