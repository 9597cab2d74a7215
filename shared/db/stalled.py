"""Stalled records: not final, and no transition for longer than a lease.

A record's messages can be lost without any service failing: a broker restarted on memory
storage, a topic recreated, retention that dropped unconsumed messages, offsets reset.  Such a
record would wait forever (and its job with it).  These are the records to re-drive: the ones in
flight (downloading, downloaded, ...) whose last transition is older than the lease, and the
pending members of a running job (their ingest request was lost before it was read).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import asyncpg

from shared.domain.records import Priority

_STALLED_SQL = """
SELECT r.record_id, r.status, r.updated_at, r.redrives,
       COALESCE(j.job_id, r.job_id)::text AS job_id, COALESCE(j.priority, 'normal') AS priority
FROM fiscal_records r
LEFT JOIN LATERAL (
    SELECT jj.job_id, jj.priority FROM job_records m JOIN jobs jj USING (job_id)
    WHERE m.record_id = r.record_id AND jj.status = 'running'
    ORDER BY jj.priority = 'high' DESC, jj.created_at DESC LIMIT 1
) j ON true
WHERE r.status NOT IN ('archived', 'rejected', 'duplicate')
  AND r.updated_at < now() - make_interval(secs => $1)
  AND (r.status <> 'pending' OR j.job_id IS NOT NULL)
  AND ($2::uuid IS NULL OR EXISTS (SELECT 1 FROM job_records m2 WHERE m2.job_id = $2 AND m2.record_id = r.record_id))
  AND ($4 OR r.status <> 'pending')
ORDER BY r.updated_at
LIMIT $3
"""


@dataclass(frozen=True)
class StalledRecord:
    record_id: str
    status: str
    updated_at: dt.datetime
    redrives: int
    job_id: str | None
    priority: Priority


async def stalled_records(conn: asyncpg.Connection | asyncpg.Pool, lease_s: float, job_id: str | None = None,
                          limit: int = 10_000, include_pending: bool = True) -> list[StalledRecord]:
    """The stalled records, oldest first (``include_pending=False``: only those past ingest)."""
    rows = await conn.fetch(_STALLED_SQL, float(lease_s), job_id, limit, include_pending)
    return [StalledRecord(r["record_id"], r["status"], r["updated_at"], r["redrives"], r["job_id"],
                          Priority(r["priority"])) for r in rows]
