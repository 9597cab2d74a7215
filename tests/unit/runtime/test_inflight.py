"""In-flight bookkeeping and the committer: commits stay below the lowest offset still in flight."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from shared.runtime import headers as H
from shared.runtime.committer import Committer
from shared.runtime.inflight import InFlight, now_ms
from shared.runtime.message import Message


def _msg(offset: int, partition: int = 0, headers: dict[str, str] | None = None) -> Message:
    return Message("t", partition, offset, b"k", b"v", headers or {}, 0)


class _Consumer:
    """Records commits (the committer's only broker call besides lag)."""

    def __init__(self) -> None:
        self.commits: list[list[tuple[str, int, int]]] = []
        self.fail = False
        self.truncated: list[tuple[str, int]] = []  # what the truncation watch found

    def commit(self, offsets: Sequence[tuple[str, int, int]]) -> None:
        if self.fail:
            raise RuntimeError("broker away")
        self.commits.append(sorted(offsets))

    def lag(self, parts: Sequence[tuple[str, int]]) -> list[tuple[str, int, int]]:
        return []

    def rewind_truncated(self) -> list[tuple[str, int]]:
        out, self.truncated = self.truncated, []
        return out


async def _direct(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


async def test_commits_stop_below_the_lowest_offset_in_flight_and_skip_unassigned_partitions() -> None:
    gates = {o: asyncio.Event() for o in range(4)}

    async def work(msg: Message) -> bool:
        await gates[msg.offset].wait()
        return True

    inflight = InFlight("validate", 10, work)
    consumer = _Consumer()
    assignment = {("t", 0)}
    committer = Committer("validate", consumer, inflight.offsets, assignment, 0.1, _direct,  # type: ignore[arg-type]
                          on_rewound=lambda parts: inflight.forget(parts, cancel=True))
    for o in range(4):
        inflight.dispatch(_msg(o))
    inflight.dispatch(_msg(9, partition=1))  # not (any more) assigned
    assert inflight.capacity() == 5
    gates[1].set()
    gates[3].set()
    await asyncio.sleep(0.01)
    await committer.commit()
    assert consumer.commits == [[("t", 0, 0)]], "offset 0 still runs: nothing past it is committed"
    gates[0].set()
    await asyncio.sleep(0.01)
    await committer.commit()
    assert consumer.commits[-1] == [("t", 0, 2)]
    gates[2].set()
    await asyncio.sleep(0.01)
    await committer.commit()
    assert consumer.commits[-1] == [("t", 0, 4)]
    n = len(consumer.commits)
    await committer.commit()
    assert len(consumer.commits) == n, "nothing new: no commit"
    inflight.forget([("t", 1)], cancel=True)


async def test_a_failed_commit_is_made_again_and_a_final_one_only_logs() -> None:
    async def work(msg: Message) -> bool:
        return True

    inflight = InFlight("validate", 10, work)
    consumer = _Consumer()
    committer = Committer("validate", consumer, inflight.offsets, {("t", 0)}, 0.1, _direct,  # type: ignore[arg-type]
                          on_rewound=lambda parts: inflight.forget(parts, cancel=True))
    inflight.dispatch(_msg(0))
    await asyncio.sleep(0.01)
    consumer.fail = True
    try:
        await committer.commit()
    except RuntimeError:
        pass
    else:
        raise AssertionError("a failed periodic commit raises (the loop logs it)")
    await committer.commit(final=True)  # logs, does not raise
    consumer.fail = False
    await committer.commit()
    assert consumer.commits == [[("t", 0, 1)]]


async def test_a_message_left_unfinished_holds_its_partition_and_a_retry_waits_without_a_slot() -> None:
    async def work(msg: Message) -> bool:
        return msg.offset != 0  # offset 0: not delivered, left for redelivery

    inflight = InFlight("validate", 1, work)
    inflight.dispatch(_msg(0))
    inflight.dispatch(_msg(1, headers={H.DUE_AT_MS: str(now_ms() + 100)}))
    assert (inflight.handling, inflight.delayed) == (1, 1), "a retry not yet due takes no slot"
    await asyncio.sleep(0.2)
    assert (inflight.handling, inflight.delayed) == (0, 0) and not inflight.tasks
    assert inflight.offsets.to_commit() == [("t", 0, 0)], "the unfinished message holds the commit"


async def test_a_partition_whose_log_was_lost_drops_its_old_work_and_counts_its_new_offsets_from_zero() -> None:
    """The broker lost partition 0's log; the consumer moved to its start (the backend's truncation
    watch).  The old messages still running must not finish into the new log's bookkeeping: an old
    offset 1 marked done would let the committer pass a new offset 1 still in flight."""
    gates = {o: asyncio.Event() for o in range(3)}
    cancelled: list[int] = []

    async def work(msg: Message) -> bool:
        try:
            await gates[msg.offset].wait()
        except asyncio.CancelledError:
            cancelled.append(msg.offset)
            raise
        return True

    inflight = InFlight("validate", 10, work)
    consumer = _Consumer()
    committer = Committer("validate", consumer, inflight.offsets, {("t", 0)}, 0.1, _direct,  # type: ignore[arg-type]
                          on_rewound=lambda parts: inflight.forget(parts, cancel=True))
    for o in range(3):
        inflight.dispatch(_msg(o))  # offsets 40..42 of the lost log, say; numbers reused below
    gates[0].set()
    await asyncio.sleep(0.01)
    await committer.commit()
    assert consumer.commits == [[("t", 0, 1)]]

    consumer.truncated = [("t", 0)]
    assert await committer.rewind_truncated() == [("t", 0)]
    await asyncio.sleep(0.01)
    assert sorted(cancelled) == [1, 2] and inflight.capacity() == 10
    assert await committer.rewind_truncated() == []  # reported once

    gates = {o: asyncio.Event() for o in range(3)}  # the new log: offsets 0, 1, 2 again
    for o in range(3):
        inflight.dispatch(_msg(o))
    gates[0].set()
    await asyncio.sleep(0.01)
    await committer.commit()
    assert consumer.commits[1:] == [[("t", 0, 1)]], "counted afresh: offset 1 of the new log is still running"
    gates[1].set()
    gates[2].set()
    await asyncio.sleep(0.01)
    await committer.commit()
    assert consumer.commits[-1] == [("t", 0, 3)]
