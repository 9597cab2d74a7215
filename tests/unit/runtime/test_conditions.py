"""Halted/paused conditions as published and read: the freshness rule (a replica killed while
halted must not look halted forever), the reporter's publish/refresh/clear cycle, the stages a
job still needs, and what `stack status` makes of a replica's /readyz."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from shared.db import conditions
from shared.db.jobs import JobStatus
from shared.runtime import condition as C
from shared.stack.probe import condition_of

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)


def test_a_row_refreshed_within_the_window_is_believed_and_an_older_one_is_not() -> None:
    window = conditions.STALE_AFTER_S
    assert window > C.REFRESH_S * 2, "one late refresh must not make a halt disappear"
    assert conditions.is_fresh(NOW - timedelta(seconds=C.REFRESH_S), NOW)
    assert conditions.is_fresh(NOW - timedelta(seconds=window), NOW)
    assert not conditions.is_fresh(NOW - timedelta(seconds=window + 0.001), NOW)
    assert not conditions.is_fresh(NOW - timedelta(hours=3), NOW)
    # A row written by a database clock a moment ahead (or just now) is fresh.
    assert conditions.is_fresh(NOW + timedelta(seconds=1), NOW)


async def test_reporter_clears_at_start_publishes_changes_refreshes_and_clears_at_stop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(C, "CHECK_S", 0.01)
    monkeypatch.setattr(C, "REFRESH_S", 0.05)
    seen: list[C.StageCondition] = []

    async def hook(c: C.StageCondition) -> None:
        seen.append(c)

    state = C.Condition()
    reporter = C.ConditionReporter(hook, ("validate", "0", "h", "ns"), lambda: state)
    reporter.start()
    await asyncio.sleep(0.05)
    assert [c.state for c in seen] == [""], "a restarted replica clears what its previous life published"
    state = C.Condition("halted", "halted: 90% dead letters")
    await asyncio.sleep(0.2)
    halted = [c for c in seen if c.state == "halted"]
    assert len(halted) >= 3, "a standing halt is refreshed"
    assert {c.since for c in halted} == {halted[0].since}, "refreshes keep the time the halt began"
    assert halted[0].reason == "halted: 90% dead letters" and halted[0].stage == "validate"
    n = len(seen)
    state = C.Condition()
    await asyncio.sleep(0.05)
    assert seen[n].state == "" and all(c.state == "" for c in seen[n:]), "a resumed stage is cleared at once"
    assert len(seen) == n + 1, "a normal replica writes nothing more"
    state = C.Condition("paused", "paused: s3 down")
    await asyncio.sleep(0.03)
    await reporter.stop()
    assert seen[-2].state == "paused" and seen[-1].state == "", "a graceful stop clears the condition"


async def test_a_failed_publish_is_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(C, "CHECK_S", 0.01)
    calls: list[str] = []

    async def flaky(c: C.StageCondition) -> None:
        calls.append(c.state)
        if len(calls) <= 2:
            raise OSError("postgres down")

    reporter = C.ConditionReporter(flaky, ("store", "0", "h", ""), lambda: C.Condition("paused", "paused: postgres"))
    reporter.start()
    await asyncio.sleep(0.1)
    await reporter.stop()
    assert calls[:3] == ["paused"] * 3 and calls[-1] == ""
    assert calls.count("paused") == 3, "once written, an unchanged pause waits for its refresh"


def test_a_job_needs_the_stages_ahead_of_its_unfinished_records() -> None:
    def needed(counts: dict[str, int]) -> set[str]:
        return JobStatus("j", "running", "normal", sum(counts.values()), counts).stages_needed

    assert needed({"pending": 1}) == {"ingest", "download", "validate", "store"}
    assert needed({"downloaded": 2, "archived": 5}) == {"validate", "store"}
    assert needed({"archived": 3, "rejected": 1, "unknown": 1}) == set()
    assert needed({"downloaded": 0, "archived": 1}) == set()


def test_stack_status_reads_halted_paused_and_not_ready_from_readyz() -> None:
    halted = {"ready": False, "halted": "halted: 95% of the last 20 ...", "paused": True,
              "condition": {"state": "halted", "reason": "halted: 95% of the last 20 ..."}}
    assert condition_of(halted) == ("halted", "halted: 95% of the last 20 ...")
    paused = {"ready": False, "halted": "", "paused": True, "assigned": ["t[0]"],
              "condition": {"state": "paused", "reason": "paused: s3 down (last error: s3: refused)"}}
    assert condition_of(paused) == ("paused", "paused: s3 down (last error: s3: refused)")
    assert condition_of({"ready": True, "halted": "", "condition": {"state": "", "reason": ""}}) == ("ready", "")
    report_down = {"ready": False, "dependencies": False, "api": True, "last_error": "clickhouse: gone"}
    assert condition_of(report_down) == ("not ready", "a dependency is down (clickhouse: gone)")
    unassigned = {"ready": False, "dependencies": True, "assigned": [], "halted": "",
                  "condition": {"state": "", "reason": ""}}
    assert condition_of(unassigned)[0] == "not ready" and "no partition" in condition_of(unassigned)[1]
