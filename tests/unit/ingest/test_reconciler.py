"""The reconciler re-drives a stalled record only when the stage it waits for has no backlog:
while that stage's topics hold unconsumed messages, the record's own message may be among them."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import Any

from services.ingest.reconciler import Reconciler
from shared.db.stalled import StalledRecord
from shared.domain.records import Priority
from shared.topics import Stage


def _record(rid: str, status: str) -> StalledRecord:
    return StalledRecord(rid, status, dt.datetime(2026, 1, 1, tzinfo=dt.UTC), 0, None, Priority.NORMAL)


def _reconciler(backlogs: dict[Stage, int], asked: list[tuple[Stage, ...]]) -> Reconciler:
    async def backlog(stages: Sequence[Stage]) -> int:
        asked.append(tuple(stages))
        return sum(backlogs.get(s, 0) for s in stages)

    none: Any = None
    return Reconciler(none, none, lease_s=60, backlog=backlog, namespace=lambda: "")


def test_records_waiting_for_a_stage_with_a_backlog_are_held_back_the_others_redriven() -> None:
    asked: list[tuple[Stage, ...]] = []
    rec = _reconciler({Stage.STORE: 12}, asked)
    records = [_record("a", "downloaded"), _record("b", "downloading"), _record("c", "pending"),
               _record("d", "downloaded")]
    kept = asyncio.run(rec._unblocked(records))
    # downloaded records wait for validate and then store (no transition in between): store's
    # backlog holds them back; the others' stages are idle.
    assert [r.record_id for r in kept] == ["b", "c"]
    assert rec.last_held == {Stage.VALIDATE: 2}
    # One measurement per status per tick, of the stages that status waits for.
    assert sorted(asked) == sorted([(Stage.VALIDATE, Stage.STORE), (Stage.DOWNLOAD,), (Stage.INGEST,)])


def test_with_every_stage_idle_every_stalled_record_is_redriven() -> None:
    rec = _reconciler({}, [])
    records = [_record("a", "downloaded"), _record("b", "pending")]
    assert asyncio.run(rec._unblocked(records)) == records
    assert rec.last_held == {}
