"""``make bench``: run every ``benchmarks/bench_*.py`` in turn and report which failed.

Benchmarks are plain scripts that print their own measurements (and ratios against a
reference); they are not tests and never run in ``make test``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    here = Path(__file__).resolve().parent
    scripts = sorted(here.glob("bench_*.py"))
    if len(sys.argv) > 1:
        scripts = [s for s in scripts if any(k in s.stem for k in sys.argv[1:])]
    failed = []
    for script in scripts:
        print(f"\n=== {script.name} ===", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(script)], cwd=here.parent)
        print(f"--- {script.name}: exit {code}, {time.perf_counter() - start:.1f} s", flush=True)
        if code:
            failed.append(script.name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
