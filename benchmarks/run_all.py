"""``make bench``: run every ``benchmarks/bench_*.py`` in turn, report which failed, keep their output.

Benchmarks are plain scripts that print their own measurements (and ratios against a
reference); they are not tests and never run in ``make test``. Each script's output is shown as
it runs and also written, with the date, commit, machine and load, to
``docs/results/benchmarks/<script>.txt``: the figures the docs quote stay with their provenance.

    python benchmarks/run_all.py [name-filter ...] [-- script arguments]
    python benchmarks/run_all.py lenet -- --with_breakdown true
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "docs" / "results" / "benchmarks"


def header(script: Path, args: list[str]) -> str:
    from zoo.cli import provenance

    prov = provenance()
    dirty = " (uncommitted code changes)" if prov["git_dirty"] else ""
    return (f"# {script.name}, {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}\n"
            f"# commit {(prov['git_commit'] or 'unknown')[:7]}{dirty}; python {prov['python']}, torch {prov['torch']}, "
            f"lightning {prov['lightning']}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f} at start\n"
            f"# command: python {' '.join([str(script.relative_to(HERE.parent)), *args])}\n\n")


def run(script: Path, args: list[str]) -> int:
    """Run one script, echoing its output and saving it with a header; returns its exit status."""
    OUT.mkdir(parents=True, exist_ok=True)
    text = [header(script, args)]
    start = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # its lines appear as they are printed
    with subprocess.Popen([sys.executable, str(script), *args], cwd=HERE.parent, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, bufsize=1, env=env) as proc:
        for line in proc.stdout:
            print(line, end="", flush=True)
            text.append(line)
    text.append(f"\n# exit {proc.returncode} after {time.perf_counter() - start:.1f} s; "
                f"load average {os.getloadavg()[0]:.2f} at the end\n")
    out = output_file(script, args)
    if proc.returncode:  # a failed run does not replace the last good measurement
        out = out.with_suffix(".failed.txt")
    out.write_text("".join(text))
    return proc.returncode


def output_file(script: Path, args: list[str]) -> Path:
    """``<script>.txt``, or ``<script>__<arguments>.txt`` for a run with arguments (e.g. ``--batch_size 64``)."""
    suffix = "__" + "_".join(a.lstrip("-") for a in args) if args else ""
    return OUT / f"{script.stem}{''.join(c if c.isalnum() or c in '._-' else '-' for c in suffix)}.txt"


def main() -> int:
    argv = sys.argv[1:]
    filters, args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    scripts = sorted(HERE.glob("bench_*.py"))
    if filters:
        scripts = [s for s in scripts if any(k in s.stem for k in filters)]
    if args and len(scripts) != 1:
        sys.exit(f"arguments after -- go to one script; the filters {filters} select {len(scripts)}")
    failed = []
    for script in scripts:
        print(f"\n=== {script.name} ===", flush=True)
        start = time.perf_counter()
        code = run(script, args)
        print(f"--- {script.name}: exit {code}, {time.perf_counter() - start:.1f} s "
              f"(output kept in {output_file(script, args).relative_to(HERE.parent)})", flush=True)
        if code:
            failed.append(script.name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
