"""The record registry: bulk registration, batched look-ups, guarded transitions with audit events.

Every write is idempotent on the record id: a transition only applies from its allowed
statuses, and its audit event has a unique idempotency key, so a redelivered message writes
nothing twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from shared.db.outage import connection, transient_when_down
from shared.domain.records import RecordStatus


def _json(value: Any) -> str:
    """A jsonb parameter: orjson, 0.3 µs for a transition's fields where json.dumps took 2.7 (stdlib json was
    1.4-2.1 % of the download and store stages' CPU in the seed scenario)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


# Columns a transition may set besides the status (values as text; cast in SQL).
SETTABLE = ("tfd_uuid", "issuer_rfc", "issued_on", "s3_key", "sha256", "gz_size", "trust", "size", "receiver_rfc",
            "fecha", "tipo", "moneda", "tipo_cambio", "total", "total_mxn", "archived_at", "invoice_id",
            "validation_rules", "warnings")


@dataclass(frozen=True)
class RecordRow:
    record_id: str
    region: str
    remote_path: str
    expected_sha256: str | None
    size: int | None
    status: RecordStatus
    attempts: int
    tfd_uuid: str | None
    s3_key: str | None
    job_id: str | None
    updated_at: dt.datetime | None = None  # when its last transition happened
    redrives: int = 0


@dataclass
class Transition:
    record_id: str
    to_status: RecordStatus
    allowed_from: tuple[RecordStatus, ...]
    stage: str
    actor: str
    idempotency_key: str
    reason: str | None = None
    last_error: str | None = None
    detail: dict[str, Any] | None = None
    trace_id: str | None = None
    job_id: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    # A re-drive: applies only while the record's last transition is older than this many seconds
    # (so of two re-drives racing for one stalled record, one applies), and counts in ``redrives``.
    redrive_lease_s: float | None = None
    # A restart: from ``rejected`` it applies only while its idempotency key is unrecorded.  The
    # redelivery of the request that started a record's last pass (its consumer died before its
    # offset commit) must not start a record rejected since then all over again; a new request
    # (a resubmitted job) has a new key and does.  From other statuses the key is not consulted:
    # a redelivery must still re-send the task of a record left ``downloading``.
    restart_once: bool = False
    # When it happened, if not the statement's now(): a rejection keeps its dead letter's failure
    # time, so that the registry and the report count it on the same side of a check's cutoff.
    at: dt.datetime | None = None


@dataclass(frozen=True)
class Registration:
    record_id: str
    region: str
    remote_path: str
    expected_sha256: str | None = None
    size: int | None = None


class RegionConflict(ValueError):
    """Record ids named in another region than the one that holds them (or in two regions at once).

    A record id is global (producers publish ids, not paths): a file of the same name in a second
    region is refused, never re-pointed, and nothing of the registration is kept."""

    def __init__(self, conflicts: list[tuple[str, str, str]]) -> None:
        shown = "; ".join(f"{rid!r} is in region {held}, not {wanted}" for rid, held, wanted in conflicts[:5])
        super().__init__(f"record ids already belong to another region: {shown}"
                         + (" (and more)" if len(conflicts) > 5 else "") + "; give the file another name")
        self.conflicts = conflicts


_CONFLICTS_SQL = """
SELECT r.record_id, f.region AS held, r.region AS wanted FROM _reg r JOIN fiscal_records f USING (record_id)
WHERE f.region <> r.region
UNION ALL
SELECT record_id, min(region), max(region) FROM _reg GROUP BY record_id HAVING count(DISTINCT region) > 1
LIMIT 6
"""


async def register(conn: asyncpg.Connection, rows: Iterable[Registration]) -> int:
    """Bulk-register records by COPY into a staging table; existing ids keep their state but get
    the new location/checksum only while still pending.  Returns how many rows were new.

    Raises RegionConflict, registering nothing, when an id is named in another region than the
    one that holds it."""
    records = [(r.record_id, r.region, r.remote_path, r.expected_sha256, r.size) for r in rows]
    if not records:
        return 0
    async with conn.transaction():
        await conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS _reg (record_id text, region text, remote_path text,"
            " expected_sha256 text, size bigint) ON COMMIT DELETE ROWS"
        )
        await conn.copy_records_to_table("_reg", records=records)
        if conflicts := await conn.fetch(_CONFLICTS_SQL):
            raise RegionConflict([(c["record_id"], c["held"], c["wanted"]) for c in conflicts])
        result: str = await conn.execute(
            "INSERT INTO fiscal_records (record_id, region, remote_path, expected_sha256, size)"
            " SELECT DISTINCT ON (record_id) record_id, region, remote_path, expected_sha256, size FROM _reg"
            " ON CONFLICT (record_id) DO UPDATE SET region = EXCLUDED.region, remote_path = EXCLUDED.remote_path,"
            " expected_sha256 = EXCLUDED.expected_sha256, size = EXCLUDED.size, updated_at = now()"
            " WHERE fiscal_records.status = 'pending'"
        )
    return int(result.rsplit(" ", 1)[-1])


@transient_when_down
async def lookup(conn: asyncpg.Connection | asyncpg.Pool, record_ids: Sequence[str]) -> dict[str, RecordRow]:
    rows = await conn.fetch(
        "SELECT record_id, region, remote_path, expected_sha256, size, status, attempts, tfd_uuid, s3_key,"
        " job_id::text, updated_at, redrives FROM fiscal_records WHERE record_id = ANY($1::text[])",
        list(record_ids),
    )
    return {
        r["record_id"]: RecordRow(r["record_id"], r["region"], r["remote_path"], r["expected_sha256"], r["size"],
                                  RecordStatus(r["status"]), r["attempts"], r["tfd_uuid"], r["s3_key"], r["job_id"],
                                  r["updated_at"], r["redrives"])
        for r in rows
    }


_TRANSITION_SQL = """
WITH t AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::uuid[], $7::jsonb[],
                         $8::float8[], $9::text[], $10::jsonb[], $11::text[], $12::text[], $13::text[],
                         $14::timestamptz[])
        AS t(record_id, to_status, allowed, reason, last_error, job_id, fields, lease_s,
             stage, detail, actor, trace_id, idempotency_key, at)
),
old AS (
    SELECT r.record_id, r.status FROM fiscal_records r JOIN t USING (record_id)
    WHERE r.status = ANY(string_to_array(t.allowed, ','))
      AND (t.lease_s IS NULL OR r.updated_at < now() - make_interval(secs => t.lease_s))
    FOR UPDATE OF r
),
upd AS (
    UPDATE fiscal_records r SET
        status = t.to_status,
        reason = COALESCE(t.reason, CASE WHEN t.to_status IN ('rejected', 'duplicate') THEN r.reason END),
        last_error = COALESCE(t.last_error, r.last_error),
        job_id = COALESCE(t.job_id, r.job_id),
        attempts = r.attempts + CASE WHEN t.to_status = 'downloading' THEN 1 ELSE 0 END,
        -- re-drives of the current pass: a record started afresh (pending, rejected) has none yet
        redrives = CASE WHEN t.lease_s IS NOT NULL THEN r.redrives + 1
                        WHEN old.status IN ('pending', 'rejected') THEN 0 ELSE r.redrives END,
        tfd_uuid = COALESCE(t.fields->>'tfd_uuid', r.tfd_uuid),
        issuer_rfc = COALESCE(t.fields->>'issuer_rfc', r.issuer_rfc),
        issued_on = COALESCE((t.fields->>'issued_on')::date, r.issued_on),
        s3_key = COALESCE(t.fields->>'s3_key', r.s3_key),
        sha256 = COALESCE(t.fields->>'sha256', r.sha256),
        gz_size = COALESCE((t.fields->>'gz_size')::bigint, r.gz_size),
        trust = COALESCE(t.fields->>'trust', r.trust),
        size = COALESCE((t.fields->>'size')::bigint, r.size),
        receiver_rfc = COALESCE(t.fields->>'receiver_rfc', r.receiver_rfc),
        fecha = COALESCE(t.fields->>'fecha', r.fecha),
        tipo = COALESCE(t.fields->>'tipo', r.tipo),
        moneda = COALESCE(t.fields->>'moneda', r.moneda),
        tipo_cambio = COALESCE((t.fields->>'tipo_cambio')::numeric, r.tipo_cambio),
        total = COALESCE((t.fields->>'total')::numeric, r.total),
        total_mxn = COALESCE((t.fields->>'total_mxn')::numeric, r.total_mxn),
        archived_at = COALESCE((t.fields->>'archived_at')::timestamptz, r.archived_at),
        invoice_id = COALESCE(t.fields->>'invoice_id', r.invoice_id),
        validation_rules = COALESCE(t.fields->>'validation_rules', r.validation_rules),
        warnings = COALESCE((t.fields->>'warnings')::jsonb, r.warnings),
        updated_at = COALESCE(t.at, now())
    FROM t JOIN old USING (record_id)
    WHERE r.record_id = t.record_id
    RETURNING r.record_id, old.status AS from_status, r.status AS to_status
),
-- The audit event of each move that applied, in the same statement: no move without its event.
audit AS (
    INSERT INTO audit_events (record_id, stage, from_status, to_status, reason, detail, actor, trace_id,
                              idempotency_key)
    SELECT upd.record_id, t.stage, upd.from_status, upd.to_status, t.reason, t.detail, t.actor, t.trace_id,
           t.idempotency_key
    FROM upd JOIN t USING (record_id)
    ON CONFLICT (idempotency_key) DO NOTHING
)
SELECT record_id, from_status, to_status FROM upd
"""

# Restarts whose request already applied once: probes of the audit's unique key index.
_SEEN_SQL = "SELECT idempotency_key FROM audit_events WHERE idempotency_key = ANY($1::text[])"


@transient_when_down
async def apply_transitions(db: asyncpg.Connection | asyncpg.Pool, items: Sequence[Transition]) -> list[bool]:
    """Apply guarded transitions in one statement; returns, per item, whether it applied.

    An item that did not apply (its record was not in an allowed status, e.g. already moved on
    by an earlier delivery) writes no audit event either.
    """
    if not items:
        return []
    # One transition per record per batch: a batch with two for the same record applies the first.
    first: dict[str, Transition] = {}
    for t in items:
        first.setdefault(t.record_id, t)
    batch = list(first.values())
    once = [t.idempotency_key for t in batch if t.restart_once]
    async with connection(db) as conn:
        # One statement moves the records and writes their audit events (atomic on its own: no
        # BEGIN/COMMIT round trips); the restart probe, when a batch needs it, reads before it.
        seen = {r[0] for r in await conn.fetch(_SEEN_SQL, once)} if once else set()
        rows = await conn.fetch(
            _TRANSITION_SQL,
            [t.record_id for t in batch],
            [t.to_status.value for t in batch],
            [",".join(s.value for s in t.allowed_from
                      if not (s is RecordStatus.REJECTED and t.idempotency_key in seen)) for t in batch],
            [t.reason for t in batch],
            [t.last_error for t in batch],
            [t.job_id for t in batch],
            [_json(t.fields) for t in batch],
            [t.redrive_lease_s for t in batch],
            [t.stage for t in batch],
            [_json(t.detail) if t.detail is not None else None for t in batch],
            [t.actor for t in batch],
            [t.trace_id for t in batch],
            [t.idempotency_key for t in batch],
            [t.at for t in batch],
        )
    applied = {r["record_id"] for r in rows}
    # By identity: an equal second submission for the same record did not apply.
    return [t.record_id in applied and first[t.record_id] is t for t in items]


async def history(conn: asyncpg.Connection | asyncpg.Pool, record_id: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT event_id, stage, from_status, to_status, reason, detail, actor, trace_id, created_at"
        " FROM audit_events WHERE record_id = $1 ORDER BY event_id",
        record_id,
    )
    return [dict(r) for r in rows]
