"""MicroBatcher: concurrent submissions share one flush; a busy batcher gathers for longer."""

from __future__ import annotations

import asyncio

from shared.db.batcher import MicroBatcher


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    async def flush(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        return [i * 10 for i in items]


async def test_concurrent_submissions_share_one_flush_and_each_gets_its_result() -> None:
    rec = Recorder()
    batcher = MicroBatcher(rec.flush, 500, 0.01)
    assert await asyncio.gather(*(batcher.submit(i) for i in range(5))) == [0, 10, 20, 30, 40]
    assert rec.batches == [[0, 1, 2, 3, 4]]


async def test_an_idle_batcher_keeps_its_short_window() -> None:
    """Without load a record waits the short window only: two submissions far apart are two flushes."""
    rec = Recorder()
    batcher = MicroBatcher(rec.flush, 500, 0.001, busy_delay_s=5.0, busy_size=4)
    assert await batcher.submit(1) == 10
    await asyncio.sleep(0.05)
    assert await asyncio.wait_for(batcher.submit(2), 2.0) == 20  # not held for the busy window
    assert rec.batches == [[1], [2]]
    assert batcher.delay_s == 0.001


async def test_a_busy_batcher_gathers_longer_then_narrows_again() -> None:
    rec = Recorder()
    batcher = MicroBatcher(rec.flush, 500, 0.001, busy_delay_s=0.5, busy_size=4)
    await asyncio.gather(*(batcher.submit(i) for i in range(4)))  # a full batch: busy
    assert batcher.delay_s == 0.5

    async def later(item: int, after_s: float) -> int:
        await asyncio.sleep(after_s)
        return await batcher.submit(item)

    # Submissions 50 ms apart: far outside the short window, inside the busy one.
    assert await asyncio.gather(later(10, 0.0), later(11, 0.05)) == [100, 110]
    assert rec.batches[1] == [10, 11]
    assert batcher.delay_s == 0.001  # two items: not busy any more
    assert await asyncio.wait_for(batcher.submit(12), 2.0) == 120
    assert rec.batches[2] == [12]


async def test_a_full_batch_flushes_at_once_whatever_the_window() -> None:
    rec = Recorder()
    batcher = MicroBatcher(rec.flush, 3, 60.0)
    assert await asyncio.wait_for(asyncio.gather(*(batcher.submit(i) for i in range(3))), 2.0) == [0, 10, 20]
    assert rec.batches == [[0, 1, 2]]
