"""Writes report events to ClickHouse, exactly once per record.

Synchronous (clickhouse-connect's chDB client refuses async use): the service calls it from one
worker thread.  One writer per record is assumed — records are keyed by id, so a record's events
reach one replica — which makes the existence check before each insert exact.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver import options as _clickhouse_options
from clickhouse_connect.driver.binding import must_escape
from clickhouse_connect.driver.client import Client

from services.report.events import ARCHIVED, Archived, DeadLetter, Event, Outcome
from services.report.schema import (
    ARCHIVED_COLUMNS,
    DDL,
    DEAD_LETTER_COLUMNS,
    DEAD_LETTERS_UPGRADE,
    LINE_COLUMNS,
    OUTCOME_COLUMNS,
    REGION_UPGRADES,
    VIEWS,
)

log = logging.getLogger("fiscalflow.report.sink")

# Rows go to ClickHouse as lists and come back as tuples, never as DataFrames.  Left alone,
# clickhouse-connect imports pandas (installed as chDB's dependency) on the first insert, to ask
# whether the rows are a DataFrame: ~50 MB more resident in the report service, ~0.7 s of CPU.
_clickhouse_options.pd = None


# String literals as clickhouse-connect writes them (a backslash before each of ``must_escape``):
# its own escape is a generator over every character, ~6 % of the report stage's Python time with
# thousands of record ids and UUIDs in each write's IN lists (py-spy).  Ids seldom hold any of
# them: one search over the joined list, and an escape only when it finds one (1,000 UUIDs:
# 4.4 ms -> 0.2 ms).
_ESCAPES = str.maketrans({c: "\\" + c for c in must_escape})
_MUST_ESCAPE = re.compile("[" + re.escape("".join(must_escape)) + "]")


def strings_in(values: Sequence[str]) -> str:
    """``values`` as the list literal of an IN clause: what ``%(name)s`` with the list as a
    parameter renders (tests/unit/report/test_sink_literals.py holds them to be the same).  Not
    beside ``%`` parameters in one query: those format the whole query text, this literal included."""
    if not values:
        return "[]"
    if _MUST_ESCAPE.search("".join(values)):
        values = [v.translate(_ESCAPES) for v in values]
    return "['" + "', '".join(values) + "']"


def connect(dsn: str) -> Client:
    """``chdb://DIR`` (embedded, one process per directory) or a ClickHouse server's http(s) URL."""
    if dsn.startswith("chdb://"):
        return clickhouse_connect.get_client(dsn=dsn)
    return clickhouse_connect.get_client(dsn=dsn, compress=False)


def create_schema(client: Client) -> None:
    views = set(VIEWS.values())
    for stmt in DDL:
        if stmt not in views:  # the views last (_upgrade_regions): their SELECT must find its columns
            client.command(stmt)
    has_letter_id = client.query("SELECT count() FROM system.columns WHERE database = currentDatabase()"
                                 " AND table = 'dead_letters' AND name = 'letter_id'").result_rows[0][0]
    if not has_letter_id:
        client.command(DEAD_LETTERS_UPGRADE)
    _upgrade_regions(client)


def _upgrade_regions(client: Client) -> None:
    """Tables from before the region column get it (schema.py REGION_UPGRADES); then the views,
    those that do not select it created again.  At start, before anything is inserted: a view
    dropped here is back before the first insert (a crash in between: the next start creates it)."""
    with_region = {r[0] for r in client.query(
        "SELECT table FROM system.columns WHERE database = currentDatabase() AND name = 'region'").result_rows}
    upgrade = [table for table in REGION_UPGRADES if table not in with_region]
    if upgrade:
        log.warning("report tables %s have no region column: adding it (their rows get region '' until"
                    " `fiscalflow report rebuild` sets it from the registry)", ", ".join(upgrade))
    for table in upgrade:
        client.command(REGION_UPGRADES[table])
    selects: dict[str, str] = {r[0]: r[1] for r in client.query(
        "SELECT name, as_select FROM system.tables WHERE database = currentDatabase() AND name IN %(views)s",
        parameters={"views": list(VIEWS)}).result_rows}
    for view, create in VIEWS.items():
        if "region" not in selects.get(view, "region"):
            client.command(f"DROP VIEW IF EXISTS {view}")
        client.command(create)


# The summing tables and how to recompute each from its base table: (table, check, rebuild).
# ``check`` gives rows that must be equal on both sides (per region); the base side counts each
# record once.  ``rebuild`` names its columns (an upgraded table has them in another order).
# record_outcomes is read FINAL too: a changed outcome's cancelling row and new row share the
# record id, so ClickHouse collapses the pair to the new row as it inserts it (optimize_on_insert;
# the view still sees both) — until a merge drops the old row, a plain sum of signs counts the
# record under its old outcome as well.  FINAL keeps each record's newest row: its outcome (+1).
# A region whose rows were all moved away (set_regions) sums to nothing until merges drop them.
_NONZERO = "HAVING sum(n) != 0 OR sum(total_mxn) != 0"
_DERIVED = [
    ("status_counts",
     ("SELECT outcome, reason, region, sum(n) AS c FROM status_counts GROUP BY 1, 2, 3 HAVING c != 0"
      " ORDER BY 1, 2, 3",
      "SELECT outcome, reason, region, sum(sign) AS c FROM record_outcomes FINAL GROUP BY 1, 2, 3 HAVING c != 0"
      " ORDER BY 1, 2, 3"),
     "(outcome, reason, region, n) SELECT outcome, reason, region, toInt64(sign) AS n FROM record_outcomes FINAL"),
    ("daily_totals",
     (f"SELECT region, sum(n), sum(total), sum(total_mxn) FROM daily_totals GROUP BY 1 {_NONZERO} ORDER BY 1",
      "SELECT region, count(), sum(total), sum(total_mxn) FROM archived FINAL GROUP BY 1 ORDER BY 1"),
     "(day, issuer_rfc, tipo, moneda, region, n, total, total_mxn)"
     " SELECT day, issuer_rfc, tipo, moneda, region, toInt64(1) AS n, total, total_mxn FROM archived FINAL"),
    ("monthly_totals",
     (f"SELECT region, sum(n), sum(total), sum(total_mxn) FROM monthly_totals GROUP BY 1 {_NONZERO} ORDER BY 1",
      "SELECT region, count(), sum(total), sum(total_mxn) FROM archived FINAL GROUP BY 1 ORDER BY 1"),
     "(month, issuer_rfc, tipo, moneda, region, n, total, total_mxn)"
     " SELECT toStartOfMonth(day) AS month, issuer_rfc, tipo, moneda, region, toInt64(1) AS n, total, total_mxn"
     " FROM archived FINAL"),
    ("hourly_totals",
     (f"SELECT region, sum(n), sum(total_mxn) FROM hourly_totals GROUP BY 1 {_NONZERO} ORDER BY 1",
      "SELECT region, count(), sum(total_mxn) FROM archived FINAL GROUP BY 1 ORDER BY 1"),
     "(hour, region, n, total_mxn)"
     " SELECT toStartOfHour(archived_at) AS hour, region, toInt64(1) AS n, total_mxn FROM archived FINAL"),
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


def _hour(ts: dt.datetime) -> dt.datetime:
    """The hour ``ts`` (UTC) falls in, as hourly_totals keys it."""
    return (ts if ts.tzinfo is not None else ts.replace(tzinfo=dt.UTC)).replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Written:
    archived: int
    outcomes: int
    dead_letters: int
    lines: int = 0  # rows of invoice_lines
    regions: int = 0  # archived rows given their record's region (set_regions)


@dataclass
class _Outcome:
    outcome: str
    reason: str
    job_id: str
    version: int
    region: str = ""


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
        archived, moved = self._new_archived([e for e in events if isinstance(e, Archived)])
        outcome_rows = self._outcome_rows(events)
        # Order matters only for speed: each table's check-then-insert is idempotent on its own.
        if archived:
            self.client.insert("archived", [a.row() for a in archived], column_names=ARCHIVED_COLUMNS)
        if outcome_rows:
            self.client.insert("record_outcomes", outcome_rows, column_names=OUTCOME_COLUMNS)
        if dead:
            self.client.insert("dead_letters", [d.row() for d in dead], column_names=DEAD_LETTER_COLUMNS)
        # A record's lines are checked on their own, not with its archived row: an insert killed
        # between the two tables, or a rebuild restoring the lines of a record already archived,
        # writes them once.  One insert, one part: a record's lines are all there or none.
        line_rows = [row for a in self._new_lines(events) for row in a.line_rows()]
        if line_rows:
            self.client.insert("invoice_lines", line_rows, column_names=LINE_COLUMNS)
        if moved:
            self.set_regions(moved)
        return Written(len(archived), len(outcome_rows), len(dead), len(line_rows), regions=len(moved))

    def _new_archived(self, items: list[Archived]) -> tuple[list[Archived], list[Archived]]:
        """The events whose document the table does not hold yet; and those whose record it holds
        under another region than the event's (a row written before the region column, region '':
        the event's region, when it has one, is the record's)."""
        if not items:
            return [], []
        unique = list({a.uuid: a for a in reversed(items)}.values())  # first event of a UUID wins
        present = self.present_regions([(a.day, a.uuid) for a in unique])
        new, moved = [], []
        for a in unique:
            if a.uuid not in present:
                new.append(a)
                continue
            record_id, region = present[a.uuid]
            if a.region and record_id == a.record_id and region != a.region:
                moved.append(a)
        return new, moved

    def _new_lines(self, events: Sequence[Event]) -> list[Archived]:
        """The archived events with lines whose record has none in invoice_lines yet (the first of a record)."""
        items = [e for e in events if isinstance(e, Archived) and e.lines]
        if not items:
            return []
        unique = list({a.record_id: a for a in reversed(items)}.values())
        present = self.records_with_lines([a.record_id for a in unique])
        return [a for a in unique if a.record_id not in present]

    def records_with_lines(self, record_ids: Sequence[str]) -> set[str]:
        """The records among ``record_ids`` whose lines invoice_lines holds."""
        if not record_ids:
            return set()
        return {r[0] for r in self.client.query(
            f"SELECT DISTINCT record_id FROM invoice_lines WHERE record_id IN {strings_in(sorted(set(record_ids)))}"
        ).result_rows}

    def present_uuids(self, keys: Sequence[tuple[dt.date, str]]) -> set[str]:
        """The UUIDs among (day, UUID) ``keys`` the archived table holds already."""
        return set(self.present_regions(keys))

    def present_regions(self, keys: Sequence[tuple[dt.date, str]]) -> dict[str, tuple[str, str]]:
        """The UUIDs among (day, UUID) ``keys`` the archived table holds already: their (record id,
        region), of the newest row (set_regions writes a row again)."""
        if not keys:
            return {}
        return {r[0]: (r[1], r[2]) for r in self.client.query(
            "SELECT uuid, argMax(record_id, version), argMax(region, version) FROM archived"
            f" WHERE day IN {strings_in(sorted({d.isoformat() for d, _ in keys}))}"
            f" AND uuid IN {strings_in(sorted({u for _, u in keys}))} GROUP BY uuid").result_rows}

    def set_regions(self, moved: Sequence[Archived]) -> None:
        """Give archived rows their record's region (``moved``: the events, with it), then count
        them under it.  The upgrade's path (rows written before the region column have ''; a
        rebuild sends the registry's), not the stream's.

        Each row is written again with the region and a newer version: the table keeps the newest
        row of a document (ReplacingMergeTree; what reads it take: FINAL, or argMax by version).
        The views count the rows under their region; a cancelling row per document (count -1,
        amounts negated) in each summing table takes them away from the old one.  A rebuild's
        step of 5,000 moved rows took 0.5 s this way at 300,000 archived rows; re-materialising
        the slices that hold them instead (their days, months and hours, from ``archived FINAL``)
        took 1.7 s, growing with the table, and an ALTER UPDATE of the rows 2.7 s already at
        50,000 (measured, embedded chDB).

        Every report query runs on the same ClickHouse thread, so none sees the rows counted
        under both regions (the embedded chDB: one process).  A crash in between leaves summing
        tables that differ from the archived table per region: ``repair_derived`` finds them at
        the next start."""
        region = {a.uuid: a.region for a in moved}
        rows = [dict(zip(ARCHIVED_COLUMNS, r, strict=True)) for r in self.client.query(
            f"SELECT {', '.join(ARCHIVED_COLUMNS)} FROM archived FINAL WHERE day IN %(days)s AND uuid IN %(uuids)s",
            parameters={"uuids": sorted(region), "days": sorted({a.day for a in moved})}).result_rows]
        again = [{**r, "version": r["version"] + 1, "region": region[r["uuid"]]} for r in rows]
        self.client.insert("archived", [[a[c] for c in ARCHIVED_COLUMNS] for a in again], column_names=ARCHIVED_COLUMNS)
        # the cancelling rows, under the rows' old region
        group = ["issuer_rfc", "tipo", "moneda", "region", "n", "total", "total_mxn"]
        daily = [[r["day"], r["issuer_rfc"], r["tipo"], r["moneda"], r["region"], -1, -r["total"], -r["total_mxn"]]
                 for r in rows]
        self.client.insert("daily_totals", daily, column_names=["day", *group])
        self.client.insert("monthly_totals", [[d[0].replace(day=1), *d[1:]] for d in daily],
                           column_names=["month", *group])
        self.client.insert("hourly_totals", [[_hour(r["archived_at"]), r["region"], -1, -r["total_mxn"]] for r in rows],
                           column_names=["hour", "region", "n", "total_mxn"])

    def outcomes(self, record_ids: list[str]) -> dict[str, tuple[str, str, str]]:
        """Each record's current (outcome, reason, region); records without one are absent."""
        if not record_ids:
            return {}
        return {rid: (o.outcome, o.reason, o.region) for rid, o in self._current(record_ids).items()}

    def _new_dead_letters(self, items: list[DeadLetter]) -> list[DeadLetter]:
        """Each dead letter once: the first copy in the batch, if the table does not hold it."""
        if not items:
            return []
        first: dict[str, DeadLetter] = {}
        for d in items:
            first.setdefault(d.letter_id, d)
        unique = list(first.values())
        present = {r[0] for r in self.client.query(
            f"SELECT letter_id FROM dead_letters WHERE record_id IN {strings_in(sorted({d.record_id for d in unique}))}"
            f" AND letter_id IN {strings_in([d.letter_id for d in unique])}").result_rows}
        return [d for d in unique if d.letter_id not in present]

    def _current(self, record_ids: list[str]) -> dict[str, _Outcome]:
        rows = self.client.query(
            "SELECT record_id, argMax(outcome, version), argMax(reason, version), argMax(job_id, version),"
            " max(version), argMax(region, version) FROM record_outcomes"
            f" WHERE record_id IN {strings_in(record_ids)} GROUP BY record_id",
        ).result_rows
        return {r[0]: _Outcome(r[1], r[2], r[3], int(r[4]), r[5]) for r in rows}

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
                           "" if isinstance(e, Archived) else e.reason, e.job_id, e.version, e.region)
            old = state.get(e.record_id)
            if old is not None:
                new.region = new.region or old.region  # an event that does not say keeps the region known
                # Archived is final (exactly one document per UUID is counted); an older event
                # arriving late (the two topics are not ordered together) changes nothing.  Either
                # way the outcome may still take the record's region (its row from before the column).
                if old.outcome == ARCHIVED or (old.outcome, old.reason) == (new.outcome, new.reason):
                    if new.region == old.region:
                        continue
                    new = _Outcome(old.outcome, old.reason, old.job_id, new.version, new.region)
                elif new.outcome != ARCHIVED and new.version < old.version:
                    continue
                rows.append([e.record_id, old.outcome, old.reason, old.job_id, -1, old.version, old.region])
                new.version = max(new.version, old.version + 1)
            rows.append([e.record_id, new.outcome, new.reason, new.job_id, 1, new.version, new.region])
            state[e.record_id] = new
        return rows
