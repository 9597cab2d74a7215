"""The throughput table's split of PostgreSQL's CPU by service (tooling/bench/harness.py)."""

from __future__ import annotations

import pytest

from tooling.bench import harness
from tooling.bench.pipeline import REST, PipelineRun, figures, stage_rows


def test_each_backend_counts_its_cpu_over_the_run_for_the_service_it_served(monkeypatch: pytest.MonkeyPatch) -> None:
    listed: dict[int, str] = {}
    cpu: dict[int, float] = {}
    monkeypatch.setattr(harness, "pg_backends_by_service", lambda dsn: dict(listed))
    monkeypatch.setattr(harness, "cpu_seconds", lambda pid: cpu.get(pid, 0.0))
    split = harness.PostgresByService("postgresql://127.0.0.1/x")

    listed.update({11: "ingest", 12: "store", 13: "store"})
    cpu.update({11: 5.0, 12: 7.0, 13: 1.0})
    split.sample(at_start=True)  # what they had used before the run is not the run's
    listed[14] = "download"  # connected during the run: all of its CPU is the run's
    cpu.update({11: 6.5, 12: 9.0, 13: 1.5, 14: 0.75})
    split.sample()
    del cpu[13]  # ended after being listed: its last reading stands
    cpu[12] = 10.0
    split.sample()
    assert split.cpu_s() == {"download": 0.75, "ingest": 1.5, "store": 3.0 + 0.5}


def test_the_table_and_the_record_show_the_split_under_the_whole_server() -> None:
    run = PipelineRun(count=1000, completed=True, wall_s=10.0, jobs_s=10.0, finished=1000, outcomes={},
                      infra={"postgres (whole server)": {"cpu_s": 0.5, "rss_peak_mb": 30.0},
                             "machine, all processes": {"cpu_s": 4.0, "rss_peak_mb": 0.0}},
                      postgres_by_service={"download": 0.1, "store": 0.25})
    rows = stage_rows(run)
    names = [r[0] for r in rows]
    assert names == ["postgres (whole server)", "  of which for download", "  of which for store",
                     "machine, all processes", f"  of which {REST}"]
    assert rows[2][3] == "0.25"
    f = figures(run)
    assert f["postgres.cpu_per_1000"] == 0.5 and f["postgres.store.cpu_per_1000"] == 0.25


def test_the_machine_row_says_how_much_of_it_no_stage_or_server_counted() -> None:
    """The harness, the kernel and the machine's other processes are in the machine's CPU: the
    table shows them as the difference, so a reader sees what part of the figure is the pipeline's."""
    stage = {"docs": 1000.0, "docs_per_s": 100.0, "cpu_per_1000": 1.5, "cpu_s": 1.5, "rss_steady_mb": 100.0,
             "rss_peak_mb": 110.0, "replicas": 1}
    run = PipelineRun(count=1000, completed=True, wall_s=10.0, jobs_s=10.0, finished=1000, outcomes={},
                      stages={"validate": stage, "store": {**stage, "cpu_s": 1.0}, "report": {}},
                      infra={"broker": {"cpu_s": 0.5, "rss_peak_mb": 80.0},
                             "machine, all processes": {"cpu_s": 3.25, "rss_peak_mb": 0.0}})
    rows = stage_rows(run)
    assert rows[-1][0] == f"  of which {REST}" and rows[-1][3] == "0.25"  # 3.25 - (1.5 + 1.0 + 0.5)
    assert figures(run)["rest.cpu_per_1000"] == pytest.approx(0.25)
    # no machine row (a part measured alone): no rest either
    alone = PipelineRun(count=10, completed=True, wall_s=1.0, jobs_s=1.0, finished=10, outcomes={},
                        stages={"validate": stage})
    assert "rest.cpu_per_1000" not in figures(alone) and len(stage_rows(alone)) == 1
