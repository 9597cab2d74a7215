"""The ingest stage and its HTTP API on the real broker, PostgreSQL and SFTP servers."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer

from shared.db.jobs import create_job
from shared.db.migrate import connect_pool
from shared.db.records import Registration, history, lookup, register
from shared.domain.messages import DownloadTask, IngestRequest
from shared.domain.records import Priority
from shared.runtime import headers as H
from shared.settings import Settings
from shared.topics import DLQ, Stage, priority_topic
from tests.support.pipeline import Pipeline, headers_of, registrations, write_batch

pytestmark = pytest.mark.integration


def _api(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.ingest_port}/api/v1/jobs"


def _auth(settings: Settings) -> dict[str, str]:
    """The admin token: submits."""
    return {"Authorization": f"Bearer {settings.api_token.get_secret_value()}"}


def _read(settings: Settings) -> dict[str, str]:
    """The read token: job views."""
    return {"Authorization": f"Bearer {settings.read_token.get_secret_value()}"}


def test_a_job_by_pattern_registers_the_files_and_takes_them_through_download(stack_settings: Settings) -> None:
    batch, rows = write_batch(stack_settings, "north", 40)

    async def scenario() -> None:
        async with Pipeline(stack_settings, (Stage.INGEST, Stage.DOWNLOAD)) as pipe, httpx.AsyncClient() as http:
            resp = await http.post(_api(stack_settings), headers=_auth(stack_settings),
                                   json={"source": {"region": "north", "pattern": f"{batch}/*.xml"}})
            assert resp.status_code == 202, resp.text
            job_id = resp.json()["job_id"]
            assert resp.headers["location"] == f"/api/v1/jobs/{job_id}"
            assert resp.json()["record_count"] == len(rows)
            out = await pipe.read(Stage.VALIDATE, [r.record_id for r in rows])
            assert set(out) == {r.record_id for r in rows}
            for m in out.values():
                assert headers_of(m)[H.JOB_ID] == job_id
            status = (await http.get(f"http://127.0.0.1:{stack_settings.ingest_port}{resp.headers['location']}",
                                     headers=_read(stack_settings)))
            body = status.json()
            assert body["record_count"] == len(rows)
            assert body["counts"] == {"downloaded": len(rows)}
            assert body["status"] == "running"  # validation and storage still to come
        pool = await connect_pool(stack_settings.pg_dsn.get_secret_value())
        found = await lookup(pool, [r.record_id for r in rows])
        # The expected checksum and size came from the MANIFEST.csv beside the files.
        assert {(f.expected_sha256, f.size) for f in found.values()} == {(r.sha256, r.size) for r in rows}
        assert {f.job_id for f in found.values()} == {job_id}
        events = await history(pool, rows[0].record_id)
        assert [(e["from_status"], e["to_status"]) for e in events] == [("pending", "downloading"),
                                                                        ("downloading", "downloaded")]
        await pool.close()

    asyncio.run(scenario())


def test_unknown_ids_dead_letter_and_an_archived_record_is_skipped(stack_settings: Settings) -> None:
    _, rows = write_batch(stack_settings, "central", 2)
    archived, fresh = rows[0].record_id, rows[1].record_id
    unknown = [f"nope-{uuid.uuid4().hex}" for _ in range(3)]
    job_id = str(uuid.uuid4())

    async def scenario() -> None:
        pool = await connect_pool(stack_settings.pg_dsn.get_secret_value())
        async with pool.acquire() as conn:
            await register(conn, registrations(rows))
            await conn.execute("UPDATE fiscal_records SET status = 'archived' WHERE record_id = $1", archived)
        async with Pipeline(stack_settings, (Stage.INGEST,)) as pipe:
            # Bare ids and JSON requests, with the job id in a header or in the body.
            items = [(rid, rid.encode(), {H.JOB_ID: job_id}) for rid in [*unknown, archived]]
            items.append((fresh, IngestRequest(record_id=fresh, job_id=job_id).encode(), {}))
            pipe.produce(Stage.INGEST, items)
            dead = await pipe.read(DLQ, unknown)
            tasks = await pipe.read(Stage.DOWNLOAD, [fresh])
        assert set(dead) == set(unknown)
        assert {headers_of(m)[H.REASON] for m in dead.values()} == {"UNKNOWN_RECORD"}
        assert {headers_of(m)[H.STAGE] for m in dead.values()} == {"ingest"}
        task = DownloadTask.model_validate_json(tasks[fresh].value() or b"")
        assert (task.job_id, task.region, task.path, task.expected_sha256) == (job_id, "central", rows[1].path,
                                                                               rows[1].sha256)
        # The archived record was never sent to download nor touched.
        seen = await pipe.read(Stage.DOWNLOAD, [archived], within_s=3)
        assert archived not in seen
        assert (await lookup(pool, [archived]))[archived].status.value == "archived"
        assert await history(pool, archived) == []
        members = await pool.fetch("SELECT record_id FROM job_records WHERE job_id = $1", job_id)
        assert {m["record_id"] for m in members} == {archived, fresh}
        await pool.close()

    asyncio.run(scenario())


def test_handled_priority_requests_leave_no_ingest_lag(stack_settings: Settings) -> None:
    """The API refuses every job while the ingest lag exceeds its bound: once the stage has handled
    the priority lane's requests, they must not count as lag (the priority lane has its own group)."""
    _, rows = write_batch(stack_settings, "south", 4)
    ids = {r.record_id for r in rows}

    async def scenario() -> None:
        pool = await connect_pool(stack_settings.pg_dsn.get_secret_value())
        async with pool.acquire() as conn:
            await register(conn, registrations(rows))
        await pool.close()
        async with Pipeline(stack_settings, (Stage.INGEST,)) as pipe:
            # The stage's own monitor, the one the API's 503 reads (spec.handler is IngestStage.handle).
            monitor = pipe.runners[0].spec.handler.__self__.lag  # type: ignore[attr-defined]
            producer = Producer({"bootstrap.servers": stack_settings.bootstrap_servers})
            for rid in sorted(ids):
                producer.produce(pipe.topic(priority_topic(Stage.INGEST)), IngestRequest(record_id=rid).encode(),
                                 rid.encode())
                assert producer.flush(30) == 0  # one batch each: the local broker's end offsets are then exact
            assert set(await pipe.read(priority_topic(Stage.DOWNLOAD), ids)) == ids
            deadline = asyncio.get_running_loop().time() + 20
            while (lag := await asyncio.to_thread(monitor.measure)) != 0:
                assert asyncio.get_running_loop().time() < deadline, f"ingest lag stays {lag}"
                await asyncio.sleep(0.2)

    asyncio.run(scenario())


def test_the_api_refuses_bad_requests_with_a_reason(stack_settings: Settings) -> None:
    url, auth = _api(stack_settings), _auth(stack_settings)
    cases: list[tuple[str, dict[str, object], int, str]] = [
        ("no token", {"json": {"record_ids": ["a"]}}, 401, "token"),
        ("wrong token", {"json": {"record_ids": ["a"]}, "headers": {"Authorization": "Bearer nope"}}, 401, "token"),
        ("the read token", {"json": {"record_ids": ["a"]}, "headers": _read(stack_settings)}, 403,
         "the read token cannot submit jobs; use the admin token"),
        ("malformed JSON", {"content": b'{"record_ids": [', "headers": {**auth, "content-type": "application/json"}},
         422, "JSON"),
        ("wrong types", {"json": {"record_ids": "abc"}, "headers": auth}, 422, "list"),
        ("ids not strings", {"json": {"record_ids": [1, 2]}, "headers": auth}, 422, "string"),
        ("bad priority", {"json": {"record_ids": ["a"], "priority": "urgent"}, "headers": auth}, 422, "normal"),
        *((f"record id {rid!r}", {"json": {"record_ids": ["ok-1", rid]}, "headers": auth}, 422, "pattern")
          for rid in ("a b", "../etc", "a/b", "ñandú", "x" * 201, "", "tab\there", "quote'd")),
        ("neither ids nor source", {"json": {}, "headers": auth}, 422, "exactly one"),
        ("both", {"json": {"record_ids": ["a"], "source": {"region": "north", "pattern": "*.xml"}},
                  "headers": auth}, 422, "exactly one"),
        ("unknown region", {"json": {"source": {"region": "mars", "pattern": "*.xml"}}, "headers": auth}, 422,
         "unknown region"),
        ("pattern with ..", {"json": {"source": {"region": "north", "pattern": "../*.xml"}}, "headers": auth},
         422, ".."),
        ("absolute pattern", {"json": {"source": {"region": "north", "pattern": "/etc/*"}}, "headers": auth},
         422, "relative"),
        ("too many ids", {"json": {"record_ids": [f"r{i}" for i in range(100_001)]}, "headers": auth}, 422,
         "100000"),
        ("oversized body", {"content": b'{"record_ids": ["' + b"x" * (11 * 1024 * 1024) + b'"]}',
                            "headers": {**auth, "content-type": "application/json"}}, 413, "bytes"),
    ]

    async def scenario() -> None:
        async with Pipeline(stack_settings, (Stage.INGEST,)), httpx.AsyncClient(timeout=60) as http:
            for name, kwargs, status, reason in cases:
                resp = await http.post(url, **kwargs)  # type: ignore[arg-type]
                assert resp.status_code == status, (name, resp.text[:300])
                body = resp.json()  # the one error body of every API: a code and the reason in words
                assert set(body) == {"error", "detail"} and reason in body["detail"], (name, resp.text[:300])
            missing = await http.get(f"{url}/{uuid.uuid4()}", headers=_read(stack_settings))
            assert missing.status_code == 404 and missing.json()["error"] == "not_found"
            assert (await http.get(f"{url}/not-a-uuid", headers=_read(stack_settings))).status_code == 422
            openapi = (await http.get(f"http://127.0.0.1:{stack_settings.ingest_port}/openapi.json")).json()
            assert "/api/v1/jobs" in openapi["paths"] and "/api/v1/jobs/{job_id}" in openapi["paths"]

    asyncio.run(scenario())


def test_job_views_need_the_read_token_never_show_a_callback_and_the_cli_names_a_wrong_token(
        stack_settings: Settings, tmp_path: Path) -> None:
    job_id, member = str(uuid.uuid4()), f"auth-{uuid.uuid4().hex[:12]}"
    url = f"http://127.0.0.1:{stack_settings.ingest_port}/api/v1/jobs"
    assert _read(stack_settings) != _auth(stack_settings)  # the test stack's two tokens differ
    cli = [sys.executable, "-m", "services.cli", "job"]

    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli, *args], capture_output=True, text=True, timeout=120,
                              env={**os.environ, **env})

    async def scenario() -> None:
        pool = await connect_pool(stack_settings.pg_dsn.get_secret_value())
        async with pool.acquire() as conn:  # a pending member: the job stays running, no callback is tried
            await register(conn, [Registration(member, "north", f"t/{member}.xml")])
            await create_job(conn, job_id, [member], Priority.NORMAL,
                             callback_url="https://hooks.invalid/h?token=cb-Hq7")
        await pool.close()
        async with Pipeline(stack_settings, (Stage.INGEST,)), httpx.AsyncClient(timeout=30) as http:
            for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic x"}):
                resp = await http.get(f"{url}/{job_id}", headers=headers)
                assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer", resp.text
                assert resp.json()["error"] == "unauthorized" and "token" in resp.json()["detail"]
            for headers in (_read(stack_settings), _auth(stack_settings)):
                resp = await http.get(f"{url}/{job_id}", headers=headers)
                assert resp.status_code == 200 and resp.json()["callback"] is True, resp.text
                assert "hooks.invalid" not in resp.text and "cb-Hq7" not in resp.text
            # The command line: `job show` reads with the read token ...
            shown = await asyncio.to_thread(run, "show", job_id, "--json")
            assert shown.returncode == 0 and json.loads(shown.stdout)["job_id"] == job_id, shown.stderr
            # ... and a wrong one is one line that names the variable, no traceback, exit 1.
            wrong = await asyncio.to_thread(run, "show", job_id, FISCALFLOW_READ_TOKEN="not-the-read-token")
            assert wrong.returncode == 1 and wrong.stderr.count("\n") == 1, wrong.stderr
            assert "FISCALFLOW_READ_TOKEN" in wrong.stderr and "Traceback" not in wrong.stderr
            # `job submit` with the read token as its admin token: refused, and told which token to use.
            ids = tmp_path / "ids"
            ids.write_text(member + "\n")
            refused = await asyncio.to_thread(run, "submit", "--ids", str(ids), FISCALFLOW_API_TOKEN=(
                stack_settings.read_token.get_secret_value()))
            assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
            assert "HTTP 403" in refused.stderr and "use the admin token" in refused.stderr, refused.stderr

    asyncio.run(scenario())
