"""Job completion callbacks: POST the job's status to its ``callback_url`` once, when it completes.

Best effort with a few attempts; the outcome is kept in ``jobs.callback_state`` (``sent`` or
``failed: ...``) so a restarted service does not notify twice.
"""

from __future__ import annotations

import asyncio

import asyncpg
import httpx

from services.ingest.periodic import Periodic
from shared.db import jobs

ATTEMPTS = 3


class CallbackNotifier(Periodic):
    def __init__(self, db: asyncpg.Pool, interval_s: float = 2.0) -> None:
        self.db = db
        self.interval_s = interval_s

    async def tick(self) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            await self.notify_completed(client)

    async def notify_completed(self, client: httpx.AsyncClient) -> None:
        for job_id in await jobs.awaiting_callback(self.db):
            status = await jobs.job_status(self.db, job_id)
            if status is None or status.status != "completed" or not status.callback_url:
                continue
            state = "failed"
            for attempt in range(ATTEMPTS):
                try:
                    resp = await client.post(status.callback_url, json=status.to_json())
                    if resp.status_code < 500:
                        state = f"sent: HTTP {resp.status_code}"
                        break
                    state = f"failed: HTTP {resp.status_code}"
                except httpx.HTTPError as exc:
                    state = f"failed: {type(exc).__name__}"
                await asyncio.sleep(0.5 * 2 ** attempt)
            await jobs.mark_callback(self.db, job_id, state)
