"""The poll loop: fetch, dispatch, steer the lanes, pause, rebalance, shut down.

Every consumer call runs on one consumer thread (the backend's rebalance callbacks happen there,
inside ``poll``); a poll turn is one hop to that thread, not one per consumer: a hop costs ~40 µs
of CPU, and at a few hundred documents per second a turn often carries one message.

Priority records overtake a backlog: the backend polls the priority lane first, and while
priority records flow (or are in flight) the normal and retry partitions are paused.

A replica that cannot take work (its gate closed, halted, every handler slot taken, the byte
budget spent) still polls: after ``keepalive_s`` without a poll it pauses every partition and
polls for nothing but the group's business (librdkafka leaves the group when a consumer goes
``max.poll.interval.ms`` without a poll, and its return would cost every replica a rebalance);
once all are paused it polls every second, so a rebalance another replica starts waits no longer.
Messages polled and not yet dispatched wait in ``pending``, their offsets held uncommitted; a
rebalance drops those of the partitions it took away (their new owner reads them from the committed
offset, which is below them).

A stage with a fair key (``StageSpec.fair_key``: the download stage's region) gives each slot that
frees to the waiting key with the fewest messages in flight, and with every slot taken reads on past
the waiting messages (at most ``look_ahead`` of them) while each waiting key already holds its share:
a long run of one region's records no longer keeps the other regions' servers idle
(shared/runtime/fairness.py; decision 0028).  While messages wait, the priority lane is still polled
every ``PRIORITY_POLL_S``.
docs/decisions/0027-poll-while-unable-to-take-work.md has the why and the measurements.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from shared.runtime import metrics as M
from shared.runtime.backend import PAUSED_KEEPALIVE_S, ConsumerBackend, Part
from shared.runtime.budget import Hold
from shared.runtime.committer import Committer
from shared.runtime.fairness import KeyedPending, KeyOf
from shared.runtime.inflight import DRAIN_ON_REVOKE_S, InFlight
from shared.runtime.message import Message

log = logging.getLogger("fiscalflow.runtime")

# A retry waiting for its due time holds no handler slot; this bounds how many may wait in memory
# before polling slows down.
MAX_DELAYED = 20_000
MAX_BATCH = 500
# While messages wait for a slot the loop does not poll for more, but it still polls the priority
# lane this often, so a priority record does not queue behind up to ``look_ahead`` waiting messages.
PRIORITY_POLL_S = 0.02


class Engine:
    def __init__(self, stage: str, consumer: ConsumerBackend, priority_topic: str, inflight: InFlight,
                 gate_open: asyncio.Event, halted: Callable[[], bool], commit_interval_s: float,
                 stopping: asyncio.Event, keepalive_s: float = 10.0, fair_key: KeyOf | None = None,
                 look_ahead: int = 0, on_assignment: Callable[[frozenset[Part]], None] | None = None) -> None:
        self.stage = stage
        self.consumer = consumer
        self.inflight = inflight
        self.assignment: set[Part] = set()
        self._on_assignment = on_assignment
        self.paused_all = False
        self._priority_paused = False  # the priority lane's partitions, paused with the others or not
        self._paused_lanes = False
        self._priority_topic = priority_topic
        self._gate_open = gate_open
        self._halted = halted
        self.stopping = stopping
        # Polled, not dispatched yet (the normal and retry lanes), by fair key.
        self.pending = KeyedPending(fair_key)
        self._look_ahead = look_ahead if fair_key is not None else 0
        self._keepalive_s = keepalive_s
        self._last_poll = time.monotonic()
        self._priority_polled = 0.0
        self._paused_published = False
        self._kexec = ThreadPoolExecutor(1, thread_name_prefix=f"{stage}-consumer")
        self._loop: asyncio.AbstractEventLoop | None = None
        self.committer = Committer(stage, consumer, inflight.offsets, self.assignment, commit_interval_s, self.k,
                                   on_rewound=self._rewound)
        for gauge in (M.ASSIGNED, M.PAUSED, M.WAITING):
            gauge.labels(stage).set(0)
        self._m_waiting = M.WAITING.labels(stage)

    async def k(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a consumer call on the consumer's own thread."""
        return await asyncio.get_running_loop().run_in_executor(self._kexec, fn, *args)

    async def start(self) -> asyncio.Task[None]:
        self._loop = asyncio.get_running_loop()
        await self.k(self.consumer.subscribe, self._on_assign, self._on_revoke, self._on_lost)
        return asyncio.create_task(self.committer.loop(), name="committer")

    def stop(self) -> None:
        self.stopping.set()
        self.inflight.slot.set()

    async def poll_loop(self) -> None:
        inflight = self.inflight
        while not self.stopping.is_set():
            halted = self._halted()
            self._publish_paused(halted or not self._gate_open.is_set())
            if halted or not self._gate_open.is_set():
                await self._set_paused_all(True)
                # Only a restart ends a halt; a closed gate opens by itself.
                await self._wait(asyncio.sleep(1.0) if halted else self._gate_open.wait(), 1.0)
                await self._keepalive()
                continue
            if self.pending or inflight.capacity() <= 0:
                await self._poll_priority()
            if inflight.capacity() <= 0:
                if await self._read_ahead():
                    continue
                inflight.slot.clear()
                # Not _wait(): this wait is one per message at full load, and a timer costs less.  Woken
                # at least every 0.1 s to look at the priority lane.
                timer = asyncio.get_running_loop().call_later(min(self._keepalive_due_s(), 5 * PRIORITY_POLL_S),
                                                              inflight.slot.set)
                try:
                    await inflight.slot.wait()
                finally:
                    timer.cancel()
                await self._keepalive(keep_priority=True)  # nothing unless the last poll is keepalive_s old
                continue
            if self.pending and not self._holding_back():
                await self._admit_pending()
                continue
            prio, batch = await self._poll_turn(min(inflight.capacity(), MAX_BATCH), wait=True)
            if not batch and (prio or self._paused_lanes):
                if not prio:
                    await asyncio.sleep(0.005)  # priority work in flight: poll its topic again soon
                continue
            if self.stopping.is_set() and not batch and not prio:
                break
            if inflight.delayed > MAX_DELAYED:
                await asyncio.sleep(0.05)

    async def _poll_turn(self, limit: int, wait: bool) -> tuple[list[Message], list[Message]]:
        """One poll: priority records start at once, the others join ``pending``."""
        await self._set_paused_all(False)
        self._priority_polled = time.monotonic()
        prio, batch = await self._poll(self.consumer.poll, limit, not self._paused_lanes, wait)
        self._start_priority(prio)
        await self._steer_lanes(bool(prio))
        self._take(batch)
        return prio, batch

    def _start_priority(self, prio: list[Message]) -> None:
        for msg in prio:  # charged on the byte budget, never waiting for it
            self.inflight.dispatch(msg, self.pending.key_of(msg))

    def _take(self, batch: list[Message]) -> None:
        for msg in batch:
            self.inflight.hold_offset(msg)
        self.pending.extend(batch)
        self._m_waiting.set(len(self.pending))

    async def _poll_priority(self) -> None:
        """The priority lane alone (and the lanes' steering) while messages wait for slots or every
        slot is taken: at most every ``PRIORITY_POLL_S``, without waiting.  Not a poll of the lanes'
        consumer, so it does not put off their keepalive (nor take more of their messages).  Not while
        a keepalive has paused everything (no slot freed for ``keepalive_s``): the one-second
        keepalives serve the group then, and the priority lane waits for the next slot, as before."""
        if self._priority_paused or time.monotonic() - self._priority_polled < PRIORITY_POLL_S \
                or self.stopping.is_set():
            return
        self._priority_polled = time.monotonic()
        prio = await self.k(self.consumer.poll_priority, MAX_BATCH)
        self._start_priority(prio)
        if not self.paused_all:  # else the lanes stay paused until the next poll of the lanes resumes all
            await self._steer_lanes(bool(prio))

    async def _read_ahead(self) -> bool:
        """Every slot is taken: with a fair key, read on past the waiting messages while each waiting
        key holds its share of the slots (another key's records may lie further on), at most
        ``look_ahead`` of them waiting.  True when the poll brought something (without waiting for it)."""
        room = self._look_ahead - len(self.pending)
        if room <= 0 or self._paused_lanes or self.stopping.is_set() or not self._gate_open.is_set() \
                or self.inflight.delayed > MAX_DELAYED \
                or not self.pending.all_served(self.inflight.by_key, self.inflight.max_in_flight):
            return False
        prio, batch = await self._poll_turn(min(room, MAX_BATCH), wait=False)
        return bool(prio or batch)

    def _holding_back(self) -> bool:
        """Priority records flow (the lanes are paused for them) and this replica reads ahead: what it
        read ahead waits as well, as the lanes' unread messages do, until they stop.  Without this a
        read-ahead backlog kept every slot busy with normal work while priority records went through
        it and the stages after it (decision 0028's addendum).  Without read-ahead the few messages
        polled before the pause still start, as they always did."""
        return self._paused_lanes and self._look_ahead > 0

    def _publish_paused(self, paused: bool) -> None:
        """The gauge says why the stage takes no work (a breaker, a halt), not that a keepalive paused it."""
        if paused != self._paused_published:
            self._paused_published = paused
            M.PAUSED.labels(self.stage).set(1 if paused else 0)

    async def _admit_pending(self) -> None:
        """Dispatch the pending messages while there are handler slots, each once its bytes fit the
        budget; a long wait for them keeps the consumer alive meanwhile."""
        inflight = self.inflight
        while self.pending and inflight.capacity() > 0 and not self.stopping.is_set() and not self._holding_back():
            nxt = self.pending.next(inflight.by_key)
            assert nxt is not None
            key, msg = nxt
            got = inflight.reserve_now(msg) or await self._reserve(msg)
            if got is None:
                return
            hold, due = got
            if self.pending.remove(key, msg):
                inflight.start(msg, hold, due, key, held=True)
                self._m_waiting.set(len(self.pending))
            else:  # its partition was taken away while it waited
                hold.release_all()
            if not self._gate_open.is_set() or self._halted():
                return

    async def _reserve(self, msg: Message) -> tuple[Hold, int] | None:
        """Wait for ``msg``'s bytes, polling to stay in the group meanwhile; None when stopped."""
        reserving = asyncio.ensure_future(self.inflight.reserve(msg))
        while not await self._wait(asyncio.shield(reserving), self._keepalive_due_s()):
            if self.stopping.is_set():
                reserving.cancel()  # stopped while waiting for the byte budget: redelivered
                with contextlib.suppress(asyncio.CancelledError):
                    hold, _ = await reserving  # granted just before the cancel
                    hold.release_all()
                return None
            await self._keepalive(keep_priority=True)
        return reserving.result()

    async def _wait(self, aw: Awaitable[object], within_s: float) -> bool:
        """Wait for ``aw`` at most ``within_s``; False when it did not finish (or the engine stops)."""
        task = asyncio.ensure_future(aw)
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait([task, stop], return_when=asyncio.FIRST_COMPLETED, timeout=within_s)
        finally:
            stop.cancel()
            if not task.done():
                task.cancel()
        return task.done() and not task.cancelled()

    async def _poll(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await self.k(fn, *args)
        finally:
            self._last_poll = time.monotonic()

    def _keepalive_due_s(self) -> float:
        """How old the last poll may get: ``keepalive_s`` while the partitions fetch (a stall shorter
        than that is not worth dropping what was fetched), a second once they are all paused."""
        return min(self._keepalive_s, PAUSED_KEEPALIVE_S) if self.paused_all else self._keepalive_s

    async def _keepalive(self, keep_priority: bool = False) -> None:
        """A poll with every partition paused, when the last one is due (``_keepalive_due_s``): it
        serves the group (rebalances included) and takes no new work.  With ``keep_priority`` (every
        slot taken, not halted nor closed) the priority lane stays unpaused: its records still start
        (:meth:`_poll_priority`), as they do beyond the slots at any time."""
        if time.monotonic() - self._last_poll < self._keepalive_due_s() or self.stopping.is_set():
            return
        await self._set_paused_all(True, keep_priority)
        prio, lanes = await self._poll(self._keepalive_turn, keep_priority)
        if keep_priority:
            self._start_priority(prio)
            self._take(lanes)
        else:
            self._take([*prio, *lanes])

    def _keepalive_turn(self, keep_priority: bool) -> tuple[list[Message], list[Message]]:
        """On the consumer thread.  A partition assigned inside this poll starts unpaused: paused
        again at once (the priority lane's kept unpaused with ``keep_priority``).  Whatever the poll
        returned anyway (fetched in between) waits in ``pending``, or starts if of the kept lane."""
        prio, lanes = self.consumer.keepalive()
        self.consumer.pause(sorted(p for p in self.assignment
                                   if not keep_priority or p[0] != self._priority_topic))
        return prio, lanes

    async def shutdown(self, committer: asyncio.Task[None], grace_s: float) -> None:
        await self.inflight.wait_all(grace_s)
        committer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await committer
        await self.committer.commit(final=True)
        await self.k(self.consumer.close)
        self._kexec.shutdown(wait=False)

    async def _steer_lanes(self, saw_priority: bool) -> None:
        """Pause normal and retry lanes while priority records flow; resume when they stop."""
        want_paused = saw_priority or self.inflight.in_flight(
            p for p in self.assignment if p[0] == self._priority_topic)
        if want_paused != self._paused_lanes:
            parts = [p for p in self.assignment if p[0] != self._priority_topic]
            if parts:
                await self.k(self.consumer.pause if want_paused else self.consumer.resume, parts)
            self._paused_lanes = want_paused

    async def _set_paused_all(self, paused: bool, keep_priority: bool = False) -> None:
        """Pause every partition (with ``keep_priority`` every one but the priority lane's), or resume
        them all; the lane steering pauses the normal lanes again if needed."""
        prio_paused = paused and not keep_priority
        if paused == self.paused_all and prio_paused == self._priority_paused:
            return
        prio = sorted(p for p in self.assignment if p[0] == self._priority_topic)
        lanes = sorted(p for p in self.assignment if p[0] != self._priority_topic)
        if not paused:
            await self.k(self.consumer.resume, prio + lanes)
            self._paused_lanes = False
        else:
            await self.k(self.consumer.pause, lanes + (prio if prio_paused else []))
            if self._priority_paused and not prio_paused:
                await self.k(self.consumer.resume, prio)
        self.paused_all = paused
        self._priority_paused = prio_paused

    # ------------------------------------------------------------------ rebalances (consumer thread)
    def _on_assign(self, parts: list[Part], lanes: bool) -> None:
        for part in parts:
            self.assignment.add(part)
            self.inflight.offsets.forget(*part)
        M.ASSIGNED.labels(self.stage).set(len(self.assignment))
        if lanes and not self.paused_all:  # a new assignment starts unpaused
            self._paused_lanes = False  # (while all are paused, only a keepalive polls: it pauses them again)
        log.info("assigned %s", sorted(self.assignment))
        self._assignment_changed()

    def _on_revoke(self, parts: list[Part]) -> None:
        """Inside poll: finish or cancel the partitions' work, commit."""
        revoked = set(parts)
        loop = self._loop
        if loop is not None and revoked:
            fut = asyncio.run_coroutine_threadsafe(self.inflight.drain(revoked), loop)
            with contextlib.suppress(Exception):
                fut.result(DRAIN_ON_REVOKE_S + 5)
        self.committer.commit_revoked(revoked)
        self._drop_pending(revoked)
        self.assignment.difference_update(revoked)
        self.inflight.forget(revoked)
        M.ASSIGNED.labels(self.stage).set(len(self.assignment))
        self._assignment_changed()

    def _on_lost(self, parts: list[Part]) -> None:
        self._drop_pending(set(parts))
        self.assignment.difference_update(parts)
        if self._loop is not None:  # tasks are cancelled on their own loop's thread
            self._loop.call_soon_threadsafe(self.inflight.forget, parts, True)
        self._assignment_changed()

    def _assignment_changed(self) -> None:
        """Tell the stage (``StageSpec.on_assignment``) what it holds now, on its loop's thread
        (the consumer's callbacks run on the consumer's)."""
        if self._on_assignment is not None and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nothing to size any more
                self._loop.call_soon_threadsafe(self._on_assignment, frozenset(self.assignment))

    def _drop_pending(self, parts: set[Part]) -> None:
        self.pending.drop(parts)
        self._m_waiting.set(len(self.pending))

    def _rewound(self, parts: list[Part]) -> None:
        """On the loop: the broker lost these partitions' logs and they are read again from the start.
        Their waiting messages go too: their offsets would collide with the new log's."""
        self._drop_pending(set(parts))
        self.inflight.forget(parts, cancel=True)
