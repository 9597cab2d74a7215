"""Every benchmark, chaos and demo run leaves machine-readable records beside its markdown entry."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import pytest

from tooling.bench_results import Measurement, RunRecord, append_result, parse_records, read_records


@pytest.fixture()
def local_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FISCALFLOW_LOCAL_DIR", str(tmp_path))
    return tmp_path


def test_a_run_appends_its_table_and_one_record_per_scenario(local_dir: Path) -> None:
    measured = [Measurement("latency-idle", {"p50_ms": 103.0, "p99_ms": 127.4}, "p50 103 ms, p99 127 ms",
                            {"samples": 50, "backlog": 50_000}),
                Measurement("latency-priority", {"p50_ms": 248.0, "p99_ms": math.inf}, "p50 248 ms, p99 inf ms",
                            {"samples": 50, "backlog": 50_000})]
    append_result("bench latency", "fiscalflow bench latency", "| a |\n|---|\n| 1 |", "a note", measured=measured)
    append_result("bench latency", "fiscalflow bench latency", "| a |\n|---|\n| 2 |")  # a run without records

    md = (local_dir / "bench" / "RESULTS.md").read_text()
    assert md.count("— bench latency") == 2 and "- note: a note" in md
    lines = (local_dir / "bench" / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 2
    raw = json.loads(lines[1])  # strict JSON: a timeout's infinity is null, not Infinity
    assert raw["scenario"] == "latency-priority" and raw["figures"] == {"p50_ms": 248.0, "p99_ms": None}
    assert raw["command"] == "fiscalflow bench latency" and raw["params"] == {"samples": 50, "backlog": 50_000}
    assert raw["date"].endswith("Z") and raw["machine"] and raw["commit"]
    # The machine's speed, measured as the run was recorded: a fixed workload's milliseconds.
    assert raw["reference_ms"] > 0 and "- machine speed: reference workload " in md

    records, problems = read_records()
    assert problems == []
    assert [r.scenario for r in records] == ["latency-idle", "latency-priority"]
    assert records[0].figures == {"p50_ms": 103.0, "p99_ms": 127.4}
    assert records[0].summary == "p50 103 ms, p99 127 ms"
    assert records[0].date.tzinfo is not None and records[0].date == records[1].date


def test_a_record_survives_a_round_trip() -> None:
    record = RunRecord(scenario="chaos", date=dt.datetime(2026, 11, 30, 4, 1, tzinfo=dt.UTC), machine="2 cores",
                       commit="e8918b2", dirty=True, command="make test", params={"count": 20_000},
                       figures={"lost": 0, "duplicated": 0, "run_s": 92.0}, summary="lost 0, duplicated 0",
                       load=(0.5, 0.8, 2.4), reference_ms=28.5)
    assert RunRecord.from_json(record.to_json()) == record
    older = json.loads(record.to_json())
    del older["reference_ms"]  # a record of a run before machine speeds were measured
    assert RunRecord.from_json(json.dumps(older)).reference_ms is None


def test_lines_that_are_not_records_are_skipped_and_named() -> None:
    good = ('{"scenario": "stages", "date": "2026-11-30T03:32:00Z", "commit": "03180fe", '
            '"figures": {"ingest.us_per_doc": 133}, "summary": "ingest 133 µs/doc"}')
    records, problems = parse_records([good, "", "not json", '{"date": "2026-11-30T03:32:00Z"}', "[1]",
                                       good.replace("133}", '"fast"}')])
    assert [r.scenario for r in records] == ["stages"]
    assert records[0].figures == {"ingest.us_per_doc": 133} and records[0].params == {} and not records[0].dirty
    assert [p.split(":")[0] for p in problems] == ["line 3", "line 4", "line 5", "line 6"]


def test_no_log_yet_is_no_records(local_dir: Path) -> None:
    assert read_records() == ([], [])
