"""Encode throughput of the batched greedy merge (method C) vs the per-utterance reference.

Same data, same pair autoencoder, no gradients, one CPU thread. Data: the FSDD official test set's
MFCC sequences when FSDD is found (``$ZOO_DATA_DIR/fsdd``), else synthetic sequences with FSDD-like
lengths; the script says which. Target (issue 3): batched >= 20x the reference.

    python benchmarks/bench_greedy_merge.py
"""

from __future__ import annotations

import os
import time

import torch

from datamodules.paths import data_root
from zoo.nets.mfcc import PairAutoencoder, greedy_merge, greedy_merge_reference

TARGET = 20.0


def load_data() -> tuple[torch.Tensor, torch.Tensor, str]:
    if (data_root() / "fsdd" / "recordings").is_dir():
        from datamodules.spoken_digits import SpokenDigits, collate_sequences

        dm = SpokenDigits(source="fsdd", feature="mfcc", split="official", progress=False)
        dm.setup("test")
        ds = dm.dataset("test")
        x, lengths, _ = collate_sequences([ds[i] for i in range(len(ds))])
        return x, lengths, f"FSDD official test set ({data_root() / 'fsdd'})"
    g = torch.Generator().manual_seed(0)
    lengths = (torch.randn(300, generator=g) * 15 + 45).round().clamp(12, 230).long()
    x = torch.randn(300, int(lengths.max()), 13, generator=g)
    return x, lengths, "synthetic (FSDD not found under $ZOO_DATA_DIR): 300 sequences, FSDD-like lengths"


def best_of(fn, repeats: int) -> float:
    """Fastest of ``repeats`` runs: the least disturbed by other load on a shared machine."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


@torch.no_grad()
def main() -> None:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    torch.manual_seed(0)
    x, lengths, what = load_data()
    ae = PairAutoencoder(x.shape[-1], hidden=64, normalize_codes=True, gated=True).eval()
    n = len(lengths)
    print(f"data: {what}")
    print(f"utterances: {n}, frames per utterance: mean {lengths.float().mean():.1f}, max {int(lengths.max())}; "
          f"threads: {torch.get_num_threads()}")

    start = time.perf_counter()
    ref = [greedy_merge_reference(ae, x[b, :lengths[b]]) for b in range(n)]
    t_ref = time.perf_counter() - start
    print(f"reference, one utterance at a time:  {n / t_ref:8.1f} utterances/s")
    by_length = torch.argsort(lengths, descending=True)
    settings = {  # name -> list of index batches
        "batch 64, dataset order": [torch.arange(k, min(k + 64, n)) for k in range(0, n, 64)],
        "batch 64, length-bucketed": [by_length[k:k + 64] for k in range(0, n, 64)],
        f"batch {n}, one call": [torch.arange(n)],
    }
    ratios = {}
    for name, batches in settings.items():
        parts = [(x[idx][:, : int(lengths[idx].max())], lengths[idx]) for idx in batches]
        t = best_of(lambda: [greedy_merge(ae, xb, lb, return_order=False) for xb, lb in parts], 3)
        ratios[name] = t_ref / t
        print(f"batched, {name:26s} {n / t:8.1f} utterances/s   ratio {ratios[name]:6.1f}x")
    res = greedy_merge(ae, x, lengths)
    same = all(res.order[b][res.order[b] >= 0].tolist() == ref[b][1] for b in range(n))
    close = all(torch.allclose(res.codes[b], ref[b][0], atol=1e-5) for b in range(n))
    print(f"same merge orders: {same}; same codes (atol 1e-5): {close}")
    for name, r in ratios.items():
        print(f"{name}: {r:.1f}x (target >= {TARGET:.0f}x): {'MET' if r >= TARGET else 'NOT MET'}")


if __name__ == "__main__":
    main()
