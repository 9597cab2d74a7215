"""The messages a replica holds: their tasks, the handler slots they take, and the offsets that
may be committed (only below the lowest one of a partition still in flight).

A retry waiting for its due time holds no handler slot (``delayed``), so a wave of retries does
not starve fresh messages; it holds its offset, so nothing after it is committed early.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable

from shared.runtime import headers as H
from shared.runtime import metrics as M
from shared.runtime.backend import Part
from shared.runtime.message import Message
from shared.runtime.offsets import OffsetTracker

# Handles a message; True when it is finished (its offset may be committed), False when it must
# stay uncommitted (redelivered after a restart).
Work = Callable[[Message], Awaitable[bool]]
DRAIN_ON_REVOKE_S = 10.0


def now_ms() -> int:
    return int(time.time() * 1000)


class InFlight:
    def __init__(self, stage: str, max_in_flight: int, work: Work) -> None:
        self.max_in_flight = max_in_flight
        self.offsets = OffsetTracker()
        self.tasks: dict[tuple[str, int, int], asyncio.Task[None]] = {}
        self.handling = 0  # dispatched messages not finished, except retries waiting for their due time
        self.delayed = 0  # retries waiting for their due time
        self.slot = asyncio.Event()  # set when a handler slot frees (or the engine must look again)
        self._work = work
        self._m_in_flight = M.IN_FLIGHT.labels(stage)

    def capacity(self) -> int:
        return self.max_in_flight - self.handling

    def dispatch(self, msg: Message) -> None:
        self.offsets.start(msg.topic, msg.partition, msg.offset)
        due = int(msg.headers.get(H.DUE_AT_MS, "0") or 0)
        if due > now_ms():
            self.delayed += 1
        else:
            due = 0
            self.handling += 1
        self._m_in_flight.set(self.handling)
        self.tasks[(msg.topic, msg.partition, msg.offset)] = asyncio.create_task(self._run(msg, due))

    async def _run(self, msg: Message, due: int) -> None:
        delayed = bool(due)
        try:
            if delayed:
                await asyncio.sleep(max(0, due - now_ms()) / 1000)
                self.delayed -= 1
                self.handling += 1
                delayed = False
            if await self._work(msg):
                self.offsets.done(msg.topic, msg.partition, msg.offset)
        finally:
            if delayed:
                self.delayed -= 1
            else:
                self.handling -= 1
                self._m_in_flight.set(self.handling)
                self.slot.set()
            self.tasks.pop((msg.topic, msg.partition, msg.offset), None)

    def in_flight(self, parts: Iterable[Part]) -> bool:
        return any(self.offsets.in_flight(t, p) for t, p in parts)

    async def wait_all(self, grace_s: float) -> None:
        """Let the work in flight finish (a graceful stop); cancel what is still running after ``grace_s``."""
        await self._wait(list(self.tasks.values()), grace_s)

    async def drain(self, parts: set[Part]) -> None:
        """Partitions are revoked: finish their work for a while, then cancel it (the new owner
        redelivers it; effects are idempotent)."""
        await self._wait([t for k, t in self.tasks.items() if (k[0], k[1]) in parts], DRAIN_ON_REVOKE_S)

    @staticmethod
    async def _wait(tasks: list[asyncio.Task[None]], within_s: float) -> None:
        pending = [t for t in tasks if not t.done()]
        if not pending:
            return
        _, still = await asyncio.wait(pending, timeout=within_s)
        for t in still:
            t.cancel()

    def forget(self, parts: Iterable[Part], cancel: bool = False) -> None:
        """The partitions are gone: drop their bookkeeping (and with ``cancel``, their work)."""
        for key in parts:
            self.offsets.forget(*key)
            if cancel:
                for tkey, task in list(self.tasks.items()):
                    if tkey[:2] == key:
                        task.cancel()
