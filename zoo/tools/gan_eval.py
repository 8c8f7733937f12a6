"""GAN evaluation that needs no downloaded weights (``python -m zoo.tools.gan_eval <command> --help``).

* **FID with own features**: torchmetrics' :class:`FrechetInceptionDistance` with a zoo-trained MNIST
  classifier (e.g. the best checkpoint of ``configs/lenet_mnist.yaml``) in place of Inception.
  Its penultimate layer is the embedding (:func:`zoo.metrics.classifier_fid`, which the GAN task's
  ``val/fid`` uses too). Numbers are only comparable with the same feature
  checkpoint and sample count, so ``fid-floor`` reports the real-vs-real value of a held-out real
  set with the same setup: the score a perfect generator would get.
* **Classification Accuracy Score** (Ravuri & Vinyals, 2019): train LeNet5 on generated images
  only, test on the real MNIST test set. It rewards samples that are both recognisable and
  diverse enough to cover each class, which FID alone does not separate.
* Figures for the docs: sample grid and interpolation from a checkpoint, D/G loss curves from a
  CSVLogger ``metrics.csv``.

Commands: ``fid``, ``fid-floor``, ``cas``, ``agreement``, ``grid``, ``losses``, ``montage``.
"""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml

from zoo.metrics import classifier_fid, load_judge
from zoo.safe_load import load_checkpoint


def fid_between(features: str, real01: torch.Tensor, fake01: torch.Tensor, batch_size: int = 1000) -> float:
    metric = classifier_fid(features)
    for src, is_real in ((real01, True), (fake01, False)):
        for i in range(0, len(src), batch_size):
            metric.update(src[i:i + batch_size], real=is_real)
    return float(metric.compute())


def _real(split: str, data_dir: str | None, n: int | None, seed: int) -> torch.Tensor:
    """``n`` random real MNIST images (all when ``None``) of the official train or test split, in [0, 1]."""
    from datamodules.mnist import load_mnist

    x, _ = load_mnist(data_dir, train=(split == "train"))
    if n is not None:
        if n > len(x):
            raise ValueError(f"asked for {n} real {split} images, MNIST {split} has {len(x)}")
        x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]]
    return x.unsqueeze(1).float().div(255)


def _samples(path: str) -> tuple[torch.Tensor, torch.Tensor]:
    from zoo.tools.sample_export import load_samples

    images, labels = load_samples(path)
    return torch.from_numpy(images).unsqueeze(1).float().div(255), torch.from_numpy(labels)


# --- commands ------------------------------------------------------------------------------------
def fid(*, samples: str, features: str, data_dir: str | None = None) -> dict:
    """FID of an exported sample file (``zoo.tools.sample_export``) against the real MNIST test set.

    Args:
        samples: ``.npz`` with ``images`` uint8 (N, 28, 28) and ``labels``.
        features: zoo classifier checkpoint whose penultimate layer is the embedding.
        data_dir: folder holding ``MNIST/raw`` (default ``$ZOO_DATA_DIR``).
    """
    fake, _ = _samples(samples)
    real = _real("test", data_dir, None, 0)
    out = {"fid": fid_between(features, real, fake), "n_fake": len(fake), "n_real": len(real)}
    print(json.dumps(out, indent=2))
    return out


def fid_floor(*, features: str, n: int = 10000, data_dir: str | None = None, seed: int = 0) -> dict:
    """Real-vs-real FID: the best score possible with these features and sample sizes.

    ``n`` real *training* images scored against the real test set, i.e. what a generator that samples
    the data distribution exactly would get.

    Args:
        features: zoo classifier checkpoint (same as for ``fid``).
        n: number of held-out real images standing in for the generated set.
        data_dir: folder holding ``MNIST/raw``.
        seed: which ``n`` training images.
    """
    real = _real("test", data_dir, None, 0)
    other = _real("train", data_dir, n, seed)
    out = {"fid_real_vs_real": fid_between(features, real, other), "n_fake": len(other), "n_real": len(real)}
    print(json.dumps(out, indent=2))
    return out


def agreement(*, samples: str, judge: str) -> dict:
    """Label agreement: how many samples a real-MNIST classifier puts in the class they were made for.

    The fraction, overall and per class, of samples that a zoo classifier trained on real MNIST assigns
    to the class they were generated for. It separates the two ways CAS can
    fail: wrong-class samples (low agreement) vs right-class samples too unlike real ones (high
    agreement, low CAS).

    Args:
        samples: exported ``.npz`` sample file.
        judge: zoo classifier checkpoint (e.g. the FID feature checkpoint).
    """
    model, norm = load_judge(judge)
    from datamodules.mnist import normalize

    x01, y = _samples(samples)
    with torch.no_grad():
        pred = torch.cat([model(normalize(x01[i:i + 1000], norm)).argmax(1) for i in range(0, len(x01), 1000)])
    hit = (pred == y).float()
    out = {"agreement": float(hit.mean()),
           "per_class": {int(c): round(float(hit[y == c].mean()), 4) for c in torch.unique(y)}}
    print(json.dumps(out, indent=2))
    return out


def cas(*, samples: str | None = None, per_class: int = 1000, recipe: str = "configs/lenet_cas.yaml",
        epochs: int | None = None, batch_size: int | None = None, seeds: int = 3,
        test_per_class: int | None = None, data_dir: str | None = None, seed: int = 0,
        accelerator: str = "cpu") -> dict:
    """Classification Accuracy Score: test accuracy on real MNIST of a LeNet-5 trained on samples only.

    LeNet-5 trained on ``per_class`` generated images per class (no real data is seen before
    testing), tested on the 10,000 real MNIST test images; mean and sample std over ``seeds``
    classifier seeds.

    The classifier is built and trained as ``recipe`` (a ``python -m zoo fit`` config) says: by
    default ``configs/lenet_cas.yaml``, a LeNet-5 recipe tuned for 1,000 real images per class. A classifier
    trained on synthetic data and tested on real data varies with its seed by 1-3 points, hence
    several seeds.

    Args:
        samples: exported ``.npz`` sample file; ``None`` trains on ``per_class`` *real* training images
            instead (the reference the score is compared with).
        per_class: training images per class.
        recipe: config whose model, optimizer, scheduler, epochs and batch size train the classifier.
        epochs: override the recipe's epochs (the cosine schedule is stretched to match).
        batch_size: override the recipe's batch size.
        seeds: classifier seeds ``seed, seed + 1, ...``.
        test_per_class: real test images per class (``None``: all 10,000; fewer only for quick checks).
        data_dir: folder holding ``MNIST/raw``.
        seed: first seed (subset choice, initialisation, batch order).
        accelerator: Lightning accelerator.
    """
    from datamodules.mnist import (
        MNISTDataModule,
        batch_loader,
        load_mnist,
        load_synthetic,
        normalize,
    )
    from datamodules.splits import take_per_class
    from zoo.cli import main as cli_main

    if seeds < 1:
        raise ValueError(f"cas: seeds must be >= 1, got {seeds}")
    if not Path(recipe).is_file():
        raise FileNotFoundError(f"cas: recipe {recipe} does not exist; expected a zoo config such as "
                                "configs/lenet_cas.yaml")
    xt, yt = load_mnist(data_dir, train=False)
    if test_per_class is not None:
        (idx,) = take_per_class(yt, [test_per_class], torch.Generator().manual_seed(seed), 10, what="cas test set")
        xt, yt = xt[idx], yt[idx]
    test = batch_loader(normalize(xt.unsqueeze(1).float().div(255), "standard"), yt, 1000, shuffle=False)
    args = ["--config", recipe, "--trainer.logger", "false", "--trainer.enable_checkpointing", "false",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.accelerator", accelerator, "--trainer.devices", "1"]
    if epochs is not None:
        args += ["--trainer.max_epochs", str(epochs)]
        if ((yaml.safe_load(Path(recipe).read_text()) or {}).get("model") or {}).get("init_args", {}).get("scheduler"):
            args += ["--model.scheduler.init_args.T_max", str(epochs)]  # stretch the schedule with the epochs
    scores = []
    scratch = tempfile.mkdtemp(prefix="zoo_cas_")  # the throwaway classifiers' config.yaml; nothing else is kept
    for s in range(seed, seed + seeds):
        cli = cli_main(args + ["--seed_everything", str(s), "--trainer.default_root_dir", scratch], run=False)
        g = torch.Generator().manual_seed(s)
        if samples is not None:
            x01, y = load_synthetic(samples, per_class, g)
        else:
            dm = MNISTDataModule(data_dir=data_dir, real_per_class=per_class, normalization="zero_one", split_seed=s)
            x01, y = dm.split("train")
        bs = batch_size or getattr(cli.datamodule, "batch_size", 64)
        cli.trainer.fit(cli.model, train_dataloaders=batch_loader(normalize(x01, "standard"), y, bs, shuffle=True))
        scores.append(float(cli.trainer.test(cli.model, dataloaders=test, verbose=False)[0]["test/acc"]))
    shutil.rmtree(scratch, ignore_errors=True)
    mean = float(np.mean(scores))
    std = float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0
    out = {"cas" if samples else "real_reference_acc": mean, "std": std, "per_seed": scores,
           "train_images": len(y), "test_images": len(yt), "recipe": recipe,
           "source": samples or f"real MNIST ({per_class}/class)"}
    print(json.dumps(out, indent=2))
    return out


def grid(*, checkpoint: str, out: str, interpolation_out: str | None = None, standing_batches: int = 50) -> None:
    """Fixed-noise sample grid (one row per class if conditional) of a GAN checkpoint, as a PNG.

    Args:
        checkpoint: GAN checkpoint (``python -m zoo fit --config configs/dcgan_mnist*.yaml``).
        out: PNG path of the sample grid.
        interpolation_out: optional PNG path of the latent interpolation figure.
        standing_batches: re-estimate G's batch-norm statistics from this many training-mode
            batches first (``GAN.standing_statistics``); 0 keeps the checkpoint's.
    """
    from zoo.figures import save_figure
    from zoo.tasks.gan import load_gan

    model = load_gan(checkpoint)
    if standing_batches:
        model.standing_statistics(batches=standing_batches)
    epoch = load_checkpoint(checkpoint, "GAN checkpoint").get("epoch")  # weights-only, as load_gan
    title = f"{Path(checkpoint).name} (after epoch {epoch + 1})" if epoch is not None else Path(checkpoint).name
    print(save_figure(model.sample_grid_figure(title), out))
    if interpolation_out:
        print(save_figure(model.interpolation_figure(), interpolation_out))


def read_metrics_csv(path: str | Path, keys: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``key -> (steps, values)`` from a CSVLogger ``metrics.csv`` (rows without the key are skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metrics file {path} does not exist (a CSVLogger run writes <log_dir>/metrics.csv)")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    out = {}
    for key in keys:
        if not rows or key not in rows[0]:
            raise ValueError(f"{path}: no column {key!r}; columns are {list(rows[0]) if rows else []}")
        pts = [(int(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
        out[key] = (np.array([p[0] for p in pts]), np.array([p[1] for p in pts]))
    return out


def losses(*, metrics_csv: str, out: str, smooth: int = 5, title: str = "DCGAN losses",
           eval_metrics: list[str] | None = None) -> None:
    """Discriminator and generator loss curves from a CSVLogger ``metrics.csv``, as a PNG; with
    ``eval_metrics`` (e.g. ``[val/fid, val/diversity]``) one more panel per metric, over the same steps,
    so a falling FID or a collapsing diversity can be read against the losses.

    Args:
        metrics_csv: path of the run's ``metrics.csv``.
        out: PNG path.
        smooth: moving-average window (logged points) drawn over the raw curve.
        title: figure title.
        eval_metrics: per-evaluation metrics to draw in panels of their own.
    """
    import matplotlib.pyplot as plt

    from zoo.figures import save_figure

    eval_metrics = list(eval_metrics or [])
    curves = read_metrics_csv(metrics_csv, ["train/d_loss", "train/g_loss", *eval_metrics])
    fig, axes = plt.subplots(1, 1 + len(eval_metrics), figsize=(6 + 3.2 * len(eval_metrics), 3.2), squeeze=False)
    ax = axes[0][0]
    for key, color in (("train/d_loss", "tab:blue"), ("train/g_loss", "tab:orange")):
        steps, vals = curves[key]
        ax.plot(steps, vals, color=color, alpha=0.3, lw=0.8)
        if len(vals) >= smooth > 1:
            ax.plot(steps[smooth - 1:], np.convolve(vals, np.ones(smooth) / smooth, "valid"), color=color, label=key)
        else:
            ax.plot(steps, vals, color=color, label=key)
    ax.set_xlabel("training batches (one D and one G step each)")
    ax.set_ylabel("BCE loss")
    ax.set_title(title)
    ax.legend()
    for ax, key in zip(axes[0][1:], eval_metrics):
        steps, vals = curves[key]
        ax.plot(steps, vals, "o-", color="tab:green")
        ax.set_xlabel("training batches")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    print(save_figure(fig, out))


def montage(*, images: list[str], out: str, titles: list[str] | None = None, width: float = 10.0) -> None:
    """Several logged PNGs (e.g. the sample grids of different epochs) side by side in one small PNG.

    Args:
        images: PNG paths, left to right.
        out: output PNG path.
        titles: one title per image (default: the file names).
        width: figure width in inches.
    """
    import matplotlib.pyplot as plt

    from zoo.figures import save_figure

    if titles is not None and len(titles) != len(images):
        raise ValueError(f"montage: {len(images)} images but {len(titles)} titles")
    for path in images:
        if not Path(path).is_file():
            raise FileNotFoundError(f"montage: image {path} does not exist")
    fig, axes = plt.subplots(1, len(images), figsize=(width, width / len(images) * 1.1), squeeze=False)
    for ax, path, title in zip(axes[0], images, titles or [Path(p).stem for p in images]):
        ax.imshow(plt.imread(path))
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    print(save_figure(fig, out))


def main(args: list[str] | None = None):
    from jsonargparse import auto_cli

    from zoo.figures import use_file_backend

    use_file_backend()
    return auto_cli({"fid": fid, "fid-floor": fid_floor, "cas": cas, "agreement": agreement, "grid": grid,
                     "losses": losses,
                     "montage": montage}, args=args)


if __name__ == "__main__":
    main()
