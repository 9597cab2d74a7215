"""Jobs: a submitted batch of records.  Membership is stored; counts are always derived from the
members' current statuses (never incremented), so a redelivered message cannot count twice."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import asyncpg

from shared.db import conditions
from shared.db.outage import transient_when_down
from shared.domain.records import FINAL_STATUSES, Priority, RecordStatus
from shared.topics import TOPOLOGY, Stage

# A member with no registry row was dead-lettered as UNKNOWN_RECORD by the ingest stage: final.
UNKNOWN = "unknown"

# The stages whose input may hold the message a record in each unfinished status waits for (a
# downloaded record waits for validate, then store: no transition in between).
WAITS_FOR: dict[RecordStatus, tuple[Stage, ...]] = {
    RecordStatus.PENDING: (Stage.INGEST,),
    RecordStatus.DOWNLOADING: (Stage.DOWNLOAD,),
    RecordStatus.DOWNLOADED: (Stage.VALIDATE, Stage.STORE),
}


def _ahead(stage: Stage | None) -> tuple[Stage, ...]:
    """``stage`` and every stage after it, up to the report (which a job does not wait for: it is
    complete once its records' statuses are final)."""
    return () if stage is None or stage is Stage.REPORT else (stage, *_ahead(TOPOLOGY[stage].next))


# The stages a record in each unfinished status still has to pass.
STAGES_AHEAD: dict[str, tuple[Stage, ...]] = {status: _ahead(stages[0]) for status, stages in WAITS_FOR.items()}


@dataclass(frozen=True, slots=True)
class JobProfile:
    """How a job's records are judged and retried (seed 000): travels on their messages."""

    validation_rules: str = "strict"
    max_retries: int | None = None  # None: the stages' own budget


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    status: str  # running | completed
    priority: str
    record_count: int
    counts: dict[str, int] = field(default_factory=dict)
    created_at: str = ""
    completed_at: str | None = None
    callback_url: str | None = None
    source: dict[str, Any] | None = None
    profile: JobProfile = field(default_factory=JobProfile)
    stalled: int = 0  # members not final with no transition for longer than the re-drive lease
    # Halted or paused replicas of the stages this job's unfinished records still need.
    blocked_stages: list[conditions.StageConditionRow] = field(default_factory=list)

    @property
    def stages_needed(self) -> set[str]:
        return {st.value for status, n in self.counts.items() if n for st in STAGES_AHEAD.get(status, ())}

    @property
    def finished(self) -> int:
        final = {s.value for s in FINAL_STATUSES} | {UNKNOWN}
        return sum(n for s, n in self.counts.items() if s in final)

    @property
    def progress(self) -> float:
        return 1.0 if self.record_count == 0 else round(self.finished / self.record_count, 4)

    @property
    def processed(self) -> int:
        """Members done with a document in the archive (archived, or a duplicate of an archived one)."""
        return self.counts.get(RecordStatus.ARCHIVED.value, 0) + self.counts.get(RecordStatus.DUPLICATE.value, 0)

    @property
    def failed(self) -> int:
        return self.counts.get(RecordStatus.REJECTED.value, 0)

    @property
    def duration_s(self) -> float | None:
        """Submission to completion, or to now while it runs."""
        if not self.created_at:
            return None
        start = dt.datetime.fromisoformat(self.created_at)
        end = dt.datetime.fromisoformat(self.completed_at) if self.completed_at else dt.datetime.now(start.tzinfo)
        return round(max(0.0, (end - start).total_seconds()), 3)

    def to_json(self) -> dict[str, Any]:
        duration = self.duration_s
        throughput = round(self.finished / duration, 2) if duration else None
        return {"job_id": self.job_id, "status": self.status, "priority": self.priority,
                "processed": self.processed, "failed": self.failed, "duration_s": duration,
                "throughput_per_s": throughput,
                "record_count": self.record_count, "counts": self.counts, "finished": self.finished,
                "progress": self.progress, "created_at": self.created_at, "completed_at": self.completed_at,
                "callback": self.callback_url is not None, "source": self.source, "stalled": self.stalled,
                "validation_rules": self.profile.validation_rules, "max_retries": self.profile.max_retries,
                "blocked_stages": [c.to_json() for c in self.blocked_stages]}


async def create_job(conn: asyncpg.Connection, job_id: str, record_ids: Sequence[str], priority: Priority,
                     callback_url: str | None = None, source: dict[str, Any] | None = None,
                     profile: JobProfile | None = None) -> None:
    """The job row and its members, in one transaction (members by COPY)."""
    unique = list(dict.fromkeys(record_ids))
    async with conn.transaction():
        await insert_job(conn, job_id, len(unique), priority, callback_url, source, profile)
        await add_job_members(conn, job_id, unique)


async def insert_job(conn: asyncpg.Connection, job_id: str, record_count: int, priority: Priority,
                     callback_url: str | None = None, source: dict[str, Any] | None = None,
                     profile: JobProfile | None = None) -> None:
    """The job row alone (its members: :func:`add_job_members`, in the same transaction).

    Until that transaction commits, an ingest consumer that meets one of the job's records waits
    on this row (:func:`add_members` inserts the job first, ON CONFLICT) and only then reads the
    job's profile: the API publishes a job's ids while its members are copied (services/ingest/api.py)."""
    profile = profile or JobProfile()
    await conn.execute(
        "INSERT INTO jobs (job_id, priority, callback_url, source, record_count, validation_rules, max_retries)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        job_id, priority.value, callback_url, json.dumps(source) if source else None, record_count,
        profile.validation_rules, profile.max_retries)


async def add_job_members(conn: asyncpg.Connection, job_id: str, unique_ids: Sequence[str]) -> None:
    """A new job's members (``unique_ids``: no id twice) by COPY, and its rejected ones back to
    pending; in the transaction that inserted the job row.

    Copied in key order: the primary key's entries (job, record) then all go to its rightmost leaf
    (PostgreSQL's fast path for ascending inserts) and the record index's land close together;
    100,000 random-order ids (UUIDs) took 25 % longer to COPY than the same ids sorted."""
    if unique_ids:
        await conn.copy_records_to_table("job_records", records=zip(repeat(job_id), sorted(unique_ids)),
                                         columns=["job_id", "record_id"])
        await conn.execute(_REQUEUE_SQL, job_id)


# A job names records rejected by an earlier pass: they go back to pending in the job's own
# transaction, so the job counts them as waiting (not as final from the old pass: the job would
# otherwise complete, and call back, before its records were even retried) and the reconciler
# re-sends them if the job's request is lost.  Audited, once per record and job.
_REQUEUE_SQL = """
WITH moved AS (
    UPDATE fiscal_records r SET status = 'pending', reason = NULL, job_id = $1::uuid, updated_at = now()
    FROM job_records m
    WHERE m.job_id = $1::uuid AND m.record_id = r.record_id AND r.status = 'rejected'
    RETURNING r.record_id
)
INSERT INTO audit_events (record_id, stage, from_status, to_status, reason, detail, actor, idempotency_key)
SELECT record_id, 'ingest', 'rejected', 'pending', NULL, jsonb_build_object('by', 'job', 'job_id', $1::text),
       'ingest-api', record_id || ':requeued:' || $1::text
FROM moved
ON CONFLICT (idempotency_key) DO NOTHING
"""


@transient_when_down
async def add_members(db: asyncpg.Connection | asyncpg.Pool, pairs: Sequence[tuple[str, str]]) -> None:
    """Idempotent membership for ids published straight to Kafka with a job id.

    One statement, so atomic without BEGIN and COMMIT: the ingest stage calls this for every
    batch of requests that name a job, and a transaction of two INSERTs was four round trips
    (batches of 10 members already there, three runs: client 313-353 us and server 150-175 us
    per batch; as one statement 129-139 and 125-130)."""
    if not pairs:
        return
    # A producer may name a job the API never saw: it exists from its first record on.  The job
    # comes first: the members are selected across a count of the jobs' INSERT, so no member is
    # inserted before it is done, and while the API's transaction still holds the job's row (it
    # copies the job's members after it) this waits on that row holding no member of its own, as
    # the transaction's first INSERT did: the API's copy never waits on us in turn
    # (tests/integration/ingest/test_pipelined_submit.py).  The members' check (migration 0097, a
    # trigger after the statement) sees the job inserted here.  Jobs in id order, as the members
    # are: two replicas creating the same new jobs wait on each other in one order, never deadlock.
    await db.execute(
        "WITH named AS (INSERT INTO jobs (job_id) SELECT j FROM unnest($1::uuid[]) AS j GROUP BY j ORDER BY j"
        "               ON CONFLICT DO NOTHING RETURNING job_id)"
        " INSERT INTO job_records (job_id, record_id)"
        " SELECT m.job_id, m.record_id FROM unnest($1::uuid[], $2::text[]) AS m(job_id, record_id),"
        "      (SELECT count(*) FROM named) AS done"
        " ON CONFLICT DO NOTHING",
        [j for j, _ in pairs], [r for _, r in pairs])


@transient_when_down
async def profiles(db: asyncpg.Connection | asyncpg.Pool, job_ids: Sequence[str]) -> dict[str, JobProfile]:
    """The profiles of the jobs that have one other than the default (a job unknown here has none)."""
    rows = await db.fetch(
        "SELECT job_id::text, validation_rules, max_retries FROM jobs WHERE job_id = ANY($1::uuid[])"
        " AND (validation_rules <> 'strict' OR max_retries IS NOT NULL)", list(job_ids))
    return {r["job_id"]: JobProfile(r["validation_rules"], r["max_retries"]) for r in rows}


_STATUS_SQL = """
SELECT COALESCE(r.status, 'unknown') AS status, count(*) AS n,
       count(*) FILTER (WHERE r.status NOT IN ('archived', 'rejected', 'duplicate')
                        AND r.updated_at < now() - make_interval(secs => $2)) AS stalled
FROM job_records m LEFT JOIN fiscal_records r USING (record_id)
WHERE m.job_id = $1 GROUP BY 1
"""


async def job_status(conn: asyncpg.Connection | asyncpg.Pool, job_id: str,
                     lease_s: float | None = None) -> JobStatus | None:
    """The job's state derived from its members (an aggregate over every member: ~150 ms of
    PostgreSQL for 33,000 members, so never on a tick: :func:`complete_finished` says whether a
    job is done); ``lease_s``: also count its stalled members (else ``stalled`` is 0)."""
    job = await conn.fetchrow(
        "SELECT job_id::text, priority, callback_url, source, status, created_at, completed_at, validation_rules,"
        " max_retries FROM jobs WHERE job_id = $1", job_id)
    if job is None:
        return None
    # No lease: NULL, so no member counts as stalled.  (It was 1e12 s, a bound 31,700 years back that
    # PostgreSQL refuses as "timestamp out of range" the moment a member is unfinished.)
    rows = await conn.fetch(_STATUS_SQL, job_id, float(lease_s) if lease_s is not None else None)
    counts = {r["status"]: int(r["n"]) for r in rows}
    total = sum(counts.values())
    st = JobStatus(job_id=job["job_id"], status="running", priority=job["priority"], record_count=total,
                   counts=counts, created_at=job["created_at"].isoformat(), callback_url=job["callback_url"],
                   source=json.loads(job["source"]) if job["source"] else None,
                   profile=JobProfile(job["validation_rules"], job["max_retries"]),
                   stalled=sum(int(r["stalled"]) for r in rows))
    done = st.finished == total
    completed_at = job["completed_at"]
    if done and job["status"] != "completed":
        # Derived state, persisted once so a completed job keeps its completion time.
        completed_at = await conn.fetchval(
            "UPDATE jobs SET status = 'completed', completed_at = COALESCE(completed_at, now()), record_count = $2"
            " WHERE job_id = $1 RETURNING completed_at", job_id, total)
    return JobStatus(**{**st.__dict__, "status": "completed" if done else "running",
                        "completed_at": completed_at.isoformat() if completed_at else None})


async def with_blocked_stages(conn: asyncpg.Connection | asyncpg.Pool, st: JobStatus,
                              namespace: str = "") -> JobStatus:
    """``st`` with the halted or paused replicas of the stages it still needs: why it does not move."""
    needed = st.stages_needed
    if not needed:
        return st
    blocked = [c for c in await conditions.current(conn, namespace) if c.stage in needed]
    return JobStatus(**{**st.__dict__, "blocked_stages": blocked})


@dataclass(frozen=True, slots=True)
class CompletedJob:
    """A completed job, claimed once to be logged and measured (:func:`claim_completed`)."""

    job_id: str
    priority: str
    record_count: int
    processed: int  # archived, or a duplicate of an archived document
    failed: int  # rejected
    created_at: dt.datetime
    completed_at: dt.datetime

    @property
    def duration_s(self) -> float:
        return max(0.0, (self.completed_at - self.created_at).total_seconds())

    @property
    def throughput_per_s(self) -> float | None:
        return self.record_count / self.duration_s if self.duration_s > 0 else None


async def running_jobs(conn: asyncpg.Connection | asyncpg.Pool, after: tuple[dt.datetime, str] | None,
                       limit: int) -> list[tuple[dt.datetime, str]]:
    """Up to ``limit`` running jobs as (created_at, job_id), oldest first, after ``after``: a
    sweep's page (partial index ``jobs_running``)."""
    start = after or (dt.datetime.min.replace(tzinfo=dt.UTC), "00000000-0000-0000-0000-000000000000")
    rows = await conn.fetch(
        "SELECT created_at, job_id::text AS id FROM jobs WHERE status = 'running'"
        " AND (created_at, job_id) > ($1, $2::uuid) ORDER BY created_at, job_id LIMIT $3", start[0], start[1], limit)
    return [(r["created_at"], r["id"]) for r in rows]


async def complete_finished(conn: asyncpg.Connection | asyncpg.Pool, job_ids: Sequence[str]) -> list[str]:
    """Of these jobs, mark completed the running ones whose every member is final (as
    :func:`job_status` would on a read); returns those this call completed.  Stops at a job's first
    unfinished member: cheap on the jobs that still run."""
    rows = await conn.fetch(
        "UPDATE jobs j SET status = 'completed', completed_at = COALESCE(j.completed_at, now()),"
        " record_count = (SELECT count(*) FROM job_records m WHERE m.job_id = j.job_id)"
        " WHERE j.job_id = ANY($1::uuid[]) AND j.status = 'running' AND NOT EXISTS ("
        "  SELECT 1 FROM job_records m JOIN fiscal_records r ON r.record_id = m.record_id"
        "  WHERE m.job_id = j.job_id AND r.status NOT IN ('archived', 'rejected', 'duplicate'))"
        " RETURNING j.job_id::text", list(job_ids))
    return [r["job_id"] for r in rows]


_CLAIM_COMPLETED_SQL = """
WITH claimed AS (
    UPDATE jobs SET observed_at = now()
    WHERE job_id IN (SELECT job_id FROM jobs WHERE status = 'completed' AND observed_at IS NULL
                     ORDER BY completed_at LIMIT $1 FOR UPDATE SKIP LOCKED)
      AND observed_at IS NULL
    RETURNING job_id, priority, record_count, created_at, completed_at
)
SELECT c.job_id::text AS job_id, c.priority, c.record_count, c.created_at, c.completed_at,
       count(r.record_id) FILTER (WHERE r.status IN ('archived', 'duplicate')) AS processed,
       count(r.record_id) FILTER (WHERE r.status = 'rejected') AS failed
FROM claimed c LEFT JOIN job_records m ON m.job_id = c.job_id
     LEFT JOIN fiscal_records r ON r.record_id = m.record_id
GROUP BY c.job_id, c.priority, c.record_count, c.created_at, c.completed_at
ORDER BY c.completed_at
"""


async def claim_completed(conn: asyncpg.Connection | asyncpg.Pool, limit: int) -> list[CompletedJob]:
    """Completed jobs nobody observed yet (whoever completed them), each claimed by exactly one
    caller across processes (``observed_at``, migration 0095), with their outcome counts."""
    rows = await conn.fetch(_CLAIM_COMPLETED_SQL, limit)
    return [CompletedJob(job_id=r["job_id"], priority=r["priority"], record_count=int(r["record_count"]),
                         processed=int(r["processed"]), failed=int(r["failed"]), created_at=r["created_at"],
                         completed_at=r["completed_at"]) for r in rows]


async def awaiting_callback(conn: asyncpg.Connection | asyncpg.Pool, limit: int = 100) -> list[str]:
    """Running jobs with a callback: candidates for completion and notification."""
    rows = await conn.fetch(
        "SELECT job_id::text FROM jobs WHERE callback_url IS NOT NULL AND callback_state IS NULL"
        " ORDER BY created_at LIMIT $1", limit)
    return [r["job_id"] for r in rows]


async def mark_callback(conn: asyncpg.Connection | asyncpg.Pool, job_id: str, state: str) -> None:
    await conn.execute("UPDATE jobs SET callback_state = $2 WHERE job_id = $1", job_id, state)


def all_statuses() -> list[str]:
    return [s.value for s in RecordStatus] + [UNKNOWN]
