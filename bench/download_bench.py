"""Download throughput: files/s fetched (and sha256-verified) from one local sshd with 10 connections,
plus the demo generator's documents/s for the same files.

Usage: .venv/bin/python bench/download_bench.py [--count 10000] [--connections 10] [--no-record]

Starts its own sshd region (``.local-bench``, port 23201) with the stack's code, generates the
invoices into it with the generator (all cores), fetches every file through the download stage's
RegionPool and fetch() (the code the service runs, without Kafka or PostgreSQL), and appends a
dated entry to the raw run log (.local/bench/).  Stops only the sshd it started.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from services.download.fetch import fetch
from shared.settings import Settings
from shared.sftp.pool import RegionPool
from tooling.issuers.generator import InvoiceGenerator
from tooling.issuers.output import ManifestRow, batch_dir, merge_manifest, write_invoice
from tooling.issuers.pki import DemoPKI
from tooling.stack import LocalStack

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # bench/ is not an installed package: record.py is imported beside us
    sys.path.insert(0, str(ROOT))
from bench.record import Measurement, append_result  # noqa: E402

REGION = "north"


def bench_settings() -> Settings:
    os.environ.update({"FISCALFLOW_LOCAL_DIR": str(ROOT / ".local-bench"),
                       "FISCALFLOW_SFTP_REGIONS": f"{REGION}=127.0.0.1:23201"})
    return Settings()


def generate(settings: Settings, count: int) -> tuple[list[ManifestRow], float]:
    root = settings.region_root(REGION)
    batch = f"bench-{int(time.time())}"
    batch_dir(root, batch).mkdir(parents=True, exist_ok=True)
    generator = InvoiceGenerator(DemoPKI.ensure(settings.pki_dir()), seed=int(time.time()), bad_fraction=0.0)
    began = time.perf_counter()
    rows = [write_invoice(root, REGION, batch, inv)
            for inv in generator.generate_many(count, workers=os.cpu_count() or 1)]
    elapsed = time.perf_counter() - began
    merge_manifest(batch_dir(root, batch), rows)
    return rows, count / elapsed


async def download(settings: Settings, rows: list[ManifestRow], connections: int, per_connection: int) -> float:
    host, port = settings.regions()[REGION]
    pool = RegionPool(REGION, host, port, settings.sftp_user, settings.sftp_key_path(), settings.known_hosts_path(),
                      connections, per_connection)
    gate = asyncio.Semaphore(connections * per_connection)  # the stage's max_in_flight for one region

    async def one(row: ManifestRow) -> None:
        async with gate:
            got = await fetch(pool, row.path, settings.max_document_bytes)
        if got.sha256 != row.sha256:
            raise AssertionError(f"{row.record_id}: checksum mismatch")

    try:
        await asyncio.gather(*(one(r) for r in rows[:50]))  # connect outside the timing
        began = time.perf_counter()
        await asyncio.gather(*(one(r) for r in rows))
        return len(rows) / (time.perf_counter() - began)
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    raw_log_dir = os.environ.get("FISCALFLOW_LOCAL_DIR")  # the run log stays where every run's goes
    settings = bench_settings()
    stack = LocalStack(settings)
    stack.start(f"sftp-{REGION}")
    try:
        rows, gen_rate = generate(settings, args.count)
        size_kb = sum(r.size for r in rows) / len(rows) / 1024
        results = [(n, asyncio.run(download(settings, rows, args.connections, n)))
                   for n in (1, settings.sftp_requests_per_connection)]
    finally:
        stack.stop(f"sftp-{REGION}")
    table = ["| measure | result |", "|---|---|",
             f"| generator (all {os.cpu_count()} cores, incl. writing files) | {gen_rate:.0f} docs/s |"]
    table += [f"| download, {args.connections} connections × {n} request(s) in flight, sha256 verified | "
              f"{rate:.0f} files/s |" for n, rate in results]
    text = "\n".join(table)
    print(text)
    if not args.no_record:
        if raw_log_dir is None:
            os.environ.pop("FISCALFLOW_LOCAL_DIR", None)
        else:
            os.environ["FISCALFLOW_LOCAL_DIR"] = raw_log_dir
        figures = {"generator_docs_per_s": gen_rate, "size_kb": size_kb,
                   **{f"in_flight_{n}.files_per_s": rate for n, rate in results}}
        summary = (f"{args.connections} connections: " + ", ".join(
            f"{rate:,.0f} files/s with {n} request(s) in flight each" for n, rate in results))
        append_result(f"download from one local sshd: {args.count} invoices of {size_kb:.1f} KB",
                      f".venv/bin/python bench/download_bench.py --count {args.count} --connections "
                      f"{args.connections}", text,
                      "client and sshd share the machine's cores; generator in worker processes",
                      measured=[Measurement("download-sshd", figures, summary,
                                            {"count": args.count, "connections": args.connections})])


if __name__ == "__main__":
    main()
