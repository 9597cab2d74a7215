"""The ingest stage re-drives stalled records (real broker and PostgreSQL): a record past ingest
whose last transition is older than the lease goes to download again, with its re-drive
generation in a header and an audit event; a record still moving is left to its messages; one
that stalled ``redrive_max`` times is rejected."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid

import pytest

from shared.db import jobs
from shared.db.migrate import connect_pool
from shared.db.records import history, lookup, register
from shared.domain.messages import IngestRequest
from shared.domain.records import Priority
from shared.runtime import headers as H
from shared.settings import Settings
from shared.topics import DLQ, Stage, priority_topic
from tests.support.pipeline import Pipeline, headers_of, read_topic, registrations, write_batch

pytestmark = pytest.mark.integration


def test_a_stalled_record_is_redriven_once_a_moving_one_is_left_alone_and_a_looping_one_rejected(
        stack_settings: Settings) -> None:
    settings = stack_settings.model_copy(update={"redrive_lease_s": 30.0, "redrive_max": 3})
    _, rows = write_batch(settings, "south", 3)
    stalled, moving, looping = (r.record_id for r in rows)
    job_id = str(uuid.uuid4())

    async def scenario() -> None:
        pool = await connect_pool(settings.pg_dsn.get_secret_value())
        async with pool.acquire() as conn:
            await register(conn, registrations(rows))
            await conn.execute("UPDATE fiscal_records SET status = 'downloaded' WHERE record_id = ANY($1::text[])",
                               [stalled, moving, looping])
            await conn.execute("UPDATE fiscal_records SET updated_at = now() - interval '1 minute'"
                               " WHERE record_id = ANY($1::text[])", [stalled, looping])
            await conn.execute("UPDATE fiscal_records SET redrives = 3 WHERE record_id = $1", looping)
        async with Pipeline(settings, (Stage.INGEST,)) as pipe:
            # A job submitted again: plain requests, no re-drive headers.
            pipe.produce(Stage.INGEST, [(rid, IngestRequest(record_id=rid, job_id=job_id).encode(), {})
                                        for rid in (stalled, moving, looping)])
            tasks = await pipe.read(Stage.DOWNLOAD, [stalled, moving], within_s=15)
            dead = await pipe.read(DLQ, [looping])
        assert set(tasks) == {stalled}, "only the stalled record goes to download again"
        assert headers_of(tasks[stalled])[H.REDRIVE] == "1"
        assert headers_of(dead[looping])[H.REASON] == "REDRIVE_EXHAUSTED"
        found = await lookup(pool, [stalled, moving, looping])
        assert (found[stalled].status.value, found[stalled].redrives) == ("downloading", 1)
        assert found[moving].status.value == "downloaded"
        assert found[looping].status.value == "rejected"
        [event] = await history(pool, stalled)
        assert (event["from_status"], event["to_status"], event["reason"]) == ("downloaded", "downloading",
                                                                               "REDRIVEN")
        assert json.loads(event["detail"])["by"] == "job"
        await pool.close()

    asyncio.run(scenario())


def test_records_redrive_lists_a_jobs_stalled_records_and_sends_them_to_ingest(stack_settings: Settings) -> None:
    _, rows = write_batch(stack_settings, "north", 2)
    stalled, moving = (r.record_id for r in rows)
    job_id = str(uuid.uuid4())

    async def setup() -> None:
        pool = await connect_pool(stack_settings.pg_dsn.get_secret_value())
        async with pool.acquire() as conn:
            await register(conn, registrations(rows))
            await jobs.create_job(conn, job_id, [stalled, moving], Priority.HIGH)
            await conn.execute("UPDATE fiscal_records SET status = 'downloaded' WHERE record_id = ANY($1::text[])",
                               [stalled, moving])
            await conn.execute("UPDATE fiscal_records SET updated_at = now() - interval '2 minutes'"
                               " WHERE record_id = $1", stalled)
        await pool.close()

    asyncio.run(setup())
    dry = _cli("records", "redrive", "--job", job_id, "--older-than", "1m", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    listed = json.loads(dry.stdout)
    assert (listed["stalled"], listed["sent"]) == (1, 0)
    assert [r["record_id"] for r in listed["records"]] == [stalled]

    sent = _cli("records", "redrive", "--job", job_id, "--older-than", "1m")
    assert sent.returncode == 0, sent.stderr
    assert "1 stalled record(s)" in sent.stdout and "re-drive requested for 1" in sent.stdout
    # On the job's lane (high: the priority topic), with who asked and the lease it used.
    found = read_topic(stack_settings, priority_topic(Stage.INGEST), {stalled}, 30)
    headers = headers_of(found[stalled])
    assert (headers[H.REDRIVE_BY], float(headers[H.REDRIVE_LEASE_S]), headers[H.JOB_ID]) == ("cli", 60.0, job_id)

    bad = _cli("records", "redrive", "--older-than", "soon")
    assert bad.returncode == 2 and "not an age" in bad.stderr


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], capture_output=True, text=True,
                          timeout=120, env=os.environ)
