"""The ingest HTTP API: submit a job (record ids, or a region and a file pattern) and follow it.

Every route needs a bearer token (shared/http_auth.py): the read token for job views, the admin
token (``api_token``) to submit.
Backpressure is explicit: 503 with Retry-After when the producer queue or the pipeline lag is
over its limit, so a client slows down instead of the system dropping work; 429 with Retry-After
when a priority job would take the priority lane past its share of the pipeline's capacity
(seed 002, services/ingest/quota.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import asyncpg
import orjson
from fastapi import Depends, FastAPI, HTTPException, Response
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, model_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.ingest.backpressure import LagMonitor, refusal
from services.ingest.capacity import PaceMeter
from services.ingest.publisher import publish
from services.ingest.quota import PriorityQuota
from services.ingest.seed_api import install_seed_routes
from services.ingest.sources import ManifestUnreadable, PatternError, TooManyFiles, check_pattern, registrations
from shared.db import jobs
from shared.db.records import RegionConflict, Registration, register
from shared.domain.messages import ValidationProfile
from shared.domain.records import RECORD_ID_PATTERN, RECORD_ID_RULE, Priority, valid_record_id
from shared.egress import EgressPolicy, EgressRefused
from shared.http_auth import ApiAuth
from shared.http_docs import install_docs
from shared.http_errors import error_body, error_responses, install_error_handlers
from shared.runtime.errors import TransientError
from shared.runtime.kafka import AsyncProducer, DeliveryError
from shared.runtime.memory import trim_heap
from shared.s3 import S3Store
from shared.settings import Settings
from shared.sftp.pool import PoolUnavailable, RegionPool

log = logging.getLogger("fiscalflow.ingest.api")

MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_JOB_RECORDS = 100_000
MAX_PRODUCER_QUEUE = 200_000
MAX_PIPELINE_LAG = 1_000_000
RETRY_AFTER_S = 5
TRIM_AFTER_RECORDS = 10_000  # jobs at least this big give their transient heap back (memory.trim_heap)


class JobSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    region: str = Field(min_length=1, description="A region of FISCALFLOW_SFTP_REGIONS.")
    pattern: str = Field(min_length=1, max_length=1000, description="Glob relative to the region root; "
                         "without '/' it matches file names at any depth.", examples=["*.xml", "batch-1/*.xml"])


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    record_ids: list[Annotated[str, Field(pattern=RECORD_ID_PATTERN, description=RECORD_ID_RULE)]] | None = Field(
        None, min_length=1, max_length=MAX_JOB_RECORDS)
    source: JobSource | None = None
    priority: Priority = Priority.NORMAL
    callback_url: AnyHttpUrl | None = Field(None, description="POSTed the job's status once it completes.")
    validation_rules: ValidationProfile = Field(
        ValidationProfile.STRICT, description="strict: every failed rule rejects; lenient: the rules listed in "
        "docs/producers.md become warnings on an archived record.")
    max_retries: int | None = Field(None, ge=0, le=100, description="Retries of a record's failing stage after its "
                                    "first attempt, for this job's records; default: the stages' own.")

    @model_validator(mode="after")
    def _one_way_in(self) -> JobRequest:
        if (self.record_ids is None) == (self.source is None):
            raise ValueError("give exactly one of record_ids or source")
        return self


class JobAccepted(BaseModel):
    job_id: str
    record_count: int
    status_url: str


class BlockedStage(BaseModel):
    stage: str
    replica: str
    host: str
    state: str = Field(description="halted: needs an operator (fix the cause, restart the stage); "
                       "paused: a downstream is down, resumes by itself.")
    reason: str
    since: str
    updated_at: str


class JobView(BaseModel):
    job_id: str
    status: str
    priority: str
    processed: int = Field(0, description="Members archived (or duplicates of an archived document).")
    failed: int = Field(0, description="Members rejected (each with a dead letter and its reason).")
    duration_s: float | None = Field(None, description="Seconds from submission to completion (to now while "
                                     "it runs).")
    throughput_per_s: float | None = Field(None, description="Finished members per second over that duration.")
    record_count: int
    counts: dict[str, int]
    finished: int
    progress: float
    created_at: str
    completed_at: str | None
    callback: bool = Field(False, description="Whether the job's status is POSTed to a callback when it completes "
                           "(its URL is never shown: it may carry a receiver's token).")
    source: dict[str, Any] | None
    validation_rules: str = Field("strict", description="strict | lenient (seed 000): how its records are judged.")
    max_retries: int | None = Field(None, description="Its records' retry budget; null: the stages' own.")
    stalled: int = Field(0, description="Members not in a final state with no transition for longer than the "
                         "re-drive lease (FISCALFLOW_REDRIVE_LEASE_S): their messages may have been lost. "
                         "Submitting a job with them again, the reconciler or `fiscalflow records redrive` "
                         "re-drives them.")
    blocked_stages: list[BlockedStage] = Field(
        default_factory=list, description="Halted or paused replicas of the stages this job's unfinished "
        "records still need: why it does not move.")


@dataclass
class IngestContext:
    settings: Settings
    db: asyncpg.Pool
    producer: AsyncProducer
    sftp: dict[str, RegionPool]
    lag: LagMonitor
    namespace: Callable[[], str]  # the stage's topic namespace ("" in production)
    # The S3 source bucket's client (seed 000's `source: s3` jobs), opened with the first such job.
    s3: S3Store | None = None
    # The pipeline's pace, measured at most every few seconds for all the process's requests.
    pace: PaceMeter = field(init=False)

    def __post_init__(self) -> None:
        self.pace = PaceMeter(self.db)


class BodyLimit:
    """Refuse bodies over the cap with 413, by Content-Length or while streaming (chunked)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await _too_large(send, self.max_bytes)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            seen += len(msg.get("body", b""))
            if seen > self.max_bytes:
                raise _BodyTooLarge(self.max_bytes)
            return msg

        try:
            await self.app(scope, limited, send)
        except _BodyTooLarge:
            await _too_large(send, self.max_bytes)


class _BodyTooLarge(HTTPException):
    """Raised from the body stream. An HTTPException, because FastAPI turns any other exception
    raised while it reads the body into 400 "error parsing the body": a chunked upload over the
    cap (no Content-Length to refuse it by) got a 400 instead of the documented 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {limit} bytes")


async def _too_large(send: Send, limit: int) -> None:
    body = orjson.dumps(error_body(413, f"request body over {limit} bytes"))
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(ctx: IngestContext) -> FastAPI:
    auth = ApiAuth(ctx.settings)
    # Every route needs at least the read token (one added later too); /openapi.json and /docs are open.
    app = FastAPI(title="fiscalflow ingest", version="1", description=__doc__,
                  dependencies=[Depends(auth.require_read)], responses=error_responses(401),
                  docs_url=None, redoc_url=None)
    install_docs(app)  # Swagger UI with its own assets, no CDN
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    install_error_handlers(app, validation_status=422)
    submitter = Submitter(ctx, EgressPolicy.from_settings(ctx.settings))

    def not_overloaded() -> None:
        queued, lag = ctx.producer.queue_length(), ctx.lag.lag
        if queued > MAX_PRODUCER_QUEUE or lag > MAX_PIPELINE_LAG:
            raise refusal(503, "producer_queue" if queued > MAX_PRODUCER_QUEUE else "pipeline_lag",
                          f"pipeline busy (producer queue {queued}, ingest lag {lag}); retry later", RETRY_AFTER_S)

    @app.post("/api/v1/jobs", status_code=202, response_model=JobAccepted,
              dependencies=[Depends(auth.require_admin("submit jobs")), Depends(not_overloaded)],
              responses=error_responses(400, 403, 409, 413, 422, 429, 503))
    async def submit_job(body: JobRequest, response: Response) -> JobAccepted:
        profile = jobs.JobProfile(body.validation_rules.value, body.max_retries)
        if body.source is not None:
            job_id, record_ids = await submitter.submit(body.priority, body.callback_url, source=body.source,
                                                        profile=profile)
        else:
            assert body.record_ids is not None
            job_id, record_ids = await submitter.submit(body.priority, body.callback_url, record_ids=body.record_ids,
                                                        profile=profile)
        location = f"/api/v1/jobs/{job_id}"
        response.headers["Location"] = location
        return JobAccepted(job_id=job_id, record_count=len(record_ids), status_url=location)

    @app.get("/api/v1/jobs/{job_id}", response_model=JobView, responses=error_responses(404, 422))
    async def get_job(job_id: uuid.UUID) -> JobView:
        """A job's progress (the read token is enough); never its callback URL."""
        status = await jobs.job_status(ctx.db, str(job_id), ctx.settings.redrive_lease_s)
        if status is None:
            raise HTTPException(404, f"no job {job_id}")
        status = await jobs.with_blocked_stages(ctx.db, status, ctx.namespace())
        return JobView(**status.to_json())

    install_seed_routes(app, ctx, submitter, [Depends(auth.require_admin("submit jobs")), Depends(not_overloaded)])
    return app


class Submitter:
    """Submits a job: checks its callback, registers a pattern's files, records the job and
    publishes its ids.  Shared by ``POST /api/v1/jobs`` and the seed's ``/api/v1/fiscal/process``."""

    def __init__(self, ctx: IngestContext, egress: EgressPolicy) -> None:
        self.ctx = ctx
        self.egress = egress
        self.quota = PriorityQuota(ctx.settings, ctx.pace, MAX_JOB_RECORDS)

    async def submit(self, priority: Priority, callback_url: AnyHttpUrl | str | None, *,
                     record_ids: list[str] | None = None, source: JobSource | None = None,
                     sources: list[JobSource] | None = None, s3_pattern: str | None = None,
                     profile: jobs.JobProfile | None = None) -> tuple[str, list[str]]:
        """Returns the job id and its record ids; raises HTTPException (4xx/503) with the reason: 429
        for a priority job over the priority share."""
        ctx = self.ctx
        if callback_url is not None:
            try:  # before anything is registered: a refused job leaves nothing behind
                await self.egress.check(str(callback_url))
            except EgressRefused as exc:
                raise HTTPException(400, f"callback_url refused: {exc}") from exc
        job_id = str(uuid.uuid4())
        job_source: dict[str, Any] | None = None
        if source is not None:
            record_ids = await _register_source(ctx, source)
            job_source = source.model_dump()
        elif sources is not None:  # every region a region-less seed pattern names
            record_ids = await _register_sources(ctx, sources)
            job_source = {"regions": [s.region for s in sources], "pattern": sources[0].pattern}
        elif s3_pattern is not None:  # seed 000's source: s3
            record_ids = await _register_s3(ctx, s3_pattern)
            job_source = {"s3": f"s3://{ctx.settings.s3_source_bucket}/", "pattern": s3_pattern}
        assert record_ids is not None
        record_ids = list(dict.fromkeys(record_ids))
        # The capacity first: measuring it may take a connection of its own.
        capacity = await self.quota.capacity() if priority is Priority.HIGH else None
        # The ids are published while the job's members are copied into PostgreSQL, not after:
        # at 100,000 ids the COPY (PostgreSQL's work: two index entries per member; the members'
        # job check is per statement, migration 0097) and the produce loop each took about half
        # of the request (`fiscalflow bench ingest-api`).  Safe before the commit: the
        # job row is inserted (uncommitted) before the first id is sent, and the ingest consumer
        # records a record's membership, inserting the job first (jobs.add_members), before it
        # reads the job's profile or moves the record, so it waits on that row until the job
        # commits.  A 202 still means both: the job committed and every id acknowledged.
        publishing: asyncio.Future[int] | None = None
        async with ctx.db.acquire() as conn:
            try:
                async with conn.transaction():
                    if capacity is not None:  # checked and counted in the job's own transaction
                        verdict = await self.quota.check(conn, len(record_ids), capacity[0])
                        if not verdict.admitted:
                            raise refusal(429, "priority_quota",
                                          self.quota.explain(verdict, len(record_ids), *capacity),
                                          verdict.retry_after_s)
                    await jobs.insert_job(conn, job_id, len(record_ids), priority,
                                          str(callback_url) if callback_url else None, job_source, profile)
                    publishing = asyncio.ensure_future(
                        publish(ctx.producer, record_ids, priority, job_id, ctx.namespace()))
                    await jobs.add_job_members(conn, job_id, record_ids)
            except BaseException:
                if publishing is not None:  # the job did not commit; some of its ids may be sent
                    publishing.add_done_callback(functools.partial(_uncommitted_job_published, job_id))
                raise
        assert publishing is not None
        try:
            await publishing
        except DeliveryError as exc:
            # The job exists; publishing its ids again is safe (ingest is idempotent).
            raise refusal(503, "broker", f"broker did not take the records: {exc}", RETRY_AFTER_S) from exc
        if len(record_ids) >= TRIM_AFTER_RECORDS:
            # A big job's listing, request body and messages were transient: once the response is
            # out, give their freed heap back instead of carrying it for the life of the process.
            asyncio.get_running_loop().call_later(1.0, trim_heap)
        return job_id, record_ids


def _uncommitted_job_published(job_id: str, publishing: asyncio.Future[int]) -> None:
    """A job whose transaction failed (PostgreSQL went away mid-COPY) after its ids were handed to
    the producer: the client got an error and submits again; the ids sent meanwhile are processed
    once (every effect is idempotent), under a job the consumer creates with the default profile."""
    error = None if publishing.cancelled() else publishing.exception()
    log.warning("job %s did not commit; its ids were published anyway (%s)", job_id,
                f"publishing failed too: {error}" if error else "the records are processed without the job's profile")


async def _register_sources(ctx: IngestContext, sources: list[JobSource]) -> list[str]:
    """A pattern over several regions: the regions where nothing matches are skipped; none at all
    matching is a 422."""
    found: list[str] = []
    for source in sources:
        try:
            found += await _register_source(ctx, source)
        except HTTPException as exc:
            if not (exc.status_code == 422 and str(exc.detail).startswith("no file of region")):
                raise
    if not found:
        raise HTTPException(422, f"no file of any region ({', '.join(s.region for s in sources)}) matches "
                                 f"{sources[0].pattern!r}")
    return found


async def _register_s3(ctx: IngestContext, pattern: str) -> list[str]:
    from services.ingest import s3_source

    if ctx.s3 is None:
        ctx.s3 = S3Store(ctx.settings)
    bucket = ctx.settings.s3_source_bucket
    try:
        rows = await s3_source.registrations(ctx.s3, bucket, pattern, MAX_JOB_RECORDS)
    except (PatternError, TooManyFiles) as exc:
        raise HTTPException(422, str(exc)) from None
    except TransientError as exc:
        raise refusal(503, "region_unreachable", f"region s3 (the S3 source bucket) unreachable: {exc}",
                      RETRY_AFTER_S) from None
    if not rows:
        raise HTTPException(422, f"no object of s3://{bucket}/ matches {pattern!r}")
    return await _register_rows(ctx, rows, "object")


async def _register_source(ctx: IngestContext, source: JobSource) -> list[str]:
    pool = ctx.sftp.get(source.region)
    if pool is None:
        raise HTTPException(422, f"unknown region {source.region!r}; known: {', '.join(sorted(ctx.sftp))}")
    try:
        check_pattern(source.pattern)
        rows = await registrations(pool, source.pattern, MAX_JOB_RECORDS)
    except (PatternError, TooManyFiles, ManifestUnreadable) as exc:
        raise HTTPException(422, str(exc)) from None
    except PoolUnavailable as exc:
        raise refusal(503, "region_unreachable", f"region {source.region} unreachable: {exc}",
                      RETRY_AFTER_S) from None
    if not rows:
        raise HTTPException(422, f"no file of region {source.region} matches {source.pattern!r}")
    return await _register_rows(ctx, rows, "file")


async def _register_rows(ctx: IngestContext, rows: list[Registration], kind: str) -> list[str]:
    """Register a pattern's matches; their record ids."""
    # A file's (object's) name without .xml is its record id: one that breaks the rule refuses the whole job.
    if bad := [r.remote_path for r in rows if not valid_record_id(r.record_id)]:
        raise HTTPException(422, f"{len(bad)} {kind} name(s) are not record ids ({RECORD_ID_RULE}), e.g. "
                                 + ", ".join(repr(p) for p in bad[:5]))
    try:
        async with ctx.db.acquire() as conn:
            await register(conn, rows)
    except RegionConflict as exc:  # a record id is global: never re-pointed to another region
        raise HTTPException(409, str(exc)) from None
    return [r.record_id for r in rows]
