"""Logger-agnostic figure, image and audio logging.

Lightning loggers disagree on how to store a picture. These helpers send a matplotlib figure
(or an image grid, or a clip) to *every* attached logger: W&B gets ``wandb.Image``/``wandb.Audio``,
TensorBoard ``add_figure``/``add_image``/``add_audio``, and any other logger (CSV, ...) gets a
PNG/WAV file under its ``log_dir`` so that nothing is silently dropped.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch


def shown_class_names(model_names: Sequence | None, data_names: Sequence | None, count: int) -> list[str]:
    """The names of ``count`` classes in results, figures and predictions: the model's own, unless it has only the
    default "0", "1", ... and the data names ``count`` classes ("seven", "female"): one rule for the per-class
    table, the confusion matrix and the predictions CSV."""
    default = [str(i) for i in range(count)]
    model = [str(n) for n in model_names] if model_names else default
    if model == default and data_names and len(data_names) == count:
        return [str(n) for n in data_names]
    return model


def _loggers(trainer) -> list:
    if trainer is None:
        return []
    return [lg for lg in getattr(trainer, "loggers", []) if type(lg).__name__ != "DummyLogger"]


def _file_dir(logger) -> Path:
    base = getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None) or "."
    path = Path(base) / "media"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _safe(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key)


def _is_rank_zero(trainer) -> bool:
    return trainer is None or getattr(trainer, "is_global_zero", True)


def log_figure(trainer, key: str, fig: "plt.Figure", step: int | None = None, close: bool = True) -> list[Path]:
    """Send ``fig`` to every logger of ``trainer``; returns the files written (for file-based loggers)."""
    written: list[Path] = []
    if _is_rank_zero(trainer):
        step = trainer.global_step if (step is None and trainer is not None) else (step or 0)
        for logger in _loggers(trainer):
            name = type(logger).__name__
            if name == "WandbLogger":
                import wandb

                logger.experiment.log({key: wandb.Image(fig), "trainer/global_step": step})
            elif name == "TensorBoardLogger":
                logger.experiment.add_figure(key, fig, global_step=step, close=False)
            else:
                path = _file_dir(logger) / f"{_safe(key)}_step{step}.png"
                fig.savefig(path, dpi=100, bbox_inches="tight")
                written.append(path)
    if close:
        plt.close(fig)
    return written


def image_grid_figure(images: torch.Tensor, captions: Sequence[str] | None = None, ncol: int = 8,
                      value_range: tuple[float, float] = (0.0, 1.0), title: str | None = None) -> "plt.Figure":
    """A matplotlib grid of ``(N, C, H, W)`` images with optional per-image captions."""
    images = images.detach().float().cpu()
    lo, hi = value_range
    images = ((images - lo) / (hi - lo)).clamp(0, 1)
    n = images.shape[0]
    ncol = max(1, min(ncol, n))
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(1.4 * ncol, 1.5 * nrow), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = images[i]
        if img.shape[0] == 1:
            ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(img.permute(1, 2, 0).numpy())
        if captions is not None:
            ax.set_title(str(captions[i]), fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def log_audio(trainer, key: str, clips: Sequence[torch.Tensor], sample_rate: int,
              captions: Sequence[str] | None = None, step: int | None = None) -> None:
    """Log audio clips where the logger supports it (W&B, TensorBoard); WAV files otherwise."""
    if not _is_rank_zero(trainer):
        return
    step = trainer.global_step if step is None else step
    for logger in _loggers(trainer):
        name = type(logger).__name__
        if name == "WandbLogger":
            import wandb

            items = [wandb.Audio(c.detach().cpu().numpy().reshape(-1), sample_rate=sample_rate,
                                 caption=None if captions is None else str(captions[i])) for i, c in enumerate(clips)]
            logger.experiment.log({key: items, "trainer/global_step": step})
        elif name == "TensorBoardLogger":
            for i, c in enumerate(clips):
                logger.experiment.add_audio(f"{key}/{i}", c.detach().cpu().reshape(1, -1), step, sample_rate)
        else:
            import soundfile as sf

            out = _file_dir(logger)
            for i, c in enumerate(clips):
                sf.write(out / f"{_safe(key)}_step{step}_{i}.wav", c.detach().cpu().numpy().reshape(-1), sample_rate)


def confusion_matrix_figure(cm: torch.Tensor, class_names: Sequence[str] | None = None,
                            title: str = "Confusion matrix") -> "plt.Figure":
    """Counts with row-normalised colour, so per-class recall reads off the diagonal."""
    cm = cm.detach().cpu().to(torch.float64).numpy()
    n = cm.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    norm = cm / np.clip(cm.sum(axis=1, keepdims=True), 1, None)
    size = max(4.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    return fig


def use_file_backend() -> None:
    """For command-line entry points: figures are logged or saved, never shown, so no GUI backend
    (a display would otherwise get windows and a GUI event loop); an explicit ``MPLBACKEND`` wins."""
    if "MPLBACKEND" not in os.environ:
        plt.switch_backend("Agg")


def save_figure(fig: "plt.Figure", path: str | os.PathLike, close: bool = True) -> Path:
    """Write a figure for the docs (results pages)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    if close:
        plt.close(fig)
    return path
