"""The reconciler: finds stalled records (``shared.db.stalled``) and sends them back through the
ingest lane, where the handler re-drives each one from download (guarded by the lease, with an
audit event).  One replica at a time does it (an advisory lock); a second one would only send
requests the guard turns away.

A record is only re-driven when the stage it waits for has no backlog: while that stage's topics
hold unconsumed messages, the record's own message may simply be among them.  Without this, a
backlog that takes longer than the lease to drain had its records re-driven again and again
(each pass adding to the backlog) until they were rejected as REDRIVE_EXHAUSTED: measured on a
loaded CI machine, 14 of 1,000 valid invoices with a 4 s lease.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from services.ingest.publisher import ingest_topic
from shared.db.jobs import WAITS_FOR
from shared.db.stalled import StalledRecord, stalled_records
from shared.domain.messages import IngestRequest
from shared.domain.records import Priority, RecordStatus
from shared.runtime import headers as H
from shared.runtime.kafka import AsyncProducer
from shared.topics import Stage

log = logging.getLogger("fiscalflow.ingest.reconciler")

LOCK_ID = 0x46495352  # "FISR": one reconciler at a time across ingest replicas
BATCH = 10_000  # records per tick at most; the rest waits for the next tick
# The backlog (unconsumed messages) of some stages' input topics, all lanes.
Backlog = Callable[[Sequence[Stage]], Awaitable[int]]


async def redrive(producer: AsyncProducer, records: Sequence[StalledRecord], by: str, lease_s: float,
                  namespace: str = "") -> int:
    """Publish a re-drive request per record on its job's lane; returns how many were sent."""
    lanes: dict[Priority, list[tuple[bytes, bytes, list[tuple[str, bytes]]]]] = defaultdict(list)
    for r in records:
        headers = [(H.REDRIVE_BY, by.encode()), (H.REDRIVE_LEASE_S, str(lease_s).encode())]
        if r.job_id:
            headers.append((H.JOB_ID, r.job_id.encode()))
        value = IngestRequest(record_id=r.record_id, job_id=r.job_id, priority=r.priority).encode()
        lanes[r.priority].append((r.record_id.encode(), value, headers))
    sent = 0
    for priority, messages in lanes.items():
        sent += await producer.send_many(ingest_topic(priority, namespace), messages)
    return sent


class Reconciler:
    """Each tick (``redrive_interval_s``, a periodic task of the service host): re-drive what
    stalled, except records whose stage has a backlog."""

    def __init__(self, pool: asyncpg.Pool, producer: AsyncProducer, lease_s: float, backlog: Backlog,
                 namespace: Callable[[], str]) -> None:
        self.pool = pool
        self.producer = producer
        self.lease_s = lease_s
        self.backlog = backlog
        self.namespace = namespace
        self.last_sent = 0
        self.last_held: dict[Stage, int] = {}  # stage -> stalled records held back by its backlog

    async def tick(self) -> None:
        async with self.pool.acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_ID):
                return
            try:
                records = await stalled_records(conn, self.lease_s, limit=BATCH)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_ID)
        records = await self._unblocked(records)
        self.last_sent = await redrive(self.producer, records, "reconciler", self.lease_s, self.namespace()) \
            if records else 0
        if records:
            log.warning("re-driving %d stalled record(s) (no transition for %.0f s; oldest %s at %s)",
                        len(records), self.lease_s, records[0].record_id, records[0].status)

    async def _unblocked(self, records: list[StalledRecord]) -> list[StalledRecord]:
        """The records whose stage has no backlog (measured once per status per tick)."""
        busy: dict[str, bool] = {}
        held: dict[Stage, int] = defaultdict(int)
        keep = []
        for r in records:
            stages = WAITS_FOR.get(RecordStatus(r.status), ())
            if r.status not in busy:
                busy[r.status] = bool(stages) and await self.backlog(stages) > 0
            if busy[r.status]:
                held[stages[0]] += 1
            else:
                keep.append(r)
        self.last_held = dict(held)
        for stage, n in held.items():
            log.info("%d stalled record(s) wait for %s, which has a backlog: not re-driven yet", n, stage.value)
        return keep
