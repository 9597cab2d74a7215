"""What one archive PUT costs: the store stage's client (``ArchiveBucket.put_once``) and the local S3
server (SeaweedFS), in CPU per PUT.

Starts its own stack (no services), then PUTs ``--count`` gzipped invoices of the benchmarks'
corpus (``tooling.bench.corpus``) under new keys, ``--concurrency`` at a time, as the store stage
does (signed, ``If-None-Match: *``), and reads this process's CPU and the S3 server's (``/proc``)
around them.  The client's figure includes what the bench itself does per PUT (a task): a few µs;
the gzip is made before the measure.

    .venv/bin/python bench/s3_put_bench.py [--count 4000] [--concurrency 8] [--runs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from isal import igzip

from bench.record import Measurement, append_result
from services.store.archive import ArchiveObject
from services.store.bucket import ArchiveBucket, PutOutcome
from shared.s3 import S3Store
from shared.settings import Settings
from tests.support.stacks import isolated_settings, isolated_stack
from tooling.bench.corpus import ensure_chunk
from tooling.bench.harness import cpu_seconds
from tooling.stack import LocalStack


async def _puts(settings: Settings, count: int, concurrency: int, s3_pid: int) -> tuple[float, float, float]:
    """(client µs per PUT, S3 server µs per PUT, PUTs per second)."""
    docs = [p.read_bytes() for p in sorted(ensure_chunk(0).rglob("*.xml"))[:200]]  # the benchmarks' corpus

    def obj(n: int) -> ArchiveObject:
        xml = docs[n % len(docs)]
        return ArchiveObject(key=f"bench/{uuid.uuid4()}.xml.gz", body=igzip.compress(xml, compresslevel=3, mtime=0),
                             sha256=hashlib.sha256(xml).hexdigest(), size=len(xml), uuid="-", issued_on="2026-12-05")

    objs = [obj(n) for n in range(count + 1)]
    s3 = S3Store(settings)
    bucket = ArchiveBucket(s3)
    gate = asyncio.Semaphore(concurrency)

    async def put(obj: ArchiveObject) -> None:
        async with gate:
            outcome, _ = await bucket.put_once(obj, "bench")
            assert outcome is PutOutcome.CREATED, outcome

    try:
        await put(objs[0])  # the connection and the signing key, outside the measure
        server0, client0, t0 = cpu_seconds(s3_pid), time.process_time(), time.monotonic()
        await asyncio.gather(*(put(o) for o in objs[1:]))
        server, client, wall = cpu_seconds(s3_pid) - server0, time.process_time() - client0, time.monotonic() - t0
    finally:
        await bucket.close()
        await s3.close()
    return 1e6 * client / count, 1e6 * server / count, count / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=4000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    settings = isolated_settings("s3-put-bench", 79, log_level="WARNING")
    rows = []
    with isolated_stack(settings):
        (s3_pid,) = [c.pid for c in LocalStack(settings).status().components if c.name == "s3" and c.pid]
        for run in range(1, args.runs + 1):
            client_us, server_us, rate = asyncio.run(_puts(settings, args.count, args.concurrency, s3_pid))
            rows.append((client_us, server_us, rate))
            print(f"run {run}: client {client_us:.0f} µs/PUT, S3 server {server_us:.0f} µs/PUT, {rate:,.0f} PUT/s",
                  flush=True)
    table = "\n".join(["| run | client CPU µs per PUT | S3 server CPU µs per PUT | PUTs/s |", "|---|---|---|---|",
                       *(f"| {n} | {c:.0f} | {s:.0f} | {r:,.0f} |" for n, (c, s, r) in enumerate(rows, 1))])
    print(table)
    if not args.no_record:
        figures = {"client_us_per_put": round(min(c for c, _, _ in rows), 1),
                   "s3_server_us_per_put": round(min(s for _, s, _ in rows), 1)}
        append_result("archive PUT, client and local S3 server", ".venv/bin/python bench/s3_put_bench.py "
                      + " ".join(sys.argv[1:]), table, f"{args.count:,} PUTs per run, {args.concurrency} at a time",
                      measured=[Measurement("s3-put", figures, table.splitlines()[-1],
                                            {"count": args.count, "concurrency": args.concurrency})])


if __name__ == "__main__":
    main()
