"""A replica's byte budget: how many bytes of documents its messages in flight may hold at once.

A message count alone does not bound memory when one document can be 5 KB or 5 MB: 256 messages in
flight are 1.3 MB of typical invoices or 1.3 GB of the largest.  So each message in flight has a
:class:`Hold` on the replica's :class:`ByteBudget`:

- the engine reserves the message's own bytes before dispatching it (waiting while the budget is
  spent: backpressure, not an error);
- a handler that brings more bytes into memory (the download stage's file, a claim check's
  document) reserves them through :func:`current_hold` before reading them;
- everything is given back when the message's work ends, deliveries included (a done-callback on
  its task: a task cancelled before it ran gives back too).

Grants are first come, first served, so a large document is not starved by a stream of small
ones; a reservation larger than the whole budget is granted once nothing else is held (it goes
alone).  A reservation never waits on bytes its own holder holds, and holders only wait before
they read: whoever holds bytes finishes without waiting for more, so the budget cannot deadlock.

Priority-lane messages and bytes a handler learns of only after reading (an S3 object, a file
longer than announced) are charged without waiting: the budget may be exceeded by those, never
by ordinary reservations.
"""

from __future__ import annotations

import asyncio
import collections
from contextvars import ContextVar

from shared.runtime import metrics as M


class ByteBudget:
    def __init__(self, stage: str, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"byte budget must be positive, got {limit}")
        self.limit = limit
        self.used = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        self._m_used = M.BYTES_IN_FLIGHT.labels(stage)
        self._m_waits = M.BUDGET_WAITS.labels(stage)

    @property
    def waiting(self) -> int:
        return sum(not fut.done() for _, fut in self._waiters)

    def _fits(self, n: int) -> bool:
        return self.used + n <= self.limit or self.used == 0

    def try_reserve(self, n: int) -> bool:
        """Take ``n`` bytes if they fit now and nobody is waiting; False (nothing taken) otherwise."""
        if n <= 0:
            return True
        if not self._waiters and self._fits(n):
            self._take(n)
            return True
        return False

    async def reserve(self, n: int) -> None:
        """Wait until ``n`` more bytes fit (after everyone who asked earlier), then take them."""
        if self.try_reserve(n):
            return
        self._m_waits.inc()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((n, fut))
        try:
            await fut
        except asyncio.CancelledError:
            if not fut.cancelled():
                self.release(n)  # granted, but the waiter was cancelled before it could use it
            else:
                self._wake()  # a cancelled entry leaves the queue when it reaches the head
            raise

    def charge(self, n: int) -> None:
        """Take ``n`` bytes now, even past the limit (bytes already in memory)."""
        if n > 0:
            self._take(n)

    def release(self, n: int) -> None:
        if n <= 0:
            return
        self.used = max(0, self.used - n)
        self._m_used.set(self.used)
        self._wake()

    def _take(self, n: int) -> None:
        self.used += n
        self._m_used.set(self.used)

    def _wake(self) -> None:
        while self._waiters:
            n, fut = self._waiters[0]
            if fut.done():  # cancelled while queued (a granted entry left the queue already)
                self._waiters.popleft()
                continue
            if not self._fits(n):
                return
            self._waiters.popleft()
            self._take(n)
            fut.set_result(None)


class Hold:
    """The bytes one message holds on a budget (none when the replica has no budget)."""

    __slots__ = ("budget", "held")

    def __init__(self, budget: ByteBudget | None) -> None:
        self.budget = budget
        self.held = 0

    async def reserve(self, n: int) -> None:
        if self.budget is not None:
            await self.budget.reserve(n)
        self.held += max(0, n)

    def try_reserve(self, n: int) -> bool:
        if self.budget is not None and not self.budget.try_reserve(n):
            return False
        self.held += max(0, n)
        return True

    def charge(self, n: int) -> None:
        if self.budget is not None:
            self.budget.charge(n)
        self.held += max(0, n)

    def give_back(self, n: int) -> None:
        """Return ``n`` of the held bytes (reserved for more than was read)."""
        n = min(max(0, n), self.held)
        self.held -= n
        if self.budget is not None:
            self.budget.release(n)

    def release_all(self) -> None:
        self.give_back(self.held)


_current: ContextVar[Hold | None] = ContextVar("fiscalflow_hold", default=None)


def current_hold() -> Hold:
    """The hold of the message being handled; outside a message's work, one on no budget."""
    return _current.get() or Hold(None)


def set_current_hold(hold: Hold) -> None:
    """Called at the start of a message's task (each task has its own context)."""
    _current.set(hold)
