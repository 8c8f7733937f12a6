"""Seconds per training epoch of the ConvNet without and with CBAM on FSDD log-mel images
(configs/{cnn,cbam}_audio.yaml).

``python benchmarks/bench_audio_epoch.py [EPOCHS]`` builds each config exactly as ``python -m zoo fit``
does (LightningCLI, ``run=False``), times every epoch (training + the 270-clip validation) with a callback (the
first epoch is reported separately as warm-up) and prints the median. Data: ``$ZOO_DATA_DIR``,
else ``../shared/data``; the feature cache is built before timing starts.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L

REPO = Path(__file__).resolve().parents[1]


class EpochTimer(L.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.times.append(time.perf_counter() - self._start)


def main() -> int:
    epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    os.environ.setdefault("ZOO_DATA_DIR", str(REPO.parent / "shared" / "data"))
    from zoo.cli import main as cli_main

    import torch

    print(f"torch threads: {torch.get_num_threads()}, epochs: {epochs}")
    print(f"{'config':12s} {'first epoch s':>14s} {'median epoch s':>15s}")
    tmp = tempfile.mkdtemp(prefix="bench_audio_epoch_")
    for name in ("cnn_audio", "cbam_audio"):
        cli = cli_main(["--config", str(REPO / "configs" / f"{name}.yaml"), "--trainer.max_epochs", str(epochs),
                        "--trainer.default_root_dir", tmp,  # its checkpoints are not the user's
                        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                        "--trainer.enable_model_summary", "false",
                        "--run.test_after_fit", "false", "--data.progress", "false"], run=False)
        cli.datamodule.prepare_data()
        timer = EpochTimer()
        cli.trainer.callbacks.append(timer)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        rest = timer.times[1:] or timer.times
        print(f"{name:12s} {timer.times[0]:14.2f} {statistics.median(rest):15.2f}", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
