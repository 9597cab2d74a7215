"""Throughput: 100,000 invoices on local issuers (OpenSSH sshd, no added latency), the whole pipeline,
every service and server on this machine.  Target ≤ 180 s.  Reports documents/s per stage (first to
last message the stage processed), CPU seconds per stage per 1,000 documents and peak RSS per process."""

from __future__ import annotations

from tooling.bench.harness import bench_settings, bench_stack
from tooling.bench.output import emit
from tooling.bench.pipeline import STAGE_HEADERS, SUMMARY_HEADERS, figures, run_pipeline, stage_rows, summary_row
from tooling.bench.scenarios import scenario

SCENARIO = scenario("throughput")
TARGET_S = SCENARIO.bound("wall_s")


def run(count: int = 100_000, replicas: dict[str, int] | None = None, name: str = "throughput") -> None:
    with bench_stack(bench_settings("throughput", 10)) as b:
        r = run_pipeline(b, count, replicas)
    conf = ", ".join(f"{k}×{v}" for k, v in (replicas or {}).items()) or "one replica per stage"
    note = f"local sshd issuers; {conf}; services ready in {r.start_s:.1f} s (not counted)"
    emit(name, SUMMARY_HEADERS, [summary_row(r, TARGET_S)], note,
         measured=[SCENARIO.measured(figures(r), {"count": count, "replicas": replicas or {}})])
    emit(f"{name} per process", STAGE_HEADERS, stage_rows(r), "same run as the entry above")
