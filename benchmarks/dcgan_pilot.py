"""The first few hundred batches of the DCGAN-paper recipe on an image folder, in a plain loop: what D and G
do early, and whether the samples vary (docs/dcgan.md, "What was wrong").

The loop is the one of PyTorch's DCGAN example on the zoo's nets; ``tests/test_dcgan.py`` checks that the
GAN task's step gives the same losses, so what this shows holds for ``python -m zoo fit`` too. It samples in
*training* mode (batch statistics), as the example does, so no running-average effect can hide the samples.

    python benchmarks/dcgan_pilot.py --folder $ZOO_DATA_DIR/anime-face-crops/images --batches 300 --out faces.png
    python benchmarks/dcgan_pilot.py --folder $ZOO_DATA_DIR/anime-faces/images --batches 300 --out sprites.png

Every 25 batches it prints D's and G's losses, D's mean score on real and fake images, and the samples'
spread and diversity (:class:`zoo.metrics.SampleDiversity` against 64 real images); at the end it saves an
8x8 grid of samples.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from zoo.metrics import SampleDiversity
from zoo.nets.dcgan import Discriminator, Generator, dcgan_init


def load_folder(folder: str, limit: int) -> torch.Tensor:
    """Up to ``limit`` images of ``folder`` (sorted names) as 64x64 RGB in [-1, 1]; RGBA on white."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:limit]
    if not files:
        raise FileNotFoundError(f"dcgan_pilot: no PNG/JPEG images in {folder}")

    def load(path: Path) -> np.ndarray:
        im = Image.open(path)
        if im.mode == "RGBA":
            background = Image.new("RGBA", im.size, (255, 255, 255, 255))
            background.alpha_composite(im)
            im = background
        return np.asarray(im.convert("RGB").resize((64, 64), Image.BILINEAR))

    return torch.from_numpy(np.stack([load(p) for p in files])).permute(0, 3, 1, 2).float() / 127.5 - 1


def pilot(*, folder: str, batches: int = 300, width: int = 32, batch_size: int = 64, spectral_norm: bool = False,
          limit: int = 4000, seed: int = 0, out: str | None = None) -> list[dict]:
    """Train ``batches`` DCGAN steps on ``folder`` and print the early dynamics every 25 batches.

    Args:
        folder: a flat folder of images.
        batches: training batches (one D and one G step each).
        width: channel multiplier of both nets (64 = the paper's).
        batch_size: images per batch.
        spectral_norm: spectral-normalised D instead of the paper's batch-normalised one.
        limit: read at most this many images.
        seed: seed of the weights, batches and noise.
        out: PNG of an 8x8 grid of training-mode samples at the end; None: no grid.
    """
    x_all = load_folder(folder, limit)
    print(f"{folder}: {len(x_all)} images, mean {x_all.mean():.3f}, std {x_all.std():.3f}", flush=True)
    torch.manual_seed(seed)
    G, D = Generator("dcgan64", 100, 3, width), Discriminator("dcgan64", 3, width, dropout=0.0, spectral_norm=spectral_norm)
    G.apply(dcgan_init)
    D.apply(dcgan_init)
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    z_fixed, ones, zeros = torch.randn(64, 100), torch.ones(batch_size), torch.zeros(batch_size)
    start, window, rows = time.time(), [], []
    for step in range(1, batches + 1):
        x = x_all[torch.randint(len(x_all), (batch_size,))]
        fake = G(torch.randn(batch_size, 100))
        d_real, d_fake = D(x), D(fake.detach())
        d_loss = F.binary_cross_entropy_with_logits(d_real, ones) + F.binary_cross_entropy_with_logits(d_fake, zeros)
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = F.binary_cross_entropy_with_logits(D(fake), ones)
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        window.append((d_loss.item(), g_loss.item(), torch.sigmoid(d_real).mean().item(),
                       torch.sigmoid(d_fake).mean().item()))
        if step % 25 == 0 or step == batches:
            d, g, real, fake_score = np.mean(window, 0)
            window = []
            with torch.no_grad():
                samples = G(z_fixed)  # training mode: batch statistics, as the example samples
            diversity = SampleDiversity()
            diversity.update(x_all[:64], real=True)
            diversity.update(samples, real=False)
            row = {"batch": step, "d_loss": d, "g_loss": g, "D(x)": real, "D(G(z))": fake_score,
                   "sample_std": samples.std().item(), "diversity": diversity.compute().item()}
            rows.append(row)
            print(f"batch {step}: D loss {d:.3f}, G loss {g:.3f}, D(x) {real:.2f}, D(G(z)) {fake_score:.2f}, "
                  f"samples std {row['sample_std']:.3f}, diversity {row['diversity']:.3f} "
                  f"({time.time() - start:.0f} s)", flush=True)
    if out:
        import torchvision.utils as vutils

        with torch.no_grad():
            vutils.save_image((G(z_fixed) + 1) / 2, out, nrow=8)
        print(f"samples: {out}")
    return rows


if __name__ == "__main__":
    from jsonargparse import auto_cli

    auto_cli(pilot)
