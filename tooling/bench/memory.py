"""Memory: steady-state RSS of every stage process under load (the median of its VmRSS samples while
the pipeline moved documents) and its peak (VmHWM).  Target ≤ 150 MB per stage process; the report
service (chDB embedded) is stated separately."""

from __future__ import annotations

from tooling.bench.harness import PIPELINE, bench_settings, bench_stack
from tooling.bench.output import emit
from tooling.bench.pipeline import STAGE_HEADERS, figures, run_pipeline, stage_rows
from tooling.bench.scenarios import scenario

SCENARIO = scenario("memory")
TARGET_MB = SCENARIO.bound("ingest.rss_steady_mb")


def run(count: int = 10_000) -> None:
    with bench_stack(bench_settings("memory", 20)) as b:
        r = run_pipeline(b, count)
    rows = []
    for stage in PIPELINE:
        f = r.stages.get(stage.value) or {}
        steady = f.get("rss_steady_mb", 0.0)
        verdict = "separate (embedded ClickHouse)" if stage.value == "report" else (
            "met" if steady <= TARGET_MB else "NOT met")
        rows.append([stage.value, f"{steady:.0f}", f"{f.get('rss_peak_mb', 0.0):.0f}", f"≤ {TARGET_MB:.0f}: {verdict}"])
    emit("memory", ["stage process", "steady RSS MB (median under load)", "peak RSS MB", "target"], rows,
         f"{r.finished:,} of {r.count:,} invoices through the whole pipeline in {r.wall_s:.1f} s, one replica each",
         measured=[SCENARIO.measured(figures(r), {"count": count})])
    emit("memory per process", STAGE_HEADERS, stage_rows(r), "same run as the entry above")
