"""The whole pipeline on N corpus invoices: one job per region through the ingest API (listing the
region over SFTP, registering, publishing), every stage running, done when every job completed and
the report service has read an event for every finished record.  Used by seed, throughput, memory."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from tooling.bench.harness import (
    PIPELINE,
    POLL_S,
    BenchStack,
    PostgresByService,
    SessionTrees,
    cpu_tree_seconds,
    machine_cpu_seconds,
    rss_mb,
)


@dataclass
class PipelineRun:
    count: int
    completed: bool
    wall_s: float  # first job submitted -> last record finished and read by the report service
    jobs_s: float  # first job submitted -> every job completed (records final in PostgreSQL)
    finished: int
    outcomes: dict[str, int]
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    infra: dict[str, dict[str, float]] = field(default_factory=dict)
    start_s: float = 0.0
    # PostgreSQL's CPU s by the service its connections served (part of the whole server's)
    postgres_by_service: dict[str, float] = field(default_factory=dict)


MACHINE = "machine, all processes"
# What the machine's row holds besides the rows above it: the harness, the kernel's own threads,
# the stages' CPU outside their busy window (polling before the first message and after the last),
# and whatever else runs on the machine (a VM's memory-reclaim thread and agent, other services).
REST = "the rest (harness, kernel, stages while idle, other processes)"


def run_pipeline(b: BenchStack, count: int, replicas: dict[str, int] | None = None,
                 timeout: float = 1800) -> PipelineRun:
    placed = b.place(count)
    start_s = b.stages(PIPELINE, replicas)
    infra = b.infra_pids()
    # The SFTP servers' sessions end when the download stage closes idle connections: counted by
    # sampling; the other servers by their process tree at both ends.
    b.sessions = SessionTrees({name: pid for name, pid in infra.items() if name.startswith("sftp")})
    infra_cpu0 = {name: cpu_tree_seconds(pid) for name, pid in infra.items() if name not in b.sessions.roots}
    b.sessions.sample()
    sessions0 = b.sessions.cpu_s()
    b.pg_split = PostgresByService(b.settings.pg_dsn.get_secret_value())
    b.pg_split.sample(at_start=True)
    machine0 = machine_cpu_seconds()
    b.sample()
    t0 = time.monotonic()
    jobs = [b.submit({"source": {"region": region, "pattern": "bench/*.xml"}}) for region in placed.per_region]
    ok, status = b.follow_jobs(jobs, timeout)
    jobs_s = time.monotonic() - t0
    finished = sum(int(s["finished"]) for s in status.values())
    # The report materialises asynchronously: the run ends when it has read every finished record.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and b.sample().get("report", 0) < finished:
        time.sleep(POLL_S)
    wall_s = time.monotonic() - t0
    machine_s = machine_cpu_seconds() - machine0
    b.pg_split.sample()
    pg_by_service, b.pg_split = b.pg_split.cpu_s(), None
    b.sessions.sample()
    sessions_s, b.sessions = b.sessions.cpu_s(), None
    outcomes: dict[str, int] = {}
    for s in status.values():
        for k, v in s["counts"].items():
            outcomes[k] = outcomes.get(k, 0) + int(v)
    run = PipelineRun(placed.count, ok, wall_s, jobs_s, finished, outcomes, start_s=start_s,
                      postgres_by_service=pg_by_service)
    for stage in PIPELINE:
        run.stages[stage.value] = b.stage_figures(stage.value)
    for name, pid in infra.items():
        cpu_s = (sessions_s[name] - sessions0[name] if name in sessions_s
                 else cpu_tree_seconds(pid) - infra_cpu0[name])
        run.infra[name] = {"cpu_s": cpu_s, "rss_peak_mb": rss_mb(pid, peak=True)}
    # Everything the machine did meanwhile: the processes above plus the harness, the kernel, and
    # whatever else runs here (so a quiet machine is what makes it this pipeline's cost).
    run.infra[MACHINE] = {"cpu_s": machine_s, "rss_peak_mb": 0.0}
    return run


def stage_rows(run: PipelineRun) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for stage, f in run.stages.items():
        if not f:
            rows.append([stage, "-", "-", "-", "-", "-"])
            continue
        rows.append([f"{stage} ×{int(f['replicas'])}", f"{int(f['docs']):,}", f"{f['docs_per_s']:,.0f}",
                     f"{f['cpu_per_1000']:.2f}", f"{f['rss_steady_mb']:.0f}", f"{f['rss_peak_mb']:.0f}"])
    for name, f in run.infra.items():
        rows.append([name, "", "", f"{f['cpu_s'] / max(run.finished, 1) * 1000:.2f}", "",
                     f"{f['rss_peak_mb']:.0f}" if f["rss_peak_mb"] else ""])
        if name.startswith("postgres"):
            for service, cpu in run.postgres_by_service.items():
                rows.append([f"  of which for {service}", "", "", f"{cpu / max(run.finished, 1) * 1000:.2f}", "", ""])
    rest = rest_cpu_s(run)
    if rest is not None:
        rows.append([f"  of which {REST}", "", "", f"{rest / max(run.finished, 1) * 1000:.2f}", "", ""])
    return rows


def rest_cpu_s(run: PipelineRun) -> float | None:
    """The machine's CPU s over the run that no row above it counts; None without a machine row."""
    machine = run.infra.get(MACHINE)
    if machine is None:
        return None
    counted = sum(f.get("cpu_s", 0.0) for f in run.stages.values())
    counted += sum(f["cpu_s"] for name, f in run.infra.items() if name != MACHINE)
    return machine["cpu_s"] - counted


# Servers' CPU includes their child processes (sshd's sessions, PostgreSQL's backends); the machine
# row is the whole machine's busy CPU over the run, and the row under it what the rows above it do
# not count, so a gap between the pipeline's CPU and the machine's is in the table, not guessed.
STAGE_HEADERS = ["process", "messages", "docs/s (first→last message)", "CPU s / 1,000 docs",
                 "steady RSS MB (median under load)", "peak RSS MB"]


def figures(run: PipelineRun) -> dict[str, float]:
    """The run's figures for its record: totals, then ``<stage>.<figure>`` and ``<server>.<figure>``
    (``machine.cpu_per_1000``: the whole machine's CPU per 1,000 finished documents)."""
    out: dict[str, float] = {"count": run.count, "finished": run.finished, "completed": int(run.completed),
                             "wall_s": run.wall_s, "jobs_s": run.jobs_s,
                             "docs_per_s": run.finished / max(run.wall_s, 1e-9), "start_s": run.start_s}
    for stage, f in run.stages.items():
        out.update({f"{stage}.{k}": v for k, v in f.items()})
    for name, f in run.infra.items():
        key = name.split(" ")[0].rstrip(",")  # "postgres (whole server)", "machine, all processes"
        out[f"{key}.cpu_per_1000"] = f["cpu_s"] / max(run.finished, 1) * 1000
        if f["rss_peak_mb"]:
            out[f"{key}.rss_peak_mb"] = f["rss_peak_mb"]
    for service, cpu in run.postgres_by_service.items():
        out[f"postgres.{service}.cpu_per_1000"] = cpu / max(run.finished, 1) * 1000
    rest = rest_cpu_s(run)
    if rest is not None:
        out["rest.cpu_per_1000"] = rest / max(run.finished, 1) * 1000
    return out


def summary_row(run: PipelineRun, target_s: float) -> list[Any]:
    met = "met" if run.completed and run.wall_s <= target_s else "NOT met"
    return [f"{run.count:,}", f"{run.finished:,}", f"{run.wall_s:.1f}", f"{run.jobs_s:.1f}",
            f"{run.finished / max(run.wall_s, 1e-9):.0f}", f"≤ {target_s:.0f} s: {met}",
            ", ".join(f"{k} {v}" for k, v in sorted(run.outcomes.items()))]


SUMMARY_HEADERS = ["invoices", "records finished", "wall s (submit → report read all)", "jobs s",
                   "records/s", "target", "outcomes"]
