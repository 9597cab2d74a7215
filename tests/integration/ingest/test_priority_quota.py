"""Seed 002's priority quota on the running ingest API (real PostgreSQL and broker): a burst of
priority jobs past the share is refused with 429 and Retry-After, on both job routes, while normal
jobs still go; after the Retry-After the job goes; every refusal is counted on /metrics."""

from __future__ import annotations

import asyncio
import re
import uuid

import httpx
import pytest

from shared.settings import Settings
from shared.topics import Stage
from tests.support.pipeline import Pipeline

pytestmark = pytest.mark.integration

JOB = 4  # records per priority job of the burst
# The share, made exact: a floor no test's pipeline measures past, so the capacity is the floor and
# the share is 0.0002 × 10,000 = 2 records/s, 10 records per 5 s window.
QUOTA = {"priority_share": 0.0002, "priority_capacity_floor_per_s": 10_000.0, "priority_window_s": 5.0}
ALLOWANCE = 10


def _auth(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.api_token.get_secret_value()}"}


def _ids(n: int) -> list[str]:
    return [f"quota-{uuid.uuid4().hex[:12]}" for _ in range(n)]


def _refusals(metrics: str) -> float:
    m = re.search(r'^fiscalflow_api_backpressure_total\{reason="priority_quota",status="429"\} (\S+)$', metrics, re.M)
    assert m, "no priority_quota series on /metrics"
    return float(m.group(1))


def test_a_priority_burst_past_the_share_gets_429_with_retry_after_while_normal_jobs_go(
        stack_settings: Settings) -> None:
    settings = stack_settings.model_copy(update=QUOTA)
    base = f"http://127.0.0.1:{settings.ingest_port}"

    async def scenario() -> None:
        async with Pipeline(settings, (Stage.INGEST,)) as pipe, httpx.AsyncClient(timeout=30) as http:
            ops = f"http://127.0.0.1:{pipe.running[0].host.ops_port}/metrics"
            counted = _refusals((await http.get(ops)).text)

            async def priority_job(ids: list[str]) -> httpx.Response:
                return await http.post(f"{base}/api/v1/jobs", headers=_auth(settings),
                                       json={"record_ids": ids, "priority": "high"})

            admitted, refused = 0, None
            for _ in range(ALLOWANCE // JOB + 2):  # past the window's share, whatever an earlier test left
                resp = await priority_job(_ids(JOB))
                if resp.status_code == 429:
                    refused = resp
                    break
                assert resp.status_code == 202, resp.text
                admitted += JOB
            assert refused is not None, f"{admitted} priority records in a burst and no 429"
            assert admitted <= ALLOWANCE
            body = refused.json()
            assert body["error"] == "too_many_requests" and "priority share" in body["detail"], body
            retry_after = int(refused.headers["retry-after"])
            assert 1 <= retry_after <= 5  # never longer than the window: the oldest job ages out by then

            # The lane is full, not the API: normal jobs go, and any size of them.
            normal = await http.post(f"{base}/api/v1/jobs", headers=_auth(settings),
                                     json={"record_ids": _ids(3 * ALLOWANCE)})
            assert normal.status_code == 202, normal.text
            # Seed 000's route shares the submission, and the quota with it.
            seed = await http.post(f"{base}/api/v1/fiscal/process", headers=_auth(settings),
                                   json={"source": "api", "record_ids": _ids(JOB), "priority": "high"})
            assert seed.status_code == 429 and "retry-after" in seed.headers, seed.text

            # The Retry-After is when the job fits: waited, the same job goes.
            await asyncio.sleep(int(seed.headers["retry-after"]))
            again = await priority_job(_ids(JOB))
            assert again.status_code == 202, again.text

            # Both refusals counted by status and reason on the ops port.
            assert _refusals((await http.get(ops)).text) == counted + 2

    asyncio.run(scenario())


def test_a_priority_job_bigger_than_the_windows_share_goes_alone(stack_settings: Settings) -> None:
    settings = stack_settings.model_copy(update=QUOTA)
    base = f"http://127.0.0.1:{settings.ingest_port}/api/v1/jobs"

    async def scenario() -> None:
        async with Pipeline(settings, (Stage.INGEST,)), httpx.AsyncClient(timeout=30) as http:
            big = _ids(3 * ALLOWANCE)  # 30 records: 15 s of the share, three windows
            first = await http.post(base, headers=_auth(settings), json={"record_ids": big, "priority": "high"})
            if first.status_code == 429:  # an earlier test's priority job still counts: it goes once that ends
                await asyncio.sleep(int(first.headers["retry-after"]))
                first = await http.post(base, headers=_auth(settings), json={"record_ids": big, "priority": "high"})
            assert first.status_code == 202, first.text
            # It holds the lane for as long as the share takes to finish it, not one window.
            after = await http.post(base, headers=_auth(settings), json={"record_ids": _ids(1), "priority": "high"})
            assert after.status_code == 429, after.text
            assert 5 < int(after.headers["retry-after"]) <= 15

    asyncio.run(scenario())
