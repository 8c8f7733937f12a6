"""Seconds per epoch: ``python -m zoo fit`` (LeNet-5, ReducedMNIST) vs a minimal hand-written PyTorch loop.

Both sides train the same LeNet-5 with the same data tensors, batch size, optimizer, scheduler and
loss, on the same number of threads, and validate once per epoch. Start-up (imports, data loading,
W&B) is excluded: the zoo run gets an :class:`EpochTimer` callback (``--trainer.callbacks``) that
timestamps each epoch start, and the hand loop times its own epochs; the first epoch is warm-up and
dropped. Targets: ratio <= 1.15 with the DataLoader path; <= 1.05 with ``--device_resident true``
(``--data.device_resident true``: batches sliced from the split tensors, no DataLoader; issue 18), whose
epoch should also be >= 1.3x faster than the DataLoader path's (``--compare_data_paths N``: N alternating
pairs of paired runs, one per path, each zoo epoch normalised by the hand-loop epoch before it).

    python benchmarks/bench_lenet_loop.py [--epochs 4] [--repeats 8] [--threads 1] [--logger wandb|csv] [--with_breakdown true] [--batch_size N]
    python benchmarks/bench_lenet_loop.py --device_resident true --compare_data_paths 3

Run it on an otherwise idle machine: other processes competing for the cores make both numbers noisy.
"""

from __future__ import annotations

import functools
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


def _since(start: tuple[float, float]) -> list[float]:
    now = _now()
    return [now[0] - start[0], now[1] - start[1]]


@functools.lru_cache(maxsize=None)
def recipe() -> tuple[dict, dict, int]:
    """(data init_args, model init_args, seed) of the benchmarked config."""
    import yaml

    cfg = yaml.safe_load(CONFIG.read_text())
    return cfg["data"]["init_args"], cfg["model"]["init_args"], cfg.get("seed_everything", 0)


def recipe_data(batch_size: int | None = None, device_resident: bool = False):
    """The benchmarked config's MNISTDataModule (``on_device`` dropped: no trainer places it here)."""
    from datamodules.mnist import MNISTDataModule

    args = {k: v for k, v in recipe()[0].items() if k != "on_device"}
    return MNISTDataModule(**{**args, "batch_size": batch_size or args["batch_size"], "device_resident": device_resident})


def epoch_seconds(stamps: list) -> list[tuple[float, float]]:
    """Per-epoch (wall, CPU) seconds from consecutive epoch-start stamps."""
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(stamps, stamps[1:])]


DEVICE_RESIDENT = ("--data.init_args.device_resident", "true")

# ``python -m zoo fit`` with everything a run keeps besides its weights in memory turned off
BARE_CLI = ("--trainer.logger", "false", "--trainer.enable_checkpointing", "false",
            "--trainer.enable_model_summary", "false")


def zoo_epochs(epochs: int, threads: int, logger: str, workdir: Path, paired: bool = False,
               extra: tuple[str, ...] = ()) -> list:
    """``python -m zoo fit`` (plus ``extra`` CLI arguments) in a subprocess; its per-epoch (wall, CPU) seconds.

    ``paired``: a :class:`PairedHandLoop` callback runs one hand-loop epoch in the same process before
    every zoo epoch; the result is then a list of (hand, zoo) pairs of (wall, CPU) seconds.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    stamps = workdir / "stamps.json"
    timer = "PairedHandLoop" if paired else "EpochTimer"
    cmd = [sys.executable, "-m", "zoo", "fit", "--config", str(CONFIG), "--trainer.max_epochs", str(epochs),
           "--model.scheduler.init_args.T_max", str(epochs), "--trainer.enable_progress_bar", "false",
           "--trainer.default_root_dir", str(workdir), "--run.test_after_fit", "false",
           f"--trainer.callbacks+=bench_lenet_loop.{timer}", f"--trainer.callbacks.path={stamps}"]
    if "--trainer.logger" in extra:
        cmd += list(extra)
    elif logger == "csv":
        cmd += ["--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(workdir), *extra]
    else:
        cmd += ["--trainer.logger.init_args.save_dir", str(workdir), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not stamps.exists():
        sys.exit(f"zoo fit failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    result = json.loads(stamps.read_text())
    return result if paired else epoch_seconds(result)


def shuffled_batches(x, y, batch_size: int):
    """The hand loop's data path: one shuffled index tensor per epoch, sliced into batches."""
    import torch

    perm = torch.randperm(len(y))
    for i in range(0, len(y), batch_size):
        idx = perm[i:i + batch_size]
        yield x[idx], y[idx]


class HandLoop:
    """The same training as configs/lenet_reduced_mnist.yaml, written as a plain PyTorch loop."""

    def __init__(self, epochs: int, threads: int, data=None) -> None:
        import torch

        from zoo.nets.lenet import LeNet5

        torch.set_num_threads(threads)
        _, model_args, seed = recipe()
        torch.manual_seed(seed)
        dm = data or recipe_data()
        (self.x, self.y), (self.xv, self.yv) = dm.split("train"), dm.split("val")
        self.model = LeNet5(**model_args["net"].get("init_args", {}))  # the config's net, initialised as the run's
        self.opt = torch.optim.AdamW(self.model.parameters(), **model_args["optimizer"]["init_args"])
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=epochs)
        self.smoothing, self.bs = model_args.get("label_smoothing", 0.0), dm.batch_size

    def step(self, x, y) -> None:
        import torch.nn.functional as F

        loss = F.cross_entropy(self.model(x), y, label_smoothing=self.smoothing)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()

    def epoch(self) -> None:
        import torch

        model = self.model
        model.train()
        for x, y in shuffled_batches(self.x, self.y, self.bs):
            self.step(x, y)
        self.sched.step()
        model.eval()
        with torch.no_grad():
            correct = sum((model(self.xv[i:i + 1000]).argmax(1) == self.yv[i:i + 1000]).sum().item()
                          for i in range(0, len(self.yv), 1000))
        assert correct > 0


def hand_epochs(epochs: int, threads: int, batch_size: int | None = None) -> list[tuple[float, float]]:
    loop, stamps = HandLoop(epochs, threads, data=recipe_data(batch_size)), []
    for _ in range(epochs):
        stamps.append(_now())
        loop.epoch()
    stamps.append(_now())
    return epoch_seconds(stamps)


class PairedHandLoop(Callback):
    """Runs one hand-loop epoch (own LeNet-5 and optimizer, the zoo run's data tensors) right before each
    zoo epoch, inside the zoo process: both sides of a pair share the process and the minute, so the
    speed drift of a shared VM cancels out of their ratio. Writes [(hand, zoo) (wall, CPU) s] to ``path``."""

    def __init__(self, path: str) -> None:
        self.path, self.pairs, self.loop, self.zoo_start = path, [], None, None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.zoo_start is not None:
            self.pairs[-1].append(_since(self.zoo_start))
        import torch

        with torch.random.fork_rng(devices=[]):  # leave the zoo run's random stream untouched
            if self.loop is None:
                self.loop = HandLoop(trainer.max_epochs, torch.get_num_threads(), data=trainer.datamodule)
            start = _now()
            self.loop.epoch()
            self.pairs.append([_since(start)])
        self.zoo_start = _now()

    def on_train_end(self, trainer, pl_module) -> None:
        self.pairs[-1].append(_since(self.zoo_start))
        Path(self.path).write_text(json.dumps(self.pairs))


def breakdown(epochs: int, threads: int, batch_size: int | None = None, device_resident: bool = False) -> None:
    """Where the overhead goes: in-process ``Trainer.fit`` (no logger, checkpoint, summary or progress bar)
    with ever more of the zoo, each paired epoch by epoch with the hand loop (:class:`PairedHandLoop`).
    Not part of the headline ratio."""
    import lightning as L
    import torch
    import torch.nn.functional as F

    from zoo.nets.lenet import LeNet5
    from zoo.tasks.classifier import Classifier

    torch.set_num_threads(threads)
    model_args = recipe()[1]
    opt_args, smoothing = model_args["optimizer"]["init_args"], model_args.get("label_smoothing", 0.0)
    net_args = model_args["net"].get("init_args", {})

    class Bare(Classifier):
        """Lightning's loop around the hand loop's step: ``return cross_entropy``, nothing logged."""

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self(x), y, label_smoothing=smoothing)

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), **opt_args)

    class Zoo(Classifier):
        """The zoo's Classifier steps (train_acc, step loss where shown, val/loss and val/acc)."""

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), **opt_args)

    class StepCost(Callback):
        """On batch 10 of the (uncounted) first epoch: Lightning's whole optimisation step (closure, hooks, zero_grad,
        backward, optimizer step) against the hand loop's four lines on a LeNet-5 copy, interleaved 20x20."""

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if trainer.current_epoch != 0 or batch_idx != 10:
                return
            from collections import OrderedDict

            loop, opt = trainer.fit_loop.epoch_loop.automatic_optimization, trainer.optimizers[0]
            with torch.random.fork_rng(devices=[]):
                hand_loop = HandLoop(trainer.max_epochs, torch.get_num_threads(), data=trainer.datamodule)

            def hand() -> None:
                hand_loop.step(*batch)

            def lightning() -> None:
                loop.run(opt, batch_idx, OrderedDict(batch=batch, batch_idx=batch_idx))

            times = {"hand": [], "lightning": []}
            for _ in range(20):
                for name, step in (("hand", hand), ("lightning", lightning)):
                    start = time.process_time()
                    for _ in range(20):
                        step()
                    times[name].append((time.process_time() - start) / 20 * 1e3)
            hand_ms, lightning_ms = (statistics.median(times[k]) for k in ("hand", "lightning"))
            print(f"    one training step (batch {len(batch[1])}): hand {hand_ms:.2f} ms, Lightning's automatic optimisation "
                  f"with the zoo's training_step {lightning_ms:.2f} ms (+{lightning_ms - hand_ms:.2f} ms, "
                  f"{lightning_ms / hand_ms:.3f}x)", flush=True)

    class BetweenSteps(Callback):
        """CPU time from one training batch's end to the next one's start (Lightning's data fetch, batch transfer
        and loop bookkeeping), against what the hand loop does there: shuffle and slice."""

        def __init__(self) -> None:
            self.gaps, self.last = [], None

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self.gaps.append(0.0)
            self.last = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if self.last is not None:
                self.gaps[-1] += time.process_time() - self.last

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.last = time.process_time()

        def on_train_end(self, trainer, pl_module) -> None:
            x, y = trainer.datamodule.split("train")
            bs, start = trainer.datamodule.batch_size, time.process_time()
            for _ in shuffled_batches(x, y, bs):
                pass
            hand, lightning = time.process_time() - start, statistics.median(self.gaps[1:])
            gaps = -(-len(y) // bs) - 1
            print(f"    between training steps: Lightning {lightning * 1e3:.1f} ms an epoch ({lightning / gaps * 1e6:.0f} us "
                  f"a batch); the hand loop's shuffle and slicing {hand * 1e3:.1f} ms", flush=True)

    print(f"  breakdown, in-process, median (quartiles) of {epochs - 1} per-epoch CPU ratios to the paired hand loop:")
    with tempfile.TemporaryDirectory() as tmp:
        for model, val, what in (
                (Bare(LeNet5(**net_args)), False, "Lightning loop, bare training_step, no validation"),
                (Bare(LeNet5(**net_args)), True, "+ Lightning validation loop with the zoo's validation_step"),
                (Zoo(LeNet5(**net_args), label_smoothing=smoothing), True, "+ the zoo's training_step (Classifier)")):
            dm = recipe_data(batch_size, device_resident)
            pair = PairedHandLoop(str(Path(tmp) / "pairs.json"))
            trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False, limit_val_batches=None if val else 0,
                                callbacks=[pair, StepCost(), BetweenSteps()] if isinstance(model, Zoo) else [pair])
            trainer.fit(model, datamodule=dm)
            ratios = sorted(z[1] / h[1] for h, z in json.loads((Path(tmp) / "pairs.json").read_text())[1:])
            print(f"    {what:62s} {statistics.median(ratios):.3f} "
                  f"({ratios[len(ratios) // 4]:.3f}-{ratios[(3 * len(ratios)) // 4]:.3f})", flush=True)


def compare_variants(variants: dict[str, tuple[str, ...]], epochs: int, threads: int, logger: str,
                     repeats: int) -> dict[str, list[tuple[float, float]]]:
    """Paired ``python -m zoo fit`` runs (:class:`PairedHandLoop`) of each variant's CLI arguments, alternating so
    all see the same minutes; per variant and run: (median zoo / hand CPU ratio, median zoo wall s/epoch)."""
    got = {what: [] for what in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for v, (what, args) in enumerate(variants.items()):
                pairs = zoo_epochs(epochs, threads, logger, Path(tmp) / f"{r}_{v}", paired=True, extra=args)[1:]
                got[what].append((statistics.median(z[1] / h[1] for h, z in pairs),
                                  statistics.median(z[0] for _, z in pairs)))
    print(f"  python -m zoo fit, paired, median CPU ratio to the hand loop (zoo wall s/epoch) of each of {repeats} "
          f"alternating runs per variant:")
    for what, runs in got.items():
        print(f"    {what:62s} {', '.join(f'{r:.3f} ({w:.3f})' for r, w in runs)}", flush=True)
    return got


def cli_without_extras(epochs: int, threads: int, logger: str, repeats: int, extra: tuple[str, ...] = ()) -> None:
    """What the default logger, checkpoints and model summary cost: with them (as configured) and without
    them (:data:`BARE_CLI`)."""
    compare_variants({"as configured": extra, "logger, checkpointing, model summary off": (*extra, *BARE_CLI)},
                     epochs, threads, logger, repeats)


def data_path_speedup(epochs: int, threads: int, logger: str, repeats: int, extra: tuple[str, ...] = ()) -> float:
    """The zoo's DataLoader path against ``--data.device_resident true``; returns the epoch speed-up of the
    latter (ratio of the medians of their zoo / hand ratios: the hand loop cancels the VM's drift)."""
    got = compare_variants({"DataLoader path (on_device, as configured)": extra,
                            "device_resident": (*extra, *DEVICE_RESIDENT)}, epochs, threads, logger, repeats)
    loader, resident = (statistics.median(r for r, _ in runs) for runs in got.values())
    speedup = loader / resident
    print(f"device-resident epoch speed-up over the DataLoader path = {speedup:.3f} "
          f"(zoo / hand {loader:.3f} -> {resident:.3f}; goal >= 1.3: {'met' if speedup >= 1.3 else 'NOT met'})",
          flush=True)
    return speedup


def bench(epochs: int = 4, threads: int = 1, logger: Literal["wandb", "csv"] = "wandb", repeats: int = 8,
          paired_epochs: int = 8, paired_repeats: int = 2, with_breakdown: bool = False,
          batch_size: int | None = None, device_resident: bool = False, compare_data_paths: int = 0) -> float:
    """Print both measurements and their ratios; returns the headline ratio (paired, unless skipped).

    Args:
        epochs: epochs per run; the first is warm-up and not counted.
        threads: torch threads on both sides.
        logger: the zoo run's logger (wandb = the zoo default, offline).
        repeats: hand and zoo runs alternate this many times. On a shared VM a whole process runs
            up to ~10 % faster or slower than the next one (epochs within a run agree to ~2 %), so
            each run is summarised by its median epoch and each side by the median over its runs.
        paired_epochs, paired_repeats: the paired measurement (:class:`PairedHandLoop`): zoo runs of
            this many epochs with a hand-loop epoch before each of theirs, in the same process; 0 skips it.
        with_breakdown: also time in-process variants of the training step, and the CLI without its
            logger, checkpoints and summary, to show where the overhead goes.
        batch_size: another batch size than the config's, on both sides: Lightning's cost is per batch,
            so this shows how the ratio scales with the work per step (the headline uses the config's).
        device_resident: the zoo side serves batches with ``--data.device_resident true`` (target <= 1.05).
        compare_data_paths: also this many alternating pairs of paired zoo runs, DataLoader path against
            device-resident (goal: device-resident epoch >= 1.3x faster); 0 skips it.
    """
    if epochs < 2 or (paired_repeats and paired_epochs < 2):
        sys.exit("--epochs and --paired_epochs must be >= 2 (the first epoch is warm-up)")
    if repeats < 1:
        sys.exit("--repeats must be >= 1")
    os.environ.setdefault("ZOO_DATA_DIR", str(REPO.parent / "shared" / "data"))
    batch_arg = ("--data.init_args.batch_size", str(batch_size)) if batch_size else ()
    zoo_arg = (*batch_arg, *DEVICE_RESIDENT) if device_resident else batch_arg
    runs = {"hand": [], "zoo": []}  # per run: (median wall, median CPU) s/epoch over its counted epochs
    pairs = []  # per counted epoch of the paired runs: ((hand wall, CPU), (zoo wall, CPU))
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for side, epochs_of in (("hand", lambda: hand_epochs(epochs, threads, batch_size)),
                                    ("zoo", lambda: zoo_epochs(epochs, threads, logger, Path(tmp) / f"run{r}",
                                                               extra=zoo_arg))):
                counted = epochs_of()[1:]
                runs[side].append(tuple(statistics.median(t[k] for t in counted) for k in (0, 1)))
            print(f"  repeat {r + 1}/{repeats}: hand {runs['hand'][-1][0]:.3f}, zoo {runs['zoo'][-1][0]:.3f} s/epoch",
                  flush=True)
        for r in range(paired_repeats):
            pairs += zoo_epochs(paired_epochs, threads, logger, Path(tmp) / f"paired{r}", paired=True,
                                extra=zoo_arg)[1:]
    print(f"LeNet-5 on ReducedMNIST (10k train images, batch {batch_size or recipe()[0]['batch_size']}), "
          f"{threads} thread(s), logger={logger}, zoo data path: "
          f"{'device-resident batches' if device_resident else 'DataLoader (on_device)'}")
    print(f"Separate processes: {repeats} alternating runs per side of {epochs} epochs (epoch 1 is warm-up); "
          f"per side the median over runs of each run's median epoch")
    ratios = {}
    for k, what in enumerate(("wall", "cpu")):
        hand = statistics.median(run[k] for run in runs["hand"])
        zoo_s = statistics.median(run[k] for run in runs["zoo"])
        ratios[what] = zoo_s / hand
        pair = sorted(z[k] / h[k] for z, h in zip(runs["zoo"], runs["hand"]))
        print(f"  {what:4s} s/epoch: hand-written loop {hand:.3f} [{', '.join(f'{run[k]:.3f}' for run in runs['hand'])}]; "
              f"python -m zoo fit {zoo_s:.3f} [{', '.join(f'{run[k]:.3f}' for run in runs['zoo'])}]; "
              f"ratio {ratios[what]:.3f} (repeat by repeat {pair[0]:.2f}-{pair[-1]:.2f})")
    print(f"  separate-process ratio (wall) {ratios['wall']:.3f}, CPU {ratios['cpu']:.3f}")
    ratio, source = ratios["wall"], "separate processes"
    if pairs:
        print(f"Paired in one process: {paired_repeats} zoo runs of {paired_epochs} epochs, a hand-loop epoch before "
              f"each zoo epoch (epoch 1 of each is warm-up); median of the {len(pairs)} per-epoch ratios")
        for k, what in enumerate(("wall", "cpu")):
            per_epoch = sorted(z[k] / h[k] for h, z in pairs)
            q1, q3 = per_epoch[len(per_epoch) // 4], per_epoch[(3 * len(per_epoch)) // 4]
            print(f"  {what:4s}: hand {statistics.median(h[k] for h, _ in pairs):.3f}, "
                  f"zoo {statistics.median(z[k] for _, z in pairs):.3f} s/epoch; "
                  f"ratio {statistics.median(per_epoch):.3f} (quartiles {q1:.3f}-{q3:.3f})")
            if what == "wall":
                ratio, source = statistics.median(per_epoch), "paired, the steadier measurement"
    target = 1.05 if device_resident else 1.15
    print(f"ratio zoo / hand (wall, {source}) = {ratio:.3f} "
          f"(target <= {target}: {'met' if ratio <= target else 'NOT met'})")
    if compare_data_paths:
        data_path_speedup(paired_epochs, threads, logger, compare_data_paths, batch_arg)
    if with_breakdown:
        breakdown(paired_epochs, threads, batch_size, device_resident)
        cli_without_extras(paired_epochs, threads, logger, max(paired_repeats, 2), zoo_arg)
    return ratio


if __name__ == "__main__":
    from jsonargparse import auto_cli

    auto_cli(bench)
