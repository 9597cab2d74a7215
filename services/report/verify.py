"""Do the report tables say what the system of record says?  PostgreSQL's records against
ClickHouse's rows, per day and status.

- **Archived, per day and region** (date part of Fecha; the issuer region): the registry's archived
  records of the day against ``daily_totals`` (what the daily, issuers and regions reports read) —
  counts, and MXN totals where the registry holds the amounts of every record of the day (records
  archived before migration 0070 have none; their documents hold them: ``report rebuild`` reads
  those).
- **Outcomes** (only when no day range is given: ClickHouse keeps no day for rejections): records
  per final status, reason and region against ``status_counts`` (what the summary reads).

A report row without its record's region (region '': written before the reports kept regions)
is a difference in two cells (its own region and the unknown one, ''), until ``report rebuild``
sets it.

The pipeline keeps writing while this runs: a record archived a moment ago is in PostgreSQL before
its event reaches ClickHouse.  So both sides leave out what happened after a cutoff (``settle_s``
ago): the store stage writes one archive time, to the millisecond, to both (archived records), and
a record's outcome in ClickHouse carries the time of its event as ``version`` (ms), the time the
registry keeps for a rejection too (its dead letter's failure time, shared/db/rejections.py).  Pure
comparison logic is in :func:`compare_days` / :func:`compare_outcomes`; the queries around them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg
from clickhouse_connect.driver.client import Client

from services.report.amounts import money
from services.report.backend import ReportBackend
from services.report.events import ARCHIVED
from shared.domain.records import FINAL_STATUSES

Json = dict[str, Any]
_FINAL = sorted(s.value for s in FINAL_STATUSES)


@dataclass(frozen=True)
class Scope:
    """Days of Fecha, both ends inclusive; ``None`` is open.  Open at both ends = every record."""

    start: dt.date | None = None
    end: dt.date | None = None

    @property
    def complete(self) -> bool:
        return self.start is None and self.end is None

    def label(self) -> str:
        if self.complete:
            return "every day"
        return f"{self.start or '…'}..{self.end or '…'}"


@dataclass
class Cell:
    """One comparison: an archived day (``day``) or a final status and reason (``day`` None), of
    one region ('': rows whose region is not known)."""

    status: str
    day: str | None
    reason: str
    pg: int
    ch: int
    pg_mxn: Decimal | None = None  # None: not compared (no amounts in one of the two)
    ch_mxn: Decimal | None = None
    settling: int = 0  # PostgreSQL's records of the cell newer than the cutoff (left out of both sides)
    region: str = ""

    @property
    def differs(self) -> bool:
        if self.pg != self.ch:
            return True
        return self.pg_mxn is not None and self.ch_mxn is not None and self.pg_mxn != self.ch_mxn

    def describe(self) -> str:
        where = (self.day or f"{self.status} {self.reason}".strip()) + f" [{self.region or 'no region'}]"
        text = f"{where}: PostgreSQL {self.pg}, ClickHouse {self.ch}"
        if self.pg == self.ch and self.differs:
            text += f" (MXN {money(self.pg_mxn)} vs {money(self.ch_mxn)})"
        return text

    def to_json(self) -> Json:
        return {"status": self.status, "day": self.day, "reason": self.reason, "postgres": self.pg,
                "clickhouse": self.ch, "postgres_mxn": None if self.pg_mxn is None else money(self.pg_mxn),
                "clickhouse_mxn": None if self.ch_mxn is None else money(self.ch_mxn), "settling": self.settling,
                "region": self.region, "differs": self.differs}


@dataclass
class Verification:
    scope: Scope
    checked_at: dt.datetime
    cutoff: dt.datetime
    cells: list[Cell] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def differences(self) -> list[Cell]:
        return [c for c in self.cells if c.differs]

    @property
    def consistent(self) -> bool:
        return not self.differences

    @property
    def records_off(self) -> int:
        """Records the reports miss or count more than once, summed over the cells that differ (a
        record under another region than its own is off in both)."""
        return sum(abs(c.pg - c.ch) for c in self.differences)

    @property
    def days(self) -> int:
        return len({c.day for c in self.cells if c.day is not None})

    def summary(self) -> str:
        days = self.days
        archived = sum(c.pg for c in self.cells if c.day is not None)
        if self.consistent:
            return f"consistent: {days} days, {archived} archived records ({self.scope.label()})"
        diffs = self.differences
        shown = "; ".join(c.describe() for c in diffs[:5]) + (f"; … {len(diffs) - 5} more" if len(diffs) > 5 else "")
        return f"{len(diffs)} differences, {self.records_off} records off ({self.scope.label()}): {shown}"

    def to_json(self) -> Json:
        return {"consistent": self.consistent, "from": _iso_or_none(self.scope.start),
                "to": _iso_or_none(self.scope.end), "complete": self.scope.complete,
                "checked_at": self.checked_at.isoformat(), "cutoff": self.cutoff.isoformat(),
                "seconds": round(self.seconds, 3), "days": self.days,
                "differences": len(self.differences), "records_off": self.records_off,
                "cells": [c.to_json() for c in self.cells]}


def _iso_or_none(d: dt.date | None) -> str | None:
    return d.isoformat() if d else None


# ---------------------------------------------------------------- comparison (pure)

@dataclass(frozen=True)
class DayRow:
    """Archived records of one day: ``n``/``mxn`` older than the cutoff, ``priced`` of them with
    amounts in the registry (PostgreSQL side), ``recent`` newer."""

    n: int
    mxn: Decimal
    priced: int = 0
    recent: int = 0


DayKey = tuple[str, str]  # (day, region)
OutcomeKey = tuple[str, str, str]  # (status, reason, region)


def compare_days(pg: dict[DayKey, DayRow], ch_all: dict[DayKey, DayRow],
                 ch_recent: dict[DayKey, DayRow]) -> list[Cell]:
    """Per (day, region): PostgreSQL's settled records against ClickHouse's rows minus its recent ones."""
    cells = []
    for key in sorted(set(pg) | set(ch_all)):
        p = pg.get(key, DayRow(0, Decimal(0)))
        a, r = ch_all.get(key, DayRow(0, Decimal(0))), ch_recent.get(key, DayRow(0, Decimal(0)))
        ch_n, ch_mxn = a.n - r.n, a.mxn - r.mxn
        priced = p.priced == p.n  # the registry holds every amount of the cell: compare totals too
        cells.append(Cell(ARCHIVED, key[0], "", p.n, ch_n, p.mxn if priced else None, ch_mxn if priced else None,
                          p.recent, region=key[1]))
    return cells


def compare_outcomes(pg: dict[OutcomeKey, tuple[int, int]], ch_all: dict[OutcomeKey, int],
                     ch_recent: dict[OutcomeKey, int]) -> list[Cell]:
    """Per (status, reason, region): ``pg`` maps to (settled, recent) counts; ClickHouse's are summed signs."""
    cells = []
    for status, reason, region in sorted(set(pg) | {k for k, v in ch_all.items() if v}):
        settled, recent = pg.get((status, reason, region), (0, 0))
        ch = ch_all.get((status, reason, region), 0) - ch_recent.get((status, reason, region), 0)
        cells.append(Cell(status, None, reason, settled, ch, settling=recent, region=region))
    return cells


# ---------------------------------------------------------------- PostgreSQL

_PG_DAYS = """
SELECT issued_on AS day, region,
       count(*) FILTER (WHERE t < $3) AS n,
       count(total_mxn) FILTER (WHERE t < $3) AS priced,
       COALESCE(sum(total_mxn) FILTER (WHERE t < $3), 0) AS mxn,
       count(*) FILTER (WHERE t >= $3) AS recent
FROM (SELECT issued_on, region, total_mxn, COALESCE(archived_at, updated_at) AS t FROM fiscal_records
      WHERE status = 'archived' AND issued_on IS NOT NULL
        AND ($1::date IS NULL OR issued_on >= $1) AND ($2::date IS NULL OR issued_on <= $2)) r
GROUP BY issued_on, region
"""

_PG_OUTCOMES = """
SELECT status, COALESCE(reason, '') AS reason, region, count(*) FILTER (WHERE t < $2) AS n,
       count(*) FILTER (WHERE t >= $2) AS recent
FROM (SELECT status, CASE WHEN status = 'archived' THEN '' ELSE reason END AS reason, region,
             CASE WHEN status = 'archived' THEN COALESCE(archived_at, updated_at) ELSE updated_at END AS t
      FROM fiscal_records WHERE status = ANY($1::text[])) r
GROUP BY 1, 2, 3
"""


async def _pg_days(pool: asyncpg.Pool, scope: Scope, cutoff: dt.datetime) -> dict[DayKey, DayRow]:
    rows = await pool.fetch(_PG_DAYS, scope.start, scope.end, cutoff)
    return {(r["day"].isoformat(), r["region"]): DayRow(int(r["n"]), Decimal(r["mxn"]), int(r["priced"]),
                                                        int(r["recent"]))
            for r in rows if r["n"] or r["recent"]}


async def _pg_outcomes(pool: asyncpg.Pool, cutoff: dt.datetime) -> dict[OutcomeKey, tuple[int, int]]:
    rows = await pool.fetch(_PG_OUTCOMES, _FINAL, cutoff)
    return {(r["status"], r["reason"], r["region"]): (int(r["n"]), int(r["recent"])) for r in rows}


# ---------------------------------------------------------------- ClickHouse (on its one thread)

def _day_filter(scope: Scope) -> str:
    parts = []
    if scope.start:
        parts.append("day >= %(start)s")
    if scope.end:
        parts.append("day <= %(end)s")
    return " AND ".join(parts) or "1"


def _ch_state(client: Client, scope: Scope, cutoff_ms: int) -> tuple[dict[DayKey, DayRow], dict[DayKey, DayRow],
                                                                         dict[OutcomeKey, int], dict[OutcomeKey, int]]:
    params = {"start": scope.start, "end": scope.end, "cutoff": cutoff_ms}
    where = _day_filter(scope)
    days = {(r[0].isoformat(), r[1]): DayRow(int(r[2]), Decimal(r[3])) for r in client.query(
        f"SELECT day, region, sum(n) AS c, sum(total_mxn) AS m FROM daily_totals WHERE {where} GROUP BY day, region"
        " HAVING c != 0 OR m != 0",
        parameters=params).result_rows}
    recent = {(r[0].isoformat(), r[1]): DayRow(int(r[2]), Decimal(r[3])) for r in client.query(
        f"SELECT day, region, count(), sum(total_mxn) FROM archived WHERE {where}"
        " AND toUnixTimestamp64Milli(archived_at) >= %(cutoff)s GROUP BY day, region", parameters=params).result_rows}
    outcomes: dict[OutcomeKey, int] = {}
    outcomes_recent: dict[OutcomeKey, int] = {}
    if scope.complete:
        outcomes = {(r[0], r[1], r[2]): int(r[3]) for r in client.query(
            "SELECT outcome, reason, region, sum(n) FROM status_counts GROUP BY 1, 2, 3").result_rows}
        outcomes_recent = {(r[0], r[1], r[2]): int(r[3]) for r in client.query(
            "SELECT outcome, reason, region, sum(sign) FROM record_outcomes WHERE version >= %(cutoff)s"
            " GROUP BY 1, 2, 3", parameters=params).result_rows}
    return days, recent, outcomes, outcomes_recent


class Verifier:
    def __init__(self, backend: ReportBackend) -> None:
        self.backend = backend

    async def verify(self, scope: Scope, settle_s: float) -> Verification:
        started = time.perf_counter()
        now = dt.datetime.now(dt.UTC)
        # Milliseconds: what both sides store (the store stage's archive time, ClickHouse's version).
        cutoff = (now - dt.timedelta(seconds=settle_s)).replace(microsecond=(now.microsecond // 1000) * 1000)
        cutoff_ms = int(cutoff.timestamp() * 1000)
        pool = self.backend.pool
        # PostgreSQL first: a record ClickHouse holds was in PostgreSQL before (the store stage
        # commits, then sends), so reading in this order never shows ClickHouse ahead.
        pg_days, pg_outcomes = await asyncio.gather(
            _pg_days(pool, scope, cutoff),
            _pg_outcomes(pool, cutoff) if scope.complete else _none())
        ch_days, ch_recent, ch_outcomes, ch_outcomes_recent = await self.backend.ch(
            _ch_state, self.backend.client, scope, cutoff_ms)
        cells = compare_days(pg_days, ch_days, ch_recent)
        if scope.complete:
            cells += compare_outcomes(pg_outcomes, ch_outcomes, ch_outcomes_recent)
        return Verification(scope, now, cutoff, cells, time.perf_counter() - started)


async def _none() -> dict[OutcomeKey, tuple[int, int]]:
    return {}


def days_back(days: int, today: dt.date | None = None) -> Scope:
    """The start check's scope: the last ``days`` days of Fecha (0: every day)."""
    if days <= 0:
        return Scope()
    today = today or dt.datetime.now(dt.UTC).date()
    return Scope(start=today - dt.timedelta(days=days - 1))
