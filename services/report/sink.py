"""Writes report events to ClickHouse, exactly once per record.

Synchronous (clickhouse-connect's chDB client refuses async use): the service calls it from one
worker thread.  One writer per record is assumed — records are keyed by id, so a record's events
reach one replica — which makes the existence check before each insert exact.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from services.report.events import ARCHIVED, Archived, DeadLetter, Event, Outcome
from services.report.schema import ARCHIVED_COLUMNS, DDL, DEAD_LETTER_COLUMNS, DEAD_LETTERS_UPGRADE, OUTCOME_COLUMNS

log = logging.getLogger("fiscalflow.report.sink")


def connect(dsn: str) -> Client:
    """``chdb://DIR`` (embedded, one process per directory) or a ClickHouse server's http(s) URL."""
    if dsn.startswith("chdb://"):
        return clickhouse_connect.get_client(dsn=dsn)
    return clickhouse_connect.get_client(dsn=dsn, compress=False)


def create_schema(client: Client) -> None:
    for stmt in DDL:
        client.command(stmt)
    has_letter_id = client.query("SELECT count() FROM system.columns WHERE database = currentDatabase()"
                                 " AND table = 'dead_letters' AND name = 'letter_id'").result_rows[0][0]
    if not has_letter_id:
        client.command(DEAD_LETTERS_UPGRADE)


# The summing tables and how to recompute each from its base table: (table, check, rebuild).
# ``check`` gives rows that must be equal on both sides; the base side counts each record once.
_DERIVED = [
    ("status_counts",
     ("SELECT outcome, reason, sum(n) AS c FROM status_counts GROUP BY 1, 2 HAVING c != 0 ORDER BY 1, 2",
      "SELECT outcome, reason, sum(sign) AS c FROM record_outcomes GROUP BY 1, 2 HAVING c != 0 ORDER BY 1, 2"),
     "SELECT outcome, reason, toInt64(sign) AS n FROM record_outcomes"),
    ("daily_totals",
     ("SELECT sum(n), sum(total), sum(total_mxn) FROM daily_totals",
      "SELECT count(), sum(total), sum(total_mxn) FROM archived FINAL"),
     "SELECT day, issuer_rfc, tipo, moneda, toUInt64(1) AS n, total, total_mxn FROM archived FINAL"),
    ("monthly_totals",
     ("SELECT sum(n), sum(total), sum(total_mxn) FROM monthly_totals",
      "SELECT count(), sum(total), sum(total_mxn) FROM archived FINAL"),
     "SELECT toStartOfMonth(day) AS month, issuer_rfc, tipo, moneda, toUInt64(1) AS n, total, total_mxn"
     " FROM archived FINAL"),
    ("hourly_totals",
     ("SELECT sum(n), sum(total_mxn) FROM hourly_totals",
      "SELECT count(), sum(total_mxn) FROM archived FINAL"),
     "SELECT toStartOfHour(archived_at) AS hour, toUInt64(1) AS n, total_mxn FROM archived FINAL"),
]


def repair_derived(client: Client) -> list[str]:
    """Rebuild a summing table that disagrees with its base table; returns the tables rebuilt.

    An INSERT commits the base table's part and its materialised views' parts one after the
    other, not atomically: a replica killed in between (the chaos suite did it: record_outcomes
    held 2,904 archived records, status_counts 2,883) leaves the base rows in place, so the
    redelivered events are skipped as already written and the summing table stays short for
    good.  Such a death always ends in a restart, so the service calls this at start, before it
    consumes; with one writer per ClickHouse (the embedded chDB is one process) nothing inserts
    meanwhile.  A crash during the rebuild leaves a mismatch that the next start repairs.
    """
    rebuilt = []
    for table, (derived_q, base_q), select in _DERIVED:
        derived = client.query(derived_q).result_rows
        base = client.query(base_q).result_rows
        if [tuple(r) for r in derived] == [tuple(r) for r in base]:
            continue
        log.warning("%s disagrees with its base table (%s vs %s): rebuilding it", table, derived[:5], base[:5])
        client.command(f"TRUNCATE TABLE {table}")
        client.command(f"INSERT INTO {table} {select}")
        rebuilt.append(table)
    return rebuilt


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
        dead = self._new_dead_letters([e for e in events if isinstance(e, DeadLetter)])
        # A dead letter already written (a copy a killed stage wrote again, or this stage reading
        # it again) is not an event at all: it must not move the record's outcome either.
        new_dead = {id(d) for d in dead}
        events = [e for e in events if isinstance(e, Archived | Outcome) or id(e) in new_dead]
        archived = self._new_archived([e for e in events if isinstance(e, Archived)])
        outcome_rows = self._outcome_rows(events)
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
        present = self.present_uuids([(a.day, a.uuid) for a in unique])
        return [a for a in unique if a.uuid not in present]

    def present_uuids(self, keys: Sequence[tuple[dt.date, str]]) -> set[str]:
        """The UUIDs among (day, UUID) ``keys`` the archived table holds already."""
        if not keys:
            return set()
        return {r[0] for r in self.client.query(
            "SELECT uuid FROM archived WHERE day IN %(days)s AND uuid IN %(uuids)s",
            parameters={"days": sorted({d for d, _ in keys}), "uuids": sorted({u for _, u in keys})},
        ).result_rows}

    def outcomes(self, record_ids: list[str]) -> dict[str, tuple[str, str]]:
        """Each record's current (outcome, reason); records without one are absent."""
        if not record_ids:
            return {}
        return {rid: (o.outcome, o.reason) for rid, o in self._current(record_ids).items()}

    def _new_dead_letters(self, items: list[DeadLetter]) -> list[DeadLetter]:
        """Each dead letter once: the first copy in the batch, if the table does not hold it."""
        if not items:
            return []
        first: dict[str, DeadLetter] = {}
        for d in items:
            first.setdefault(d.letter_id, d)
        unique = list(first.values())
        present = {r[0] for r in self.client.query(
            "SELECT letter_id FROM dead_letters WHERE record_id IN %(ids)s AND letter_id IN %(letters)s",
            parameters={"ids": sorted({d.record_id for d in unique}), "letters": [d.letter_id for d in unique]},
        ).result_rows}
        return [d for d in unique if d.letter_id not in present]

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
