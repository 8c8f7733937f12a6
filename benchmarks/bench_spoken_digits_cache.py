"""Feature cache of SpokenDigits on the real FSDD (3,000 clips): cold build vs warm load.

``python benchmarks/bench_spoken_digits_cache.py [--data-dir DIR]`` times ``setup("fit")`` with an
empty cache (read + resample + features + save) and again with the cache in place, for both
features, and prints the seconds and the cold/warm ratio. Data: ``--data-dir``, else
``$ZOO_DATA_DIR``, else ``../shared/data``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("ZOO_DATA_DIR")
                    or str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--features", nargs="+", default=["logmel", "mfcc"])
    args = ap.parse_args()
    if not (Path(args.data_dir) / "fsdd" / "recordings").is_dir():
        print(f"FSDD not found under {args.data_dir}/fsdd/recordings; pass --data-dir", file=sys.stderr)
        return 2
    from datamodules.spoken_digits import SpokenDigits

    print(f"torch threads: {__import__('torch').get_num_threads()}")
    print(f"{'feature':8s} {'cold s':>8s} {'warm s':>8s} {'cold/warm':>10s}")
    for feature in args.features:
        with tempfile.TemporaryDirectory() as cache:
            times = []
            for _ in ("cold", "warm"):
                dm = SpokenDigits(data_dir=args.data_dir, cache_dir=cache, feature=feature, progress=False)
                start = time.perf_counter()
                dm.setup("fit")
                times.append(time.perf_counter() - start)
            n = sum(len(dm.dataset(s)) for s in ("train", "val", "test"))
            print(f"{feature:8s} {times[0]:8.2f} {times[1]:8.2f} {times[0] / times[1]:10.1f}   ({n} clips)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
