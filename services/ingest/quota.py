"""Seed 002's priority quota: priority jobs may take a share of the pipeline's measured capacity.

The priority lane overtakes every backlog (decision 0001), so unbounded priority traffic would starve
normal jobs.  A priority job is admitted while the priority records admitted over the last window
(``FISCALFLOW_PRIORITY_WINDOW_S``) stay within ``share × capacity × window`` records; beyond it the
API answers 429 with ``Retry-After``: when enough of the window's records age out for this job.

- capacity: the records the pipeline finished per second over the last five minutes (the audit
  trail, services/ingest/capacity.py, cached a few seconds), never less than
  ``FISCALFLOW_PRIORITY_CAPACITY_FLOOR_PER_S``: an idle pipeline measures nothing (or a trickle,
  which is demand, not capacity), and priority jobs must still go through then.
- A job bigger than the whole window's share would never fit: it is admitted when no other
  priority record counts, and counts for as long as the share takes to finish it
  (``records / (share × capacity)`` seconds) instead of one window, so big priority jobs do not
  take more than the share either, only later.
- The window is the ``jobs`` table itself (priority jobs' creation times and record counts), read
  under a transaction-scoped advisory lock in the transaction that creates the job: every ingest
  replica counts the same admissions, and two submissions cannot both take the last room.
- How long a job counts is worked out with the capacity of the moment of the check.

Why this way, and what the check costs: decision 0022
(docs/decisions/0022-priority-share-and-job-completion-sweep.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg

from services.ingest.capacity import PaceMeter
from shared.settings import Settings

QUOTA_LOCK = 0x46465051  # "FFPQ": one priority admission at a time across replicas


@dataclass(frozen=True, slots=True)
class Verdict:
    admitted: bool
    retry_after_s: float  # 0 when admitted: seconds until this job would fit
    counted: int  # priority records counting against the share now (before this job)
    allowance: float  # records the share allows over one window


def counts_for_s(records: int, rate_per_s: float, window_s: float) -> float:
    """How long an admitted job counts against the share: one window, or as long as the share takes
    to finish it when it is bigger than the window's allowance."""
    return max(window_s, records / rate_per_s)


def decide(admitted: Iterable[tuple[float, int]], records: int, rate_per_s: float, window_s: float) -> Verdict:
    """May a priority job of ``records`` go now?  ``admitted``: the earlier priority jobs as (age in
    seconds, records); ``rate_per_s``: the share's records per second (share × capacity)."""
    allowance = rate_per_s * window_s
    # Seconds until each earlier job stops counting, for those that still count.
    counting = sorted((left, n) for age, n in admitted
                      if (left := counts_for_s(n, rate_per_s, window_s) - age) > 0 and n > 0)
    counted = sum(n for _, n in counting)
    # A job that fits the allowance needs room for itself; a bigger one goes alone.
    most = allowance - records if records <= allowance else 0.0
    if counted <= most:
        return Verdict(True, 0.0, counted, allowance)
    still = counted
    for left, n in counting:
        still -= n
        if still <= most:
            return Verdict(False, left, counted, allowance)
    raise AssertionError("unreachable: every earlier job stops counting")  # pragma: no cover


class PriorityQuota:
    def __init__(self, settings: Settings, pace: PaceMeter, max_job_records: int) -> None:
        self.share = settings.priority_share
        self.window_s = settings.priority_window_s
        self.floor_per_s = settings.priority_capacity_floor_per_s
        self.pace = pace
        # No job counts longer than the biggest the API takes would: the index range scanned.
        self.max_job_records = max_job_records

    async def capacity(self) -> tuple[float, bool]:
        """Records per second the share is taken of, and whether it was measured (not the floor).
        Asked before the admission's transaction: it may need a connection of its own."""
        measured = (await self.pace.pace()).rate_per_s
        if measured is not None and measured >= self.floor_per_s:
            return measured, True
        return self.floor_per_s, False

    async def check(self, conn: asyncpg.Connection, records: int, capacity: float) -> Verdict:
        """In the transaction that then creates the job (the lock is held until it ends)."""
        rate = self.share * capacity
        await conn.execute("SELECT pg_advisory_xact_lock($1)", QUOTA_LOCK)
        rows = await conn.fetch(
            "SELECT EXTRACT(EPOCH FROM clock_timestamp() - created_at)::float8 AS age_s, record_count FROM jobs"
            " WHERE priority = 'high' AND created_at > clock_timestamp() - make_interval(secs => $1::float8)"
            " AND created_at > clock_timestamp()"
            " - make_interval(secs => greatest($2::float8, record_count / $3::float8))",
            counts_for_s(self.max_job_records, rate, self.window_s), self.window_s, rate)
        return decide([(r["age_s"], r["record_count"]) for r in rows], records, rate, self.window_s)

    def explain(self, verdict: Verdict, records: int, capacity: float, measured: bool) -> str:
        how = ("measured over the last five minutes" if measured
               else "the floor, FISCALFLOW_PRIORITY_CAPACITY_FLOOR_PER_S")
        fits = ("" if records <= verdict.allowance else
                "; a job bigger than the window's share goes only when no other priority job counts")
        return (f"priority share used: {verdict.counted} priority records count against it, it allows "
                f"{math.floor(verdict.allowance)} per {self.window_s:g} s ({self.share * 100:g} % of {capacity:.1f} "
                f"records/s, {how}) and this job has {records}{fits}; retry in "
                f"{max(1, math.ceil(verdict.retry_after_s))} s, or submit it with priority normal")
