"""The byte budget: messages in flight hold at most so many bytes of documents; what waits gets
its turn in order, and every byte comes back however a message's work ends."""

from __future__ import annotations

import asyncio

import pytest

from shared.runtime.budget import ByteBudget, Hold, current_hold
from shared.runtime.inflight import InFlight
from shared.runtime.kafka import keepalive_s
from shared.runtime.message import Message
from shared.settings import Settings


def _msg(offset: int, size: int) -> Message:
    return Message("t", 0, offset, b"k", b"x" * size, {}, 0)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_reservation_waits_until_the_bytes_fit_and_is_served_in_order() -> None:
    budget = ByteBudget("download", 100)
    await budget.reserve(80)
    granted: list[str] = []

    async def want(name: str, n: int) -> None:
        await budget.reserve(n)
        granted.append(name)

    big = asyncio.create_task(want("big", 60))
    await _settle()
    small = asyncio.create_task(want("small", 10))  # would fit now, but the big one asked first
    await _settle()
    assert granted == [] and budget.waiting == 2
    budget.release(80)
    await _settle()
    assert granted == ["big", "small"] and budget.used == 70
    await asyncio.gather(big, small)


async def test_a_document_larger_than_the_budget_goes_alone() -> None:
    budget = ByteBudget("store", 100)
    await budget.reserve(30)
    task = asyncio.create_task(budget.reserve(500))
    await _settle()
    assert not task.done()
    budget.release(30)
    await asyncio.wait_for(task, 1)
    assert budget.used == 500
    assert not await _fits_now(budget, 1)  # nothing else while it is held
    budget.release(500)
    assert budget.used == 0


async def _fits_now(budget: ByteBudget, n: int) -> bool:
    task = asyncio.create_task(budget.reserve(n))
    await _settle()
    if task.done():
        return True
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return False


async def test_a_cancelled_waiter_leaves_the_queue_and_unblocks_those_behind_it() -> None:
    budget = ByteBudget("validate", 100)
    await budget.reserve(50)
    big = asyncio.create_task(budget.reserve(90))
    await _settle()
    small = asyncio.create_task(budget.reserve(40))
    await _settle()
    assert not small.done()  # behind the big one
    big.cancel()
    await asyncio.gather(big, return_exceptions=True)
    await asyncio.wait_for(small, 1)
    assert budget.used == 90 and budget.waiting == 0


async def test_a_waiter_cancelled_just_before_bytes_free_raises_cancelled_and_holds_nothing() -> None:
    budget = ByteBudget("download", 100)
    await budget.reserve(100)
    waiter = asyncio.create_task(budget.reserve(50))
    await _settle()
    waiter.cancel()  # its future is cancelled now; the task sees it only on its next turn
    budget.release(100)  # ... after the queue has already dropped the cancelled entry
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert budget.used == 0 and budget.waiting == 0
    assert await _fits_now(budget, 100)


async def test_the_priority_lane_and_bytes_already_read_are_charged_without_waiting() -> None:
    budget = ByteBudget("download", 100)
    hold = Hold(budget)
    await hold.reserve(100)
    hold.charge(40)  # a file longer than announced: already in memory
    assert budget.used == 140 and hold.held == 140
    hold.give_back(1000)  # never more than it holds
    assert budget.used == 0 and hold.held == 0


async def test_a_message_holds_its_bytes_and_the_handlers_until_its_work_ends() -> None:
    budget = ByteBudget("download", 1000)
    release = asyncio.Event()
    seen: list[int] = []

    async def work(msg: Message) -> bool:
        await current_hold().reserve(300)  # e.g. the file the download stage reads
        seen.append(budget.used)
        await release.wait()
        return True

    inflight = InFlight("download", 10, work, budget)
    await inflight.admit(_msg(0, 200))
    await _settle()
    assert seen == [500]
    # A second message of 600 bytes does not fit beside 500: admitting it waits.
    admitted = asyncio.create_task(inflight.admit(_msg(1, 600)))
    await _settle()
    assert not admitted.done() and len(inflight.tasks) == 1
    release.set()
    await asyncio.wait_for(admitted, 1)
    await asyncio.wait_for(asyncio.gather(*inflight.tasks.values()), 1)
    await _settle()
    assert budget.used == 0


async def test_bytes_come_back_when_a_message_is_cancelled_even_before_it_ran() -> None:
    budget = ByteBudget("store", 1000)

    async def work(msg: Message) -> bool:
        await asyncio.sleep(60)
        return True

    inflight = InFlight("store", 10, work, budget)
    await inflight.admit(_msg(0, 300))
    inflight.forget([("t", 0)], cancel=True)  # its task never got to run
    await _settle()
    assert budget.used == 0 and not inflight.tasks and inflight.capacity() == 10  # its slot too


async def test_a_wait_for_the_budget_ends_when_another_message_fails() -> None:
    budget = ByteBudget("validate", 100)

    async def work(msg: Message) -> bool:
        raise RuntimeError("handler bug")  # the processor never lets this happen; bytes still return

    inflight = InFlight("validate", 10, work, budget)
    await inflight.admit(_msg(0, 90))
    await asyncio.wait_for(inflight.admit(_msg(1, 90)), 1)
    await asyncio.gather(*inflight.tasks.values(), return_exceptions=True)
    await _settle()
    assert budget.used == 0


def test_the_budget_must_hold_the_largest_document_twice() -> None:
    with pytest.raises(ValueError, match="max_in_flight_bytes"):
        Settings(max_document_bytes=40 * 1024 * 1024)
    assert Settings(max_document_bytes=40 * 1024 * 1024, max_in_flight_bytes=80 * 1024 * 1024)


async def test_taking_bytes_without_waiting_never_jumps_the_queue() -> None:
    # The engine's fast path: a message whose bytes fit now goes at once, unless someone is waiting.
    budget = ByteBudget("download", 100)
    assert budget.try_reserve(80)
    waiter = asyncio.create_task(budget.reserve(50))
    await _settle()
    assert not budget.try_reserve(10), "10 bytes fit, but a reservation of 50 asked first"
    budget.release(80)
    await asyncio.wait_for(waiter, 1)
    assert budget.try_reserve(10) and budget.used == 60


def test_a_consumer_may_not_poll_less_often_than_its_session_lasts() -> None:
    with pytest.raises(ValueError, match="max_poll_interval_ms"):
        Settings(max_poll_interval_ms=5000, session_timeout_ms=6000)
    assert keepalive_s(Settings()) == 10.0 and keepalive_s(Settings(max_poll_interval_ms=6000)) == 1.2
