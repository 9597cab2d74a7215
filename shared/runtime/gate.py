"""Circuit breakers between a stage and its downstreams.

A downstream that is a message's own (its breaker key, e.g. ``sftp:north``: the stage's
``per_message_downstreams`` in shared/topics.py) defers just the messages that need it; any other
(S3, PostgreSQL...) closes the stage gate: the engine pauses every partition until a probe may go.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from shared.runtime import metrics as M
from shared.runtime.breaker import BreakerBoard, BreakerState, CircuitBreaker
from shared.runtime.message import Message
from shared.runtime.stage import StageSpec

log = logging.getLogger("fiscalflow.runtime")


class BreakerGate:
    def __init__(self, spec: StageSpec, failure_threshold: int, reset_s: float, on_reopen: Callable[[], None],
                 stopping: asyncio.Event) -> None:
        self.stage = spec.stage.value
        self.board = BreakerBoard(failure_threshold, reset_s)
        self._breaker_key = spec.breaker_key
        self._own = spec.own_downstreams
        self._on_reopen = on_reopen
        self.open = asyncio.Event()  # set: work may pass
        self.open.set()
        self._stopping = stopping  # a stopping stage does not pause any more
        self.last_error = ""

    def stage_wide(self, breaker: CircuitBreaker) -> bool:
        return not breaker.name.startswith(self._own)

    def key_breaker(self, msg: Message) -> CircuitBreaker | None:
        if self._breaker_key is None:
            return None
        key = self._breaker_key(msg)
        return self.board.get(key) if key else None

    async def wait_open(self) -> None:
        while not self.open.is_set():
            await self.open.wait()

    def failed(self, downstream: str | None, probe: bool) -> bool:
        """A transient failure of ``downstream``; True when it cost no attempt (it was a probe, or
        its breaker was not closed)."""
        if downstream is None:
            return probe
        breaker = self.board.get(downstream)
        was_probe = probe or breaker.state is not BreakerState.CLOSED
        breaker.record_failure()
        self._publish(breaker)
        self._update()
        return was_probe

    def succeeded(self, key_breaker: CircuitBreaker | None) -> None:
        if key_breaker is not None and key_breaker.state is not BreakerState.CLOSED:
            key_breaker.record_success()
            self._publish(key_breaker)
        for b in self.board.breakers.values():
            if b.state is not BreakerState.CLOSED and self.stage_wide(b):
                b.record_success()
                self._publish(b)
                log.info("stage %s resumed: %s is back", self.stage, b.name)

    def _update(self) -> None:
        blocked = any(b.state is BreakerState.OPEN and self.stage_wide(b) for b in self.board.breakers.values())
        if blocked and self.open.is_set() and not self._stopping.is_set():
            log.warning("stage %s paused: downstream down (%s)", self.stage, self.last_error)
            self.open.clear()
            asyncio.get_running_loop().call_later(self._reopen_in(), self._reopen)

    def _reopen_in(self) -> float:
        waits = [b.next_probe_in() for b in self.board.breakers.values()
                 if b.state is BreakerState.OPEN and self.stage_wide(b)]
        return max(0.05, min(waits) if waits else 0.05)

    def _reopen(self) -> None:
        # Half-open: let work through; the first failure re-opens the breaker (and the gate)
        # with a longer reset time, a success closes it.
        for b in self.board.breakers.values():
            if b.state is BreakerState.OPEN and self.stage_wide(b):
                b.allow()
                self._publish(b)
        self.open.set()
        self._on_reopen()

    def _publish(self, b: CircuitBreaker) -> None:
        M.BREAKER_STATE.labels(self.stage, b.name).set(int(b.state))

    def down(self) -> list[str]:
        """The stage-wide downstreams whose breaker is not closed (the stage is paused for them)."""
        return sorted(b.name for b in self.board.breakers.values()
                      if b.state is not BreakerState.CLOSED and self.stage_wide(b))

    def states(self) -> dict[str, str]:
        return {n: b.state.name.lower() for n, b in self.board.breakers.items()}
