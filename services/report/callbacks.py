"""Job completion callbacks: POST the job's status, signed, retried with backoff.

The body is signed with HMAC-SHA256 (key: the ``callback_secret`` setting, else the API token) in
``X-Fiscalflow-Signature: sha256=<hex>`` so a receiver can check it came from us.  A job is
claimed in PostgreSQL (``callback_state``) before sending, so two replicas never both send; a
crash mid-delivery leaves it ``sending`` and the next start sends again (at least once: the body
carries the job id for the receiver to de-duplicate).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random

import asyncpg
import httpx
import orjson
from prometheus_client import Counter

from shared.db import jobs
from shared.egress import EgressPolicy, EgressRefused, Resolver, system_resolver

log = logging.getLogger("fiscalflow.report.callbacks")

# One per callback, once its delivery ended: sent (2xx), failed (retries spent or the receiver
# refused the body), refused (the egress policy did not let it connect).
CALLBACKS = Counter("fiscalflow_callbacks_total", "Job completion callbacks whose delivery ended, by outcome "
                    "(sent, failed, refused).", ["outcome"])
for _outcome in ("sent", "failed", "refused"):
    CALLBACKS.labels(_outcome)

SIGNATURE_HEADER = "X-Fiscalflow-Signature"
_RETRYABLE = {408, 425, 429}


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class CallbackSender:
    def __init__(self, pool: asyncpg.Pool, secret: bytes, egress: EgressPolicy, timeout_s: float = 10.0,
                 attempts: int = 8, base_delay_s: float = 0.5, max_delay_s: float = 60.0,
                 resolve: Resolver = system_resolver) -> None:
        self.pool = pool
        self.secret = secret
        # Checked again before each delivery, on a fresh resolution (shared/egress.py).
        self.egress, self.resolve = egress, resolve
        # Settings callback_attempts, callback_base_s, callback_max_s: attempts and backoff delays.
        self.attempts, self.base_delay_s, self.max_delay_s = attempts, base_delay_s, max_delay_s
        self._client = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)
        self._tasks: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await self._client.aclose()

    async def resume(self) -> None:
        """At start: jobs whose delivery was interrupted, and completed jobs never claimed."""
        rows = await self.pool.fetch(
            "SELECT job_id::text FROM jobs WHERE callback_url IS NOT NULL AND status = 'completed'"
            " AND (callback_state IS NULL OR callback_state = 'sending')")
        for r in rows:
            await self.on_job_touched(r["job_id"], resend=True)

    async def on_job_touched(self, job_id: str, resend: bool = False) -> None:
        """Complete the job if its every member is final; if it is complete with a callback not yet
        claimed, claim and send it.

        Called every 2 s for each job the report's batches touched, for as long as the job runs:
        so a running job costs a probe that stops at its first unfinished member
        (:func:`jobs.complete_finished`) and a read of its row, and the job's full status (an
        aggregate over every member) is derived once, for the callback's body."""
        await jobs.complete_finished(self.pool, [job_id])
        job = await self.pool.fetchrow(
            "SELECT status, callback_url IS NOT NULL AS has_callback, callback_state FROM jobs WHERE job_id = $1",
            job_id)
        if job is None or job["status"] != "completed" or not job["has_callback"]:
            return
        if job["callback_state"] is not None and not (resend and job["callback_state"] == "sending"):
            return  # claimed already: sent, failed, or being sent by another replica
        status = await jobs.job_status(self.pool, job_id)
        if status is None or status.status != "completed" or not status.callback_url:
            return
        claimed = await self.pool.fetchval(
            "UPDATE jobs SET callback_state = 'sending' WHERE job_id = $1 AND (callback_state IS NULL"
            " OR ($2 AND callback_state = 'sending')) RETURNING job_id::text", job_id, resend)
        if claimed is None:
            return
        body = orjson.dumps(status.to_json())
        task = asyncio.create_task(self._deliver(job_id, status.callback_url, body), name=f"callback-{job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, job_id: str, url: str, body: bytes) -> None:
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(self.secret, body),
                   "X-Fiscalflow-Job-Id": job_id}
        state = "failed: no attempt"
        for attempt in range(self.attempts):
            try:
                await self.egress.check(url, self.resolve)
            except EgressRefused as exc:
                state = f"refused: {exc}"
                break  # never connected
            try:
                resp = await self._client.post(url, content=body, headers=headers)
                if resp.is_success:
                    state = f"sent: HTTP {resp.status_code}"
                    break
                state = f"failed: HTTP {resp.status_code}"
                if resp.status_code < 500 and resp.status_code not in _RETRYABLE:
                    break  # the receiver refuses this body: retrying cannot help
            except httpx.HTTPError as exc:
                state = f"failed: {type(exc).__name__}"
            delay = min(self.max_delay_s, self.base_delay_s * 2 ** attempt)
            await asyncio.sleep(random.uniform(delay / 2, delay))  # jitter: receivers recovering are not stampeded
        log.info("job %s callback %s", job_id, state)
        CALLBACKS.labels(state.partition(":")[0]).inc()
        try:
            await jobs.mark_callback(self.pool, job_id, state[:200])
        except (OSError, asyncpg.PostgresError) as exc:  # stays 'sending': sent again after a restart
            log.warning("job %s: callback state not saved: %s", job_id, exc)
