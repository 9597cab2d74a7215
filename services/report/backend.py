"""The report service's data access: ClickHouse on one dedicated thread, PostgreSQL on a pool."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import asyncpg
from clickhouse_connect.driver.client import Client

from services.report import queries
from services.report.events import Event
from services.report.sink import ClickHouseSink, Written
from shared.db import jobs
from shared.domain.records import RecordStatus

T = TypeVar("T")
Json = dict[str, Any]

log = logging.getLogger("fiscalflow.report.backend")

REGION_LOOKUP_S = 5.0  # longest a batch waits for the registry's regions before it is written without
REGION_LOOKUP_PAUSE_S = 30.0  # after a failed look-up, batches are written without for this long


class ReportBackend:
    def __init__(self, client: Client, pool: asyncpg.Pool, redrive_lease_s: float | None = None, *,
                 bucket: str) -> None:
        self.client = client
        self.pool = pool
        self.bucket = bucket  # the archive's (Settings.s3_bucket): the seed contract's file_url names it
        self.redrive_lease_s = redrive_lease_s  # a job view counts its members stalled longer than this
        self.sink = ClickHouseSink(client)
        self._regions_paused_until = 0.0  # with_regions: PostgreSQL failed a look-up, batches do not wait
        # chDB is one in-process engine: every call goes through this one thread, off the event loop.
        self._ch = ThreadPoolExecutor(1, thread_name_prefix="clickhouse")

    async def ch(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._ch, fn, *args)

    def close(self) -> None:
        self._ch.shutdown(wait=True)

    async def write(self, events: Sequence[Event]) -> Written:
        return await self.ch(self.sink.write, await self.with_regions(events))

    async def with_regions(self, events: Sequence[Event]) -> Sequence[Event]:
        """``events``, those without a region given their record's from the registry: a dead letter
        (its message need not name one), a stored event from before the store stage sent it.  With
        PostgreSQL out of reach they are written without (region ''): the reports keep counting, and
        ``report verify`` shows them until ``report rebuild`` sets it."""
        ids = sorted({e.record_id for e in events if not e.region and e.record_id})
        if not ids or time.monotonic() < self._regions_paused_until:
            return events
        try:
            rows = await asyncio.wait_for(self.pool.fetch(
                "SELECT record_id, region FROM fiscal_records WHERE record_id = ANY($1::text[])", ids),
                REGION_LOOKUP_S)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # the batch is written now (the write lock is held): the next ones do not wait either
            self._regions_paused_until = time.monotonic() + REGION_LOOKUP_PAUSE_S
            log.warning("regions of %d records not read from PostgreSQL (%s): written without; no look-up for"
                        " %.0f s", len(ids), exc, REGION_LOOKUP_PAUSE_S)
            return events
        regions = {r["record_id"]: r["region"] for r in rows}
        return [dataclasses.replace(e, region=regions[e.record_id]) if not e.region and e.record_id in regions
                else e for e in events]

    async def ping(self) -> bool:
        await self.ch(self.client.query, "SELECT 1")
        return bool(await self.pool.fetchval("SELECT 1"))

    async def summary(self, job_id: str | None, region: str | None = None) -> Json:
        if job_id is not None:
            return await queries.job_summary(self.pool, job_id, region)
        finals, in_progress = await asyncio.gather(self.ch(queries.final_counts, self.client, region),
                                                   queries.in_progress_counts(self.pool, region))
        return queries.summary_from(finals, in_progress)

    async def daily(self, day: dt.date, region: str | None = None) -> Json:
        """The day's sums (ClickHouse) with ``last_update`` from PostgreSQL, read at the same time:
        when the registry archived the day's last document (a few milliseconds after its
        ``archived_at``; the seed contract's records list has the same time as ``processed_at``)."""
        sums, last = await asyncio.gather(self.ch(queries.daily, self.client, day, region),
                                          queries.last_archived(self.pool, day, region))
        return {**sums, "last_update": last.isoformat() if last is not None else None}

    async def issuers(self, start: dt.date, end: dt.date, region: str | None = None) -> Json:
        return await self.ch(queries.issuers, self.client, start, end, region)

    async def regions(self, start: dt.date | None, end: dt.date | None) -> Json:
        return await self.ch(queries.regions, self.client, start, end)

    async def trend(self, hours: int, region: str | None = None) -> Json:
        return await self.ch(queries.trend, self.client, hours, dt.datetime.now(dt.UTC), region)

    async def records(self, **filters: Any) -> Json:
        return await queries.list_records(self.pool, **filters)

    async def fiscal_records(self, status: RecordStatus | None, limit: int, region: str | None = None) -> Json:
        return await queries.fiscal_records(self.pool, self.bucket, status, limit, region)

    async def record(self, record_id: str) -> Json | None:
        return await queries.record_with_history(self.pool, record_id)

    async def record_lines(self, record_id: str) -> Json | None:
        return await self.ch(queries.record_lines, self.client, record_id)

    async def record_status(self, record_id: str) -> str | None:
        return await queries.record_status(self.pool, record_id)

    async def job(self, job_id: str) -> Json | None:
        status = await jobs.job_status(self.pool, job_id, self.redrive_lease_s)
        return status.to_json() if status is not None else None

    async def job_exists(self, job_id: str) -> bool:
        return bool(await self.pool.fetchval("SELECT 1 FROM jobs WHERE job_id = $1", job_id))
