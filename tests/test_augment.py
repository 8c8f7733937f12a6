"""Batched per-sample augmentation (datamodules/augment.py): geometry, determinism, errors."""

from __future__ import annotations

import math

import pytest
import torch

from datamodules.augment import (BatchAugment, apply_affine, random_affine_matrices, random_contrast,
                                 random_geometric, random_hflip)


def _images(n=6, c=1, h=16, w=16, seed=0):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def test_identity_parameters_leave_images_unchanged():
    x = _images()
    assert torch.allclose(random_geometric(x), x, atol=1e-5)


def test_hflip_through_affine_equals_exact_mirror():
    x = _images(c=3)
    assert torch.allclose(random_geometric(x, hflip=1.0), x.flip(-1), atol=1e-5)
    assert torch.equal(random_hflip(x, p=1.0), x.flip(-1))
    assert torch.equal(random_hflip(x, p=0.0), x)


def test_random_hflip_flips_some_and_not_others():
    x = _images(n=64)
    out = random_hflip(x, p=0.5, generator=torch.Generator().manual_seed(1))
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, x)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert (flipped | kept).all() and 10 < flipped.sum() < 54


def test_matrices_have_requested_area_rotation_and_stay_inside():
    g = torch.Generator().manual_seed(0)
    theta = random_affine_matrices(200, 28, 28, crop_scale=(0.5, 0.5), generator=g)
    linear, offset = theta[:, :, :2], theta[:, :, 2]
    assert torch.allclose(torch.linalg.det(linear), torch.full((200,), 0.5, dtype=torch.float64))
    half = torch.diagonal(linear, dim1=1, dim2=2).abs()  # crop half-extent in normalised units
    assert (offset.abs() + half <= 1 + 1e-9).all(), "crop must lie inside the image"
    rot = random_affine_matrices(200, 28, 28, degrees=30, generator=g)[:, :, :2]
    assert torch.allclose(torch.linalg.det(rot), torch.ones(200, dtype=torch.float64))
    angles = torch.atan2(rot[:, 1, 0], rot[:, 0, 0]) * 180 / math.pi
    assert angles.abs().max() <= 30 + 1e-6 and angles.abs().max() > 20 and angles.std() > 5
    flip = random_affine_matrices(50, 28, 28, hflip=1.0, generator=g)[:, :, :2]
    assert torch.allclose(torch.linalg.det(flip), -torch.ones(50, dtype=torch.float64))


def test_rotation_of_non_square_images_is_not_a_shear():
    theta = torch.tensor([[[0.0, -0.5, 0.0], [2.0, 0.0, 0.0]]], dtype=torch.float64)  # 90 deg, W = 2H
    x = torch.zeros(1, 1, 8, 16)
    x[0, 0, 3:5, 6:10] = 1.0  # a centred 2-row x 4-column bar
    out = apply_affine(x, theta)
    ys, xs = torch.nonzero(out[0, 0] > 0.5, as_tuple=True)
    assert len(ys) == 8 and (ys.max() - ys.min()) == 3 and (xs.max() - xs.min()) == 1, "bar must turn 4 x 2"
    # the same matrix comes out of random_affine_matrices for a +-90 degree draw
    g = torch.Generator().manual_seed(0)
    drawn = random_affine_matrices(500, 8, 16, degrees=90, generator=g)
    ratio = drawn[:, 1, 0] / drawn[:, 0, 1]
    assert torch.allclose(ratio[drawn[:, 0, 1].abs() > 1e-3], torch.tensor(-4.0, dtype=torch.float64))


def test_translation_moves_mass_by_at_most_the_bound():
    x = torch.zeros(32, 1, 28, 28)
    x[:, :, 12:16, 12:16] = 1.0
    out = random_geometric(x, translate=0.1, generator=torch.Generator().manual_seed(0))
    grid = torch.arange(28, dtype=torch.float32)
    cx = (out[:, 0].sum(1) * grid).sum(1) / out[:, 0].sum((1, 2))
    shift = (cx - 13.5).abs()
    assert shift.max() <= 0.1 * 28 + 0.5 and shift.max() > 1.0


def test_same_seed_same_output_and_each_sample_gets_its_own_parameters():
    x = _images(n=1).repeat(8, 1, 1, 1)
    kw = dict(degrees=20, translate=0.1, crop_scale=(0.7, 1.0))
    a = random_geometric(x, **kw, generator=torch.Generator().manual_seed(3))
    b = random_geometric(x, **kw, generator=torch.Generator().manual_seed(3))
    c = random_geometric(x, **kw, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert not torch.allclose(a[0], a[1]), "identical inputs must get different random warps"


def test_contrast_keeps_mean_and_scales_deviation():
    x = _images(n=50) * 0.5 + 0.25
    out = random_contrast(x, strength=0.3, generator=torch.Generator().manual_seed(0), value_range=None)
    assert torch.allclose(out.mean((1, 2, 3)), x.mean((1, 2, 3)), atol=1e-5)
    ratio = out.std((1, 2, 3)) / x.std((1, 2, 3))
    assert ratio.min() >= 0.7 - 1e-4 and ratio.max() <= 1.3 + 1e-4 and ratio.std() > 0.05
    clamped = random_contrast(x, strength=0.9, generator=torch.Generator().manual_seed(0))
    assert clamped.min() >= 0 and clamped.max() <= 1


def test_batch_augment_module_is_seeded_and_keeps_shape_dtype():
    x = _images(n=4, c=3, h=32, w=32)
    a = BatchAugment(degrees=10, translate=0.1, crop_scale=(0.8, 1), hflip=0.5, contrast=0.2, seed=5)
    b = BatchAugment(degrees=10, translate=0.1, crop_scale=(0.8, 1), hflip=0.5, contrast=0.2, seed=5)
    out = a(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out, b(x)) and not torch.allclose(a(x), out), "generator must advance between calls"


@pytest.mark.parametrize("kwargs, match", [
    (dict(crop_scale=(0.0, 1.0)), "crop_scale"),
    (dict(crop_scale=(0.9, 0.5)), "crop_scale"),
    (dict(degrees=-1), "degrees"),
    (dict(hflip=1.5), "hflip"),
    (dict(contrast=1.0), "contrast"),
])
def test_bad_settings_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BatchAugment(**kwargs)


def test_bad_input_raises():
    with pytest.raises(TypeError, match="floating-point"):
        random_geometric(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), degrees=5)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        random_hflip(torch.zeros(8, 8))
    with pytest.raises(ValueError, match="theta"):
        apply_affine(torch.zeros(2, 1, 8, 8), torch.zeros(3, 2, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_matches_cpu_for_the_same_seed():
    x = _images(n=8)
    kw = dict(degrees=15, translate=0.1, crop_scale=(0.8, 1.0), hflip=0.5)
    cpu = random_geometric(x, **kw, generator=torch.Generator().manual_seed(0))
    gpu = random_geometric(x.cuda(), **kw, generator=torch.Generator().manual_seed(0))
    assert gpu.is_cuda and torch.allclose(gpu.cpu(), cpu, atol=1e-4)
