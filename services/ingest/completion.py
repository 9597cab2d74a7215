"""Job completion, observed once per job even when nobody reads the job (seed 000's metrics).

A job's status is derived (shared/db/jobs.py): whoever reads a finished job first writes its
completion (the report service's job checks, a job view).  This sweep, every ``SWEEP_S`` on each
ingest replica:

1. completes the running jobs whose every member is final, a page of them per sweep (oldest
   first, then on from where the last page ended, round and round): no job stays running for want
   of a reader;
2. claims the completed jobs not yet observed, whoever completed them: one UPDATE ... RETURNING
   (``jobs.observed_at``) lets exactly one replica claim each job, which then logs its throughput
   once and observes ``fiscalflow_job_duration_seconds`` (submission to completion) once.

A replica that dies between the claim and the observation loses that one observation, as it loses
every metric it held.
What the sweep costs: decision 0022.
"""

from __future__ import annotations

import datetime as dt
import logging

import asyncpg

from services.ingest.metrics import JOB_DURATION
from shared.db import jobs

log = logging.getLogger("fiscalflow.ingest.jobs")

SWEEP_S = 5.0
RUNNING_PER_SWEEP = 500  # running jobs checked for completion per sweep (each stops at its first unfinished member)
CLAIMED_PER_SWEEP = 100  # completed jobs logged and measured per sweep (the rest the next sweep)


class JobCompletions:
    def __init__(self, pool: asyncpg.Pool, running_per_sweep: int = RUNNING_PER_SWEEP,
                 claimed_per_sweep: int = CLAIMED_PER_SWEEP) -> None:
        self.pool = pool
        self.running_per_sweep = running_per_sweep
        self.claimed_per_sweep = claimed_per_sweep
        self._after: tuple[dt.datetime, str] | None = None  # where the next page of running jobs starts

    async def tick(self) -> None:
        await self.complete()
        while len(await self.observe()) == self.claimed_per_sweep:
            pass  # a backlog of completions (the ingest stage was down): drain it now

    async def complete(self) -> list[str]:
        """Complete the finished jobs of the next page of running ones."""
        page = await jobs.running_jobs(self.pool, self._after, self.running_per_sweep)
        self._after = page[-1] if len(page) == self.running_per_sweep else None  # the end: from the start again
        return await jobs.complete_finished(self.pool, [job_id for _, job_id in page]) if page else []

    async def observe(self) -> list[jobs.CompletedJob]:
        claimed = await jobs.claim_completed(self.pool, self.claimed_per_sweep)
        for job in claimed:
            JOB_DURATION.labels(job.priority).observe(job.duration_s)
            rate = job.throughput_per_s
            log.info("job %s completed: %d records (%d processed, %d failed) in %.1f s, %s records/s (%s priority)",
                     job.job_id, job.record_count, job.processed, job.failed, job.duration_s,
                     f"{rate:.1f}" if rate is not None else "-", job.priority, extra={"job_id": job.job_id})
        return claimed
