"""Export class-conditional GAN samples as a sample file for the MNIST DataModule.

``python -m zoo.tools.sample_export --checkpoint X.ckpt --per_class 1000 --out samples.npz``

The file holds ``images``: uint8 ``(N, 28, 28)`` (0-255, digit white on black like MNIST) and
``labels``: int64 ``(N,)``, ``per_class`` of every class in class order. This is the format
:func:`datamodules.mnist.load_synthetic` reads for ``--data.synthetic_path`` /
``--data.synthetic_per_class`` (ReducedMNIST).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Generator output in [-1, 1] ``(N, 1, H, W)`` -> uint8 ``(N, H, W)``, rounding to the nearest level."""
    return ((images.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)[:, 0].numpy()


@torch.no_grad()
def export_samples(*, checkpoint: str, per_class: int, out: str, seed: int = 0, batch_size: int = 500,
                   standing_batches: int = 100, device: str = "cpu") -> Path:
    """Write ``per_class`` samples of every class of a class-conditional GAN checkpoint to ``out``.

    Args:
        checkpoint: a GAN checkpoint whose nets are class-conditional (``num_classes: 10``,
            ``configs/dcgan_mnist_conditional.yaml``).
        per_class: samples per class.
        out: output ``.npz`` path (parent folders are created).
        seed: latent-noise seed (the same seed gives the same file).
        batch_size: samples generated per forward pass.
        standing_batches: re-estimate the generator's batch-norm statistics from this many
            training-mode batches of 128 random codes first (what G was trained with; see
            :meth:`zoo.tasks.gan.GAN.standing_statistics`); 0 samples with the checkpoint's running
            averages as they are. The same knob as ``GAN(standing_batches=...)`` and ``gan_eval grid``.
        device: torch device to generate on.
    """
    from zoo.tasks.gan import load_gan

    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    model = load_gan(checkpoint, map_location=device)
    if not model.num_classes:
        raise ValueError(f"{checkpoint}: the model is unconditional (its generator has num_classes=0); per-class "
                         "samples need a model trained with class-conditional nets "
                         "(configs/dcgan_mnist_conditional.yaml)")
    if model.image_channels != 1 or model.image_size != 28:
        raise ValueError(f"{checkpoint}: the sample file is for the MNIST DataModule, gray 28x28 (N, 28, 28); "
                         f"this model makes {model.image_channels}-channel {model.image_size}x{model.image_size} "
                         "images (train nets with architecture mnist28 and channels 1)")
    if standing_batches < 0:
        raise ValueError(f"standing_batches must be >= 0 (0 = the checkpoint's running averages), got {standing_batches}")
    if standing_batches:
        model.standing_statistics(batches=standing_batches, seed=seed)
    labels = torch.arange(model.num_classes).repeat_interleave(per_class)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(len(labels), model.latent_dim, generator=g)
    images = []
    for i in tqdm(range(0, len(labels), batch_size), desc=f"sampling {len(labels)} images", leave=False):
        images.append(to_uint8(model.sample(labels=labels[i:i + batch_size], z=z[i:i + batch_size])))
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_samples(out_path, np.concatenate(images), labels.numpy())
    print(f"wrote {len(labels)} samples ({per_class} per class) to {out_path}")
    return out_path


def save_samples(path: str | Path, images: np.ndarray, labels: np.ndarray) -> None:
    _check(path, images, labels)
    np.savez_compressed(path, images=images, labels=labels.astype(np.int64))


def load_samples(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (N, H, W), labels int64 (N,))`` of a sample file, validated."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sample file {path} does not exist")
    with np.load(path, allow_pickle=False) as f:
        if not {"images", "labels"} <= set(f.files):
            raise ValueError(f"{path}: expected arrays 'images' and 'labels', found {sorted(f.files)}")
        images, labels = f["images"], f["labels"]
    _check(path, images, labels)
    return images, labels


def _check(path, images: np.ndarray, labels: np.ndarray) -> None:
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"{path}: 'images' must be uint8 (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: 'labels' must be integers of shape ({len(images)},), got {labels.dtype} "
                         f"{labels.shape}")


def main(args: list[str] | None = None):
    from jsonargparse import auto_cli

    return auto_cli(export_samples, args=args)


if __name__ == "__main__":
    main()
