"""A callback for searches that run each trial as a ``python -m zoo fit`` subprocess (zoo.launchers).

Its own module, not zoo/launchers.py: a submitit job or an Optuna worker imports the launchers, and
they need not import Lightning for that."""

from __future__ import annotations

import json
from pathlib import Path

from lightning.pytorch import Callback


class EpochMetricLog(Callback):
    """Appends ``{"epoch", "value"}`` of one metric to a JSON-lines file at every validation epoch end.

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
