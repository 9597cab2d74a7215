"""Seed scenario: 50,000 invoices from three regional issuers that take 500 ms to serve each file and
accept at most 10 connections each; the whole pipeline through the report.  Target ≤ 120 s.

The latency is modelled on the server: each region is the local stack's sshd with
``tooling/stack/slow_open.c`` (``FISCALFLOW_SFTP_SERVER_LATENCY_MS=500`` /
``FISCALFLOW_SFTP_SERVER_MAX_CONNECTIONS=10``), which sleeps 500 ms in every file open, serves one
request at a time per SFTP channel (internal-sftp's process per channel), and drops connections
beyond 10.  The only way past 10 connections × 1 file / 500 ms = 20 files/s per region is more
channels per connection, so the download pool is given ``CHANNELS`` (a client setting the system has
for exactly this), and the stage ``IN_FLIGHT`` files at once: at 500 ms per file, the default 256
would cap it near 500 files/s before any region's share is counted (decision 0026).
"""

from __future__ import annotations

from typing import Any

from shared.topics import Stage
from tooling.bench.harness import bench_settings, bench_stack
from tooling.bench.output import emit
from tooling.bench.pipeline import STAGE_HEADERS, SUMMARY_HEADERS, figures, run_pipeline, stage_rows, summary_row
from tooling.bench.prefill import publish_batch, run_alone
from tooling.bench.scenarios import scenario

SCENARIO = scenario("seed-scenario")
TARGET_S = SCENARIO.bound("wall_s")
LATENCY_MS = 500
MAX_CONNECTIONS = 10
CHANNELS = 16
IN_FLIGHT = 1024
# Each source job lists one region: the download stage reads this far past its slots to find the other
# regions' records (decision 0028; off by default: it costs priority records some latency, see its addenda).
LOOK_AHEAD = 20_000


def _settings(**overrides: Any) -> Any:
    return bench_settings("seed", 0, sftp_server_latency_ms=LATENCY_MS,
                          sftp_server_max_connections=MAX_CONNECTIONS, sftp_max_connections=MAX_CONNECTIONS,
                          sftp_channels_per_connection=CHANNELS, download_max_in_flight=IN_FLIGHT,
                          **{"download_look_ahead": LOOK_AHEAD, **overrides})


def run(count: int = 50_000, replicas: dict[str, int] | None = None) -> None:
    settings = _settings()
    with bench_stack(settings) as b:
        r = run_pipeline(b, count, replicas)
    conf = ", ".join(f"{k}×{v}" for k, v in (replicas or {}).items()) or "one replica per stage"
    note = (f"slow issuers: slow_sftp, {LATENCY_MS} ms per file server-side, max {MAX_CONNECTIONS} connections "
            f"per region; download pool {MAX_CONNECTIONS} connections × {CHANNELS} channels, {IN_FLIGHT} files "
            f"in flight; {conf}; "
            f"services ready in {r.start_s:.1f} s (not counted)")
    emit("seed-scenario", SUMMARY_HEADERS, [summary_row(r, TARGET_S)], note,
         measured=[SCENARIO.measured(figures(r), {"count": count, "replicas": replicas or {}})])
    emit("seed-scenario per process", STAGE_HEADERS, stage_rows(r), "same run as the entry above")


def run_download(count: int = 30_000, look_ahead: int | None = None) -> None:
    """The download stage alone on the scenario's slow issuers, its topic holding each region's records
    in one run after the other (as the scenario's per-region source jobs publish them): what region fairness
    (decision 0028) is worth where the machine is not the bound.  ``look_ahead`` 0: first in, first out."""
    settings = _settings(**({} if look_ahead is None else {"download_look_ahead": look_ahead}))
    with bench_stack(settings) as b:
        placed = b.place(count)
        published, tasks = 0, 0.0
        for region in placed.per_region:  # one region's requests through ingest, then the next's
            rows = [r for r in placed.rows if r["region"] == region]
            publish_batch(b, rows)
            published += len(rows)
            tasks = run_alone(b, Stage.INGEST, published).get("ok", 0.0)  # the same replica: counts add up
        f = run_alone(b, Stage.DOWNLOAD, tasks)
        b.stages([])
    ceiling = MAX_CONNECTIONS * CHANNELS * 1000 / LATENCY_MS
    emit("seed-scenario, download alone", ["messages", "docs/s", "CPU µs / doc", "peak RSS MB", "look-ahead"],
         [[f"{int(f.get('docs', 0)):,}", f"{f.get('docs_per_s', 0):,.0f}", f"{f.get('cpu_per_1000', 0) * 1000:,.0f}",
           f"{f.get('rss_peak_mb', 0):.0f}", f"{settings.download_look_ahead:,}"]],
         f"{count:,} invoices in three regions' runs; one region's ceiling {ceiling:.0f} files/s "
         f"({MAX_CONNECTIONS} connections × {CHANNELS} channels at {LATENCY_MS} ms per file)")
