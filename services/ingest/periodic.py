"""A background task that runs ``tick()`` every ``interval_s`` inside the service's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging

log = logging.getLogger("fiscalflow.ingest")


class Periodic:
    interval_s = 5.0

    async def tick(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=type(self).__name__)

    async def stop(self) -> None:
        task = getattr(self, "_task", None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # a failed tick is logged and tried again next interval
                log.exception("%s failed", type(self).__name__)
            await asyncio.sleep(self.interval_s)
