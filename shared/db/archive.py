"""Archive state in the registry: which UUIDs are archived, and the guarded move to ``archived``.

The partial unique indexes on the archived UUID are the last line of defence against two
documents with one UUID; a violation inside a batch is resolved record by record, so one
duplicate never fails its neighbours.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import asyncpg

from shared.db.outage import connection, transient_when_down
from shared.db.records import Transition, apply_transitions


@dataclass(frozen=True, slots=True)
class ArchivedRow:
    record_id: str
    tfd_uuid: str
    sha256: str | None
    s3_key: str | None
    size: int | None
    gz_size: int | None
    archived_at: dt.datetime


class ArchiveResult(StrEnum):
    APPLIED = "applied"
    NOT_APPLIED = "not_applied"  # the record was not in an allowed status (or is unknown)
    UUID_TAKEN = "uuid_taken"  # another record archived this UUID first


@transient_when_down
async def archived_by_uuid(conn: asyncpg.Connection | asyncpg.Pool, uuids: Sequence[str]) -> dict[str, ArchivedRow]:
    """Archived records by upper-case TFD UUID (case-insensitive; served by fiscal_records_archived_uuid_ci)."""
    rows = await conn.fetch(
        "SELECT record_id, upper(tfd_uuid) AS u, sha256, s3_key, size, gz_size, updated_at FROM fiscal_records"
        " WHERE upper(tfd_uuid) = ANY($1::text[]) AND status = 'archived'",
        sorted({u.upper() for u in uuids}),
    )
    return {r["u"]: ArchivedRow(r["record_id"], r["u"], r["sha256"], r["s3_key"], r["size"], r["gz_size"],
                                r["updated_at"]) for r in rows}


@transient_when_down
async def archive(db: asyncpg.Connection | asyncpg.Pool, items: Sequence[Transition]) -> list[ArchiveResult]:
    """Apply archive transitions in one transaction; on a UUID conflict, one transaction each."""
    async with connection(db) as conn:
        try:
            applied = await apply_transitions(conn, items)
            return [ArchiveResult.APPLIED if a else ArchiveResult.NOT_APPLIED for a in applied]
        except asyncpg.UniqueViolationError:
            pass
        out: list[ArchiveResult] = []
        for t in items:
            try:
                ok = (await apply_transitions(conn, [t]))[0]
                out.append(ArchiveResult.APPLIED if ok else ArchiveResult.NOT_APPLIED)
            except asyncpg.UniqueViolationError:
                out.append(ArchiveResult.UUID_TAKEN)
        return out
