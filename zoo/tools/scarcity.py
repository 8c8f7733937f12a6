"""The data-scarcity study end to end for one ReducedMNIST size, without leakage: a conditional GAN trained on
exactly the real images the classifier gets, its samples exported, scored (FID with own features, CAS) and
mixed into the classifier grid.

``python -m zoo.tools.scarcity --real_per_class 300 [--augmented_per_class '[0, 1000, 2000, 3000]']``

Why one command: "synthetic data helps" is a result about scarce data only if the generator saw no more
real images than the classifier it helps. The GAN's DataModule gets the classifier's own ``real_per_class``
and ``split_seed`` (the same ReducedMNIST subset, :func:`datamodules.splits.take_per_class` of the same
seed), so the sample file can carry no information from outside it.

Steps, each skipped when its output exists (re-running resumes; ``--dry_run`` prints the commands):

1. ``<out>/real=<N>/gan/``: ``python -m zoo fit --config <gan_config> --data.real_per_class N
   --data.split_seed S`` (its checkpoints, log and results JSON);
2. ``<out>/real=<N>/samples.npz``: :func:`zoo.tools.sample_export.export_samples` of the last checkpoint,
   ``max(synthetic_per_class)`` per class;
3. ``<out>/real=<N>/gan_scores.json``: FID of the samples against the real test set with the features of
   ``fid_features`` (a zoo classifier checkpoint, e.g. of ``configs/lenet_mnist.yaml``), and CAS (LeNet-5
   trained on samples only, tested on real MNIST; ``--cas false`` skips it);
4. ``<out>/real=<N>/grid/``: the classifier grid (:mod:`zoo.tools.grid`) over ``synthetic_per_class``
   (x ``augmented_per_class`` when given), ``seeds`` each: ``table.md``, ``heatmap.png``, ``runs.csv``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml


def scarcity_grid(*, real_per_class: int, split_seed: int, samples: Path, synthetic_per_class: list[int],
                  augmented_per_class: list[int] | None, seeds: list[int], classifier_config: str,
                  classifier_args: list[str], out: Path) -> dict:
    """The grid file (as a dict) of step 4."""
    axes = {"data.synthetic_per_class": list(synthetic_per_class)}
    if augmented_per_class:
        axes = {"data.augmented_per_class": list(augmented_per_class), **axes}
    return {"config": classifier_config, "group": f"scarcity-real{real_per_class}", "seeds": list(seeds),
            "metric": "test/acc", "percent": True, "axes": axes,
            "args": ["--data.real_per_class", str(real_per_class), "--data.split_seed", str(split_seed),
                     "--data.synthetic_path", str(samples), *classifier_args],
            "out": str(out / "grid"), "logs": str(out / "grid" / "logs")}


def run_scarcity(*, real_per_class: int, out: str = "runs/scarcity", split_seed: int = 0,
                 gan_config: str = "configs/dcgan_mnist_conditional.yaml", gan_args: list[str] | None = None,
                 synthetic_per_class: list[int] | None = None, augmented_per_class: list[int] | None = None,
                 seeds: list[int] | None = None, classifier_config: str = "configs/lenet_reduced_mnist.yaml",
                 classifier_args: list[str] | None = None, fid_features: str | None = None, cas: bool = True,
                 cas_seeds: int = 3,
                 max_parallel: int = 1, dry_run: bool = False) -> dict:
    """Run the four steps for one real-data size; returns what ``<out>/real=<N>/summary.json`` holds.

    Args:
        real_per_class: real training images per class (300, 700 or 1000 in the original study).
        out: folder of all sizes' outputs.
        split_seed: the ReducedMNIST subset's seed, shared by the GAN and every classifier run.
        gan_config: config of the class-conditional GAN (``conditional``: its nets have ``num_classes: 10``).
        gan_args: extra CLI options of the GAN run (e.g. ``["--trainer.max_epochs", "200"]``: a small
            subset gives few steps per epoch).
        synthetic_per_class: synthetic images per class of the grid (default ``[0, 1000, 2000, 3000]``).
        augmented_per_class: optional second axis, augmented images per class (the study's 300-image grid).
        seeds: classifier seeds per cell (default ``[0, 1, 2]``).
        classifier_config: the classifier's base config.
        classifier_args: extra CLI options of every classifier run.
        fid_features: zoo classifier checkpoint whose features score FID; None: no FID.
        cas: also compute the Classification Accuracy Score of the samples (LeNet-5 trained on up to 1,000
            samples per class, tested on the real test set; ``configs/lenet_cas.yaml``).
        cas_seeds: classifier seeds of the CAS (mean and std over them).
        max_parallel: classifier runs at a time.
        dry_run: print the commands and the grid file, run nothing.
    """
    synthetic_per_class = list(synthetic_per_class or [0, 1000, 2000, 3000])
    seeds = list(seeds or [0, 1, 2])
    if real_per_class < 1 or min(synthetic_per_class) < 0 or min(augmented_per_class or [0]) < 0:
        raise ValueError(f"real_per_class must be >= 1 and the per-class counts >= 0, got {real_per_class}, "
                         f"{synthetic_per_class}, {augmented_per_class}")
    for path, what in ((gan_config, "gan_config"), (classifier_config, "classifier_config")):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{what} {path} does not exist")
    root = Path(out) / f"real={real_per_class}"
    gan_dir, samples = root / "gan", root / "samples.npz"
    gan_cmd = [sys.executable, "-m", "zoo", "fit", "--config", gan_config,
               "--data.real_per_class", str(real_per_class), "--data.split_seed", str(split_seed),
               "--seed_everything", str(split_seed), "--trainer.default_root_dir", str(gan_dir),
               "--trainer.logger", "CSVLogger", "--checkpoint.dirpath", str(gan_dir / "checkpoints"),
               "--run.group", f"scarcity-gan-real{real_per_class}",
               "--run.results_file", str(gan_dir / "results.json"), *(gan_args or [])]
    grid = scarcity_grid(real_per_class=real_per_class, split_seed=split_seed, samples=samples,
                         synthetic_per_class=synthetic_per_class, augmented_per_class=augmented_per_class,
                         seeds=seeds, classifier_config=classifier_config, classifier_args=list(classifier_args or []),
                         out=root)
    per_class = max(synthetic_per_class)
    if dry_run:
        print(" ".join(gan_cmd))
        print(f"# export {per_class} samples per class of {gan_dir / 'checkpoints' / 'last.ckpt'} to {samples}")
        print(yaml.safe_dump(grid, sort_keys=False))
        return {"gan_command": gan_cmd, "grid": grid}

    root.mkdir(parents=True, exist_ok=True)
    last = gan_dir / "checkpoints" / "last.ckpt"
    if not (gan_dir / "results.json").exists():  # 1. the GAN on the classifier's own subset (resumes a killed run)
        resume = ["--ckpt_path", str(last)] if last.exists() else []
        gan_dir.mkdir(parents=True, exist_ok=True)
        with open(gan_dir / "fit.log", "a") as log:
            code = subprocess.call(gan_cmd + resume, stdout=log, stderr=subprocess.STDOUT)
        if code != 0:
            raise RuntimeError(f"the GAN run failed (exit {code}); see {gan_dir / 'fit.log'}")
    if not samples.exists():  # 2. its samples
        from zoo.tools.sample_export import export_samples

        export_samples(checkpoint=str(last), per_class=per_class, out=str(samples), seed=split_seed)
    scores_path = root / "gan_scores.json"
    scores = json.loads(scores_path.read_text()) if scores_path.exists() else {}
    if fid_features and "fid" not in scores:  # 3. how good the samples are
        from zoo.tools.gan_eval import fid

        scores["fid"] = fid(samples=str(samples), features=fid_features)["fid"]
        scores_path.write_text(json.dumps(scores, indent=2))
    if cas and "cas" not in scores:
        from zoo.tools.gan_eval import cas as cas_score

        got = cas_score(samples=str(samples), per_class=min(per_class, 1000), seeds=cas_seeds)
        scores.update({"cas": got["cas"], "cas_std": got["std"], "cas_per_seed": got["per_seed"]})
        scores_path.write_text(json.dumps(scores, indent=2))
    grid_path = root / "grid.yaml"  # 4. the classifier grid
    grid_path.write_text(yaml.safe_dump(grid, sort_keys=False))
    from zoo.tools.grid import run_grid

    result = run_grid(str(grid_path), max_parallel=max_parallel)
    summary = {"real_per_class": real_per_class, "split_seed": split_seed, "gan": str(last), "samples": str(samples),
               "gan_scores": scores, "grid": {cell: {"mean": m, "std": s, "n": n}
                                              for cell, (m, s, n) in result.summary.items()},
               "failed_runs": len(result.failed)}
    (root / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {root / 'summary.json'}, {root / 'grid' / 'table.md'}")
    return summary


def main(args: list[str] | None = None):
    from jsonargparse import auto_cli

    from zoo.figures import use_file_backend

    use_file_backend()
    return auto_cli(run_scarcity, args=args)


if __name__ == "__main__":
    main()
