"""Writes report events to ClickHouse, exactly once per record.

Synchronous (clickhouse-connect's chDB client refuses async use): the service calls it from one
worker thread.  One writer per record is assumed — records are keyed by id, so a record's events
reach one replica — which makes the existence check before each insert exact.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from services.report.events import ARCHIVED, Archived, DeadLetter, Event
from services.report.schema import ARCHIVED_COLUMNS, DDL, DEAD_LETTER_COLUMNS, OUTCOME_COLUMNS

log = logging.getLogger("fiscalflow.report.sink")


def connect(dsn: str) -> Client:
    """``chdb://DIR`` (embedded, one process per directory) or a ClickHouse server's http(s) URL."""
    if dsn.startswith("chdb://"):
        return clickhouse_connect.get_client(dsn=dsn)
    return clickhouse_connect.get_client(dsn=dsn, compress=False)


def create_schema(client: Client) -> None:
    for stmt in DDL:
        client.command(stmt)


@dataclass(frozen=True)
class Written:
    archived: int
    outcomes: int
    dead_letters: int


@dataclass
class _Outcome:
    outcome: str
    reason: str
    job_id: str
    version: int


class ClickHouseSink:
    def __init__(self, client: Client) -> None:
        self.client = client

    def write(self, events: Sequence[Event]) -> Written:
        """Insert what is new in ``events`` (in order; a redelivered event adds nothing)."""
        archived = self._new_archived([e for e in events if isinstance(e, Archived)])
        outcome_rows = self._outcome_rows(events)
        dead = [e for e in events if isinstance(e, DeadLetter)]
        # Order matters only for speed: each table's check-then-insert is idempotent on its own.
        if archived:
            self.client.insert("archived", [a.row() for a in archived], column_names=ARCHIVED_COLUMNS)
        if outcome_rows:
            self.client.insert("record_outcomes", outcome_rows, column_names=OUTCOME_COLUMNS)
        if dead:
            self.client.insert("dead_letters", [d.row() for d in dead], column_names=DEAD_LETTER_COLUMNS)
        return Written(len(archived), len(outcome_rows), len(dead))

    def _new_archived(self, items: list[Archived]) -> list[Archived]:
        if not items:
            return []
        unique = list({a.uuid: a for a in reversed(items)}.values())  # first event of a UUID wins
        present = {r[0] for r in self.client.query(
            "SELECT uuid FROM archived WHERE day IN %(days)s AND uuid IN %(uuids)s",
            parameters={"days": sorted({a.day for a in unique}), "uuids": [a.uuid for a in unique]},
        ).result_rows}
        return [a for a in unique if a.uuid not in present]

    def _current(self, record_ids: list[str]) -> dict[str, _Outcome]:
        rows = self.client.query(
            "SELECT record_id, argMax(outcome, version), argMax(reason, version), argMax(job_id, version),"
            " max(version) FROM record_outcomes WHERE record_id IN %(ids)s GROUP BY record_id",
            parameters={"ids": record_ids},
        ).result_rows
        return {r[0]: _Outcome(r[1], r[2], r[3], int(r[4])) for r in rows}

    def _outcome_rows(self, events: Sequence[Event]) -> list[list[Any]]:
        ids = sorted({e.record_id for e in events if e.record_id})
        if not ids:
            return []
        state = self._current(ids)
        rows: list[list[Any]] = []
        for e in events:
            if not e.record_id:
                continue
            new = _Outcome(ARCHIVED if isinstance(e, Archived) else e.outcome,
                           "" if isinstance(e, Archived) else e.reason, e.job_id, e.version)
            old = state.get(e.record_id)
            if old is not None:
                # Archived is final (exactly one document per UUID is counted); an older event
                # arriving late (the two topics are not ordered together) changes nothing.
                if old.outcome == ARCHIVED or (old.outcome, old.reason) == (new.outcome, new.reason):
                    continue
                if new.outcome != ARCHIVED and new.version < old.version:
                    continue
                rows.append([e.record_id, old.outcome, old.reason, old.job_id, -1, old.version])
                new.version = max(new.version, old.version + 1)
            rows.append([e.record_id, new.outcome, new.reason, new.job_id, 1, new.version])
            state[e.record_id] = new
        return rows
