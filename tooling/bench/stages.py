"""Stages: each stage alone on a pre-filled input topic.  The records are registered and their ingest
requests published straight to the ingest topic; then ingest runs alone until it drained it (filling
the download topic), then download alone, and so on to the report — each stage measured on a full
input with nothing else of the pipeline running.  Own limit: 1,000 / (CPU s per 1,000 docs), the rate
if the stage had a core to itself and never waited; utilisation = CPU s / wall s of the stage."""

from __future__ import annotations

from tooling.bench.harness import PIPELINE, bench_settings, bench_stack
from tooling.bench.output import emit
from tooling.bench.prefill import expected_input, publish_batch, run_alone
from tooling.bench.scenarios import scenario


def run(count: int = 10_000) -> None:
    figures: dict[str, dict[str, float]] = {}
    with bench_stack(bench_settings("stages", 30)) as b:
        placed = b.place(count)
        publish_batch(b, placed.rows)
        for stage in PIPELINE:
            figures[stage.value] = run_alone(b, stage, expected_input(stage, figures, placed.count))
        b.stages([])
    rows = []
    slowest = min(figures, key=lambda s: figures[s].get("docs_per_s", 0.0) or float("inf"))
    for name, f in figures.items():
        limit = 1000 / f["cpu_per_1000"] if f.get("cpu_per_1000") else 0.0
        util = f["cpu_s"] / f["seconds"] if f.get("seconds") else 0.0
        rows.append([name + (" (bottleneck)" if name == slowest else ""), f"{int(f.get('docs', 0)):,}",
                     f"{f.get('docs_per_s', 0):,.0f}", f"{f.get('cpu_per_1000', 0) / 1000 * 1e6:,.0f}",
                     f"{util:.2f}", f"{limit:,.0f}", f"{f.get('docs_per_s', 0) / limit * 100 if limit else 0:.0f} %",
                     f"{f.get('rss_peak_mb', 0):.0f}"])
    measured: dict[str, float] = {"count": placed.count}
    for name, f in figures.items():
        measured.update({f"{name}.{k}": v for k, v in f.items()})
        measured[f"{name}.us_per_doc"] = f.get("cpu_per_1000", 0) * 1000
    emit("stages", ["stage (alone, one replica)", "messages", "docs/s", "CPU µs / doc", "cores used",
                    "own CPU limit docs/s (1 core)", "of own limit", "peak RSS MB"], rows,
         f"{placed.count:,} invoices; input topic pre-filled, each stage alone",
         measured=[scenario("stages").measured(measured, {"count": count})])
