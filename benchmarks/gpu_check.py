"""``make gpu-check``: every config in ``configs/`` trains a few dozen steps on a GPU in 32-true, bf16-mixed and
16-mixed, and a table of training samples/s per config and precision is printed and written as markdown.

Why: every number in the zoo so far came from a CPU. This proves each config on a lent GPU in a few
minutes, with no dataset and no network: tiny synthetic datasets are written in each dataset's real
on-disk format (MNIST IDX, FSDD WAV via ``tests/audio_fixtures.py``, CIFAR-10 JPEG class folders,
anime-faces RGBA PNGs) into a temporary data dir, and the configs run on them unchanged.

Each run (the zoo CLI in-process, ``zoo.cli.main(..., run=False)``) is checked for: finite losses; the
metric-name contract (README "Metric names": ``train/loss``, ``val/...``, ``test/...``, and for classifiers
``val/loss``, ``val/acc``, ``test/acc``, ``test/f1``, ``test/balanced_acc``); for manual optimisation (the
DCGAN) under 16-mixed, that the GradScaler is in place and both optimizers stepped. Convolutional nets
run channels-last (their own option, else :class:`zoo.compile.ChannelsLast`). Extra rows: ``torch.compile``
(:class:`zoo.compile.TorchCompile`) for a few conv configs in bf16, and LeNet-5 with device-resident
batches (``--data.device_resident true``); their cells give the speed-up over the plain row.

samples/s: median over the training steps after ``warmup`` of batch size / time between consecutive
step ends (CUDA synchronised at each; steps that follow a validation are not counted). One subprocess
per config runs that config's rows one after another (the import cost is paid once per config, and a
row and its compiled variant share a process); ``workers`` such processes share the GPU at a time, so
compare cells within a row. A failing run is recorded as FAIL with its error, and the rest continue;
processes still running after ``budget`` seconds are stopped (their runs: FAIL), so the check ends on time.

    python benchmarks/gpu_check.py [--out docs/results/gpu_check] [--workers 8] [--steps 30]
    python benchmarks/gpu_check.py --accelerator cpu --configs '[lenet_reduced_mnist]'   # smoke test, no GPU

Where torch and Lightning are installed but not the zoo's other dependencies, install the wheels of
``.whl/`` (jsonargparse, docstring-parser, typeshed-client, soundfile, espeakng-loader; W&B is not needed)
first (``benchmarks/gpu_check.md``):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Literal

import numpy as np
from lightning.pytorch import Callback

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
PRECISIONS = {"gpu": ["32-true", "bf16-mixed", "16-mixed"], "cpu": ["32-true", "bf16-mixed"]}
COMPILE = ("--trainer.callbacks+=zoo.compile.TorchCompile",)  # last: rows_of appends its init_args
RESIDENT = ("--data.init_args.device_resident", "true")
#: extra rows, config -> [(variant, CLI arguments)]; "compile" rows run in ``compile_precision`` only
VARIANTS = {
    "lenet_reduced_mnist": [("device_resident", RESIDENT), ("compile", COMPILE),
                            ("device_resident+compile", RESIDENT + COMPILE)],
    "mnistcnn_reduced_mnist": [("compile", COMPILE)],
    "cnn_audio": [("compile", COMPILE)],
    "image_classifier_cifar": [("compile", COMPILE)],
}
CLASSIFIER_METRICS = ("train/loss", "val/loss", "val/acc", "test/acc", "test/f1", "test/balanced_acc")
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# t-SNE of 1,000 test codes (sklearn, CPU) costs more than the rest of the run: 100 show it works
EXTRA_ARGS = {"conv_ae_mnist": ["--model.tsne_samples", "100"]}


# --- fixtures: tiny datasets in the real on-disk formats ----------------------------------------------
def needed_datasets(config: Path) -> set[str]:
    import yaml

    data = (yaml.safe_load(config.read_text()) or {}).get("data") or {}
    cls, args = str(data.get("class_path", "")).rsplit(".", 1)[-1], data.get("init_args") or {}
    if cls == "MNISTDataModule":
        return {"mnist"}
    if cls in ("SpokenDigits", "SpokenDigitImagePairs"):
        return {"fsdd", "mnist"}  # pairs draw MNIST images; the audio-to-image judge is an MNIST LeNet
    if cls == "ImageFolderDataModule":
        return {"anime" if "anime" in str(args.get("root", "")) else "cifar"}
    return set()


def write_fixtures(root: Path, which: set[str]) -> Path:
    """MNIST: 12,000 train / 2,000 test images (enough for ReducedMNIST's 1,000 + 100 per class and 200 test
    per class); FSDD: 3 speakers x 10 digits x 30 takes; CIFAR-10: 200 / 20 JPEGs per class; anime: 1,280 PNGs.
    Images carry a class-dependent pattern so that a model can learn them."""
    from PIL import Image

    rng = np.random.default_rng(0)
    if "mnist" in which:
        from datamodules.mnist import RAW_FILES, write_idx

        for (images_file, labels_file), n in ((RAW_FILES[:2], 12000), (RAW_FILES[2:], 2000)):
            y = rng.permutation(np.arange(n) % 10).astype(np.uint8)
            x = rng.integers(0, 60, (n, 28, 28), dtype=np.uint8)
            for c in range(10):
                x[y == c, 3 + 2 * c:6 + 2 * c, 5:23] = 255
            write_idx(root / "MNIST" / "raw" / images_file, x)
            write_idx(root / "MNIST" / "raw" / labels_file, y)
    if "fsdd" in which:
        sys.path.insert(0, str(REPO / "tests"))
        from audio_fixtures import write_fsdd

        write_fsdd(root, takes=range(30))
    if "cifar" in which:
        for split, per_class in (("train", 200), ("test", 20)):
            for c, name in enumerate(CIFAR_CLASSES):
                folder = root / "cifar10-jpeg" / split / name
                folder.mkdir(parents=True, exist_ok=True)
                color = np.array([25 * c, 255 - 25 * c, (80 * c) % 256])
                for i in range(per_class):
                    img = np.clip(color + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
                    Image.fromarray(img).save(folder / f"{i:04d}.jpg", quality=90)
    if "anime" in which:
        folder = root / "anime-faces" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(1280):
            img = rng.integers(0, 256, (64, 64, 4), dtype=np.uint8)
            img[..., 3] = 255
            Image.fromarray(img, "RGBA").save(folder / f"{i}.png")
    return root


# --- one run -------------------------------------------------------------------------------------------
def batch_size_of(batch) -> int:
    import torch

    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    if isinstance(batch, dict):
        return batch_size_of(next(iter(batch.values())))
    return batch_size_of(batch[0])


class Probe(Callback):
    """Times training steps, counts each optimizer's real steps (a GradScaler skips ``step()`` on inf
    gradients) and notes steps with a non-finite logged training loss."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.rates, self.batches, self.last = warmup, [], 0, None
        self.opt_steps: list[int] = []
        self.nonfinite: set[str] = set()

    def on_train_start(self, trainer, pl_module) -> None:
        self.cuda = pl_module.device.type == "cuda"
        self.opt_steps = [0] * len(trainer.optimizers)
        for i, opt in enumerate(trainer.optimizers):
            opt.register_step_post_hook(lambda *_, i=i: self.opt_steps.__setitem__(i, self.opt_steps[i] + 1))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.n = batch_size_of(batch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
        now = time.perf_counter()
        if batch_idx > 0 and self.last is not None and self.batches >= self.warmup:
            self.rates.append(self.n / (now - self.last))
        self.last, self.batches = now, self.batches + 1
        self.nonfinite |= {k for k, v in trainer.callback_metrics.items()
                           if k.startswith("train/") and "loss" in k and not torch.isfinite(v).all()}


def scalars(metrics) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if getattr(v, "numel", lambda: 1)() == 1}


def contract(model, metrics: dict[str, float], evaluated: bool) -> list[str]:
    """Problems with the metric names and values of a run (empty: all good)."""
    from lightning.pytorch.utilities.model_helpers import is_overridden

    from zoo.tasks.classifier import Classifier

    problems = [f"non-finite {k} = {v}" for k, v in metrics.items() if "loss" in k and not math.isfinite(v)]
    problems += [f"metric {k!r} outside the train/ val/ test/ prefixes" for k in metrics
                 if not k.startswith(("train/", "val/", "test/"))]
    wanted = ["train/loss"]
    if evaluated:
        wanted += list(CLASSIFIER_METRICS) if isinstance(model, Classifier) else []
        for stage in ("validation", "test"):
            prefix = "val/" if stage == "validation" else "test/"
            if is_overridden(f"{stage}_step", model) and not any(k.startswith(prefix) for k in metrics):
                problems.append(f"no {prefix} metric logged")
    missing = sorted(set(wanted) - set(metrics))
    return problems + ([f"missing {', '.join(missing)}"] if missing else [])


def cli_args(config: Path, accelerator: str, precision: str, steps: int, root: Path) -> list[str]:
    return ["--config", str(config), "--trainer.accelerator", accelerator, "--trainer.devices", "1",
            "--trainer.precision", precision, "--trainer.max_steps", str(steps), "--trainer.logger", "false",
            "--trainer.enable_checkpointing", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.num_sanity_val_steps", "0",
            "--trainer.limit_val_batches", "2", "--trainer.limit_test_batches", "2",
            "--trainer.log_every_n_steps", "5",  # the zoo logs per-step values only on logging steps
            "--trainer.default_root_dir", str(root), "--trainer.callbacks+=zoo.compile.ChannelsLast"]


def run_one(config: Path, variant: str, precision: str, args: list[str], job: dict, root: Path) -> dict:
    """Fit ``steps`` steps, then validate and test (not for compiled rows: their eager row checks the
    metrics), and check the results."""
    import torch
    from zoo.cli import main
    from zoo.compile import ChannelsLast

    rec = {"config": config.stem, "variant": variant, "precision": precision, "status": "OK", "error": None}
    start, cli = time.perf_counter(), None
    try:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        said = io.StringIO()  # a rejected argument is printed, then SystemExit: keep what was printed
        try:
            with contextlib.redirect_stderr(said):
                cli = main([*cli_args(config, job["accelerator"], precision, job["steps"], root), *args], run=False)
        except SystemExit as e:
            text = said.getvalue()
            raise RuntimeError(f"the zoo CLI exited ({e.code}): {text[text.rfind('error:'):][:1200]}") from e
        finally:
            sys.stderr.write(said.getvalue())
        trainer, model, data = cli.trainer, cli.model, cli.datamodule
        probe = Probe(job["warmup"])
        trainer.callbacks.append(probe)
        trainer.fit(model, datamodule=data)
        metrics = scalars(trainer.callback_metrics)
        evaluate = "compile" not in variant
        if evaluate:
            from lightning.pytorch.utilities.model_helpers import is_overridden

            trainer.validate(model, datamodule=data, verbose=False)
            metrics.update(scalars(trainer.callback_metrics))
            if is_overridden("test_step", model):
                trainer.test(model, datamodule=data, verbose=False)
                metrics.update(scalars(trainer.callback_metrics))
        problems = contract(model, metrics, evaluate)
        problems += [f"non-finite {k} in a training step" for k in sorted(probe.nonfinite)]
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if not model.automatic_optimization and precision == "16-mixed":
            if not isinstance(scaler, torch.amp.GradScaler):
                problems.append(f"16-mixed without a GradScaler ({type(trainer.precision_plugin).__name__})")
            if len(probe.opt_steps) < 2 or min(probe.opt_steps) < 1:
                problems.append(f"not every optimizer stepped under the GradScaler: steps {probe.opt_steps}")
        if not probe.rates:
            problems.append(f"no timed step (only {probe.batches} training batches ran; warm-up {job['warmup']})")
        rec.update(samples_per_s=statistics.median(probe.rates) if probe.rates else None, timed_steps=len(probe.rates),
                   global_step=trainer.global_step, optimizer_steps=probe.opt_steps, metrics=metrics,
                   channels_last=next((c.applied for c in trainer.callbacks if isinstance(c, ChannelsLast)), None),
                   grad_scale=float(scaler.get_scale()) if scaler is not None else None,
                   peak_gpu_mib=torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None)
        if problems:
            rec.update(status="FAIL", error="; ".join(problems))
    except Exception as e:  # noqa: BLE001 -- a failing config is recorded, the others go on
        rec.update(status="FAIL", error=f"{type(e).__name__}: {e}"[:1500], traceback=traceback.format_exc()[-4000:])
    finally:
        del cli
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    rec["wall_s"] = round(time.perf_counter() - start, 1)
    return rec


def prerequisites(config: Path, job: dict, root: Path) -> list[str]:
    """CLI arguments a config needs besides data: a checkpoint it loads, built through the CLI as a user would."""
    from zoo.cli import main

    def checkpoint(of: str, *args: str) -> str:
        out = root / f"prereq_{of}"
        cli = main(["fit", "--config", str(CONFIGS / f"{of}.yaml"), "--trainer.accelerator", job["accelerator"],
                    "--trainer.devices", "1", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
                    "--trainer.limit_val_batches", "1", "--trainer.logger", "false",
                    "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
                    "--trainer.default_root_dir", str(out), "--run.test_after_fit", "false",
                    "--checkpoint.dirpath", str(out), "--checkpoint.filename", "best", *args])
        return cli.trainer.checkpoint_callback.best_model_path or str(out / "last.ckpt")

    stem = config.stem
    if stem in ("audio2image_vae_fsdd", "dcgan_mnist_conditional"):
        key = "--model.judge_checkpoint" if stem == "audio2image_vae_fsdd" else "--model.fid_features"
        return [key, checkpoint("lenet_mnist", "--data.real_per_class", "10", "--data.test_per_class", "1")]
    if stem == "transfer_cifar":
        return ["--model.init_args.encoder_checkpoint", checkpoint("masked_ae_conv_cifar")]
    return list(EXTRA_ARGS.get(stem, []))


def run_job(job: dict) -> None:
    """Worker: every row of one config, one result line each (appended as it comes, so a crash keeps them)."""
    import torch

    config, root = Path(job["config"]), Path(job["workdir"])
    torch.set_num_threads(job["threads"])
    sys.argv = sys.argv[:1]  # the CLI runs take their arguments from the job, not from this process's command line
    try:
        extra, error = prerequisites(config, job, root), None
    except Exception as e:  # noqa: BLE001
        extra, error = [], f"preparing the config failed: {type(e).__name__}: {e}"[:1500]
    for k, (variant, precision, args) in enumerate(job["rows"]):
        if error:
            rec = {"config": config.stem, "variant": variant, "precision": precision, "status": "FAIL", "error": error}
        else:
            rec = run_one(config, variant, precision, [*args, *extra], job, root / f"run{k}")
        with open(job["results"], "a") as out:
            out.write(json.dumps(rec, default=str) + "\n")
        print(f"{config.stem} {variant or ''} {precision}: {rec['status']} {rec.get('samples_per_s') or ''} "
              f"{rec['error'] or ''}", flush=True)


# --- orchestration -------------------------------------------------------------------------------------
def rows_of(config: Path, precisions: list[str], compile_precision: str, compile_backend: str) -> list:
    """(variant, precision, CLI arguments) of every run of a config, in running order: each variant right
    after the plain run it is compared with, so both see the GPU as shared at about the same time."""
    # no validation in a compiled fit: it would compile the eval-mode graph too (the plain rows check the metrics)
    compile_args = ("--trainer.callbacks.init_args.backend", compile_backend, "--trainer.limit_val_batches", "0")
    variants = VARIANTS.get(config.stem, [])
    rows = []
    for p in dict.fromkeys([*precisions, compile_precision]):
        rows += [("", p, ())] if p in precisions else []
        rows += [(v, p, (*args, *compile_args) if "compile" in v else args) for v, args in variants
                 if ("compile" in v and p == compile_precision) or ("compile" not in v and p in precisions)]
    return rows


def run_jobs(jobs: list[dict], env: dict, workers: int, deadline: float) -> list[dict]:
    """Each job in its own process, ``workers`` at a time; whatever has not finished by ``deadline``
    (``time.perf_counter()``) is stopped and its unfinished runs count as failed."""
    def launch(job: dict) -> list[dict]:
        Path(job["job_file"]).write_text(json.dumps(job))
        log = Path(job["workdir"]) / "log.txt"
        timeout = deadline - time.perf_counter()
        try:
            if timeout < 5:
                raise subprocess.TimeoutExpired("", timeout)
            with open(log, "w") as f:
                proc = subprocess.run([sys.executable, __file__, "--job", job["job_file"]], env=env, cwd=REPO,
                                      stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
            why = f"worker exited with {proc.returncode}" if proc.returncode else "worker returned no result"
        except subprocess.TimeoutExpired:
            why = "stopped at the time budget (--budget)"
        path = Path(job["results"])
        done = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        tail = log.read_text()[-1500:] if log.exists() else ""
        for variant, precision, _ in job["rows"][len(done):]:
            done.append({"config": Path(job["config"]).stem, "variant": variant, "precision": precision,
                         "status": "FAIL", "error": f"{why}; log tail: {tail}"})
        return done

    results = []
    with ThreadPoolExecutor(max(1, min(len(jobs), workers))) as pool:
        futures = [pool.submit(launch, job) for job in jobs]
        for k, fut in enumerate(as_completed(futures), 1):
            got = fut.result()
            results += got
            cells = ", ".join(f"{(r['variant'] + ' ') if r['variant'] else ''}{r['precision']} "
                              + (f"{r['samples_per_s']:.0f}/s" if r["status"] == "OK" else "FAIL") for r in got)
            print(f"[{k}/{len(jobs)}] {got[0]['config'] if got else '?'}: {cells}", flush=True)
    return results


def render(results: list[dict], precisions: list[str], header: list[str]) -> str:
    """Markdown: one row per config and variant, samples/s per precision (x speed-up over the plain row)."""
    cell = {(r["config"], r["variant"], r["precision"]): r for r in results}
    precisions = list(dict.fromkeys([*precisions, *(r["precision"] for r in results)]))
    order = list(dict.fromkeys((r["config"], r["variant"]) for r in results))
    order.sort(key=lambda cv: (cv[0], cv[1]))
    lines = [*header, "", f"| config | channels-last | {' | '.join(precisions)} |",
             f"|---|---|{'---:|' * len(precisions)}"]
    for config, variant in order:
        cells, layout = [], ""
        for p in precisions:
            r = cell.get((config, variant, p))
            if r is None:
                cells.append("")
                continue
            layout = layout or r.get("channels_last") or ""
            if r["status"] != "OK" or not r.get("samples_per_s"):
                cells.append("FAIL")
                continue
            text = f"{r['samples_per_s']:,.0f}"
            base = cell.get((config, "", p))
            if variant and base and base.get("samples_per_s"):
                text += f" ({r['samples_per_s'] / base['samples_per_s']:.2f}x"
                text += f"; run {r['wall_s']:.0f} s vs {base['wall_s']:.0f} s)" if "compile" in variant else ")"
            cells.append(text)
        name = f"{config} + {variant}" if variant else config
        lines.append(f"| {name} | {layout} | {' | '.join(cells)} |")
    failed = [r for r in results if r["status"] != "OK"]
    lines += ["", f"{len(results) - len(failed)} of {len(results)} runs passed every check."]
    gan = [r for r in results if r["config"].startswith("dcgan") and r["precision"] == "16-mixed"
           and r.get("optimizer_steps")]
    if gan:
        lines += ["", "DCGAN under 16-mixed (GradScaler), optimizer steps taken (D, G) and final loss scale: "
                  + "; ".join(f"{r['config']} {r['optimizer_steps']} scale {r.get('grad_scale')}" for r in gan)]
    if failed:
        lines += ["", "## Failures", ""]
        lines += [f"- **{r['config']}{' + ' + r['variant'] if r['variant'] else ''}, {r['precision']}**: "
                  f"{' '.join(str(r['error']).split())[:600]}" for r in failed]
    return "\n".join(lines) + "\n"


def gpu_check(configs: list[str] | None = None, accelerator: Literal["gpu", "cpu"] = "gpu",
              precisions: list[str] | None = None, steps: int = 30, warmup: int = 5, workers: int = 8,
              out: str | None = None, compile_precision: str = "bf16-mixed",
              compile_backend: str = "inductor", budget: int = 320, job: str | None = None) -> int:
    """Run the check; returns the exit status (1 if any run failed).

    Args:
        configs: config names (``configs/<name>.yaml``) or paths; None: every config in configs/.
        accelerator: "gpu" (CUDA) or "cpu" (a smoke test of this script).
        precisions: Lightning precisions to run; None: 32-true, bf16-mixed and 16-mixed (no 16-mixed on CPU).
        steps: training steps per run (``--trainer.max_steps``; a DCGAN step counts its two optimizers).
        warmup: training batches not timed at the start of each run.
        workers: configs run at the same time, each in its own process.
        out: folder for the markdown table and the raw results (JSON); None: docs/results/gpu_check/.
        compile_precision: precision of the torch.compile rows.
        compile_backend: their ``torch.compile`` backend ("eager" skips compilation: a quick CPU smoke test).
        budget: seconds for the whole check: config processes still running then are stopped (their
            unfinished runs count as failed), so the check ends in about this time plus a few seconds.
        job: internal: run one config's rows from this job file (a worker process).
    """
    if job:
        run_job(json.loads(Path(job).read_text()))
        return 0
    start = time.perf_counter()
    import torch

    if accelerator == "gpu" and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here; use --accelerator cpu for a smoke test")
    paths = [Path(c) if c.endswith((".yaml", ".yml")) else CONFIGS / f"{c}.yaml" for c in configs] if configs \
        else sorted(CONFIGS.glob("*.yaml"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        sys.exit(f"gpu_check: no such config(s): {', '.join(missing)}")
    precisions = precisions or PRECISIONS[accelerator]
    work = Path(tempfile.mkdtemp(prefix="zoo_gpu_check_"))
    data = write_fixtures(work / "data", set().union(*(needed_datasets(p) for p in paths)))
    print(f"gpu_check: fixtures in {data} ({time.perf_counter() - start:.0f} s); {len(paths)} configs, "
          f"{workers} at a time", flush=True)
    threads = max(1, (os.cpu_count() or 1) // max(1, min(workers, len(paths))))
    jobs = []
    for k, path in enumerate(paths):
        folder = work / f"{k:02d}_{path.stem}"
        folder.mkdir()
        jobs.append({"config": str(path.resolve()), "accelerator": accelerator, "steps": steps, "warmup": warmup,
                     "rows": rows_of(path, precisions, compile_precision, compile_backend), "threads": threads,
                     "workdir": str(folder), "results": str(folder / "results.jsonl"),
                     "job_file": str(folder / "job.json")})
    # long ones first: compiling, and synthesising the espeak-ng clips of add_tts (once, into the shared cache)
    jobs.sort(key=lambda j: -sum(3 if "compile" in v else 1 for v, _, _ in j["rows"])
              - 5 * ("add_tts: true" in Path(j["config"]).read_text()))
    # one cache for all: the zoo writes caches atomically, so concurrent jobs at worst build one twice
    env = {**os.environ, "ZOO_DATA_DIR": str(data), "ZOO_CACHE_DIR": str(work / "cache"), "WANDB_MODE": "disabled",
           "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "PYTHONUNBUFFERED": "1", "TORCHINDUCTOR_COMPILE_THREADS": str(max(2, (os.cpu_count() or 1) // 4))}
    results = run_jobs(jobs, env, workers, start + budget)

    import lightning

    device = torch.cuda.get_device_name(0) if accelerator == "gpu" else f"CPU ({os.cpu_count()} cores)"
    header = [f"# GPU check: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {device}", "",
              f"torch {torch.__version__} (CUDA {torch.version.cuda}), lightning {lightning.__version__}, "
              f"python {sys.version.split()[0]}; {len(paths)} configs, {steps} steps per run on tiny synthetic data "
              f"in the real formats; {workers} configs at a time on the one device; {os.cpu_count()} CPUs. "
              f"Training samples/s (median step after {warmup} warm-up steps); (x) = speed-up over the plain row, "
              f"same precision (compiled rows: and the wall time of the whole run, compilation included, without "
              f"validation and test). Whole check: {time.perf_counter() - start:.0f} s.",
              "", f"Command: `python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}`"]
    table = render(results, precisions, header)
    print("\n" + table)
    folder = Path(out) if out else REPO / "docs" / "results" / "gpu_check"
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{time.strftime('%Y-%m-%d')}_{''.join(c if c.isalnum() else '-' for c in device).strip('-')}"
    (folder / f"{stem}.md").write_text(table)
    (folder / f"{stem}.json").write_text(json.dumps(results, indent=1, default=str))
    for job in jobs:  # the console of every config with a failure, for a machine that is gone afterwards
        name, log = Path(job["config"]).stem, Path(job["workdir"], "log.txt")
        if log.exists() and any(r["config"] == name and r["status"] != "OK" for r in results):
            (folder / "logs").mkdir(exist_ok=True)
            (folder / "logs" / f"{stem}_{name}.log").write_text(log.read_text()[-200_000:])
    shutil.rmtree(work, ignore_errors=True)  # fixtures, caches, run folders
    print(f"written: {folder / (stem + '.md')} and .json ({time.perf_counter() - start:.0f} s in all)")
    return int(any(r["status"] != "OK" for r in results))


if __name__ == "__main__":
    from jsonargparse import auto_cli

    sys.exit(auto_cli(gpu_check))
