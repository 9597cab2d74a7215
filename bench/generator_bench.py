"""Demo invoice generator throughput: documents/s on one core (build + seal + stamp, 2 RSA-2048 signatures).

Usage: .venv/bin/python bench/generator_bench.py [--count N] [--runs R] [--no-record]
Pins itself to core 0 (taskset semantics via sched_setaffinity) and appends a dated entry to
bench/RESULTS.md (append-only).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.issuers.generator import InvoiceGenerator  # noqa: E402
from shared.issuers.pki import DemoPKI  # noqa: E402


def _machine() -> str:
    mem = "?"
    try:
        kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration):
        pass
    cpu = platform.processor() or platform.machine()
    return f"nproc {os.cpu_count()}, memory {mem}, {cpu}, Python {platform.python_version()}"


def _commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--bad-fraction", type=float, default=0.03)
    parser.add_argument("--no-record", action="store_true", help="Do not append to bench/RESULTS.md.")
    args = parser.parse_args()
    pinned = hasattr(os, "sched_setaffinity")
    if pinned:
        os.sched_setaffinity(0, {0})  # one core, as `taskset -c 0`

    with tempfile.TemporaryDirectory() as tmp:
        pki = DemoPKI.create(tmp, issuers=20, seed=0)
        generator = InvoiceGenerator(pki, seed=1, bad_fraction=args.bad_fraction)
        generator.generate(0)  # compile the XSLT outside the timing
        rates, sizes = [], 0
        for run in range(args.runs):
            began = time.perf_counter()
            sizes = sum(len(generator.generate(run * args.count + i).xml) for i in range(args.count))
            rates.append(args.count / (time.perf_counter() - began))
    best, mean = max(rates), sum(rates) / len(rates)
    line = (f"best {best:.0f} docs/s, mean {mean:.0f} docs/s ({1e6 / best:.0f} µs/doc) over {args.runs} runs of "
            f"{args.count} docs, mean size {sizes / args.count / 1024:.1f} KB, bad fraction {args.bad_fraction}")
    print(line)
    if args.no_record:
        return
    results = ROOT / "bench" / "RESULTS.md"
    if not results.exists():
        results.write_text("# Benchmark results\n\nAppend-only log of measured numbers.\n")
    entry = (f"\n## {datetime.now(UTC):%Y-%m-%d %H:%M} UTC — demo invoice generator (one core)\n\n"
             f"- machine: {_machine()}\n- commit: {_commit()}\n"
             f"- command: `.venv/bin/python bench/generator_bench.py --count {args.count} --runs {args.runs}`"
             f"{' (pinned to core 0)' if pinned else ''}\n- result: {line}\n")
    with results.open("a") as handle:
        handle.write(entry)


if __name__ == "__main__":
    main()
