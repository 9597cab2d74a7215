"""Job completion observed once, even when nobody reads the job (real PostgreSQL and broker): the
ingest stage's sweep completes a job whose records all ended, logs its throughput once and
observes its duration once on /metrics — once across replicas, and also for a job a reader
completed first."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import httpx
import pytest

from services.ingest.completion import JobCompletions
from shared.db.migrate import connect_pool
from shared.db.records import register
from shared.settings import Settings
from shared.topics import Stage
from tests.support.pipeline import Pipeline, registrations, write_batch

pytestmark = pytest.mark.integration


def _auth(settings: Settings, token: str = "api") -> dict[str, str]:
    secret = settings.api_token if token == "api" else settings.read_token
    return {"Authorization": f"Bearer {secret.get_secret_value()}"}


def _observed(metrics: str, priority: str) -> float:
    m = re.search(rf'^fiscalflow_job_duration_seconds_count\{{priority="{priority}"\}} (\S+)$', metrics, re.M)
    assert m, "no job duration histogram on /metrics"
    return float(m.group(1))


def test_a_finished_job_nobody_reads_is_completed_logged_and_measured_once(
        stack_settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fiscalflow.ingest.jobs")
    _, rows = write_batch(stack_settings, "central", 3)
    ids = [r.record_id for r in rows]
    base = f"http://127.0.0.1:{stack_settings.ingest_port}"

    async def scenario() -> tuple[str, str]:
        pool = await connect_pool(stack_settings.pg_dsn.get_secret_value())
        async with pool.acquire() as conn:
            await register(conn, registrations(rows))
        async with Pipeline(stack_settings, (Stage.INGEST,)) as pipe, httpx.AsyncClient(timeout=30) as http:
            ops = f"http://127.0.0.1:{pipe.running[0].host.ops_port}/metrics"
            before = _observed((await http.get(ops)).text, "normal")
            resp = await http.post(f"{base}/api/v1/jobs", headers=_auth(stack_settings), json={"record_ids": ids})
            assert resp.status_code == 202, resp.text
            unread = resp.json()["job_id"]
            await pipe.read(Stage.DOWNLOAD, ids)  # started: downloading
            # The later stages' outcomes, written as they would (the stages are not what is tested):
            # two archived, one rejected. Nobody reads the job.
            await pool.execute("UPDATE fiscal_records SET status = 'archived' WHERE record_id = ANY($1::text[])",
                               ids[:2])
            await pool.execute("UPDATE fiscal_records SET status = 'rejected' WHERE record_id = $1", ids[2])
            # Two more replicas' sweeps race the stage's own for the same completion.
            others = [JobCompletions(await connect_pool(stack_settings.pg_dsn.get_secret_value())) for _ in range(2)]
            deadline = time.monotonic() + 60
            while (await pool.fetchval("SELECT observed_at FROM jobs WHERE job_id = $1", unread)) is None:
                assert time.monotonic() < deadline, "the finished job was never observed"
                await asyncio.gather(*(o.tick() for o in others))
                await asyncio.sleep(0.1)
            row = await pool.fetchrow("SELECT status, completed_at, record_count FROM jobs WHERE job_id = $1", unread)
            assert (row["status"], row["record_count"]) == ("completed", 3) and row["completed_at"] is not None

            # A job a reader completes (the job view writes the completion, unless the sweep was first)
            # is observed too.
            again = await http.post(f"{base}/api/v1/jobs", headers=_auth(stack_settings), json={"record_ids": ids[:1]})
            read = again.json()["job_id"]
            view = (await http.get(f"{base}/api/v1/jobs/{read}", headers=_auth(stack_settings, "read"))).json()
            assert view["status"] == "completed"  # its one record is archived already
            deadline = time.monotonic() + 60
            while (await pool.fetchval("SELECT observed_at FROM jobs WHERE job_id = $1", read)) is None:
                assert time.monotonic() < deadline, "the job completed by a reader was never observed"
                await asyncio.sleep(0.2)
            # Both durations on the stage's /metrics (other tests' jobs may have been observed too).
            assert _observed((await http.get(ops)).text, "normal") >= before + 2
            for other in others:
                await other.pool.close()
        await pool.close()
        return unread, read

    unread, read = asyncio.run(scenario())
    lines = [r.getMessage() for r in caplog.records if r.name == "fiscalflow.ingest.jobs"]
    mine = [line for line in lines if unread in line]
    assert len(mine) == 1, mine  # once, across the three sweeps
    assert re.fullmatch(rf"job {unread} completed: 3 records \(2 processed, 1 failed\) in [\d.]+ s, "
                        r"([\d.]+|-) records/s \(normal priority\)", mine[0]), mine[0]
    assert len([line for line in lines if read in line]) == 1
