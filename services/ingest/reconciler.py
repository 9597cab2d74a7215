"""The reconciler: finds stalled records (``shared.db.stalled``) and sends them back through the
ingest lane, where the handler re-drives each one from download (guarded by the lease, with an
audit event).  One replica at a time does it (an advisory lock); a second one would only send
requests the guard turns away.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence

import asyncpg

from services.ingest.periodic import Periodic
from services.ingest.publisher import ingest_topic
from services.ingest.requests import JOB_HEADER
from shared.db.stalled import StalledRecord, stalled_records
from shared.domain.messages import IngestRequest
from shared.domain.records import Priority
from shared.runtime import headers as H
from shared.runtime.kafka import AsyncProducer

log = logging.getLogger("fiscalflow.ingest.reconciler")

LOCK_ID = 0x46495352  # "FISR": one reconciler at a time across ingest replicas
BATCH = 10_000  # records per tick at most; the rest waits for the next tick


async def redrive(producer: AsyncProducer, records: Sequence[StalledRecord], by: str, lease_s: float,
                  namespace: str = "") -> int:
    """Publish a re-drive request per record on its job's lane; returns how many were sent."""
    lanes: dict[Priority, list[tuple[bytes, bytes, list[tuple[str, bytes]]]]] = defaultdict(list)
    for r in records:
        headers = [(H.REDRIVE_BY, by.encode()), (H.REDRIVE_LEASE_S, str(lease_s).encode())]
        if r.job_id:
            headers.append((JOB_HEADER, r.job_id.encode()))
        value = IngestRequest(record_id=r.record_id, job_id=r.job_id, priority=r.priority).encode()
        lanes[r.priority].append((r.record_id.encode(), value, headers))
    sent = 0
    for priority, messages in lanes.items():
        sent += await producer.send_many(ingest_topic(priority, namespace), messages)
    return sent


class Reconciler(Periodic):
    """Every ``interval_s``: re-drive what stalled.  Pending records are left alone while the
    ingest topics have a backlog (their requests may simply be waiting in it)."""

    def __init__(self, pool: asyncpg.Pool, producer: AsyncProducer, lease_s: float, interval_s: float,
                 ingest_lag: Callable[[], int], namespace: Callable[[], str]) -> None:
        self.pool = pool
        self.producer = producer
        self.lease_s = lease_s
        self.interval_s = interval_s
        self.ingest_lag = ingest_lag
        self.namespace = namespace
        self.last_sent = 0

    async def tick(self) -> None:
        async with self.pool.acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_ID):
                return
            try:
                records = await stalled_records(conn, self.lease_s, limit=BATCH,
                                                include_pending=self.ingest_lag() == 0)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_ID)
        self.last_sent = await redrive(self.producer, records, "reconciler", self.lease_s, self.namespace()) \
            if records else 0
        if records:
            log.warning("re-driving %d stalled record(s) (no transition for %.0f s; oldest %s at %s)",
                        len(records), self.lease_s, records[0].record_id, records[0].status)
