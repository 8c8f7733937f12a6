"""Callbacks: the ones the CLI attaches by default, :class:`EpochMetricLog` for searches and
:class:`EMAWeights` (a config's ``trainer.callbacks``)."""

from __future__ import annotations

import csv
import json
import os
import random
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from lightning.pytorch.callbacks import (BasePredictionWriter, Callback, EMAWeightAveraging, LearningRateMonitor,
                                        ModelCheckpoint)
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image
from tqdm import tqdm

from datamodules.predict import PredictItem
from zoo import compat
from zoo.figures import image_grid_figure, save_figure, shown_class_names


class BestCheckpoint(ModelCheckpoint):
    """Keeps the best checkpoint on the module's own metric, plus ``last.ckpt`` (nothing lost on a crash).

    Each LightningModule declares what "best" means with a ``monitor = ("val/acc", "max")`` class
    attribute, so one default callback serves classifiers and autoencoders alike; ``monitor = None``
    means "no metric to select on" and keeps ``last.ckpt`` only. An explicit ``monitor`` argument wins.

    Args:
        monitor: metric that picks the best checkpoint; None (default): the module's own ``monitor``.
        mode: "min" or "max" for an explicit ``monitor``; otherwise the module's own mode is used.
        save_last: also keep ``last.ckpt``, rewritten every epoch.
        save_top_k: how many best checkpoints to keep.
        filename: name pattern of the best checkpoint.
    """

    def __init__(self, monitor: str | None = None, mode: str = "min", save_last: bool = True,
                 save_top_k: int = 1, filename: str = "best-epoch{epoch:02d}", **kwargs) -> None:
        super().__init__(monitor=monitor, mode=mode, save_last=save_last, save_top_k=save_top_k,
                         filename=filename, auto_insert_metric_name=False, **kwargs)
        self._explicit = monitor is not None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if not self._explicit and getattr(pl_module, "monitor", ()) is None:
            # the module has no held-out metric worth selecting on: keep last.ckpt only
            self.monitor, self.save_top_k = None, 0
        elif not self._explicit and hasattr(pl_module, "monitor"):
            metric, mode = pl_module.monitor
            if mode not in ("min", "max"):
                raise ValueError(f"{type(pl_module).__name__}.monitor mode must be 'min' or 'max', got {mode!r}")
            self.monitor, self.mode = metric, mode
            self.kth_value = torch.tensor(float("inf") if mode == "min" else -float("inf"))
            self.best_model_score = None
        super().setup(trainer, pl_module, stage)

    # Lightning 2.6 writes last.ckpt only in a step that also wrote a top-k checkpoint, so after the
    # best epoch (or always, in last-only mode) last.ckpt would stop moving. Write it here, at the
    # same point of every epoch, unless this step already saved: a crash loses at most one epoch.
    def _ensure_last(self, trainer, at_train_epoch_end: bool) -> None:
        if self.save_last and compat.checkpoint_can_save(self, trainer) \
                and compat.checkpoint_saves_on_train_epoch_end(self, trainer) == at_train_epoch_end:
            compat.save_last_checkpoint(self, trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._ensure_last(trainer, at_train_epoch_end=True)

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        self._ensure_last(trainer, at_train_epoch_end=False)

    def on_train_end(self, trainer, pl_module) -> None:
        # Lightning 2.6 writes last.ckpt here even under fast_dev_run ("checkpointing is suppressed"),
        # which let a smoke test replace the last.ckpt of a real run in the same folder
        if not trainer.fast_dev_run:
            super().on_train_end(trainer, pl_module)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning restores the best score, top-k and last.ckpt only when the stored folder equals this
        # one as a string; a relative folder resumed from another working directory, or given once as
        # "runs/x" and once as "./runs/x", is the same folder
        stored = state_dict.get("dirpath")
        if stored and self.dirpath and os.path.realpath(stored) == os.path.realpath(self.dirpath):
            state_dict = {**state_dict, "dirpath": self.dirpath}
        super().load_state_dict(state_dict)


def rng_state() -> dict[str, Any]:
    """torch (CPU and, once used, the current CUDA device), numpy and Python ``random`` states as tensors,
    ints and lists: what ``torch.load(weights_only=True)`` accepts, so checkpoints stay safe to load."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, mt, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                       "gauss": float(gauss)},
             "python": {"version": version, "state": list(mt), "gauss_next": gauss_next}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # this process's device: under DDP, each rank's own
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Undo of :func:`rng_state`; the CUDA state goes to this process's current device."""
    torch.set_rng_state(state["torch"].cpu())  # a checkpoint may have been mapped onto a device
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())


class ResumeState(Callback):
    """What a checkpoint needs, besides Lightning's own state, for a resumed run to be the same run.

    * The random generators at checkpoint time. Checkpoints are written at epoch end, and the next
      epoch draws its shuffling (``RandomSampler`` seeds itself from torch's global generator when the
      loader is iterated), dropout and on-device augmentation from the global generators. The states
      are set back while Lightning restores the checkpoint, the last thing before it iterates the
      resumed epoch's loader (the sanity check in between runs under ``isolate_rng``), so a resumed
      run draws exactly what the uninterrupted run drew. Under DDP the file holds rank 0's states and
      every rank restores them (on its own CUDA device): ``seed_everything`` gave every rank the same
      seed and the ranks draw alike, so their states were equal.
    * Which run it is: each logger's version (CSV, TensorBoard: ``version_N``; W&B: the run id), read
      by ``python -m zoo fit --ckpt_path`` before the loggers are built, so logs, checkpoints and the
      W&B run continue where they were.
    """

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._loggers = trainer.loggers

    def state_dict(self) -> dict[str, Any]:
        loggers = [{"type": type(lg).__name__, "version": _plain(lg.version)} for lg in getattr(self, "_loggers", [])]
        return {"rng": rng_state(), "loggers": loggers}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "rng" in state_dict:
            set_rng_state(state_dict["rng"])


def _plain(version: Any) -> int | str | None:
    return version if version is None or isinstance(version, (int, str)) else str(version)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite: the run diverged and cannot recover."""


class StopOnNonFiniteLoss(Callback):
    """Stops training at a NaN or infinite training loss, naming the setting most likely to blame.

    Without it a diverged run trains on to the end, tests NaN weights and exits 0, and a study
    tabulates the NaNs as results. Reading a loss on the host waits for the device, so the check is
    kept on the device and read every ``check_every`` batches and at the end of every epoch (before
    its checkpoint is written). Modules with manual optimisation return no loss and are not checked.

    Args:
        check_every: read the device-side flag every this many batches.
    """

    def __init__(self, check_every: int = 16) -> None:
        self.check_every = check_every
        self._finite: torch.Tensor | None = None
        self._first: str = ""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        finite = torch.isfinite(loss.detach()).all()
        self._finite = finite if self._finite is None else self._finite & finite
        if self._first == "" and loss.device.type == "cpu" and not bool(finite):  # free to read on the CPU
            self._first = f"epoch {trainer.current_epoch}, batch {batch_idx}"
        if (batch_idx + 1) % self.check_every == 0:
            self._check(trainer, f"epoch {trainer.current_epoch}, by batch {batch_idx}")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._check(trainer, f"epoch {trainer.current_epoch}")

    def _check(self, trainer, where: str) -> None:
        if self._finite is None or bool(self._finite):
            return
        # the configured rate: a scheduler may have changed the current one since
        rates = [f"{type(opt).__name__} lr={opt.param_groups[0].get('initial_lr', opt.param_groups[0]['lr']):g}"
                 for opt in trainer.optimizers]
        precision = f", precision {trainer.precision}" if "16" in str(trainer.precision) else ""
        raise NonFiniteLossError(
            f"training loss became NaN or infinite ({self._first or where}): the run diverged. Most likely the "
            f"learning rate is too high ({'; '.join(rates) or 'no optimizer'}{precision}): lower it (e.g. "
            "--model.optimizer.init_args.lr), or check the inputs for NaN/inf values.")


class SafeLearningRateMonitor(LearningRateMonitor):
    """LearningRateMonitor that stays quiet (instead of raising) when logging is turned off."""

    def on_train_start(self, trainer, *args, **kwargs) -> None:
        self._disabled = not trainer.loggers
        if not self._disabled:
            super().on_train_start(trainer, *args, **kwargs)

    def on_train_batch_start(self, trainer, *args, **kwargs) -> None:
        if not getattr(self, "_disabled", False):
            super().on_train_batch_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer, *args, **kwargs) -> None:
        if not getattr(self, "_disabled", False):
            super().on_train_epoch_start(trainer, *args, **kwargs)


class EMAWeights(EMAWeightAveraging):
    """Lightning's exponential moving average of the weights, evaluated as the checkpoints store it.

    Validation, the best checkpoint, ``last.ckpt``'s ``state_dict`` and the weights fit ends with are the
    average (``decay`` per optimizer step; 0.999 spans about 1,000 steps); a resumed fit restores both the
    average and the raw weights. Why a subclass: Lightning's callback also loads the *raw* weights when a
    checkpoint is restored for ``test`` by a trainer that has fitted, so ``fit`` followed by testing the
    best checkpoint measured the raw weights while ``zoo test --ckpt_path`` measured the average. Outside
    fit, the checkpoint's ``state_dict`` (the average) is what is evaluated, in every process.
    """

    def __init__(self, decay: float = 0.999, update_starting_at_step: int | None = None) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMAWeights: decay must be in (0, 1), got {decay}")
        super().__init__(decay=decay, update_starting_at_step=update_starting_at_step)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)


class PredictionWriter(BasePredictionWriter):
    """Writes ``predict`` results on a user's files: one CSV row per file, and prints a short table and, with
    labels, the accuracy.

    One writer for every task; what a row holds follows what ``predict_step`` returns for each batch (a dict):

    * ``"probs"`` ``(B, classes)`` (classifiers): ``prediction,probability`` columns, and at the end of the row
      every class's probability (``probability_<class>``, 6 decimals), what ``zoo.tools.ensemble`` averages.
    * ``"images"`` ``(B, 1 or 3, H, W)`` in [0, 1] (generators, e.g. the audio-to-image VAE): an ``image`` column;
      each image is saved as an 8-bit PNG named after its input file in ``<predictions_file stem>_images/``
      (``a.wav`` -> ``a.png``; a later file with the same stem gets ``a-2.png``), and ``<stem>_montage.png`` next to
      the CSV is a contact sheet of the images titled with the file names (the first ``montage_max``).

    Both may come together (the VAE's judge labels its images). Files that could not be used get a row with
    ``error``; files in class-named folders a ``label``; a test split's clips (predict without ``predict_path``,
    where the DataModule lists them) their ``label`` and ``speaker``, and the table then scores each class and
    each speaker (:func:`breakdown`); a classifier's predictions on data that lists no files (MNIST's test
    split) get rows ``#0``, ``#1``, ... labelled with the batches' targets (:func:`numbered_items`). The files'
    records come from the DataModule's ``predict_items`` (``datamodules.predict``), the class names as the model's
    results name them; predictions arrive in file order (the predict loader never shuffles).

    Args:
        predictions_file: CSV file to write; None: only print the table (images need the file: they go next to it).
        show: how many rows the printed table shows.
        montage_max: most images on the contact sheet (a sheet of thousands would be unreadable and slow to draw).
    """

    def __init__(self, predictions_file: str | None = None, show: int = 20, montage_max: int = 400) -> None:
        super().__init__(write_interval="epoch")
        self.predictions_file = predictions_file
        self.show = show
        self.montage_max = montage_max
        self.rows: list[dict] = []
        self.montage: Path | None = None
        self.class_names: list[str] = []

    def on_predict_start(self, trainer, pl_module) -> None:
        """Refuse a CSV under DDP before predicting, not after the whole pass: each process would hold a share."""
        if trainer.world_size > 1 and self.predictions_file:
            raise RuntimeError("PredictionWriter: --run.predictions_file needs one device (--trainer.devices 1)")

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        items = getattr(trainer.datamodule, "predict_items", None)
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        probs, images = _gather(batches, "probs"), _gather(batches, "images")
        if not items:  # data that lists no files (the test split of MNIST or of an image folder)
            if probs is None or images is not None:  # not a classifier (codes; images with no file to name them
                return                                 # after, e.g. the VAE's on its test split): nothing of ours
            items = numbered_items(_gather(batches, "target"), len(probs))
        if trainer.world_size > 1:  # each process predicted a share of the items: no one table holds them all
            self.on_predict_start(trainer, pl_module)
            rank_zero_warn("PredictionWriter: no table under DDP (each process predicts a share of the files); "
                           "predict with --trainer.devices 1 for it")
            return
        if probs is None and images is None:
            first = batches[0] if batches else None
            keys = sorted(first) if isinstance(first, dict) else type(first).__name__
            raise RuntimeError("PredictionWriter: predict_step must return a dict with 'probs' (class probabilities) "
                               f"and/or 'images' (generated images in [0, 1]), got {keys}")
        good = [it for it in items if it.error is None]
        done = len(probs if probs is not None else images)
        if done < len(good) and _predict_limited(trainer):  # a smoke run (fast_dev_run): the files it reached
            items = items[:next(i for i, it in enumerate(items) if it is good[done])]
            good = good[:done]
        for what, values in (("predictions", probs), ("images", images)):
            if values is not None and len(values) != len(good):
                raise RuntimeError(f"PredictionWriter: {len(values)} {what} for {len(good)} usable files")
        names = self._class_names(trainer, pl_module, probs)
        self.class_names = names
        conf, pred = probs.max(dim=1) if probs is not None else (torch.zeros(0), torch.zeros(0))
        scored = iter(zip(pred.tolist(), conf.tolist(), probs.tolist() if probs is not None else []))
        saved = iter(self._save_images(images, good, names, probs) if images is not None else [])
        self.rows = []
        for it in items:
            row = {"path": it.path, "image": "", "prediction": "", "probability": "",
                   "label": "" if it.label is None else names[it.label] if 0 <= it.label < len(names) else str(it.label),
                   "speaker": it.speaker or "", "error": it.error or ""}
            if it.error is None:
                if probs is not None:
                    p, c, dist = next(scored)
                    row["prediction"], row["probability"] = names[p], f"{c:.4f}"
                    row.update({f"probability_{n}": f"{q:.6f}" for n, q in zip(names, dist)})
                row["image"] = str(next(saved, ""))
            self.rows.append(row)
        columns = ["path"] + (["image"] if self.predictions_file and images is not None else [])
        columns += ["prediction", "probability"] if probs is not None else []
        columns += [c for c in ("label", "speaker", "error") if any(r[c] for r in self.rows)]
        columns += [f"probability_{n}" for n in names] if probs is not None else []
        self.finish(columns, images is not None)

    def finish(self, columns: list[str], images: bool = False) -> None:
        """Write :attr:`rows` (``columns`` of them) to the CSV, if one was asked for, and print the table; also
        what ``zoo.tools.ensemble`` ends with, so an ensemble's output reads like one model's."""
        if self.predictions_file:
            path = Path(self.predictions_file)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", newline="") as f:
                writer = csv.DictWriter(f, columns, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(self.rows)
        # through tqdm: the predict progress bar is still drawn, and a plain print would land on its line
        tqdm.write(self.summary(columns, images))

    @staticmethod
    def _class_names(trainer, pl_module, probs: torch.Tensor | None) -> list[str]:
        """As the model's results name them (:func:`zoo.figures.shown_class_names`)."""
        data, model = getattr(trainer.datamodule, "class_names", None), getattr(pl_module, "class_names", None)
        count = probs.shape[1] if probs is not None else len(data or model or [])
        if probs is not None and data and len(data) != count:
            raise RuntimeError(f"PredictionWriter: the model scores {count} classes, the data names {len(data)}")
        return shown_class_names(model, data, count)

    def image_folder(self) -> Path:
        """``<predictions_file stem>_images/`` next to the CSV."""
        path = Path(self.predictions_file)
        return path.with_name(path.stem + "_images")

    def _save_images(self, images: torch.Tensor, good: list, names: list[str],
                     probs: torch.Tensor | None) -> list[Path]:
        """One PNG per usable file and the contact sheet; returns the PNG paths (none without a predictions file)."""
        pixels = to_uint8_images(images)
        if not self.predictions_file:
            return []
        folder = self.image_folder()
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / name for name in unique_png_names([it.path for it in good])]
        for px, out in zip(pixels, paths):
            Image.fromarray(px.squeeze(0).numpy() if px.shape[0] == 1 else px.permute(1, 2, 0).numpy(),
                            "L" if px.shape[0] == 1 else "RGB").save(out)
        n = min(len(paths), self.montage_max)
        shown = [Path(it.path) for it in good[:n]]
        counts = Counter(p.name for p in shown)  # a name two folders share gets its folder too
        captions = [_short(p.name if counts[p.name] == 1 else f"{p.parent.name}/{p.name}") for p in shown]
        if probs is not None:  # what the model's judge sees in each image
            captions = [f"{c}\n-> {names[k]}" for c, k in zip(captions, probs[:n].argmax(1).tolist())]
        title = f"{len(paths)} generated image(s)" if n == len(paths) else f"the first {n} of {len(paths)} generated images"
        fig = image_grid_figure(pixels[:n].float() / 255, captions, ncol=10, title=title)
        path = Path(self.predictions_file)
        self.montage = save_figure(fig, path.with_name(path.stem + "_montage.png"))
        return paths

    def summary(self, columns: list[str], images: bool = False) -> str:
        """The printed table: the first ``show`` rows, the failures, where the images went, and the accuracy on
        labelled files."""
        rows = self.rows
        shown_cols = [c for c in columns if c in ("prediction", "probability", "label")]
        width = min(60, max(len(r["path"]) for r in rows))
        lines = ["  ".join([f"{'path':<{width}}"] + [f"{c:<11}" for c in shown_cols])]
        for r in rows[: self.show]:
            shown = r["path"] if len(r["path"]) <= width else "..." + r["path"][-width + 3:]
            cells = [f"{r[c]:<11}" for c in shown_cols]
            lines.append("  ".join([f"{shown:<{width}}"] + cells) + (f"  FAILED: {r['error']}" if r["error"] else ""))
        if len(rows) > self.show:
            lines.append(f"... and {len(rows) - self.show} more")
        failed = [r for r in rows if r["error"]]
        scored = [r for r in rows if r["label"] and r["prediction"] and not r["error"]]
        lines.append(f"{len(rows) - len(failed)} file(s) predicted, {len(failed)} failed"
                     + (f"; written to {self.predictions_file}" if self.predictions_file else ""))
        if images and self.predictions_file:
            lines.append(f"images: {self.image_folder()}/ (one PNG per file, see the image column); "
                         f"contact sheet: {self.montage}")
        elif images:
            lines.append("images not saved: pass --run.predictions_file FILE.csv to write them to FILE_images/")
        unseen = [r for r in rows[self.show:] if r["error"]]  # failures past the table
        lines += [f"FAILED {r['error']}" for r in unseen[:5]]  # the error names the file
        if len(unseen) > 5:
            lines.append(f"... and {len(unseen) - 5} more failed files: see the error column of the CSV")
        if scored:
            correct = sum(r["prediction"] == r["label"] for r in scored)
            lines.append(f"accuracy on {len(scored)} labelled file(s): {100.0 * correct / len(scored):.2f} %"
                         + (" (the class the model's judge sees in each image)" if images else ""))
            lines += breakdown(scored, self.class_names)
        return "\n".join(lines)


def breakdown(scored: list[dict], class_names: Sequence[str] = (), most: int = 12) -> list[str]:
    """Lines under the accuracy for rows with a label and a prediction: each class's recall (in ``class_names``
    order) and the balanced accuracy, what a study with unequal classes reports, computed as ``test``'s
    ``test/balanced_acc`` is (a class predicted but absent counts with recall 0); and, for rows with a
    ``speaker``, each speaker's accuracy, worst first (at most ``most`` named), with the class of a speaker
    whose clips share one (the sex, when that is the target): one voice can hold a split's errors."""
    def acc(rows: list[dict]) -> float:
        return 100.0 * sum(r["prediction"] == r["label"] for r in rows) / len(rows)

    lines = []
    by_class = _grouped(scored, "label")
    order = {name: i for i, name in enumerate(class_names)}
    present = sorted(by_class, key=lambda k: (order.get(k, len(order)), k))
    absent = {r["prediction"] for r in scored} - set(by_class)
    if len(present) + len(absent) > 1:
        recalls = [acc(by_class[k]) for k in present] + [0.0] * len(absent)
        lines.append("recall per class: " + ", ".join(f"{k} {acc(by_class[k]):.1f} % of {len(by_class[k])}"
                                                      for k in present)
                     + (f"; predicted but absent: {', '.join(sorted(absent))}" if absent else "")
                     + f"; balanced accuracy {sum(recalls) / len(recalls):.2f} %")
    by_speaker = _grouped([r for r in scored if r["speaker"]], "speaker")
    if by_speaker:
        ranked = sorted(by_speaker.items(), key=lambda kv: (acc(kv[1]), kv[0]))
        cells = []
        for spk, rows in ranked[:most]:
            labels = {r["label"] for r in rows}
            cells.append(f"{spk}{f' ({labels.pop()})' if len(labels) == 1 else ''} {acc(rows):.1f} % of {len(rows)}")
        more = f"; {len(ranked) - most} more at {acc(ranked[most][1]):.1f} % or above" if len(ranked) > most else ""
        lines.append(f"accuracy per speaker, worst first ({len(ranked)}): " + ", ".join(cells) + more)
    return lines


def _predict_limited(trainer) -> bool:
    """Whether ``fast_dev_run`` or ``limit_predict_batches`` may have cut the predict run short."""
    limit = trainer.limit_predict_batches
    return bool(trainer.fast_dev_run) or isinstance(limit, int) or limit < 1.0


def _grouped(rows: list[dict], key: str) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r[key], []).append(r)
    return groups


def numbered_items(targets: torch.Tensor | None, count: int) -> list:
    """Rows for predictions on data that lists no files: ``#0``, ``#1``, ... in the predict loader's order (the
    test split's, never shuffled), each with the batch's target as its label where there is one (>= 0), so a
    split of MNIST still gets its CSV, accuracy and per-class recall, and two models' CSVs line up for
    ``zoo.tools.ensemble``."""
    if targets is None or tuple(targets.shape) != (count,):  # no class index per row: rows without labels
        return [PredictItem(f"#{i}") for i in range(count)]
    labels = [int(t) if t >= 0 else None for t in targets.tolist()]
    return [PredictItem(f"#{i}", label) for i, label in enumerate(labels)]


def _gather(batches: list, key: str) -> torch.Tensor | None:
    """``key`` of every batch's ``predict_step`` dict, concatenated on the CPU; None when no batch has it."""
    having = [isinstance(b, dict) and key in b for b in batches]
    if not any(having):
        return None
    if not all(having):
        raise RuntimeError(f"PredictionWriter: predict_step returned {key!r} for some batches only")
    return torch.cat([b[key].detach().float().cpu() for b in batches])


def to_uint8_images(images: torch.Tensor) -> torch.Tensor:
    """``(N, 1 or 3, H, W)`` floats in [0, 1] -> uint8 0-255, rounded: what a PNG holds (within 0.5/255)."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"PredictionWriter: images must be (N, 1 or 3, H, W), got {tuple(images.shape)}")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1e-4 or hi > 1 + 1e-4 or not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"PredictionWriter: images must be in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; a model "
                         "with a tanh output maps its images with (x + 1) / 2 in predict_step")
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def unique_png_names(paths: list[str]) -> list[str]:
    """``<stem>.png`` for each input file; a stem already taken (any case: macOS and Windows folders ignore it)
    gets ``-2``, ``-3``, ...: ``a.wav, 7/a.flac`` -> ``a.png, a-2.png``."""
    taken: set[str] = set()
    out = []
    for p in paths:
        stem = Path(p).stem or "file"
        name, k = stem, 1
        while name.lower() in taken:
            k += 1
            name = f"{stem}-{k}"
        taken.add(name.lower())
        out.append(name + ".png")
    return out


def _short(name: str, limit: int = 20) -> str:
    """Cut from the middle: names of one batch of recordings tend to differ at their ends (``take_07.wav``)."""
    if len(name) <= limit:
        return name
    tail = (limit - 3) // 2
    return name[: limit - 3 - tail] + "..." + name[-tail:]


class EpochMetricLog(Callback):
    """Appends ``{"epoch", "value"}`` of one metric to a JSON-lines file at every validation epoch end.

    Used by ``zoo.tools.launchers`` (Optuna trials run as ``python -m zoo fit`` subprocesses).
    Why a file and not Optuna's Lightning callback: the trial stays an ordinary ``python -m zoo fit``
    subprocess (same logs, W&B run, resume, and a crash is the trial's, not the search's); the search
    reads the file, reports each epoch to Optuna and kills the run when the pruner says so."""

    def __init__(self, path: str, metric: str = "val/acc") -> None:
        self.path, self.metric = path, metric

    def on_validation_end(self, trainer, pl_module) -> None:  # after the epoch's metrics are computed
        value = trainer.callback_metrics.get(self.metric)
        if trainer.sanity_checking or value is None or not trainer.is_global_zero:
            return
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"epoch": trainer.current_epoch, "value": float(value)}) + "\n")
