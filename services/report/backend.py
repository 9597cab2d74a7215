"""The report service's data access: ClickHouse on one dedicated thread, PostgreSQL on a pool."""

from __future__ import annotations

import asyncio
import datetime as dt
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


class ReportBackend:
    def __init__(self, client: Client, pool: asyncpg.Pool, redrive_lease_s: float | None = None, *,
                 bucket: str) -> None:
        self.client = client
        self.pool = pool
        self.bucket = bucket  # the archive's (Settings.s3_bucket): the seed contract's file_url names it
        self.redrive_lease_s = redrive_lease_s  # a job view counts its members stalled longer than this
        self.sink = ClickHouseSink(client)
        # chDB is one in-process engine: every call goes through this one thread, off the event loop.
        self._ch = ThreadPoolExecutor(1, thread_name_prefix="clickhouse")

    async def ch(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._ch, fn, *args)

    def close(self) -> None:
        self._ch.shutdown(wait=True)

    async def write(self, events: Sequence[Event]) -> Written:
        return await self.ch(self.sink.write, events)

    async def ping(self) -> bool:
        await self.ch(self.client.query, "SELECT 1")
        return bool(await self.pool.fetchval("SELECT 1"))

    async def summary(self, job_id: str | None) -> Json:
        if job_id is not None:
            return await queries.job_summary(self.pool, job_id)
        finals, in_progress = await asyncio.gather(self.ch(queries.final_counts, self.client),
                                                   queries.in_progress_counts(self.pool))
        return queries.summary_from(finals, in_progress)

    async def daily(self, day: dt.date) -> Json:
        """The day's sums (ClickHouse) with ``last_update`` from PostgreSQL, read at the same time:
        when the registry archived the day's last document (a few milliseconds after its
        ``archived_at``; the seed contract's records list has the same time as ``processed_at``)."""
        sums, last = await asyncio.gather(self.ch(queries.daily, self.client, day),
                                          queries.last_archived(self.pool, day))
        return {**sums, "last_update": last.isoformat() if last is not None else None}

    async def issuers(self, start: dt.date, end: dt.date) -> Json:
        return await self.ch(queries.issuers, self.client, start, end)

    async def trend(self, hours: int) -> Json:
        return await self.ch(queries.trend, self.client, hours, dt.datetime.now(dt.UTC))

    async def records(self, **filters: Any) -> Json:
        return await queries.list_records(self.pool, **filters)

    async def fiscal_records(self, status: RecordStatus | None, limit: int) -> Json:
        return await queries.fiscal_records(self.pool, self.bucket, status, limit)

    async def record(self, record_id: str) -> Json | None:
        return await queries.record_with_history(self.pool, record_id)

    async def job(self, job_id: str) -> Json | None:
        status = await jobs.job_status(self.pool, job_id, self.redrive_lease_s)
        return status.to_json() if status is not None else None

    async def job_exists(self, job_id: str) -> bool:
        return bool(await self.pool.fetchval("SELECT 1 FROM jobs WHERE job_id = $1", job_id))
