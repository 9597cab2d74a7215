"""bench/README.md's table: each scenario's newest recorded run, its status computed from the figures,
and the rows no run has replaced kept as they are."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tooling.bench.cli import app
from tooling.bench.readme import END, START, cells, newest_per_scenario, regenerate, render_row
from tooling.bench.scenarios import SCENARIOS, experiment_settings, scenario
from tooling.bench_results import RunRecord

TABLE = Path(__file__).parent / "table_2026_11_30.md"  # bench/README.md's table before any run record


def record(sid: str, figures: dict[str, float | None], when: str = "2026-11-30 03:30", commit: str = "03180fe",
           params: dict[str, Any] | None = None, error: str = "", summary: str | None = None) -> RunRecord:
    s = scenario(sid)
    return RunRecord(scenario=sid, date=dt.datetime.fromisoformat(when).replace(tzinfo=dt.UTC), machine="2 cores",
                     commit=commit, dirty=False, command=s.command.strip("`"),
                     params=dict(s.params) if params is None else params, figures=figures,
                     summary=s.describe(figures) if summary is None else summary, error=error)


def readme_rows() -> dict[str, str]:
    """The table's rows of 2026-11-30, before any run record existed (frozen here: the README's
    table changes with every regeneration)."""
    table = TABLE.read_text().strip().splitlines()
    return {cells(line)[0]: line for line in table[2:]}


def readme_text() -> str:
    return f"# Benchmarks\n\n{START}\n{TABLE.read_text()}{END}\n\nMore text.\n"




# The figures of the runs behind today's rows: the old tracked run log's entries of 2026-11-30
# 03:21-04:01 (git history).
STAGES = {f"{s}.{k}": v for s, us, rate in (("ingest", 133, 4915), ("download", 529, 1638), ("validate", 983, 1035),
                                             ("store", 701, 1087), ("report", 186, 3577))
          for k, v in (("us_per_doc", us), ("docs_per_s", rate))}
TODAY = {
    "latency-idle": ({"p50_ms": 103, "p99_ms": 127, "max_ms": 127}, "03180fe"),
    "latency-priority": ({"p50_ms": 248, "p99_ms": 1290, "max_ms": 1290}, "03180fe"),
    "stages": (STAGES, "03180fe"),
    "validator": ({"fast.docs_per_s": 1853, "fast.us_per_doc": 1e6 / 1853, "fast.peak_rss_mb": 100}, "d0cc2ff"),
    "chaos": ({"lost": 0, "duplicated": 0, "records": 19_932}, "e8918b2"),
}


@pytest.mark.parametrize("sid", sorted(TODAY))
def test_a_record_of_the_run_behind_a_row_renders_that_row(sid: str) -> None:
    figures, commit = TODAY[sid]
    s = scenario(sid)
    assert render_row(s, record(sid, figures, commit=commit)) == readme_rows()[s.label]


def test_rows_the_curator_annotated_render_the_same_figures() -> None:
    rows = readme_rows()
    tp = {"completed": 1, "wall_s": 283.3, "docs_per_s": 352.0, "machine.cpu_per_1000": 5.62}
    assert scenario("throughput").describe(tp) in rows[scenario("throughput").label]
    scaling = {"validate.1.docs_per_s": 1173, "validate.2.docs_per_s": 1969, "validate.2.speedup": 1.68}
    assert cells(render_row(scenario("scaling"), record("scaling", scaling)))[1:4] == [
        "1.68× (1,173 → 1,969 docs/s)", "≥ 1.7×", "not met"]
    memory = {f"{s}.{k}": v for s, steady, peak in (("ingest", 118, 119), ("download", 113, 115),
                                                    ("validate", 114, 138), ("store", 92, 103), ("report", 434, 447))
              for k, v in (("rss_steady_mb", steady), ("rss_peak_mb", peak))}
    assert cells(render_row(scenario("memory"), record("memory", memory)))[1:4] == [
        cells(rows[scenario("memory").label])[1], "≤ 150 MB per stage", "met"]
    ingest = {"http_small_jobs.ids_per_s": 83_716, "http_small_jobs.jobs": 10, "http_small_jobs.job_size": 10_000,
              "http_large_jobs.ids_per_s": 81_168, "http_large_jobs.jobs": 1, "http_large_jobs.job_size": 100_000,
              "topic.ids_per_s": 281_003}
    assert cells(render_row(scenario("ingest-api"), record("ingest-api", ingest)))[1:4] == [
        cells(rows[scenario("ingest-api").label])[1], "≥ 100,000 ids/s", "not met"]


def test_status_is_every_check_of_the_target() -> None:
    tp = scenario("throughput")
    assert tp.status({"completed": 1, "wall_s": 180.0}) == "met"
    assert tp.status({"completed": 1, "wall_s": 180.1}) == "not met"
    assert tp.status({"completed": 0, "wall_s": 90.0}) == "not met"  # fast, but the jobs never completed
    assert tp.status({"completed": 1}) == "not met"  # a figure the run lacks fails its check
    assert scenario("latency-priority").status({"p99_ms": None}) == "not met"  # a timeout
    assert scenario("chaos").status({"lost": 0, "duplicated": 1}) == "not met"
    assert scenario("stages").status({}) == "—"  # no target
    assert "jobs not completed" in tp.describe({"completed": 0, "wall_s": 1800, "finished": 10, "count": 100})


def test_the_newest_successful_full_size_run_of_each_scenario_counts() -> None:
    old = record("latency-idle", {"p50_ms": 110}, when="2026-11-30 03:00")
    new = record("latency-idle", {"p50_ms": 100}, when="2026-12-01 10:00")
    small = record("latency-idle", {"p50_ms": 90}, when="2026-12-02 10:00", params={"samples": 5, "backlog": 500})
    failed = record("latency-idle", {}, when="2026-12-03 10:00", error="TimeoutError", summary="FAILED")
    other = record("stages", STAGES, when="2026-11-29 10:00")
    same_minute = record("stages", {**STAGES, "ingest.us_per_doc": 140}, when="2026-11-29 10:00")
    newest = newest_per_scenario([new, old, small, failed, other, same_minute])
    assert newest == {"latency-idle": new, "stages": same_minute}  # on equal dates the later line wins
    assert newest_per_scenario([]) == {}


def test_a_run_with_settings_changed_or_a_profiler_attached_is_not_the_scenarios_figure() -> None:
    base = record("stages", STAGES, when="2026-12-05 15:00")
    profiled = dataclasses.replace(record("stages", {**STAGES, "report.us_per_doc": 258}, when="2026-12-05 15:47"),
                                   command="FISCALFLOW_BENCH_PROFILE=/tmp/prof fiscalflow bench stages")
    tried = dataclasses.replace(record("stages", STAGES, when="2026-12-05 16:00"), command=(
        "FISCALFLOW_EVENT_LOOP=asyncio FISCALFLOW_LOCAL_DIR=/tmp/x fiscalflow bench stages"))
    elsewhere = dataclasses.replace(record("stages", STAGES, when="2026-12-05 14:00"),
                                    command="FISCALFLOW_LOCAL_DIR=/tmp/x fiscalflow bench stages")
    assert newest_per_scenario([elsewhere, base, profiled, tried]) == {"stages": base}
    assert experiment_settings(tried.command) == ["FISCALFLOW_EVENT_LOOP"]
    assert experiment_settings(elsewhere.command) == []
    assert newest_per_scenario([elsewhere]) == {"stages": elsewhere}  # where records go changes nothing


def test_with_no_records_the_table_is_todays() -> None:
    text = readme_text()
    assert regenerate(text, []) == text
    # Every declared scenario finds its row (a record will replace it), except one that has none yet.
    assert {s.label for s in SCENARIOS} - set(readme_rows()) == {scenario("report-queries").label}


def test_a_record_replaces_its_row_only() -> None:
    text = readme_text().replace(END, "| a row nobody declared | x | y | z | w | v |\n" + END)
    new = regenerate(text, [record("latency-idle", {"p50_ms": 95.4, "p99_ms": 230.0}, when="2026-12-05 09:00",
                                   commit="abc1234")])
    before, after = text.splitlines(), new.splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert changed == [(readme_rows()[scenario("latency-idle").label],
                        "| latency, idle: one-record job → record final | p50 95 ms, p99 230 ms | p50 ≤ 200 ms | met "
                        "| abc1234, 2026-12-05 | `fiscalflow bench latency` |")]
    # A scenario with no row yet gets one, after the declared rows it follows.
    report = record("report-queries", {"daily.p99_ms": 16.3, "summary.p99_ms": 7.9, "issuers_31d.p99_ms": 22.2})
    rows = regenerate(text, [report]).split(START)[1].split(END)[0].strip().splitlines()
    assert cells(rows[-2]) == ["report queries: 1,000,000 archived records (chDB)",
                               "p99 daily 16.3 ms, summary 7.9 ms, issuers (31 days) 22.2 ms",
                               "p99 ≤ 20 ms (daily, summary, issuers)", "not met", "03180fe, 2026-11-30",
                               "`python bench/report_bench.py`"]
    assert cells(rows[-1])[0] == "a row nobody declared"


def test_a_row_names_the_machine_speed_its_record_was_measured_at() -> None:
    timed = dataclasses.replace(record("chaos", {"lost": 0, "duplicated": 0}, when="2026-12-05 09:00"),
                                reference_ms=28.54)
    assert cells(render_row(scenario("chaos"), timed))[4] == "03180fe, 2026-12-05, reference 28.5 ms"


def test_a_readme_without_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="bench-table"):
        regenerate("# no table here\n", [])


def test_the_command_writes_the_table_and_check_tells_when_it_is_stale(tmp_path: Path) -> None:
    readme, runs = tmp_path / "README.md", tmp_path / "runs.jsonl"
    readme.write_text(readme_text())
    runs.write_text(record("chaos", {"lost": 0, "duplicated": 0}, when="2026-12-05 09:00").to_json() + "\nbad\n")
    args = ["--runs", str(runs), "--path", str(readme)]
    runner = CliRunner()

    stale = runner.invoke(app, ["readme", "--check", *args])
    assert stale.exit_code == 1 and "stale" in stale.output
    assert readme.read_text() == readme_text()  # --check changes nothing

    done = runner.invoke(app, ["readme", *args])
    assert done.exit_code == 0, done.output
    assert "skipped line 2" in done.output
    assert "| lost 0, duplicated 0 | 0 and 0 | met | 03180fe, 2026-12-05 |" in readme.read_text()
    assert runner.invoke(app, ["readme", "--check", *args]).exit_code == 0
