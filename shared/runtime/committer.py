"""Commits and the lag metric.

A commit names, per assigned partition, the lowest offset still in flight (or one past the
highest seen): a crash redelivers exactly the unfinished suffix.  Commits go every
``commit_interval_ms``, at a revoke (for the revoked partitions) and at a graceful stop.  Every
``LAG_EVERY_S`` it publishes the lag and rewinds the partitions whose log the broker lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from shared.runtime import metrics as M
from shared.runtime.backend import ConsumerBackend, Part
from shared.runtime.offsets import OffsetTracker

log = logging.getLogger("fiscalflow.runtime")
LAG_EVERY_S = 5.0  # consumer lag metric period

# Runs a consumer call on the consumer's own thread.
OnConsumerThread = Callable[..., Awaitable[Any]]


class Committer:
    def __init__(self, stage: str, consumer: ConsumerBackend, offsets: OffsetTracker, assignment: set[Part],
                 interval_s: float, on_thread: OnConsumerThread, on_rewound: Callable[[list[Part]], None]) -> None:
        self.stage = stage
        self._consumer = consumer
        self._offsets = offsets
        self._assignment = assignment  # the engine's, kept current by its rebalance callbacks
        self._interval_s = interval_s
        self._on_thread = on_thread
        # On the event loop: drop the rewound partitions' work and offsets (the engine's in-flight set).
        self._on_rewound = on_rewound

    async def loop(self) -> None:
        lag_every = max(1, round(LAG_EVERY_S / self._interval_s))
        ticks = 0
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.commit()
            except Exception:  # a failed commit is retried next tick; redelivery is idempotent
                log.exception("commit failed")
            ticks += 1
            if ticks % lag_every == 0:
                try:
                    await self.rewind_truncated()
                except Exception:
                    log.exception("truncated-log check failed")
                try:
                    await self._on_thread(self._publish_lag)
                except Exception:  # a metric must never stop the stage
                    log.debug("lag metric failed", exc_info=True)

    async def commit(self, final: bool = False) -> None:
        commits = [c for c in self._offsets.to_commit() if (c[0], c[1]) in self._assignment]
        if not commits:
            return
        try:
            await self._on_thread(self._consumer.commit, commits)
        except Exception as exc:
            if not final:
                raise
            log.warning("final commit failed: %s", exc)
            return
        self._offsets.mark_committed(commits)

    def commit_revoked(self, revoked: set[Part]) -> None:
        """On the consumer thread, inside a rebalance: commit what the revoked partitions finished."""
        commits = [c for c in self._offsets.to_commit() if (c[0], c[1]) in revoked]
        if commits:
            try:
                self._consumer.commit(commits)
            except Exception as exc:
                log.warning("commit on revoke failed: %s", exc)

    async def rewind_truncated(self) -> list[Part]:
        """Partitions whose log the broker lost, read again from their start.  Their offsets are
        counted afresh and their work in flight dropped, as for a lost partition: what was done on
        the lost log says nothing about the new one, whose offsets start again from 0."""
        rewound: list[Part] = await self._on_thread(self._consumer.rewind_truncated)
        if rewound:
            self._on_rewound(rewound)
            for topic, _ in rewound:
                M.PARTITION_REWINDS.labels(self.stage, topic).inc()
        return rewound

    def _publish_lag(self) -> None:
        for topic, partition, lag in self._consumer.lag(sorted(self._assignment)):
            M.CONSUMER_LAG.labels(self.stage, topic, str(partition)).set(lag)
