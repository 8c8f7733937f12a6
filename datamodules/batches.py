"""Device-resident batches (``--data.device_resident true``), shared by every DataModule that offers them:
MNIST / ReducedMNIST (:mod:`datamodules.mnist`), the image folders (:mod:`datamodules.images`), the cached
spoken-digit features (:mod:`datamodules.spoken_digits`) and the sine waves (:mod:`datamodules.sines`).

The dataset is a few tensors on the training device; an epoch is one seeded permutation sliced into
batches, with exactly the order, padding and shard of the ``DistributedSampler`` that Lightning puts into a
DataLoader under DDP. A DataModule builds its loader with :func:`device_batches` (the run's seed, this
process's shard) and checks its settings with :func:`check_device_resident`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

Inputs = torch.Tensor | tuple[torch.Tensor, ...]


class DeviceBatches:
    """Batches sliced from split tensors that already live on the training device: no DataLoader, no
    sampler, no collation, one index tensor per epoch.

    Why: with the data on the device, a DataLoader's per-batch machinery (sampler, fetcher, collate) is
    pure Python overhead, and a small model's GPU step is short enough to wait for it. Lightning drives
    this like a loader: it has ``len()``, and its ``sampler`` is itself (``batch_sampler`` None, as
    Lightning checks a loader for both), so the fit loop's ``set_epoch`` reaches it.

    The order of an epoch is a function of ``seed`` and the epoch only (reproducible, and the same after
    resuming at an epoch boundary): exactly the order, padding and shard of torch's ``DistributedSampler``
    with that seed, which Lightning injects into the DataLoader path under DDP. So under DDP (and with
    ``world_size=1`` against a ``DistributedSampler(num_replicas=1)``) both paths serve identical batches.

    Args:
        x: the inputs, one tensor or a tuple of tensors (e.g. padded sequences and their lengths), each
            indexed along its first dimension like ``y``.
        y: the targets; a batch is ``(x[idx], y[idx])`` (``(*x[idx], y[idx])`` for a tuple ``x``).
        batch_size, shuffle, drop_last: as a DataLoader's.
        seed: the epoch order is ``randperm(n)`` of a generator seeded with ``seed + epoch``.
        rank, world_size: this process's shard, as ``DistributedSampler(num_replicas=world_size, rank=rank)``.
        transform: ``transform(batch, index)``, applied to every sliced batch (the tuple) on the device, e.g.
            the uint8-to-float conversion the DataLoader path does per item; must do exactly what that path
            does. ``index``: the batch's positions in the split, on the CPU, so that CPU-side facts (a clip's
            length) need no device-to-host sync per batch.
        global_rng_draw: draw one number from the global torch RNG per epoch, as a DataLoader iterator
            without a ``generator`` does (its workers' base seed), so dropout and other global-RNG users
            see the same stream on both paths; False for a DataLoader built with its own ``generator``.
    """

    def __init__(self, x: Inputs, y: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1,
                 transform: Callable[[tuple, torch.Tensor], tuple] | None = None, global_rng_draw: bool = True) -> None:
        xs = x if isinstance(x, tuple) else (x,)
        if any(len(t) != len(y) for t in xs):
            raise ValueError(f"DeviceBatches: {[len(t) for t in xs]} inputs but {len(y)} targets")
        if not 0 <= rank < world_size:
            raise ValueError(f"DeviceBatches: rank must be in [0, {world_size}), got {rank}")
        self.x, self.y, self.batch_size, self.shuffle, self.seed = x, y, batch_size, shuffle, seed
        self.drop_last, self.rank, self.world_size = drop_last, rank, world_size
        self.transform, self.global_rng_draw = transform, global_rng_draw
        self.epoch, self.sampler, self.batch_sampler = 0, self, None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> torch.Tensor:
        """This rank's indices of the current epoch, in order (on the CPU)."""
        n = len(self.y)
        order = (torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + self.epoch)) if self.shuffle
                 else torch.arange(n))
        if self.world_size > 1:  # DistributedSampler(drop_last=False): pad by repeating the start, then stride
            total = -(-n // self.world_size) * self.world_size
            order = order.repeat(-(-total // n))[:total][self.rank::self.world_size]
        if self.drop_last:
            order = order[:len(order) // self.batch_size * self.batch_size]
        return order

    def __len__(self) -> int:
        n = -(-len(self.y) // self.world_size)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        if self.global_rng_draw:  # what a DataLoader iterator draws for its workers' base seed
            torch.empty((), dtype=torch.int64).random_()
        xs = self.x if isinstance(self.x, tuple) else (self.x,)
        y, transform = self.y, self.transform
        order = self.indices()
        for cpu_idx, idx in zip(order.split(self.batch_size), order.to(y.device, non_blocking=True).split(self.batch_size)):
            batch = (*(t[idx] for t in xs), y[idx])
            yield transform(batch, cpu_idx) if transform is not None else batch


def trainer_device(dm) -> torch.device | None:
    """The root device of ``dm``'s trainer (where a device-resident split lives); None without a trainer."""
    trainer = getattr(dm, "trainer", None)
    return trainer.strategy.root_device if trainer is not None else None


def resident(dm, cache: dict, key: str, tensors: Callable[[], tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    """The split ``key``'s tensors on ``dm``'s trainer device (the CPU without a trainer): built by ``tensors()``
    and copied once, kept in ``cache``, copied again only if the device changed."""
    device = trainer_device(dm) or torch.device("cpu")
    if key not in cache or cache[key][-1].device != device:
        cache[key] = tuple(t.to(device) for t in tensors())
    return cache[key]


def device_batches(dm, x: Inputs, y: torch.Tensor, batch_size: int, shuffle: bool, seed: int,
                   drop_last: bool = False, **kwargs) -> DeviceBatches:
    """:class:`DeviceBatches` of ``dm``'s split tensors for this process: the shard of its trainer's
    ``distributed_sampler_kwargs`` (the whole split on one device) and, as Lightning seeds its
    ``DistributedSampler``, the run's seed (``PL_GLOBAL_SEED``, set by ``seed_everything``), else ``seed`` (the
    DataModule's own data seed, outside a seeded run). ``kwargs``: ``transform``, ``global_rng_draw``."""
    trainer = getattr(dm, "trainer", None)
    shard = (trainer.distributed_sampler_kwargs if trainer is not None else None) or {}
    return DeviceBatches(x, y, batch_size, shuffle, seed=int(os.environ.get("PL_GLOBAL_SEED", seed)),
                         drop_last=drop_last, rank=shard.get("rank", 0), world_size=shard.get("num_replicas", 1),
                         **kwargs)


def check_device_resident(owner: str, num_workers: int, setting: str = "device_resident") -> None:
    """Refuse worker processes with device-resident data (``setting``=True): the batches come from device
    memory in the main process, there is nothing for a worker to load."""
    if num_workers > 0:
        raise ValueError(f"{owner}: {setting}=True serves batches from device memory; it needs num_workers=0, "
                         f"got {num_workers}")
