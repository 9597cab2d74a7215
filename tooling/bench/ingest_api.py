"""Ingest API: record ids accepted per second through ``POST /api/v1/jobs`` in batches (target ≥ 100,000/s),
and published straight to the ingest topic from a client.  The ids are registered first (records
with made-up paths), so the ingest stage's own consumer does its normal work (registry look-up,
forward to download) on the same 2 cores while the API accepts: acceptance is measured under that
load, not on an idle service.  Accepted = 202 returned: job row written, every id acknowledged by
the broker.  With each configuration: the ingest process's CPU seconds per 100,000 ids (its consumer's
work on the ids meanwhile included), less sensitive to a loaded machine than the rate, and the load
average at its end."""

from __future__ import annotations

import time

from shared.topics import Stage
from tooling.bench.harness import bench_settings, bench_stack, cpu_seconds, publish_ids, register_rows, uptime
from tooling.bench.output import emit
from tooling.bench.scenarios import scenario

SCENARIO = scenario("ingest-api")
TARGET = SCENARIO.bound("http_small_jobs.ids_per_s")


def run(count: int = 200_000, batch: int = 10_000) -> None:
    ids = [f"BENCH-API-{n:08d}" for n in range(count)]
    direct = [f"BENCH-TOPIC-{n:08d}" for n in range(count)]
    rows = []
    figures: dict[str, float] = {}
    with bench_stack(bench_settings("ingest-api", 60)) as b:
        register_rows(b.settings, [{"record_id": i, "region": "north", "path": f"bench/{i}.xml",
                                    "sha256": "0" * 64, "size": "5000"} for i in ids + direct])
        b.stages([Stage.INGEST])
        b.submit({"record_ids": ids[:100]})  # warm-up: connections, first job
        ingest = [pid for stage, pid, _ in b.replicas() if stage == Stage.INGEST.value]
        for key, size in (("http_small_jobs", batch), ("http_large_jobs", 100_000)):
            n_batches = max(1, (count // 2) // size)
            chunk = ids[: n_batches * size]
            cpu0 = sum(cpu_seconds(pid) for pid in ingest)
            t0 = time.perf_counter()
            for i in range(n_batches):
                b.submit({"record_ids": chunk[i * size:(i + 1) * size]})
            s = time.perf_counter() - t0
            cpu = (sum(cpu_seconds(pid) for pid in ingest) - cpu0) / len(chunk) * 100_000
            rate = len(chunk) / s
            label = f"HTTP API, {n_batches} jobs × {len(chunk) // n_batches:,} ids (sequential)"
            verdict = "met" if rate >= SCENARIO.bound(f"{key}.ids_per_s") else "NOT met"
            rows.append([label, f"{len(chunk):,}", f"{s:.2f}", f"{rate:,.0f}", f"{cpu:.2f}", uptime(),
                         f"≥ {TARGET:,.0f}/s: {verdict}"])
            figures.update({f"{key}.ids_per_s": rate, f"{key}.jobs": n_batches, f"{key}.job_size": size,
                            f"{key}.seconds": s, f"{key}.cpu_s_per_100k": cpu})
        s = publish_ids(b.settings, direct)
        figures.update({"topic.ids_per_s": len(direct) / s, "topic.ids": len(direct), "topic.seconds": s})
        rows.append(["straight to the topic (one producer, this client)", f"{len(direct):,}", f"{s:.2f}",
                     f"{len(direct) / s:,.0f}", "", uptime(), ""])
        b.stages([])
    emit("ingest-api", ["path", "ids", "seconds", "ids/s", "ingest CPU s / 100k ids", "load", "target"], rows,
         "ingest service alone (its consumer forwarding the registered ids meanwhile); ids of the second "
         "configuration were already submitted once (the API does not deduplicate across jobs)",
         measured=[SCENARIO.measured(figures, {"count": count, "batch": batch})])
