"""The messages a replica holds: their tasks, the handler slots they take, and the offsets that
may be committed (only below the lowest one of a partition still in flight).

A retry waiting for its due time holds no handler slot (``delayed``), so a wave of retries does
not starve fresh messages; it holds its offset, so nothing after it is committed early.

Each message in flight also holds bytes of the replica's byte budget (``shared/runtime/budget.py``):
:meth:`InFlight.admit` waits for its own bytes before dispatching it (a delayed retry reserves them
when it comes due), and they are given back when its task ends.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable, Iterable

from shared.runtime import headers as H
from shared.runtime import metrics as M
from shared.runtime.backend import Part
from shared.runtime.budget import ByteBudget, Hold, set_current_hold
from shared.runtime.message import Message
from shared.runtime.offsets import OffsetTracker

# Handles a message; True when it is finished (its offset may be committed), False when it must
# stay uncommitted (redelivered after a restart).
Work = Callable[[Message], Awaitable[bool]]
DRAIN_ON_REVOKE_S = 10.0


def now_ms() -> int:
    return int(time.time() * 1000)


class _Flight:
    """One dispatched message: its bytes, and its due time while it waits as a retry (0 once due)."""

    __slots__ = ("due", "fair_key", "hold", "key", "msg")

    def __init__(self, msg: Message, hold: Hold, due: int, fair_key: str | None) -> None:
        self.msg, self.hold, self.due, self.fair_key = msg, hold, due, fair_key
        self.key = (msg.topic, msg.partition, msg.offset)


class InFlight:
    def __init__(self, stage: str, max_in_flight: int, work: Work, budget: ByteBudget | None = None) -> None:
        self.max_in_flight = max_in_flight
        self.budget = budget
        self.offsets = OffsetTracker()
        self.tasks: dict[tuple[str, int, int], asyncio.Task[None]] = {}
        self.handling = 0  # dispatched messages not finished, except retries waiting for their due time
        self.delayed = 0  # retries waiting for their due time
        # ``handling`` by the stage's fair key (shared/runtime/fairness.py); None without one.
        self.by_key: collections.Counter[str | None] = collections.Counter()
        self.slot = asyncio.Event()  # set when a handler slot frees (or the engine must look again)
        self._work = work
        self._m_in_flight = M.IN_FLIGHT.labels(stage)

    def capacity(self) -> int:
        return self.max_in_flight - self.handling

    @staticmethod
    def _due(msg: Message) -> int:
        due = int(msg.headers.get(H.DUE_AT_MS, "0") or 0)
        return due if due > now_ms() else 0

    async def admit(self, msg: Message) -> None:
        """Dispatch ``msg`` once its bytes fit the budget."""
        self.start(msg, *await self.reserve(msg))

    def reserve_now(self, msg: Message) -> tuple[Hold, int] | None:
        """:meth:`reserve` when its bytes fit at once, else None (nothing held)."""
        hold = Hold(self.budget)
        due = self._due(msg)
        return (hold, due) if due or hold.try_reserve(len(msg.value)) else None

    async def reserve(self, msg: Message) -> tuple[Hold, int]:
        """``msg``'s bytes on the budget, waiting for them, and its due time: what :meth:`start` takes.
        The engine keeps its consumer in the group while it waits (and may give the hold back)."""
        hold = Hold(self.budget)
        due = self._due(msg)  # decided once: a retry that is not due yet reserves when it is
        if not due:
            await hold.reserve(len(msg.value))
        return hold, due

    def dispatch(self, msg: Message, fair_key: str | None = None) -> None:
        """Start ``msg``'s task now, its bytes charged without waiting: the priority lane, whose few
        records must not queue behind a backlog's documents."""
        hold = Hold(self.budget)
        due = self._due(msg)
        if not due:
            hold.charge(len(msg.value))
        self.start(msg, hold, due, fair_key)

    def hold_offset(self, msg: Message) -> None:
        """Keep ``msg``'s offset uncommitted from now on, before it starts: the engine does so as it
        takes a message in, since a fair key may start a later message of its partition first."""
        self.offsets.start(msg.topic, msg.partition, msg.offset)

    def start(self, msg: Message, hold: Hold, due: int, fair_key: str | None = None, held: bool = False) -> None:
        """Start ``msg``'s task; ``held`` when :meth:`hold_offset` already holds its offset."""
        flight = _Flight(msg, hold, due, fair_key)
        if not held:
            self.hold_offset(msg)
        if flight.due:
            self.delayed += 1
        else:
            self.handling += 1
            self.by_key[fair_key] += 1
        self._m_in_flight.set(self.handling)
        task = asyncio.create_task(self._run(flight))
        # The slot, the bytes and the entry come back however the task ends, even cancelled before
        # it ever ran (a lost partition's work), when a ``finally`` in it would never run.
        task.add_done_callback(lambda t: self._finished(t, flight))
        self.tasks[flight.key] = task

    async def _run(self, flight: _Flight) -> None:
        msg, hold = flight.msg, flight.hold
        set_current_hold(hold)  # this task's context: the handler's reservations join the message's
        if flight.due:
            await asyncio.sleep(max(0, flight.due - now_ms()) / 1000)
            await hold.reserve(len(msg.value))
            self.delayed -= 1
            self.handling += 1
            self.by_key[flight.fair_key] += 1
            flight.due = 0
        if await self._work(msg):
            self.offsets.done(msg.topic, msg.partition, msg.offset)

    def _finished(self, task: asyncio.Task[None], flight: _Flight) -> None:
        flight.hold.release_all()
        if flight.due:
            self.delayed -= 1
        else:
            self.handling -= 1
            left = self.by_key[flight.fair_key] = self.by_key[flight.fair_key] - 1
            if left <= 0:
                del self.by_key[flight.fair_key]
            self._m_in_flight.set(self.handling)
            self.slot.set()
        if self.tasks.get(flight.key) is task:  # a rewound log reuses offsets: only this task's entry
            del self.tasks[flight.key]

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
