"""Seed 000's ``POST /api/v1/fiscal/process`` on the running ingest API: its request, its answer,
a region-less pattern over every region, the job's profile, and the refusals of what is not built
yet or not valid."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import httpx
import pytest

from services.ingest.seed_api import go_duration
from shared.runtime import headers as H
from shared.settings import Settings
from shared.topics import Stage, priority_topic
from tests.support.pipeline import Pipeline, headers_of, write_batch

pytestmark = pytest.mark.integration


def _auth(settings: Settings, token: str = "api") -> dict[str, str]:
    secret = settings.api_token if token == "api" else settings.read_token
    return {"Authorization": f"Bearer {secret.get_secret_value()}"}


def test_a_pattern_without_a_region_is_one_job_over_every_region_in_the_seeds_shape(stack_settings: Settings) -> None:
    batch = f"seed{uuid.uuid4().hex[:8]}"
    _, north = write_batch(stack_settings, "north", 6, batch=batch)
    _, south = write_batch(stack_settings, "south", 4, batch=batch)
    base = f"http://127.0.0.1:{stack_settings.ingest_port}"

    async def scenario() -> None:
        async with Pipeline(stack_settings, (Stage.INGEST, Stage.DOWNLOAD)) as pipe, httpx.AsyncClient() as http:
            before = dt.datetime.now(dt.UTC)
            resp = await http.post(f"{base}/api/v1/fiscal/process", headers=_auth(stack_settings),
                                   json={"source": "sftp", "file_pattern": f"{batch}/*.xml", "priority": "high",
                                         "validation_rules": "strict"})
            assert resp.status_code == 202, resp.text
            body = resp.json()
            assert resp.headers["location"] == f"/api/v1/jobs/{body['job_id']}"
            assert body["status"] == "queued" and body["record_count"] == 10
            assert before <= dt.datetime.fromisoformat(body["submitted_at"]) <= dt.datetime.now(dt.UTC)
            assert set(body["metrics"]) == {"queue_depth", "workers", "rate_per_s"}
            assert body["metrics"]["queue_depth"] >= 0 and body["metrics"]["workers"] >= 0
            # An estimate only from a measured rate: both present or both null.
            assert (body["estimated_duration"] is None) == (body["metrics"]["rate_per_s"] is None)
            # The north and south files of that name, both, downloaded on the priority lane.
            out = await pipe.read(priority_topic(Stage.VALIDATE), [r.record_id for r in north + south])
            assert set(out) == {r.record_id for r in north + south}

            # A region prefix narrows it to that region (the files are registered already: same ids).
            one = await http.post(f"{base}/api/v1/fiscal/process", headers=_auth(stack_settings),
                                  json={"source": "sftp", "file_pattern": f"north:{batch}/*.xml"})
            assert one.status_code == 202 and one.json()["record_count"] == 6, one.text

            view = (await http.get(f"{base}{resp.headers['location']}", headers=_auth(stack_settings, "read"))).json()
            assert {"processed", "failed", "duration_s", "throughput_per_s"} <= set(view)
            assert view["processed"] == 0 and view["failed"] == 0 and view["duration_s"] > 0  # not archived here

    asyncio.run(scenario())


def test_a_jobs_profile_travels_on_its_records_messages_and_shows_in_the_job_view(stack_settings: Settings) -> None:
    """validation_rules and max_retries are the job's: the ingest stage puts them on each record's
    download task (then every stage carries them on); a default job's tasks carry neither."""
    lenient_batch, lenient = write_batch(stack_settings, "central", 3)
    default_batch, default = write_batch(stack_settings, "central", 2)
    base = f"http://127.0.0.1:{stack_settings.ingest_port}"

    async def scenario() -> None:
        async with Pipeline(stack_settings, (Stage.INGEST,)) as pipe, httpx.AsyncClient() as http:
            for batch, extra in ((lenient_batch, {"validation_rules": "lenient", "max_retries": 2}),
                                 (default_batch, {})):
                resp = await http.post(f"{base}/api/v1/fiscal/process", headers=_auth(stack_settings),
                                       json={"source": "sftp", "file_pattern": f"central:{batch}/*.xml", **extra})
                assert resp.status_code == 202, resp.text
                view = (await http.get(f"{base}{resp.headers['location']}", headers=_auth(stack_settings))).json()
                assert view["validation_rules"] == extra.get("validation_rules", "strict")
                assert view["max_retries"] == extra.get("max_retries")
            tasks = await pipe.read(Stage.DOWNLOAD, [r.record_id for r in lenient + default])
            assert len(tasks) == 5
            for r in lenient:
                h = headers_of(tasks[r.record_id])
                assert h[H.RULES] == "lenient" and h[H.MAX_ATTEMPTS] == "3" and h[H.JOB_ID], h
            for r in default:
                h = headers_of(tasks[r.record_id])
                assert H.RULES not in h and H.MAX_ATTEMPTS not in h and h[H.JOB_ID], h

    asyncio.run(scenario())


REFUSED: list[tuple[dict[str, object], str]] = [
    ({"source": "s3", "file_pattern": "nothing-here-*/*.xml"}, "no object of s3://"),
    ({"source": "s3"}, "source s3 needs file_pattern"),
    ({"source": "s3", "record_ids": ["a1"]}, "source s3 takes file_pattern"),
    ({"source": "api", "record_ids": ["a1"], "validation_rules": "loose"}, "validation_rules"),
    ({"source": "api", "record_ids": ["a1"], "max_retries": 101}, "max_retries"),
    ({"source": "sftp", "file_pattern": "atlantis:x/*.xml"}, "unknown region 'atlantis'"),
    ({"source": "sftp"}, "source sftp needs file_pattern"),
    ({"source": "api"}, "source api needs record_ids"),
    ({"source": "api", "file_pattern": "*.xml"}, "source api takes record_ids"),
    ({"source": "sftp", "file_pattern": "nothing-matches-this-*.xml"}, "no file of any region"),
    ({"source": "ftp", "record_ids": ["a1"]}, "source"),
]


def test_what_is_not_built_or_not_valid_is_refused_with_the_reason(stack_settings: Settings) -> None:
    """422 with the reason, never accepted and ignored; the read token never submits (403)."""
    async def scenario() -> list[str]:
        wrong = []
        async with Pipeline(stack_settings, (Stage.INGEST,)), httpx.AsyncClient() as http:
            url = f"http://127.0.0.1:{stack_settings.ingest_port}/api/v1/fiscal/process"
            for body, reason in REFUSED:
                resp = await http.post(url, headers=_auth(stack_settings), json=body)
                if resp.status_code != 422 or reason not in resp.text:
                    wrong.append(f"{body}: {resp.status_code} {resp.text}")
                refused = await http.post(url, headers=_auth(stack_settings, "read"), json=body)
                if refused.status_code != 403:
                    wrong.append(f"{body} with the read token: {refused.status_code}")
        return wrong

    assert asyncio.run(scenario()) == []


def test_go_durations_read_as_the_seeds_clients_parse_them() -> None:
    assert [go_duration(s) for s in (0, 0.4, 45, 90, 3600, 3723.6)] == ["0s", "0s", "45s", "1m30s", "1h0m0s", "1h2m4s"]


def test_a_job_of_rejected_records_waits_for_their_new_pass(stack_settings: Settings) -> None:
    """A job naming records an earlier pass rejected is not complete at once: its records go back
    to pending in the job's transaction (audited), so the job waits for their new pass (before, it
    counted the old rejection as final and completed, and called back, before they were retried)."""
    import asyncpg

    from shared.db.records import Registration, Transition, apply_transitions, register
    from shared.domain.records import RecordStatus

    rid = f"requeue-{uuid.uuid4().hex[:10]}"
    base = f"http://127.0.0.1:{stack_settings.ingest_port}"

    async def scenario() -> None:
        conn = await asyncpg.connect(stack_settings.pg_dsn.get_secret_value())
        try:
            await register(conn, [Registration(rid, "north", f"gone/{rid}.xml")])
            await apply_transitions(conn, [Transition(rid, RecordStatus.REJECTED, (RecordStatus.PENDING,), "test",
                                                      "test", f"{rid}:t", reason="FILE_NOT_FOUND")])
            # Ingest only (it serves the API): the record may start, but no later stage finishes it.
            async with Pipeline(stack_settings, (Stage.INGEST,)), httpx.AsyncClient() as http:
                resp = await http.post(f"{base}/api/v1/fiscal/process", headers=_auth(stack_settings),
                                       json={"source": "api", "record_ids": [rid]})
                assert resp.status_code == 202, resp.text
                view = (await http.get(f"{base}{resp.headers['location']}", headers=_auth(stack_settings))).json()
                assert view["status"] == "running" and set(view["counts"]) <= {"pending", "downloading"}, view
            audit = await conn.fetch("SELECT from_status, to_status, detail->>'job_id' AS job FROM audit_events"
                                     " WHERE record_id = $1 AND to_status = 'pending' ORDER BY event_id", rid)
            assert [(a["from_status"], a["job"]) for a in audit] == [("rejected", resp.json()["job_id"])]
        finally:
            await conn.close()

    asyncio.run(scenario())
