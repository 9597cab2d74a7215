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


def _source(start: dt.date, end: dt.date, region: str | None) -> tuple[str, dict[str, Any]]:
    """The summing rows of days start..end (of one region, or of all): whole months from
    monthly_totals, the partial months at either end from daily_totals."""
    m1 = start if start.day == 1 else (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    m2 = (end + dt.timedelta(days=1)).replace(day=1) if (end + dt.timedelta(days=1)).day == 1 else end.replace(day=1)
    cols = "issuer_rfc, tipo, moneda, region, n, total, total_mxn"
    of_region = "" if region is None else " AND region = %(region)s"
    if m1 < m2:
        source = (f"SELECT {cols} FROM monthly_totals WHERE month >= %(m1)s AND month < %(m2)s{of_region} UNION ALL"
                  f" SELECT {cols} FROM daily_totals WHERE ((day >= %(a)s AND day < %(m1)s)"
                  f" OR (day >= %(m2)s AND day <= %(b)s)){of_region}")
    else:
        source = f"SELECT {cols} FROM daily_totals WHERE day >= %(a)s AND day <= %(b)s{of_region}"
    return source, {"a": start, "b": end, "m1": m1, "m2": m2, "region": region}


def _totals(client: Client, start: dt.date, end: dt.date, region: str | None = None) -> list[Sequence[Any]]:
    """Sums per (issuer, tipo, moneda) over days start..end, of one region or of all."""
    source, params = _source(start, end, region)
    return list(client.query(
        f"SELECT issuer_rfc, tipo, moneda, sum(n) AS c, sum(total), sum(total_mxn) FROM ({source})"
        " GROUP BY issuer_rfc, tipo, moneda HAVING c != 0 ORDER BY issuer_rfc, tipo, moneda",
        parameters=params, settings=_QUERY_SETTINGS).result_rows)


def daily(client: Client, day: dt.date, region: str | None = None) -> Json:
    """The day's groups and issuers, and the seed contract's view of the same sums (``record_count``,
    ``total_amount`` in MXN, ``by_issuer``); ``record_count`` 0 for a day without archived documents
    (of ``region``, when given)."""
    groups: dict[tuple[str, str], list[Any]] = defaultdict(lambda: [0, Decimal(0), Decimal(0)])
    issuers: dict[str, list[Any]] = defaultdict(lambda: [0, Decimal(0)])
    for rfc, tipo, moneda, n, total, total_mxn in _totals(client, day, day, region):
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


def issuers(client: Client, start: dt.date, end: dt.date, region: str | None = None) -> Json:
    out: dict[str, list[Json]] = defaultdict(list)
    for rfc, tipo, moneda, n, total, total_mxn in _totals(client, start, end, region):
        out[rfc].append(_group(tipo, moneda, n, total, total_mxn))
    return {"from": start.isoformat(), "to": end.isoformat(), "region": region,
            "issuers": [{"rfc": rfc, "groups": groups} for rfc, groups in sorted(out.items())]}


def regions(client: Client, start: dt.date | None, end: dt.date | None) -> Json:
    """Per region: archived documents and their MXN total over days start..end (both None: every
    day); with every day, also the rejected and duplicate records (they have no day in the reports,
    like in ``report verify``: null over a range).  Region '' holds rows whose region is not known
    (written before the reports kept it; ``fiscalflow report rebuild`` sets it)."""
    params: dict[str, Any]
    if start is None or end is None:
        start = end = None
        source, params = "SELECT region, n, total_mxn FROM monthly_totals", {}
    else:
        source, params = _source(start, end, None)
    every_day = start is None
    found: dict[str, Json] = {}

    def entry(region: str) -> Json:
        return found.setdefault(region, {"region": region, "record_count": 0, "total_mxn": Decimal(0),
                                         "rejected": 0 if every_day else None, "duplicate": 0 if every_day else None})

    for region, n, mxn in client.query(f"SELECT region, sum(n) AS c, sum(total_mxn) FROM ({source}) GROUP BY region"
                                       " HAVING c != 0", parameters=params, settings=_QUERY_SETTINGS).result_rows:
        e = entry(region)
        e["record_count"], e["total_mxn"] = int(n), mxn
    if every_day:
        for region, outcome, n in client.query(
                "SELECT region, outcome, sum(n) AS c FROM status_counts WHERE outcome IN ('rejected', 'duplicate')"
                " GROUP BY region, outcome HAVING c != 0", settings=_QUERY_SETTINGS).result_rows:
            entry(region)[outcome] = int(n)
    rows = [found[r] for r in sorted(found)]
    total = sum((e["total_mxn"] for e in rows), Decimal(0))
    for e in rows:
        e["total_mxn"] = money(e["total_mxn"])
    return {"from": start.isoformat() if start else None, "to": end.isoformat() if end else None, "regions": rows,
            "record_count": sum(e["record_count"] for e in rows), "total_mxn": money(total)}


def trend(client: Client, hours: int, now: dt.datetime, region: str | None = None) -> Json:
    since = (now - dt.timedelta(hours=hours - 1)).replace(minute=0, second=0, microsecond=0)
    rows = client.query(
        "SELECT hour, sum(n), sum(total_mxn) FROM hourly_totals WHERE hour >= %(since)s"
        + ("" if region is None else " AND region = %(region)s")
        + " GROUP BY hour ORDER BY hour", parameters={"since": since.replace(tzinfo=None), "region": region},
        settings=_QUERY_SETTINGS).result_rows
    found = {r[0].replace(tzinfo=None): (int(r[1]), r[2]) for r in rows}
    points = []
    for i in range(hours):  # every hour of the window, zero when nothing was archived
        h = since.replace(tzinfo=None) + dt.timedelta(hours=i)
        n, mxn = found.get(h, (0, Decimal(0)))
        points.append({"hour": h.isoformat() + "Z", "count": n, "total_mxn": money(mxn)})
    return {"hours": hours, "region": region, "points": points}


def final_counts(client: Client, region: str | None = None) -> list[tuple[str, str, int]]:
    rows = client.query("SELECT outcome, reason, sum(n) AS c FROM status_counts"
                        + ("" if region is None else " WHERE region = %(region)s")
                        + " GROUP BY outcome, reason HAVING c != 0", parameters={"region": region},
                        settings=_QUERY_SETTINGS).result_rows
    return [(r[0], r[1], int(r[2])) for r in rows]


async def last_archived(pool: asyncpg.Pool, day: dt.date, region: str | None = None) -> dt.datetime | None:
    """When the registry last archived a document dated ``day`` (of ``region``, when given: one
    entry of index fiscal_records_archived_day, migration 0080, or the few newest with a region
    filter): the daily report's ``last_update``."""
    at: dt.datetime | None = await pool.fetchval(
        "SELECT max(updated_at) FROM fiscal_records WHERE status = 'archived' AND issued_on = $1"
        " AND ($2::text IS NULL OR region = $2)", day, region)
    return at


async def in_progress_counts(pool: asyncpg.Pool, region: str | None = None) -> dict[str, int]:
    rows = await pool.fetch("SELECT status, count(*) AS n FROM fiscal_records WHERE NOT (status = ANY($1::text[]))"
                            " AND ($2::text IS NULL OR region = $2) GROUP BY status",
                            [s.value for s in FINAL_STATUSES], region)
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


async def job_summary(pool: asyncpg.Pool, job_id: str, region: str | None = None) -> Json:
    """A job's records are few and all in PostgreSQL: the registry is the source."""
    rows = await pool.fetch(
        "SELECT COALESCE(r.status, 'unknown') AS status, r.reason, count(*) AS n FROM job_records m"
        " LEFT JOIN fiscal_records r USING (record_id) WHERE m.job_id = $1 AND ($2::text IS NULL OR r.region = $2)"
        " GROUP BY 1, 2", job_id, region)
    by_status: dict[str, int] = {s.value: 0 for s in FINAL_STATUSES}
    by_reason: dict[str, int] = {}
    for r in rows:
        by_status[r["status"]] = by_status.get(r["status"], 0) + int(r["n"])
        if r["reason"] and r["status"] in ("rejected", "duplicate"):
            by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + int(r["n"])
    return {"job_id": job_id, "by_status": by_status, "by_reason": dict(sorted(by_reason.items()))}


# ---------------------------------------------------------------- records (PostgreSQL)
_RECORD_COLUMNS = ("record_id, region, remote_path, status, reason, last_error, attempts, tfd_uuid, issuer_rfc,"
                   " issued_on, s3_key, sha256, size, gz_size, trust, job_id::text AS job_id, created_at, updated_at,"
                   " invoice_id, validation_rules, warnings")


def _record_json(r: asyncpg.Record) -> Json:
    out = dict(r)
    for k in ("issued_on", "created_at", "updated_at"):
        if out.get(k) is not None:
            out[k] = out[k].isoformat()
    # the rules a lenient job let pass ([{rule, sat_code}]); empty for every other record
    out["warnings"] = orjson.loads(out["warnings"]) if out.get("warnings") else []
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
                       reason: str | None, limit: int, after: str | None, region: str | None = None) -> Json:
    """Keyset pagination on record_id: stable under concurrent inserts, no OFFSET scans."""
    rows = await pool.fetch(
        f"SELECT {_RECORD_COLUMNS} FROM fiscal_records WHERE ($1::text IS NULL OR status = $1)"
        " AND ($2::text IS NULL OR issuer_rfc = $2) AND ($3::date IS NULL OR issued_on = $3)"
        " AND ($4::text IS NULL OR reason = $4) AND ($5::text IS NULL OR record_id > $5)"
        " AND ($7::text IS NULL OR region = $7)"
        " ORDER BY record_id LIMIT $6", status, issuer, day, reason, after, limit + 1, region)
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


# ---------------------------------------------------------------- a record's lines (ClickHouse)
def _exact(value: Decimal | None) -> str | None:
    """A quantity or rate as an exact decimal string, without the table's trailing zeros."""
    return None if value is None else format(value.normalize(), "f")


def record_lines(client: Client, record_id: str) -> Json | None:
    """``GET /api/v1/records/{id}/lines``: the record's lines in document order; None when the
    reports hold none (FINAL: a copy that got in is read once; one record's rows, by its key)."""
    rows = client.query(
        "SELECT uuid, line_no, product_code, description, quantity, unit_price, amount, discount, tax_rate"
        " FROM invoice_lines FINAL WHERE record_id = %(id)s ORDER BY line_no", parameters={"id": record_id},
        settings=_QUERY_SETTINGS).result_rows
    if not rows:
        return None
    lines = [{"line": int(n), "product_code": code or None, "description": description, "quantity": _exact(quantity),
              "unit_price": money(unit_price), "amount": money(amount),
              "discount": None if discount is None else money(discount), "tax_rate": _exact(tax_rate)}
             for _, n, code, description, quantity, unit_price, amount, discount, tax_rate in rows]
    return {"record_id": record_id, "uuid": rows[0][0], "count": len(lines), "lines": lines}


async def record_status(pool: asyncpg.Pool, record_id: str) -> str | None:
    status: str | None = await pool.fetchval("SELECT status FROM fiscal_records WHERE record_id = $1", record_id)
    return status


# ---------------------------------------------------------------- seed 000's record list (PostgreSQL)
_FINAL = tuple(sorted(s.value for s in FINAL_STATUSES))
_RECENT = ("SELECT record_id, invoice_id, tfd_uuid, issuer_rfc, receiver_rfc, total, moneda, fecha, issued_on,"
           " status, s3_key, sha256, gz_size, updated_at, reason, last_error, attempts, region"
           " FROM fiscal_records WHERE {where}"
           " ORDER BY updated_at DESC, record_id DESC LIMIT $1")
# Statuses are written into the SQL (RecordStatus values only), never passed as parameters: the
# planner must see them to use the partial indexes, which a prepared statement's generic plan
# cannot.  One part per final status (fiscal_records_final_recent, migration 0080) and one for the
# in-flight ones (fiscal_records_in_flight), each reading at most ``limit`` rows in order, merged.
# A region filter ($2) is one more condition on each part: it reads rows in the same order,
# skipping the other regions' ones.
_IN_FLIGHT = "status NOT IN ({})".format(", ".join(f"'{s}'" for s in _FINAL))
_PARTS = [*(f"status = '{s}'" for s in _FINAL), _IN_FLIGHT]
_OF_REGION = " AND region = $2"
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
        "invoice_id": r["invoice_id"],
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
        "region": r["region"],
    }


async def fiscal_records(pool: asyncpg.Pool, bucket: str, status: RecordStatus | None, limit: int,
                         region: str | None = None) -> Json:
    """Seed 000's ``GET /api/v1/fiscal/records``: the most recently changed records first (the
    finished ones by when they finished), mapped onto the Go system's record fields; of one issuer
    region, when given."""
    of_region = "" if region is None else _OF_REGION
    parts = _PARTS if status is None else [f"status = '{RecordStatus(status).value}'"]
    source = " UNION ALL ".join(f"({_RECENT.format(where=where + of_region)})" for where in parts)
    args = (limit,) if region is None else (limit, region)
    records = [_fiscal_record(r, bucket) for r in await pool.fetch(_WITH_RETRIES.format(source=source), *args)]
    return {"count": len(records), "records": records}
