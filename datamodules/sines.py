"""Noisy sine waves for sequence autoencoders (``configs/lstm_ae_sines.yaml``).

Every sequence draws its own frequency, phase and amplitude, so an autoencoder has to encode
three real numbers (and cannot memorise one waveform); Gaussian noise on top keeps the
reconstruction from being exact. Generation is seeded per split: the same ``data_seed`` gives the
same train/val/test sets on every machine, and the three splits never share a draw.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from datamodules.batches import DeviceBatches, check_device_resident, device_batches, resident
from datamodules.settings import LegacySettingsMixin, NonNegativeFloat, NonNegativeInt, PositiveInt, save_settings
from datamodules.splits import SplitLoadersMixin

_SPLIT_OFFSET = {"train": 0, "val": 1, "test": 2}


def _check_range(name: str, value: tuple[float, float], low_bound: float) -> tuple[float, float]:
    if len(value) != 2 or not (low_bound < value[0] <= value[1]):
        raise ValueError(f"SineWaves {name} must be (low, high) with {low_bound} < low <= high, got {tuple(value)}")
    return float(value[0]), float(value[1])


def make_sines(n: int, length: int, freq_range: tuple[float, float], amp_range: tuple[float, float],
               noise: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` sequences ``(n, length, 1)`` and their parameters ``(n, 3)`` = (frequency, phase, amplitude).

    Frequency is in cycles per sequence, phase uniform in [0, 2*pi), amplitude uniform in ``amp_range``.
    """
    u = torch.rand(n, 3, generator=generator)
    freq = freq_range[0] + (freq_range[1] - freq_range[0]) * u[:, 0]
    phase = 2 * math.pi * u[:, 1]
    amp = amp_range[0] + (amp_range[1] - amp_range[0]) * u[:, 2]
    t = torch.arange(length, dtype=torch.float32) / length
    x = amp[:, None] * torch.sin(2 * math.pi * freq[:, None] * t[None, :] + phase[:, None])
    x = x + noise * torch.randn(n, length, generator=generator)
    return x.unsqueeze(-1), torch.stack([freq, phase, amp], dim=1)


class SineWaves(LegacySettingsMixin, SplitLoadersMixin, L.LightningDataModule):
    """Batches ``(x (B, length, 1), params (B, 3))``; ``params`` = (frequency, phase, amplitude) per sequence.

    Args:
        n_train: number of training sequences.
        n_val: number of validation sequences.
        n_test: number of test sequences.
        length: time steps per sequence.
        freq_range: (low, high) of the uniform frequency draw, in cycles per sequence.
        amp_range: (low, high) of the uniform amplitude draw.
        noise: standard deviation of the Gaussian noise added to every time step (>= 0).
        batch_size: batch size of all loaders.
        num_workers: DataLoader worker processes (0: load in the main process; must be 0 with device_resident).
        data_seed: seed of the generated splits (each split its own stream) and of the training shuffle order.
        device_resident: keep the generated splits on the trainer's device and serve batches by slicing them
            (no DataLoader); each epoch's order is a function of the run's seed (``data_seed`` outside a seeded
            run) and the epoch only, and each DDP process takes its own shard (that of Lightning's
            DistributedSampler). Predict always uses a DataLoader.
    """

    def __init__(self, n_train: PositiveInt = 4000, n_val: PositiveInt = 500, n_test: PositiveInt = 500,
                 length: PositiveInt = 64, freq_range: tuple[float, float] = (1.0, 4.0),
                 amp_range: tuple[float, float] = (0.5, 1.5), noise: NonNegativeFloat = 0.05,
                 batch_size: PositiveInt = 64, num_workers: NonNegativeInt = 0, data_seed: int = 0,
                 device_resident: bool = False) -> None:
        super().__init__()
        save_settings(self)
        if device_resident:
            check_device_resident("SineWaves", num_workers)
        self.freq_range = _check_range("freq_range", freq_range, 0.0)
        self.amp_range = _check_range("amp_range", amp_range, 0.0)
        self.datasets: dict[str, TensorDataset] = {}
        self._on_device: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # per split, with device_resident

    def dataset(self, split: str) -> TensorDataset:
        """The (cached) dataset of ``split`` in {'train', 'val', 'test'}."""
        if split not in _SPLIT_OFFSET:
            raise ValueError(f"SineWaves split must be one of {sorted(_SPLIT_OFFSET)}, got {split!r}")
        if split not in self.datasets:
            hp = self.hparams
            gen = torch.Generator().manual_seed(hp.data_seed * 3 + _SPLIT_OFFSET[split])
            n = {"train": hp.n_train, "val": hp.n_val, "test": hp.n_test}[split]
            self.datasets[split] = TensorDataset(*make_sines(n, hp.length, self.freq_range, self.amp_range,
                                                             hp.noise, gen))
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in splits.get(stage, ("train", "val", "test")):
            self.dataset(split)

    def _loader(self, split: str, shuffle: bool) -> DataLoader | DeviceBatches:
        hp = self.hparams
        if not hp.device_resident:
            return self._dataloader(split, shuffle)
        tensors = resident(self, self._on_device, split, lambda: self.dataset(split).tensors)
        # the DataLoader path's training loader has its own generator: its iterators draw nothing from the
        # global RNG (the evaluation loaders have none and draw from it)
        return device_batches(self, *tensors, hp.batch_size, shuffle, seed=hp.data_seed,
                              global_rng_draw=not shuffle)

    def _dataloader(self, split: str, shuffle: bool) -> DataLoader:
        gen = torch.Generator().manual_seed(self.hparams.data_seed) if shuffle else None
        return DataLoader(self.dataset(split), batch_size=self.hparams.batch_size, shuffle=shuffle,
                          num_workers=self.hparams.num_workers, generator=gen)

    def predict_dataloader(self) -> DataLoader:
        """Always a DataLoader of the test split: under DDP Lightning then predicts every sequence exactly once."""
        return self._dataloader("test", shuffle=False)
