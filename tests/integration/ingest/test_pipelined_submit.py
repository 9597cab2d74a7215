"""A job's ids are published while its members are copied into PostgreSQL (services/ingest/api.py
``Submitter.submit``), on the real broker and PostgreSQL: what makes that safe, a big job through
the API in several produce chunks, and the members' job rule kept per statement (migration 0097)."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import httpx
import pytest

from services.ingest import publisher
from services.ingest.publisher import encode, publish
from shared.db import jobs
from shared.db.migrate import connect_pool
from shared.db.records import Registration, register
from shared.domain.records import Priority
from shared.runtime import headers as H
from shared.runtime.kafka import AsyncProducer, producer_config
from shared.settings import Settings
from shared.topics import Stage
from tests.support.pipeline import Pipeline, headers_of

pytestmark = pytest.mark.integration


def _auth(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.api_token.get_secret_value()}"}


def _rows(prefix: str, n: int) -> list[Registration]:
    return [Registration(f"{prefix}-{i:05d}", "north", f"p/{prefix}-{i:05d}.xml") for i in range(n)]


def test_the_stage_waits_for_an_uncommitted_job_and_then_uses_its_profile(stack_settings: Settings) -> None:
    """The ids of a job not yet committed reach the stage: it moves none of them until the job
    commits (it waits on the job's row), then sends them on with the job's profile."""
    rows = _rows(f"pipe-{uuid.uuid4().hex[:8]}", 3)
    ids = [r.record_id for r in rows]
    job_id = str(uuid.uuid4())

    async def scenario() -> None:
        pool = await connect_pool(stack_settings.pg_dsn.get_secret_value())
        async with pool.acquire() as conn:
            await register(conn, rows)
        producer = AsyncProducer(producer_config(stack_settings, "test-pipelined"))
        try:
            async with Pipeline(stack_settings, (Stage.INGEST,)) as pipe, pool.acquire() as conn:
                tx = conn.transaction()
                await tx.start()
                await jobs.insert_job(conn, job_id, len(ids), Priority.NORMAL,
                                      profile=jobs.JobProfile("lenient", 2))
                assert await publish(producer, ids, Priority.NORMAL, job_id, pipe.ns) == len(ids)
                early = await pipe.read(Stage.DOWNLOAD, ids, within_s=4)
                assert early == {}, "a record of an uncommitted job was moved on"
                await jobs.add_job_members(conn, job_id, ids)
                await tx.commit()
                tasks = await pipe.read(Stage.DOWNLOAD, ids)
                assert set(tasks) == set(ids)
                for m in tasks.values():
                    h = headers_of(m)
                    assert (h[H.JOB_ID], h[H.RULES], h[H.MAX_ATTEMPTS]) == (job_id, "lenient", "3"), h
            members = await pool.fetch("SELECT record_id FROM job_records WHERE job_id = $1", job_id)
            assert sorted(m["record_id"] for m in members) == ids
        finally:
            producer.close()
            await pool.close()

    asyncio.run(scenario())


def test_a_big_job_is_registered_and_published_in_chunks(stack_settings: Settings) -> None:
    """More ids than one produce chunk, submitted in random order: every id once on the ingest
    topic with the job's id, every one a member, the job's count right."""
    n = 2 * publisher.CHUNK + 123
    rows = _rows(f"big-{uuid.uuid4().hex[:8]}", n)
    ids = [r.record_id for r in rows][::-1]  # not in key order: the members are copied sorted

    async def scenario() -> None:
        pool = await connect_pool(stack_settings.pg_dsn.get_secret_value())
        async with pool.acquire() as conn:
            await register(conn, rows)
        try:
            async with Pipeline(stack_settings, (Stage.INGEST,)) as pipe, httpx.AsyncClient(timeout=60) as http:
                resp = await http.post(f"http://127.0.0.1:{stack_settings.ingest_port}/api/v1/jobs",
                                       headers=_auth(stack_settings), json={"record_ids": [*ids, ids[0]]})
                assert resp.status_code == 202, resp.text
                job_id = resp.json()["job_id"]
                assert resp.json()["record_count"] == n
                sent = await pipe.read(Stage.INGEST, ids)
                assert len(sent) == n
                for rid, m in sent.items():
                    assert m.value() == encode(rid, job_id, Priority.NORMAL)[1]
                    assert headers_of(m)[H.JOB_ID] == job_id
            count = await pool.fetchval("SELECT count(*) FROM job_records WHERE job_id = $1", job_id)
            assert count == n
            assert await pool.fetchval("SELECT record_count FROM jobs WHERE job_id = $1", job_id) == n
        finally:
            await pool.close()

    asyncio.run(scenario())


def test_members_must_name_a_job_and_a_job_with_members_stays(stack_settings: Settings) -> None:
    """What the foreign key did, checked once per statement: a member of no job is refused (COPY
    and INSERT), a job with members can be neither deleted nor re-keyed; one without can."""
    job_id, lone = str(uuid.uuid4()), str(uuid.uuid4())

    async def scenario() -> None:
        conn = await asyncpg.connect(stack_settings.pg_dsn.get_secret_value())
        try:
            await jobs.create_job(conn, job_id, ["fk-a", "fk-b"], Priority.NORMAL)
            await conn.execute("INSERT INTO jobs (job_id) VALUES ($1)", lone)
            refused = [
                lambda: conn.copy_records_to_table("job_records", records=[(job_id, "fk-c"), (str(uuid.uuid4()), "x")],
                                                   columns=["job_id", "record_id"]),
                lambda: conn.execute("INSERT INTO job_records VALUES ($1, 'x')", str(uuid.uuid4())),
                lambda: conn.execute("DELETE FROM jobs WHERE job_id = $1", job_id),
                lambda: conn.execute("UPDATE jobs SET job_id = $2 WHERE job_id = $1", job_id, str(uuid.uuid4())),
            ]
            for statement in refused:
                with pytest.raises(asyncpg.ForeignKeyViolationError):
                    await statement()
            assert await conn.fetchval("SELECT count(*) FROM job_records WHERE job_id = $1", job_id) == 2
            await conn.execute("UPDATE jobs SET status = 'completed' WHERE job_id = $1", job_id)
            await conn.execute("DELETE FROM jobs WHERE job_id = $1", lone)
            await jobs.add_members(conn, [(job_id, "fk-c"), (lone, "fk-d")])  # creates the job it names
            assert await conn.fetchval("SELECT count(*) FROM job_records WHERE job_id = ANY($1::uuid[])",
                                       [job_id, lone]) == 4
        finally:
            await conn.close()

    asyncio.run(scenario())
