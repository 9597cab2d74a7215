"""Demo invoice generator throughput: documents/s on one core (build + seal + stamp, 2 RSA-2048 signatures).

Usage: .venv/bin/python bench/generator_bench.py [--count N] [--runs R] [--no-record]
Pins itself to core 0 (taskset semantics via sched_setaffinity) and appends a dated entry to
the raw run log (.local/bench/, out of git).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.record import Measurement, append_result  # noqa: E402
from tooling.issuers.generator import InvoiceGenerator  # noqa: E402
from tooling.issuers.pki import DemoPKI  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--bad-fraction", type=float, default=0.03)
    parser.add_argument("--no-record", action="store_true", help="Do not append to the raw run log.")
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
    figures = {"best_docs_per_s": best, "docs_per_s": mean, "us_per_doc": 1e6 / best,
               "mean_size_kb": sizes / args.count / 1024}
    params = {"count": args.count, "runs": args.runs, "bad_fraction": args.bad_fraction, "pinned": pinned}
    append_result("demo invoice generator (one core)",
                  f".venv/bin/python bench/generator_bench.py --count {args.count} --runs {args.runs}"
                  f"{' (pinned to core 0)' if pinned else ''}", f"- result: {line}",
                  measured=[Measurement("generator", figures, line, params)])


if __name__ == "__main__":
    main()
