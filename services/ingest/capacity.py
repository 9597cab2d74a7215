"""The pipeline's measured pace: how many records it finished per second recently, from the audit trail.

Seed 000's submission answer estimates a job's duration from it, and the priority quota (seed 002)
takes its share of it.  The measurement scans the audit trail's newest events, so it is cached for a
few seconds (``PACE_TTL_S``) and shared by every request of the process: a burst of submissions
costs one query, not one each.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

RATE_WINDOW_S = 300
# The audit trail's newest events the rate is measured on (the primary key's tail: a bounded scan
# however long the trail is).
RATE_EVENTS = 200_000
MIN_FINISHED_FOR_RATE = 20
PACE_TTL_S = 5.0

_PACE_SQL = f"""
WITH recent AS (
    SELECT to_status, actor, created_at FROM audit_events
    WHERE event_id > (SELECT COALESCE(max(event_id), 0) - {RATE_EVENTS} FROM audit_events)
      AND created_at > now() - make_interval(secs => {RATE_WINDOW_S})
)
SELECT count(*) FILTER (WHERE to_status IN ('archived', 'rejected', 'duplicate')) AS finished,
       EXTRACT(EPOCH FROM now() - min(created_at)
               FILTER (WHERE to_status IN ('archived', 'rejected', 'duplicate')))::float8 AS span_s,
       count(DISTINCT actor) AS workers,
       (SELECT count(*) FROM fiscal_records WHERE status NOT IN ('archived', 'rejected', 'duplicate')
          AND status <> 'pending') AS in_flight
FROM recent
"""


@dataclass(frozen=True, slots=True)
class Pace:
    finished: int  # records that reached a final status in the last RATE_WINDOW_S
    span_s: float | None  # from the first of them to the measurement
    workers: int  # stage replicas that moved a record in the window
    in_flight: int  # records started and not finished

    @property
    def rate_per_s(self) -> float | None:
        """Records finished per second; None when too few finished to measure."""
        if self.finished < MIN_FINISHED_FOR_RATE or not self.span_s or self.span_s <= 0:
            return None
        return round(self.finished / self.span_s, 2)


class PaceMeter:
    """The last :class:`Pace`, measured again when older than ``ttl_s`` (one query at a time)."""

    def __init__(self, db: asyncpg.Pool, ttl_s: float = PACE_TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self.clock = clock
        self._pace: Pace | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()

    def _fresh(self) -> Pace | None:
        if self._pace is not None and self.clock() - self._at < self.ttl_s:
            return self._pace
        return None

    async def pace(self) -> Pace:
        if (pace := self._fresh()) is not None:
            return pace
        async with self._lock:  # the requests that found it stale wait for one measurement
            if (pace := self._fresh()) is not None:
                return pace
            async with self.db.acquire() as conn:
                row = await conn.fetchrow(_PACE_SQL)
            assert row is not None
            pace = Pace(finished=int(row["finished"]), span_s=row["span_s"], workers=int(row["workers"]),
                        in_flight=int(row["in_flight"]))
            self._pace, self._at = pace, self.clock()
            return pace
