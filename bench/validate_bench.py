"""Validator throughput on one core: typical generated invoices, fast schema vs SAT's stock schema.

    .venv/bin/python bench/validate_bench.py [--count 1500] [--stock-count 200] [--runs 3]

Generates invoices with the project's demo PKI (1–15 conceptos, the generator's mix of I/E/P),
then runs each variant in its own process pinned to core 0 (``taskset -c 0`` when available) so the
peak RSS is the validator's own, and appends the figures to the raw run log (.local/bench/).  The fast
variant runs twice against a private schema cache: once cold (it prepares SAT's schema: the start-up
of a first process) and once warm (the figures in the table).  Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _write_docs(path: Path, docs: list[bytes]) -> None:
    with path.open("wb") as fh:
        for doc in docs:
            fh.write(len(doc).to_bytes(4, "big") + doc)


def _read_docs(path: Path) -> list[bytes]:
    data, docs, at = path.read_bytes(), [], 0
    while at < len(data):
        n = int.from_bytes(data[at : at + 4], "big")
        docs.append(data[at + 4 : at + 4 + n])
        at += 4 + n
    return docs


def worker(mode: str, docs_path: Path, pki_dir: Path, runs: int) -> None:
    """One variant in this process: build, warm up, time ``runs`` passes, report JSON on stdout."""
    from services.validate.cfdi import CfdiValidator, StampCertStore, TrustStore
    from tooling.issuers.pki import DemoPKI

    docs = _read_docs(docs_path)
    pki = DemoPKI.load(pki_dir)
    t0 = time.perf_counter()
    validator = CfdiValidator(TrustStore.default([pki.ca_cert]), StampCertStore.from_directory(pki.stamp_certs_dir),
                              fast_schema=(mode == "fast"))
    validator.validate(docs[0])
    startup = time.perf_counter() - t0
    verdicts: dict[str, int] = {}
    for doc in docs[: min(len(docs), 50)]:  # warm the certificate cache and libxslt
        v = validator.validate(doc).verdict.value
        verdicts[v] = verdicts.get(v, 0) + 1
    rates = []
    for _ in range(runs):
        t = time.perf_counter()
        for doc in docs:
            validator.validate(doc)
        rates.append(len(docs) / (time.perf_counter() - t))
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"mode": mode, "docs": len(docs), "best": max(rates), "mean": statistics.mean(rates),
                      "peak_rss_mb": peak_kb / 1024, "startup_s": startup, "warmup_verdicts": verdicts}))


def _pinned(cmd: list[str]) -> list[str]:
    return ["taskset", "-c", "0", *cmd] if shutil.which("taskset") else cmd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1500, help="documents for the fast variant")
    ap.add_argument("--stock-count", type=int, default=200, help="documents for the stock-schema variant")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-record", action="store_true", help="do not append to the raw run log")
    ap.add_argument("--worker", choices=["fast", "stock"], help=argparse.SUPPRESS)
    ap.add_argument("--docs", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--pki", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        if not shutil.which("taskset"):
            os.sched_setaffinity(0, {0})
        worker(args.worker, args.docs, args.pki, args.runs)
        return

    from tooling.issuers.generator import InvoiceGenerator
    from tooling.issuers.pki import DemoPKI

    with tempfile.TemporaryDirectory(prefix="validate-bench-") as tmp:
        tmpdir = Path(tmp)
        pki = DemoPKI.create(tmpdir / "pki", issuers=8, seed=1)
        gen = InvoiceGenerator(pki, seed=42)
        docs = [gen.generate(i, defect=None).xml for i in range(args.count)]
        sizes = [len(d) for d in docs]
        _write_docs(tmpdir / "fast.bin", docs)
        _write_docs(tmpdir / "stock.bin", docs[: args.stock_count])
        results = {}
        # The fast schema's preparation is cached on disk (schema_cache): a private, empty cache
        # directory makes the first fast process prepare it (cold start) and the next one read it.
        env = {**os.environ, "XDG_CACHE_HOME": str(tmpdir / "cache")}
        for mode in ("cold", "fast", "stock"):
            worker_mode = "stock" if mode == "stock" else "fast"
            cmd = _pinned([sys.executable, __file__, "--worker", worker_mode, "--docs",
                           str(tmpdir / f"{worker_mode}.bin"), "--pki", str(pki.directory),
                           "--runs", str(args.runs if mode != "cold" else 1)])
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT, env=env)
            results[mode] = json.loads(out.stdout.strip().splitlines()[-1])

    rows = ["| schema | docs | best docs/s | mean docs/s | µs/doc (mean) | peak RSS MB | startup s |",
            "|---|---|---|---|---|---|---|"]
    for mode in ("fast", "stock"):
        r = results[mode]
        rows.append(f"| {mode} | {r['docs']} | {r['best']:.0f} | {r['mean']:.0f} | {1e6 / r['mean']:.0f} | "
                    f"{r['peak_rss_mb']:.0f} | {r['startup_s']:.2f} |")
    table = "\n".join(rows)
    cold = f"fast start-up without the schema cache (a first process): {results['cold']['startup_s']:.2f} s"
    print(table)
    print(cold)
    print("warm-up verdicts:", {m: results[m]["warmup_verdicts"] for m in ("fast", "stock")})
    if not args.no_record:
        from bench.record import append_result
        from tooling.bench.scenarios import scenario

        figures = {f"{mode}.{k}": v for mode in ("fast", "stock") for k, v in (
            ("docs", results[mode]["docs"]), ("best_docs_per_s", results[mode]["best"]),
            ("docs_per_s", results[mode]["mean"]), ("us_per_doc", 1e6 / results[mode]["mean"]),
            ("peak_rss_mb", results[mode]["peak_rss_mb"]), ("startup_s", results[mode]["startup_s"]))}
        figures["fast.startup_cold_s"] = results["cold"]["startup_s"]
        params = {"count": args.count, "stock_count": args.stock_count, "runs": args.runs}
        note = (f"full CfdiValidator.validate (L0–L4, SelloSAT verified) on generated invoices, mean "
                f"{statistics.mean(sizes) / 1024:.1f} KB ({min(sizes) / 1024:.1f}–{max(sizes) / 1024:.1f} KB); "
                f"each variant in its own process pinned to core 0; {args.runs} runs, best and mean; {cold}. "
                f"Target: {scenario('validator').target} RSS.")
        append_result("CFDI validator (one core)", "python bench/validate_bench.py " + " ".join(sys.argv[1:]),
                      table, note, measured=[scenario("validator").measured(figures, params)])


if __name__ == "__main__":
    main()
