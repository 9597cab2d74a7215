"""The scenarios of bench/README.md's table, declared once: each row's label, its target and how
the target is checked against a run's figures, the command that measures it, the parameters a run
must have been made with to count (a ``-n 2000`` run is not the scenario), and the one-line summary
a run records.  The bench modules take their target numbers from here; ``tooling.bench.readme``
renders the rows.

Figures are the numbers a run records in ``.local/bench/runs.jsonl`` (``tooling.bench_results``):
flat names, ``<process>.<figure>`` for per-process ones (``validate.cpu_per_1000``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from shared.topics import Stage
from tooling.bench_results import Figures, Measurement, RunRecord

STAGES = tuple(s.value for s in Stage)


def figure(figures: Figures, name: str) -> float:
    """A figure for a summary: NaN when the run did not produce it (formats as ``nan``)."""
    value = figures.get(name)
    return math.nan if value is None else value


# What a run may set from the environment and still be the scenario: where its records go.
_NOT_AN_EXPERIMENT = frozenset({"FISCALFLOW_LOCAL_DIR"})


def experiment_settings(command: str) -> list[str]:
    """The FISCALFLOW_* variables a recorded command set (``tooling.bench.output.command_line``
    writes them before it) that change what runs: a setting of the services
    (``FISCALFLOW_REPORT_FLUSH_S=0.5``) or a profiler attached (``FISCALFLOW_BENCH_PROFILE``)."""
    names = []
    for word in command.split():
        name, eq, _ = word.partition("=")
        if not eq or not name.startswith("FISCALFLOW_"):
            break  # the command itself
        if name not in _NOT_AN_EXPERIMENT:
            names.append(name)
    return names


@dataclass(frozen=True)
class Check:
    """One condition of a target: the figure against a bound.  A figure the run lacks fails it."""

    figure: str
    op: Literal["<=", ">="]
    bound: float

    def passes(self, figures: Figures) -> bool:
        value = figures.get(self.figure)
        if value is None or math.isnan(value):
            return False
        return value <= self.bound if self.op == "<=" else value >= self.bound


@dataclass(frozen=True)
class Scenario:
    id: str  # the record's ``scenario``
    label: str  # the row's first cell; also how the row is found in bench/README.md
    target: str  # the target cell, as a reader reads it; ``checks`` is the same target, computed
    checks: tuple[Check, ...]  # all pass: met; none declared: no target ("—")
    command: str  # the command cell (markdown)
    describe: Callable[[Figures], str]  # a run's one-line summary: the row's "current figure"
    params: Mapping[str, Any] = field(default_factory=dict)  # a run counts only with these parameters
    bench: str = ""  # the `fiscalflow bench` command that measures it

    def status(self, figures: Figures) -> str:
        if not self.checks:
            return "—"
        return "met" if all(c.passes(figures) for c in self.checks) else "not met"

    def accepts(self, record: RunRecord) -> bool:
        """A record this scenario's row may show: a successful run, made with the scenario's parameters
        and the services' default settings (not an experiment, not under a profiler)."""
        return (record.scenario == self.id and not record.error and not experiment_settings(record.command)
                and all(record.params.get(k) == v for k, v in self.params.items()))

    def bound(self, figure_name: str) -> float:
        return next(c.bound for c in self.checks if c.figure == figure_name)

    def measured(self, figures: Figures, params: Mapping[str, Any]) -> Measurement:
        return Measurement(self.id, figures, self.describe(figures), params)


def _pipeline(f: Figures) -> str:
    text = (f"{figure(f, 'wall_s'):.1f} s ({figure(f, 'docs_per_s'):,.0f} docs/s); "
            f"{figure(f, 'machine.cpu_per_1000'):.2f} CPU-s per 1,000 documents over all processes")
    if not f.get("completed"):
        text += f"; jobs not completed ({figure(f, 'finished'):,.0f} of {figure(f, 'count'):,.0f} records final)"
    return text


def _latency(f: Figures) -> str:
    return f"p50 {figure(f, 'p50_ms'):,.0f} ms, p99 {figure(f, 'p99_ms'):,.0f} ms"


def _ingest_api(f: Figures) -> str:
    def http(key: str) -> str:
        return f"{figure(f, key + '.jobs'):.0f} × {figure(f, key + '.job_size'):,.0f}"

    return (f"{figure(f, 'http_small_jobs.ids_per_s'):,.0f} ids/s ({http('http_small_jobs')}), "
            f"{figure(f, 'http_large_jobs.ids_per_s'):,.0f} ({http('http_large_jobs')}); "
            f"straight to the topic {figure(f, 'topic.ids_per_s'):,.0f}")


def _scaling(f: Figures) -> str:
    return (f"{figure(f, 'validate.2.speedup'):.2f}× ({figure(f, 'validate.1.docs_per_s'):,.0f} → "
            f"{figure(f, 'validate.2.docs_per_s'):,.0f} docs/s)")


def _stages(f: Figures) -> str:
    rates = {s: f.get(f"{s}.docs_per_s") or math.inf for s in STAGES}
    slowest = min(rates, key=lambda s: rates[s])
    parts = []
    for i, s in enumerate(STAGES):
        part = f"{s} {figure(f, s + '.us_per_doc'):,.0f}" + (" µs/doc" if i == 0 else "")
        if s == slowest:
            part += f" (the bottleneck: {figure(f, s + '.docs_per_s'):,.0f} docs/s)"
        parts.append(part)
    return ", ".join(parts)


def _memory(f: Figures) -> str:
    steady = [figure(f, s + ".rss_steady_mb") for s in STAGES if s != "report"]
    peak = [figure(f, s + ".rss_peak_mb") for s in STAGES if s != "report"]
    return (f"steady RSS {min(steady):.0f}–{max(steady):.0f} MB per stage, peak ≤ {max(peak):.0f}; "
            f"report (embedded ClickHouse) {figure(f, 'report.rss_steady_mb'):.0f} MB")


def _validator(f: Figures) -> str:
    return (f"{figure(f, 'fast.us_per_doc'):,.0f} µs/doc ({figure(f, 'fast.docs_per_s'):,.0f} docs/s), "
            f"{figure(f, 'fast.peak_rss_mb'):.0f} MB peak RSS")


def _chaos(f: Figures) -> str:
    return f"lost {figure(f, 'lost'):.0f}, duplicated {figure(f, 'duplicated'):.0f}"


REPORT_QUERIES = (("daily", "daily"), ("summary", "summary"), ("issuers_31d", "issuers (31 days)"))


def _report_queries(f: Figures) -> str:
    return "p99 " + ", ".join(f"{label} {figure(f, key + '.p99_ms'):.1f} ms" for key, label in REPORT_QUERIES)


_MEMORY_MB = 150.0  # per stage process; the report's embedded ClickHouse is stated apart
SCENARIOS: tuple[Scenario, ...] = (
    Scenario("throughput", "throughput: 100,000 invoices, local sshd issuers, submit → report has read all",
             "≤ 180 s", (Check("completed", ">=", 1), Check("wall_s", "<=", 180)),
             "`fiscalflow bench throughput`", _pipeline, {"count": 100_000, "replicas": {}}, bench="throughput"),
    Scenario("seed-scenario",
             "seed scenario: 50,000 invoices, slow issuers (500 ms per file, ≤ 10 connections per region)",
             "≤ 120 s", (Check("completed", ">=", 1), Check("wall_s", "<=", 120)),
             "`fiscalflow bench seed-scenario`", _pipeline, {"count": 50_000, "replicas": {}}, bench="seed-scenario"),
    Scenario("latency-idle", "latency, idle: one-record job → record final", "p50 ≤ 200 ms",
             (Check("p50_ms", "<=", 200),), "`fiscalflow bench latency`", _latency,
             {"samples": 50, "backlog": 50_000}, bench="latency"),
    Scenario("latency-priority", "latency, priority under a 50,000-record backlog", "p99 ≤ 2 s",
             (Check("p99_ms", "<=", 2000),), "`fiscalflow bench latency`", _latency,
             {"samples": 50, "backlog": 50_000}, bench="latency"),
    Scenario("ingest-api", "ingest API: 100,000 ids", "≥ 100,000 ids/s",
             (Check("http_small_jobs.ids_per_s", ">=", 100_000), Check("http_large_jobs.ids_per_s", ">=", 100_000)),
             "`fiscalflow bench ingest-api`", _ingest_api, {"count": 200_000}, bench="ingest-api"),
    Scenario("scaling", "scaling: validate, 2 replicas", "≥ 1.7×", (Check("validate.2.speedup", ">=", 1.7),),
             "`fiscalflow bench scaling`", _scaling, {"validate_count": 10_000, "download_count": 3_000},
             bench="scaling"),
    Scenario("stages", "each stage alone, 10,000 pre-filled messages", "—", (), "`fiscalflow bench stages`",
             _stages, {"count": 10_000}, bench="stages"),
    Scenario("memory", "memory, 10,000 through the pipeline", "≤ 150 MB per stage",
             tuple(Check(f"{s}.rss_steady_mb", "<=", _MEMORY_MB) for s in STAGES if s != "report"),
             "`fiscalflow bench memory`", _memory, {"count": 10_000}, bench="memory"),
    Scenario("validator", "CFDI validator, one core", "≥ 1,500 docs/s/core, ≤ 150 MB",
             (Check("fast.docs_per_s", ">=", 1_500), Check("fast.peak_rss_mb", "<=", 150)),
             "`python bench/validate_bench.py --count 600`", _validator, {"count": 600}),
    Scenario("chaos", "chaos: 20,000 invoices, 10 SIGKILLs + a durable broker restart", "0 and 0",
             (Check("lost", "<=", 0), Check("duplicated", "<=", 0)), "`make test` (tests/chaos)", _chaos,
             {"count": 20_000}),
    # No row yet: it appears with the first recorded run (decision 0004 has the figures so far).
    Scenario("report-queries", "report queries: 1,000,000 archived records (chDB)",
             "p99 ≤ 20 ms (daily, summary, issuers)",
             tuple(Check(f"{key}.p99_ms", "<=", 20) for key, _ in REPORT_QUERIES),
             "`python bench/report_bench.py`", _report_queries, {"records": 1_000_000, "dense": False}),
)

BY_ID = {s.id: s for s in SCENARIOS}


def scenario(scenario_id: str) -> Scenario:
    return BY_ID[scenario_id]


def measured_by(bench_command: str) -> list[Scenario]:
    """The scenarios a ``fiscalflow bench`` command measures."""
    return [s for s in SCENARIOS if s.bench == bench_command]
