"""The poll loop: fetch, dispatch, steer the lanes, pause, rebalance, shut down.

Every consumer call runs on one consumer thread (the backend's rebalance callbacks happen there,
inside ``poll``); a poll turn is one hop to that thread, not one per consumer: a hop costs ~40 µs
of CPU, and at a few hundred documents per second a turn often carries one message.

Priority records overtake a backlog: the backend polls the priority lane first, and while
priority records flow (or are in flight) the normal and retry partitions are paused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from shared.runtime import metrics as M
from shared.runtime.backend import ConsumerBackend, Part
from shared.runtime.committer import Committer
from shared.runtime.inflight import DRAIN_ON_REVOKE_S, InFlight

log = logging.getLogger("fiscalflow.runtime")

# A retry waiting for its due time holds no handler slot; this bounds how many may wait in memory
# before polling slows down.
MAX_DELAYED = 20_000
MAX_BATCH = 500


class Engine:
    def __init__(self, stage: str, consumer: ConsumerBackend, priority_topic: str, inflight: InFlight,
                 gate_open: asyncio.Event, halted: Callable[[], bool], commit_interval_s: float,
                 stopping: asyncio.Event) -> None:
        self.stage = stage
        self.consumer = consumer
        self.inflight = inflight
        self.assignment: set[Part] = set()
        self.paused_all = False
        self._paused_lanes = False
        self._priority_topic = priority_topic
        self._gate_open = gate_open
        self._halted = halted
        self.stopping = stopping
        self._kexec = ThreadPoolExecutor(1, thread_name_prefix=f"{stage}-consumer")
        self._loop: asyncio.AbstractEventLoop | None = None
        self.committer = Committer(stage, consumer, inflight.offsets, self.assignment, commit_interval_s, self.k,
                                   on_rewound=lambda parts: inflight.forget(parts, cancel=True))
        for gauge in (M.ASSIGNED, M.PAUSED):
            gauge.labels(stage).set(0)

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
            capacity = inflight.capacity()
            if capacity <= 0:
                inflight.slot.clear()
                await inflight.slot.wait()
                continue
            if not self._gate_open.is_set() or self._halted():
                await self._set_paused_all(True)
                await self._wait_gate_or_stop()
                continue
            await self._set_paused_all(False)
            prio, batch = await self.k(self.consumer.poll, min(capacity, MAX_BATCH), not self._paused_lanes)
            for msg in prio:
                inflight.dispatch(msg)  # charged on the byte budget, never waiting for it
            await self._steer_lanes(bool(prio))
            if not batch and (prio or self._paused_lanes):
                if not prio:
                    await asyncio.sleep(0.005)  # priority work in flight: poll its topic again soon
                continue
            if self.stopping.is_set() and not batch and not prio:
                break
            for msg in batch:
                if self.stopping.is_set():
                    break  # stopped while waiting for the byte budget: the rest is redelivered
                await inflight.admit(msg)
            if inflight.delayed > MAX_DELAYED:
                await asyncio.sleep(0.05)

    async def shutdown(self, committer: asyncio.Task[None], grace_s: float) -> None:
        await self.inflight.wait_all(grace_s)
        committer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await committer
        await self.committer.commit(final=True)
        await self.k(self.consumer.close)
        self._kexec.shutdown(wait=False)

    async def _wait_gate_or_stop(self) -> None:
        gate = asyncio.create_task(self._gate_open.wait())
        stop = asyncio.create_task(self.stopping.wait())
        await asyncio.wait([gate, stop], return_when=asyncio.FIRST_COMPLETED, timeout=1.0)
        gate.cancel()
        stop.cancel()

    async def _steer_lanes(self, saw_priority: bool) -> None:
        """Pause normal and retry lanes while priority records flow; resume when they stop."""
        want_paused = saw_priority or self.inflight.in_flight(
            p for p in self.assignment if p[0] == self._priority_topic)
        if want_paused != self._paused_lanes:
            parts = [p for p in self.assignment if p[0] != self._priority_topic]
            if parts:
                await self.k(self.consumer.pause if want_paused else self.consumer.resume, parts)
            self._paused_lanes = want_paused

    async def _set_paused_all(self, paused: bool) -> None:
        if paused == self.paused_all:
            return
        parts = sorted(self.assignment)
        # Resume all; the lane steering pauses the normal lanes again if needed.
        await self.k(self.consumer.pause if paused else self.consumer.resume, parts)
        if not paused:
            self._paused_lanes = False
        self.paused_all = paused
        M.PAUSED.labels(self.stage).set(1 if paused else 0)

    # ------------------------------------------------------------------ rebalances (consumer thread)
    def _on_assign(self, parts: list[Part], lanes: bool) -> None:
        for part in parts:
            self.assignment.add(part)
            self.inflight.offsets.forget(*part)
        M.ASSIGNED.labels(self.stage).set(len(self.assignment))
        if lanes:  # a new assignment starts unpaused
            self._paused_lanes = False
            self.paused_all = False
        log.info("assigned %s", sorted(self.assignment))

    def _on_revoke(self, parts: list[Part]) -> None:
        """Inside poll: finish or cancel the partitions' work, commit."""
        revoked = set(parts)
        loop = self._loop
        if loop is not None and revoked:
            fut = asyncio.run_coroutine_threadsafe(self.inflight.drain(revoked), loop)
            with contextlib.suppress(Exception):
                fut.result(DRAIN_ON_REVOKE_S + 5)
        self.committer.commit_revoked(revoked)
        self.assignment.difference_update(revoked)
        self.inflight.forget(revoked)
        M.ASSIGNED.labels(self.stage).set(len(self.assignment))

    def _on_lost(self, parts: list[Part]) -> None:
        self.assignment.difference_update(parts)
        if self._loop is not None:  # tasks are cancelled on their own loop's thread
            self._loop.call_soon_threadsafe(self.inflight.forget, parts, True)
