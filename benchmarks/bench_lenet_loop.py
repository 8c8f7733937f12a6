"""Seconds per epoch: ``python -m zoo fit`` (LeNet-5, ReducedMNIST) vs a minimal hand-written PyTorch loop.

Both sides train the same LeNet-5 with the same data tensors, batch size, optimizer, scheduler and
loss, on the same number of threads, and validate once per epoch. Start-up (imports, data loading,
W&B) is excluded: the zoo run gets an :class:`EpochTimer` callback (``--trainer.callbacks``) that
timestamps each epoch start, and the hand loop times its own epochs; the first epoch is warm-up and
dropped. Target: ratio <= 1.15.

    python benchmarks/bench_lenet_loop.py [--epochs 4] [--repeats 8] [--threads 1] [--logger wandb|csv] [--with_breakdown true]

Run it on an otherwise idle machine: other processes competing for the cores make both numbers noisy.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

from lightning.pytorch import Callback

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "lenet_reduced_mnist.yaml"


def _now() -> tuple[float, float]:
    """(wall clock, CPU time of this process): CPU time is robust to other processes sharing the cores."""
    return time.perf_counter(), time.process_time()


class EpochTimer(Callback):
    """Writes the (wall, CPU) time of every train-epoch start (and of the end of fit) to ``path``."""

    def __init__(self, path: str) -> None:
        self.path, self.stamps = path, []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.stamps.append(_now())

    def on_train_end(self, trainer, pl_module) -> None:
        self.stamps.append(_now())
        Path(self.path).write_text(json.dumps(self.stamps))


def epoch_seconds(stamps: list) -> list[tuple[float, float]]:
    """Per-epoch (wall, CPU) seconds from consecutive epoch-start stamps."""
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(stamps, stamps[1:])]


def zoo_epochs(epochs: int, threads: int, logger: str, workdir: Path) -> list[tuple[float, float]]:
    stamps = workdir / "stamps.json"
    cmd = [sys.executable, "-m", "zoo", "fit", "--config", str(CONFIG), "--trainer.max_epochs", str(epochs),
           "--model.scheduler.init_args.T_max", str(epochs), "--trainer.enable_progress_bar", "false",
           "--trainer.default_root_dir", str(workdir), "--run.test_after_fit", "false",
           "--trainer.callbacks+=bench_lenet_loop.EpochTimer", f"--trainer.callbacks.path={stamps}"]
    if logger == "csv":
        cmd += ["--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(workdir)]
    else:
        cmd += ["--trainer.logger.init_args.save_dir", str(workdir)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not stamps.exists():
        sys.exit(f"zoo fit failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return epoch_seconds(json.loads(stamps.read_text()))


def hand_epochs(epochs: int, threads: int) -> list[tuple[float, float]]:
    """The same training as configs/lenet_reduced_mnist.yaml, written as a plain PyTorch loop."""
    import torch
    import torch.nn.functional as F
    import yaml

    from datamodules.mnist import MNISTDataModule
    from zoo.mnist_classifiers import LeNet5

    torch.set_num_threads(threads)
    cfg = yaml.safe_load(CONFIG.read_text())
    data_args, model_args = cfg["data"]["init_args"], cfg["model"]["init_args"]
    torch.manual_seed(cfg.get("seed_everything", 0))
    dm = MNISTDataModule(**{k: v for k, v in data_args.items() if k != "on_device"})
    (x, y), (xv, yv) = dm.split("train"), dm.split("val")
    model = LeNet5()
    opt = torch.optim.AdamW(model.parameters(), **model_args["optimizer"]["init_args"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    smoothing, bs = model_args.get("label_smoothing", 0.0), dm.batch_size
    stamps = []
    for _ in range(epochs):
        stamps.append(_now())
        model.train()
        perm = torch.randperm(len(y))
        for i in range(0, len(y), bs):
            idx = perm[i:i + bs]
            loss = F.cross_entropy(model(x[idx]), y[idx], label_smoothing=smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        model.eval()
        with torch.no_grad():
            correct = sum((model(xv[i:i + 1000]).argmax(1) == yv[i:i + 1000]).sum().item()
                          for i in range(0, len(yv), 1000))
        assert correct > 0
    stamps.append(_now())
    return epoch_seconds(stamps)


def breakdown(epochs: int, threads: int) -> None:
    """Where the overhead goes: CPU s/epoch of in-process Trainer.fit (no logger, no checkpoints, no
    validation) with ever fuller training steps, against the bare loop. Not part of the headline ratio."""
    import lightning as L
    import torch
    import torch.nn.functional as F

    from datamodules.mnist import MNISTDataModule
    from zoo.mnist_classifiers import LeNet5

    torch.set_num_threads(threads)

    class Bare(LeNet5):
        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self(x), y)

    class LogLoss(LeNet5):
        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self(x), y)
            self.log("train/loss", loss, prog_bar=True, batch_size=y.shape[0])
            return loss

    class PerStepLogs(LeNet5):
        """The zoo's earlier Classifier.training_step: ``self.log`` of the loss and of ``train_acc`` every step."""

        def training_step(self, batch, batch_idx):
            logits, y = self._logits_and_target(batch)
            loss = self._loss(logits, y)
            self.train_acc.update(logits.detach(), y)
            self.log("train/loss", loss.detach(), prog_bar=True, batch_size=y.shape[0])
            self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, batch_size=y.shape[0])
            return loss

    class Timer(Callback):
        def __init__(self):
            self.stamps = []

        def on_train_epoch_start(self, *args):
            self.stamps.append(_now())

        def on_train_end(self, *args):
            self.stamps.append(_now())

    dm = MNISTDataModule(real_per_class=1000, test_per_class=200, batch_size=64)
    hand = statistics.median(t[1] for t in hand_epochs(epochs, threads)[1:])
    print(f"  breakdown (CPU s/epoch, no validation): hand-written loop incl. validation {hand:.3f}")
    for cls, what in ((Bare, "Lightning loop, bare training_step"), (LogLoss, "+ self.log(train/loss) per step"),
                      (PerStepLogs, "earlier Classifier step: loss + train_acc logged per step"),
                      (LeNet5, "zoo Classifier.training_step (logs only where shown)")):
        timer = Timer()
        trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                            callbacks=[timer])
        trainer.fit(cls(), datamodule=dm)
        cpu = statistics.median(t[1] for t in epoch_seconds(timer.stamps)[1:])
        print(f"  {what:60s} {cpu:.3f}  ({cpu / hand:.2f}x)")


def bench(epochs: int = 4, threads: int = 1, logger: Literal["wandb", "csv"] = "wandb", repeats: int = 8,
          with_breakdown: bool = False) -> float:
    """Print both timings and their ratio; returns the ratio.

    Args:
        epochs: epochs per run; the first is warm-up and not counted.
        threads: torch threads on both sides.
        logger: the zoo run's logger (wandb = the zoo default, offline).
        repeats: hand and zoo runs alternate this many times. On a shared VM a whole process runs
            up to ~10 % faster or slower than the next one (epochs within a run agree to ~2 %), so
            each run is summarised by its median epoch and each side by the median over its runs.
        with_breakdown: also time in-process variants of the training step to show where overhead goes.
    """
    if epochs < 2:
        sys.exit("--epochs must be >= 2 (the first epoch is warm-up)")
    if repeats < 1:
        sys.exit("--repeats must be >= 1")
    os.environ.setdefault("ZOO_DATA_DIR", str(REPO.parent / "shared" / "data"))
    runs = {"hand": [], "zoo": []}  # per run: (median wall, median CPU) s/epoch over its counted epochs
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for side, epochs_of in (("hand", lambda: hand_epochs(epochs, threads)),
                                    ("zoo", lambda: zoo_epochs(epochs, threads, logger, Path(tmp) / f"run{r}"))):
                counted = epochs_of()[1:]
                runs[side].append(tuple(statistics.median(t[k] for t in counted) for k in (0, 1)))
            print(f"  repeat {r + 1}/{repeats}: hand {runs['hand'][-1][0]:.3f}, zoo {runs['zoo'][-1][0]:.3f} s/epoch",
                  flush=True)
    print(f"LeNet-5 on ReducedMNIST (10k train images, batch 64), {threads} thread(s), logger={logger}; "
          f"{repeats} alternating runs per side of {epochs} epochs (epoch 1 is warm-up); "
          f"per side: median over runs of each run's median epoch")
    ratios = {}
    for k, what in enumerate(("wall", "cpu")):
        hand = statistics.median(run[k] for run in runs["hand"])
        zoo_s = statistics.median(run[k] for run in runs["zoo"])
        ratios[what] = zoo_s / hand
        pair = sorted(z[k] / h[k] for z, h in zip(runs["zoo"], runs["hand"]))
        print(f"  {what:4s} s/epoch: hand-written loop {hand:.3f} [{', '.join(f'{run[k]:.3f}' for run in runs['hand'])}]; "
              f"python -m zoo fit {zoo_s:.3f} [{', '.join(f'{run[k]:.3f}' for run in runs['zoo'])}]; "
              f"ratio {ratios[what]:.3f} (repeat by repeat {pair[0]:.2f}-{pair[-1]:.2f})")
    ratio = ratios["wall"]
    print(f"ratio zoo / hand (wall) = {ratio:.3f} (target <= 1.15: {'met' if ratio <= 1.15 else 'NOT met'}); "
          f"CPU-time ratio {ratios['cpu']:.3f}")
    if with_breakdown:
        breakdown(epochs, threads)
    return ratio


if __name__ == "__main__":
    from jsonargparse import auto_cli

    auto_cli(bench)
