"""Latency: end-to-end latency of single records — one job of one record id through the API, from the
POST to the job reported completed (the record final in PostgreSQL: archived or rejected), polled every
5 ms.  Idle: nothing else running (target p50 ≤ 200 ms).  Under backlog: 50,000 records submitted as
normal jobs first, then priority (``high``) single-record jobs one after another while the backlog is
being worked on (target p99 ≤ 2 s)."""

from __future__ import annotations

import statistics
import time

from tooling.bench.harness import PIPELINE, BenchStack, bench_settings, bench_stack, register_rows
from tooling.bench.output import emit
from tooling.bench.scenarios import scenario

WARMUP = 3
IDLE, PRIORITY = scenario("latency-idle"), scenario("latency-priority")
IDLE_P50_S = IDLE.bound("p50_ms") / 1000
PRIORITY_P99_S = PRIORITY.bound("p99_ms") / 1000


def _one(b: BenchStack, record_id: str, priority: str, timeout: float = 60) -> float:
    t0 = time.perf_counter()
    job = b.submit({"record_ids": [record_id], "priority": priority})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if b.job(job)["status"] == "completed":
            return time.perf_counter() - t0
        time.sleep(0.005)
    return float("inf")


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def run(samples: int = 50, backlog: int = 50_000) -> None:
    with bench_stack(bench_settings("latency", 70)) as b:
        singles = [r for r in b.place(2 * samples + 2 * WARMUP + 20, batch="single", skip=backlog).rows
                   if r["expected_verdict"] == "valid"]
        register_rows(b.settings, singles)
        placed = b.place(backlog)
        b.stages(PIPELINE)
        idle = [_one(b, r["record_id"], "normal") for r in singles[: samples + WARMUP]][WARMUP:]
        jobs = [b.submit({"source": {"region": region, "pattern": "bench/*.xml"}}) for region in placed.per_region]
        time.sleep(2)  # the backlog is moving through every stage
        prio = [_one(b, r["record_id"], "high") for r in singles[samples + WARMUP: 2 * samples + WARMUP]]
        left = sum(int(b.job(j)["record_count"]) - int(b.job(j)["finished"]) for j in jobs)
        b.stages([])
    rows = [
        ["idle, normal priority", len(idle), f"{statistics.median(idle) * 1000:.0f}", f"{_pct(idle, 99) * 1000:.0f}",
         f"{max(idle) * 1000:.0f}",
         f"{IDLE.target}: {'met' if statistics.median(idle) <= IDLE_P50_S else 'NOT met'}"],
        [f"priority, under a {placed.count:,}-record backlog ({left:,} still unfinished at the end)", len(prio),
         f"{statistics.median(prio) * 1000:.0f}", f"{_pct(prio, 99) * 1000:.0f}", f"{max(prio) * 1000:.0f}",
         f"{PRIORITY.target}: {'met' if _pct(prio, 99) <= PRIORITY_P99_S else 'NOT met'}"],
    ]
    params = {"samples": samples, "backlog": backlog}
    measured = [s.measured({"n": len(xs), "p50_ms": statistics.median(xs) * 1000, "p99_ms": _pct(xs, 99) * 1000,
                            "max_ms": max(xs) * 1000, **extra}, params)
                for s, xs, extra in ((IDLE, idle, {}),
                                     (PRIORITY, prio, {"backlog": placed.count, "backlog_unfinished": left}))]
    emit("latency", ["records", "n", "p50 ms", "p99 ms", "max ms", "target"], rows,
         f"one replica per stage; POST of a one-record job → job completed (record final in PostgreSQL), polled "
         f"every 5 ms; first {WARMUP} idle records not counted (connections warming up)", measured=measured)
