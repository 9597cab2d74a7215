"""A replica's condition (halted by the reject ratio, paused by a stage-wide breaker), published
through :attr:`StageSpec.on_condition` so that APIs in other processes can tell a user why their
job does not move.

A halt lasts until an operator restarts the replica; a pause ends by itself when the downstream
returns.  The reporter publishes on every change, refreshes a standing condition every
:data:`REFRESH_S` (readers ignore one not refreshed for a while: a SIGKILLed replica must not
look halted forever) and clears it when the condition ends, at start (a restart ends a halt) and
at a graceful stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

log = logging.getLogger("fiscalflow.runtime")

State = Literal["", "halted", "paused"]
CHECK_S = 0.5  # how often the runner's condition is looked at (a method call: cheap)
REFRESH_S = 5.0  # a standing condition is written again this often
PUBLISH_TIMEOUT_S = 5.0  # a hook call that hangs (PostgreSQL down) must not hold the reporter
CLEAR_ON_STOP_TIMEOUT_S = 2.0  # nor a shutdown for long: an uncleared row goes stale by itself


@dataclass(frozen=True)
class Condition:
    """What a runner says of itself: ``state`` "" when it works normally."""

    state: State = ""
    reason: str = ""


@dataclass(frozen=True)
class StageCondition:
    """One replica's condition as published (``state`` "": clear what this replica published)."""

    stage: str
    replica: str
    host: str
    namespace: str
    state: State
    reason: str
    since: datetime


ConditionHook = Callable[[StageCondition], Awaitable[None]]


class ConditionReporter:
    def __init__(self, hook: ConditionHook | None, identity: tuple[str, str, str, str],
                 current: Callable[[], Condition]) -> None:
        self._hook = hook
        self._stage, self._replica, self._host, self._namespace = identity
        self._current = current
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def start(self) -> None:
        if self._hook is not None and self._task is None:
            self._task = asyncio.create_task(self._run(), name="conditions")

    async def stop(self) -> None:
        """Stop reporting and clear this replica's condition (a stopped replica is no longer halted)."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        await self._publish(Condition(), datetime.now(UTC), CLEAR_ON_STOP_TIMEOUT_S)

    async def _run(self) -> None:
        published: Condition | None = None  # None: nothing written yet, so the first turn clears
        seen: State = ""
        since = datetime.now(UTC)
        last_write = 0.0
        while True:
            now = self._current()
            if now.state != seen:  # since the state began, whether or not that was written at once
                seen, since = now.state, datetime.now(UTC)
            due = now != published or (now.state and time.monotonic() - last_write >= REFRESH_S)
            if due and await self._publish(now, since):
                published, last_write = now, time.monotonic()
            await asyncio.sleep(CHECK_S)

    async def _publish(self, c: Condition, since: datetime, timeout_s: float = PUBLISH_TIMEOUT_S) -> bool:
        assert self._hook is not None
        sc = StageCondition(self._stage, self._replica, self._host, self._namespace, c.state, c.reason, since)
        try:
            await asyncio.wait_for(self._hook(sc), timeout_s)
        except Exception as exc:  # the store is down (maybe the very cause of a pause): try again next turn
            # Once per outage, not twice a second.
            log.log(logging.DEBUG if self._failing else logging.WARNING, "stage condition %r not published: %r",
                    c.state or "clear", exc)
            self._failing = True
            return False
        self._failing = False
        return True
