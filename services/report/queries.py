"""The report queries.  ClickHouse ones are synchronous (called on the ClickHouse thread); they read
the pre-summed tables, never a scan of ``archived`` (see schema.py)."""

from __future__ import annotations

import base64
import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from clickhouse_connect.driver.client import Client

from services.report.amounts import money
from shared.db.records import history
from shared.domain.records import FINAL_STATUSES, RecordStatus

Json = dict[str, Any]


def _group(tipo: str, moneda: str, n: int, total: Decimal, total_mxn: Decimal) -> Json:
    return {"tipo": tipo, "moneda": moneda, "count": int(n), "total": money(total), "total_mxn": money(total_mxn)}


# A report query reads a few thousand pre-summed rows: one thread is faster than fanning out, and
# leaves the other core to the stream.
_QUERY_SETTINGS = {"max_threads": 1}


def _totals(client: Client, start: dt.date, end: dt.date) -> list[Sequence[Any]]:
    """Sums per (issuer, tipo, moneda) over days start..end: whole months from monthly_totals,
    the partial months at either end from daily_totals."""
    m1 = start if start.day == 1 else (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    m2 = (end + dt.timedelta(days=1)).replace(day=1) if (end + dt.timedelta(days=1)).day == 1 else end.replace(day=1)
    cols = "issuer_rfc, tipo, moneda, n, total, total_mxn"
    if m1 < m2:
        source = (f"SELECT {cols} FROM monthly_totals WHERE month >= %(m1)s AND month < %(m2)s UNION ALL"
                  f" SELECT {cols} FROM daily_totals WHERE (day >= %(a)s AND day < %(m1)s)"
                  " OR (day >= %(m2)s AND day <= %(b)s)")
    else:
        source = f"SELECT {cols} FROM daily_totals WHERE day >= %(a)s AND day <= %(b)s"
    return list(client.query(
        f"SELECT issuer_rfc, tipo, moneda, sum(n), sum(total), sum(total_mxn) FROM ({source})"
        " GROUP BY issuer_rfc, tipo, moneda ORDER BY issuer_rfc, tipo, moneda",
        parameters={"a": start, "b": end, "m1": m1, "m2": m2}, settings=_QUERY_SETTINGS).result_rows)


def daily(client: Client, day: dt.date) -> Json:
    """The day's groups and issuers, and the seed contract's view of the same sums (``record_count``,
    ``total_amount`` in MXN, ``by_issuer``); ``record_count`` 0 for a day without archived documents."""
    groups: dict[tuple[str, str], list[Any]] = defaultdict(lambda: [0, Decimal(0), Decimal(0)])
    issuers: dict[str, list[Any]] = defaultdict(lambda: [0, Decimal(0)])
    for rfc, tipo, moneda, n, total, total_mxn in _totals(client, day, day):
        g = groups[(tipo, moneda)]
        g[0] += n
        g[1] += total
        g[2] += total_mxn
        i = issuers[rfc]
        i[0] += n
        i[1] += total_mxn
    count = sum(int(v[0]) for v in issuers.values())
    return {
        "date": day.isoformat(),
        "groups": [_group(t, m, *v) for (t, m), v in sorted(groups.items())],
        "issuers": [{"rfc": rfc, "count": int(v[0]), "total_mxn": money(v[1])}
                    for rfc, v in sorted(issuers.items(), key=lambda kv: (-kv[1][1], kv[0]))],
        "record_count": count,
        "total_amount": money(sum((v[1] for v in issuers.values()), Decimal(0))),
        "by_issuer": {rfc: {"record_count": int(v[0]), "total_amount": money(v[1])}
                      for rfc, v in sorted(issuers.items())},
    }


def issuers(client: Client, start: dt.date, end: dt.date) -> Json:
    out: dict[str, list[Json]] = defaultdict(list)
    for rfc, tipo, moneda, n, total, total_mxn in _totals(client, start, end):
        out[rfc].append(_group(tipo, moneda, n, total, total_mxn))
    return {"from": start.isoformat(), "to": end.isoformat(),
            "issuers": [{"rfc": rfc, "groups": groups} for rfc, groups in sorted(out.items())]}


def trend(client: Client, hours: int, now: dt.datetime) -> Json:
    since = (now - dt.timedelta(hours=hours - 1)).replace(minute=0, second=0, microsecond=0)
    rows = client.query(
        "SELECT hour, sum(n), sum(total_mxn) FROM hourly_totals WHERE hour >= %(since)s"
        " GROUP BY hour ORDER BY hour", parameters={"since": since.replace(tzinfo=None)},
        settings=_QUERY_SETTINGS).result_rows
    found = {r[0].replace(tzinfo=None): (int(r[1]), r[2]) for r in rows}
    points = []
    for i in range(hours):  # every hour of the window, zero when nothing was archived
        h = since.replace(tzinfo=None) + dt.timedelta(hours=i)
        n, mxn = found.get(h, (0, Decimal(0)))
        points.append({"hour": h.isoformat() + "Z", "count": n, "total_mxn": money(mxn)})
    return {"hours": hours, "points": points}


def final_counts(client: Client) -> list[tuple[str, str, int]]:
    rows = client.query("SELECT outcome, reason, sum(n) AS c FROM status_counts GROUP BY outcome, reason"
                        " HAVING c != 0", settings=_QUERY_SETTINGS).result_rows
    return [(r[0], r[1], int(r[2])) for r in rows]


async def last_archived(pool: asyncpg.Pool, day: dt.date) -> dt.datetime | None:
    """When the registry last archived a document dated ``day`` (one entry of index
    fiscal_records_archived_day, migration 0080): the daily report's ``last_update``."""
    at: dt.datetime | None = await pool.fetchval(
        "SELECT max(updated_at) FROM fiscal_records WHERE status = 'archived' AND issued_on = $1", day)
    return at


async def in_progress_counts(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch("SELECT status, count(*) AS n FROM fiscal_records WHERE NOT (status = ANY($1::text[]))"
                            " GROUP BY status", [s.value for s in FINAL_STATUSES])
    return {r["status"]: int(r["n"]) for r in rows}


def summary_from(finals: list[tuple[str, str, int]], in_progress: dict[str, int]) -> Json:
    by_status: dict[str, int] = {s.value: 0 for s in FINAL_STATUSES}
    by_reason: dict[str, int] = {}
    for outcome, reason, n in finals:
        by_status[outcome] = by_status.get(outcome, 0) + n
        if reason:
            by_reason[reason] = by_reason.get(reason, 0) + n
    by_status.update(in_progress)
    return {"by_status": by_status, "by_reason": dict(sorted(by_reason.items()))}


async def job_summary(pool: asyncpg.Pool, job_id: str) -> Json:
    """A job's records are few and all in PostgreSQL: the registry is the source."""
    rows = await pool.fetch(
        "SELECT COALESCE(r.status, 'unknown') AS status, r.reason, count(*) AS n FROM job_records m"
        " LEFT JOIN fiscal_records r USING (record_id) WHERE m.job_id = $1 GROUP BY 1, 2", job_id)
    by_status: dict[str, int] = {s.value: 0 for s in FINAL_STATUSES}
    by_reason: dict[str, int] = {}
    for r in rows:
        by_status[r["status"]] = by_status.get(r["status"], 0) + int(r["n"])
        if r["reason"] and r["status"] in ("rejected", "duplicate"):
            by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + int(r["n"])
    return {"job_id": job_id, "by_status": by_status, "by_reason": dict(sorted(by_reason.items()))}


# ---------------------------------------------------------------- records (PostgreSQL)
_RECORD_COLUMNS = ("record_id, region, remote_path, status, reason, last_error, attempts, tfd_uuid, issuer_rfc,"
                   " issued_on, s3_key, sha256, size, gz_size, trust, job_id::text AS job_id, created_at, updated_at")


def _record_json(r: asyncpg.Record) -> Json:
    out = dict(r)
    for k in ("issued_on", "created_at", "updated_at"):
        if out.get(k) is not None:
            out[k] = out[k].isoformat()
    return out


def encode_cursor(record_id: str) -> str:
    return base64.urlsafe_b64encode(record_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """ValueError for anything this API did not hand out."""
    raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
    if not raw:
        raise ValueError("empty cursor")
    return raw


async def list_records(pool: asyncpg.Pool, *, status: str | None, issuer: str | None, day: dt.date | None,
                       reason: str | None, limit: int, after: str | None) -> Json:
    """Keyset pagination on record_id: stable under concurrent inserts, no OFFSET scans."""
    rows = await pool.fetch(
        f"SELECT {_RECORD_COLUMNS} FROM fiscal_records WHERE ($1::text IS NULL OR status = $1)"
        " AND ($2::text IS NULL OR issuer_rfc = $2) AND ($3::date IS NULL OR issued_on = $3)"
        " AND ($4::text IS NULL OR reason = $4) AND ($5::text IS NULL OR record_id > $5)"
        " ORDER BY record_id LIMIT $6", status, issuer, day, reason, after, limit + 1)
    page = [_record_json(r) for r in rows[:limit]]
    return {"records": page, "next_cursor": encode_cursor(page[-1]["record_id"]) if len(rows) > limit else None}


async def record_with_history(pool: asyncpg.Pool, record_id: str) -> Json | None:
    row = await pool.fetchrow(f"SELECT {_RECORD_COLUMNS} FROM fiscal_records WHERE record_id = $1", record_id)
    if row is None:
        return None
    events = []
    for e in await history(pool, record_id):
        e["created_at"] = e["created_at"].isoformat()
        if isinstance(e.get("detail"), str):  # jsonb arrives as text without a codec
            e["detail"] = orjson.loads(e["detail"])
        events.append(e)
    return {**_record_json(row), "history": events}


# ---------------------------------------------------------------- seed 000's record list (PostgreSQL)
_FINAL = tuple(sorted(s.value for s in FINAL_STATUSES))
_RECENT = ("SELECT record_id, tfd_uuid, issuer_rfc, receiver_rfc, total, moneda, fecha, issued_on, status, s3_key,"
           " sha256, gz_size, updated_at, reason, last_error, attempts FROM fiscal_records WHERE {where}"
           " ORDER BY updated_at DESC, record_id DESC LIMIT $1")
# Statuses are written into the SQL (RecordStatus values only), never passed as parameters: the
# planner must see them to use the partial indexes, which a prepared statement's generic plan
# cannot.  One part per final status (fiscal_records_final_recent, migration 0080) and one for the
# in-flight ones (fiscal_records_in_flight), each reading at most ``limit`` rows in order, merged.
_IN_FLIGHT = "status NOT IN ({})".format(", ".join(f"'{s}'" for s in _FINAL))
_ALL_RECENT = " UNION ALL ".join("(" + _RECENT.format(where=where) + ")"
                                 for where in [*(f"status = '{s}'" for s in _FINAL), _IN_FLIGHT])
# A retry is a pass started again (a re-drive, a replay, a resubmitted job): the ingest stage moves
# the record to downloading each time (``attempts``); transient retries inside a stage are not
# recorded in PostgreSQL.
_WITH_RETRIES = ("SELECT r.*, CASE WHEN r.attempts > 1 THEN (SELECT max(a.created_at) FROM audit_events a"
                 " WHERE a.record_id = r.record_id AND a.to_status = 'downloading') END AS last_retry_at"
                 " FROM ({source}) r ORDER BY r.updated_at DESC, r.record_id DESC LIMIT $1")


def _fiscal_record(r: asyncpg.Record, bucket: str) -> Json:
    status = r["status"]
    failed = status in ("rejected", "duplicate")
    issued = r["fecha"] or (r["issued_on"].isoformat() if r["issued_on"] else None)
    return {
        "uuid": r["tfd_uuid"],
        "invoice_id": None,  # Serie + Folio: no stage keeps them (yet)
        "issuer_rfc": r["issuer_rfc"],
        "receiver_rfc": r["receiver_rfc"],
        "amount": money(r["total"]) if r["total"] is not None else None,
        "currency": r["moneda"],
        "issuance_date": issued,
        "status": status,
        "file_url": f"s3://{bucket}/{r['s3_key']}" if status == "archived" and r["s3_key"] else None,
        "checksum": r["sha256"],
        "compressed_size": r["gz_size"],
        # When the registry wrote the final status (the list's order); an archived record's
        # archived_at (the reports' time) is a few milliseconds earlier.
        "processed_at": r["updated_at"].isoformat() if status in _FINAL else None,
        "error_message": r["last_error"] if failed else None,
        "retry_count": max(int(r["attempts"]) - 1, 0),
        "last_retry_at": r["last_retry_at"].isoformat() if r["last_retry_at"] else None,
        "record_id": r["record_id"],
        "reason": r["reason"] if failed else None,
    }


async def fiscal_records(pool: asyncpg.Pool, bucket: str, status: RecordStatus | None, limit: int) -> Json:
    """Seed 000's ``GET /api/v1/fiscal/records``: the most recently changed records first (the
    finished ones by when they finished), mapped onto the Go system's record fields."""
    source = _ALL_RECENT if status is None else _RECENT.format(where=f"status = '{RecordStatus(status).value}'")
    records = [_fiscal_record(r, bucket) for r in await pool.fetch(_WITH_RETRIES.format(source=source), limit)]
    return {"count": len(records), "records": records}
