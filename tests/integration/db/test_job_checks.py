"""A running job's checks against the real PostgreSQL: the report's job check every 2 s (the
callback's trigger) and a job's status without a lease.

On a database of the test's own (the shared one holds other tests' running jobs)."""

from __future__ import annotations

import asyncio
import ipaddress
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
import pytest

from services.report.callbacks import CallbackSender
from shared.db import jobs
from shared.db.migrate import migrate
from shared.db.records import Registration, register
from shared.domain.records import Priority
from shared.egress import EgressPolicy
from shared.settings import Settings
from tests.support.callbacks import CallbackReceiver, callback_receiver


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    with callback_receiver() as r:
        yield r


async def _job(conn: asyncpg.Connection, members: int, callback_url: str | None = None) -> tuple[str, list[str]]:
    await migrate(conn)
    tag = uuid.uuid4().hex[:8]
    ids = [f"jc-{tag}-{i:03d}" for i in range(members)]
    await register(conn, [Registration(rid, "north", f"t/{rid}.xml") for rid in ids])
    job_id = str(uuid.uuid4())
    await jobs.create_job(conn, job_id, ids, Priority.NORMAL, callback_url=callback_url)
    return job_id, ids


async def test_a_running_jobs_status_without_a_lease_counts_its_members(blank_db: asyncpg.Connection) -> None:
    conn = blank_db
    job_id, ids = await _job(conn, 3)
    await conn.execute("UPDATE fiscal_records SET status = 'archived' WHERE record_id = $1", ids[0])
    await conn.execute("UPDATE fiscal_records SET status = 'downloading' WHERE record_id = $1", ids[1])
    status = await jobs.job_status(conn, job_id)  # was: "timestamp out of range" while a member ran
    assert status is not None and status.status == "running" and status.stalled == 0
    assert status.counts == {"archived": 1, "downloading": 1, "pending": 1}


async def test_the_report_s_check_calls_back_once_the_last_member_is_final(
        blank_db: asyncpg.Connection, receiver: CallbackReceiver, stack_settings: Settings) -> None:
    conn = blank_db
    job_id, ids = await _job(conn, 3, callback_url=receiver.url)
    loopback = EgressPolicy(allow_http=True, networks=(ipaddress.ip_network("127.0.0.1/32"),))
    # A pool of its own: the sender's delivery task writes while the test reads on its connection.
    database = await conn.fetchval("SELECT current_database()")
    dsn = urlsplit(stack_settings.pg_dsn.get_secret_value())._replace(path=f"/{database}")
    pool = await asyncpg.create_pool(urlunsplit(dsn), min_size=1, max_size=2)
    sender = CallbackSender(pool, b"secret", loopback, attempts=1)
    try:
        await conn.execute("UPDATE fiscal_records SET status = 'archived' WHERE record_id = ANY($1::text[])", ids[:2])
        await sender.on_job_touched(job_id)  # one member still pending: nothing is sent, nothing fails
        assert await conn.fetchval("SELECT status || '/' || COALESCE(callback_state, '-') FROM jobs"
                                   " WHERE job_id = $1", job_id) == "running/-"

        await conn.execute("UPDATE fiscal_records SET status = 'rejected', reason = 'CHECKSUM_MISMATCH'"
                           " WHERE record_id = $1", ids[2])
        await sender.on_job_touched(job_id)
        for _ in range(100):
            if await conn.fetchval("SELECT callback_state FROM jobs WHERE job_id = $1", job_id) != "sending":
                break
            await asyncio.sleep(0.05)
        assert await conn.fetchval("SELECT status || '/' || callback_state FROM jobs WHERE job_id = $1",
                                   job_id) == "completed/sent: HTTP 200"
        [call] = receiver.calls
        sent = orjson.loads(call.body)
        assert (sent["job_id"], sent["status"], sent["counts"]) == (job_id, "completed",
                                                                     {"archived": 2, "rejected": 1})
        await sender.on_job_touched(job_id)  # touched again (a redelivered event): never sent twice
        await asyncio.sleep(0.2)
        assert len(receiver.calls) == 1
    finally:
        await sender.close()
        await pool.close()
