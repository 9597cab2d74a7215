"""Fill a stage's input topic: register the records in PostgreSQL, publish their ingest requests
straight to the topic, then run each upstream stage alone until it has forwarded them all."""

from __future__ import annotations

from shared.topics import Stage
from tooling.bench.harness import PIPELINE, BenchStack, profiled, publish_ids, register_rows


def expected_input(stage: Stage, done: dict[str, dict[str, float]], published: int) -> float:
    """Messages waiting for ``stage``: what the stage before it passed on (the report service also
    reads every dead letter)."""
    i = PIPELINE.index(stage)
    if i == 0:
        return float(published)
    upstream = done[PIPELINE[i - 1].value].get("ok", 0.0)
    if stage is Stage.REPORT:
        upstream += sum(d.get("dead_letter", 0.0) for d in done.values())
    return upstream


def publish_batch(b: BenchStack, rows: list[dict[str, str]]) -> float:
    register_rows(b.settings, rows)
    return publish_ids(b.settings, [r["record_id"] for r in rows])


def run_alone(b: BenchStack, stage: Stage, expected: float, replicas: int = 1,
              timeout: float = 900) -> dict[str, float]:
    """Run ``stage`` alone (everything else stopped) until it processed ``expected`` messages."""
    b.series.clear()
    b.stages([stage], {stage.value: replicas})
    with profiled(b, stage):
        b.wait_processed(stage.value, expected, timeout, idle_s=20)
    last = b.sample()
    fig = b.stage_figures(stage.value)
    fig["ok"] = last.get(f"{stage.value}:ok", 0.0)
    fig["dead_letter"] = last.get(f"{stage.value}:dead_letter", 0.0)
    fig["expected"] = expected
    return fig


def prefill(b: BenchStack, rows: list[dict[str, str]], upto: Stage) -> float:
    """Leave ``upto``'s input topic holding every record of ``rows``; returns how many messages wait."""
    published = len(rows)
    publish_batch(b, rows)
    done: dict[str, dict[str, float]] = {}
    for stage in PIPELINE[:PIPELINE.index(upto)]:
        done[stage.value] = run_alone(b, stage, expected_input(stage, done, published))
    b.stages([])
    return expected_input(upto, done, published)
