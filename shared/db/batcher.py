"""Coalesce concurrent handler calls into one round trip.

Each handler awaits ``submit(item)``; items submitted within ``max_delay_s`` (or until
``max_size``) are flushed together and every caller gets its own result — so a stage with
hundreds of messages in flight makes a few batched statements, not a round trip per record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    def __init__(self, flush: Callable[[list[T]], Awaitable[Sequence[R]]], max_size: int = 500,
                 max_delay_s: float = 0.005) -> None:
        self._flush_fn = flush
        self.max_size = max_size
        self.max_delay_s = max_delay_s
        self._items: list[T] = []
        self._futures: list[asyncio.Future[R]] = []
        self._timer: asyncio.TimerHandle | None = None

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[R] = loop.create_future()
        self._items.append(item)
        self._futures.append(fut)
        if len(self._items) >= self.max_size:
            self._start_flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.max_delay_s, self._start_flush)
        return await fut

    def _start_flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._items:
            return
        items, futures = self._items, self._futures
        self._items, self._futures = [], []
        asyncio.get_running_loop().create_task(self._run(items, futures))

    async def _run(self, items: list[T], futures: list[asyncio.Future[R]]) -> None:
        try:
            results = await self._flush_fn(items)
            if len(results) != len(items):
                raise RuntimeError(f"batch flush returned {len(results)} results for {len(items)} items")
        except BaseException as exc:
            for f in futures:
                if not f.done():
                    f.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for f, r in zip(futures, results, strict=True):
            if not f.done():
                f.set_result(r)
