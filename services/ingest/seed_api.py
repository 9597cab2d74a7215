"""Seed 000's job route, ``POST /api/v1/fiscal/process``: the request and answer of the Go
pipeline this system replaces, on top of the same submission as ``POST /api/v1/jobs``.

- ``source: api`` takes ``record_ids``; ``source: sftp`` takes ``file_pattern``, optionally led by a
  region (``north:batch-7/*.xml``); without one it means every region.  ``?date=YYYY-MM-DD``
  re-processes the registered records issued that day.
- ``priority: high`` is the priority lane.
- What is not built yet is refused with a 422 that says so, never accepted and ignored:
  ``source: s3``, ``validation_rules: lenient`` and a ``max_retries`` other than the stages' own.
- The answer (202, ``Location: /api/v1/jobs/{id}``) carries the seed's ``status: queued``,
  ``submitted_at``, ``estimated_duration`` and ``metrics``, estimated from the rate the pipeline
  measurably finished records at over the last five minutes (the audit trail), and the backlog.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Response
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, model_validator

from shared.domain.records import RECORD_ID_PATTERN, RECORD_ID_RULE, Priority
from shared.http_errors import error_responses

if TYPE_CHECKING:
    from services.ingest.api import IngestContext, Submitter

RATE_WINDOW_S = 300
# The audit trail's newest events the rate is measured on (the primary key's tail: a bounded scan
# however long the trail is).
RATE_EVENTS = 200_000
MIN_FINISHED_FOR_RATE = 20


class SeedSource(StrEnum):
    SFTP = "sftp"
    S3 = "s3"
    API = "api"


class ValidationRules(StrEnum):
    STRICT = "strict"
    LENIENT = "lenient"


class ProcessRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: SeedSource = Field(SeedSource.API, description="api: `record_ids`; sftp: `file_pattern`; s3: not yet.")
    file_pattern: str | None = Field(
        None, min_length=1, max_length=1000, description="Glob under the region roots, optionally led by a region "
        "(`north:batch-7/*.xml`); without one, every region.", examples=["*.xml", "north:batch-7/*.xml"])
    record_ids: list[Annotated[str, Field(pattern=RECORD_ID_PATTERN, description=RECORD_ID_RULE)]] | None = Field(
        None, min_length=1, max_length=100_000)
    validation_rules: ValidationRules = ValidationRules.STRICT
    priority: Priority = Priority.NORMAL
    callback_url: AnyHttpUrl | None = None
    max_retries: int | None = Field(None, ge=0, le=100)

    @model_validator(mode="after")
    def _inputs_match_the_source(self) -> ProcessRequest:
        if self.source is SeedSource.API and self.file_pattern is not None:
            raise ValueError("source api takes record_ids, not file_pattern")
        if self.source is SeedSource.SFTP and self.record_ids is not None:
            raise ValueError("source sftp takes file_pattern, not record_ids")
        return self


class QueueMetrics(BaseModel):
    queue_depth: int = Field(description="Records started and not finished, ahead of or beside this job.")
    workers: int = Field(description="Stage replicas that moved a record in the last five minutes.")
    rate_per_s: float | None = Field(description="Records finished per second over the last five minutes; null "
                                     "when too few finished to measure.")


class ProcessAccepted(BaseModel):
    job_id: str
    status: str = "queued"
    submitted_at: str
    estimated_duration: str | None = Field(description="Go duration (`1m30s`): backlog and job over the measured "
                                           "rate; null when no rate could be measured.")
    estimated_duration_s: float | None
    record_count: int
    metrics: QueueMetrics


def go_duration(seconds: float) -> str:
    """``time.Duration.String()`` of whole seconds, as the seed's clients parse it: 1h2m3s, 45s, 0s."""
    total = round(seconds)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return (f"{h}h{m}m{s}s" if h else f"{m}m{s}s" if m else f"{s}s")


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


async def queue_metrics(ctx: IngestContext) -> QueueMetrics:
    async with ctx.db.acquire() as conn:
        row = await conn.fetchrow(_PACE_SQL)
    finished, span = int(row["finished"]), row["span_s"]
    rate = round(finished / span, 2) if finished >= MIN_FINISHED_FOR_RATE and span and span > 0 else None
    return QueueMetrics(queue_depth=int(row["in_flight"]) + ctx.lag.lag, workers=int(row["workers"]), rate_per_s=rate)


async def _issued_on(ctx: IngestContext, day: dt.date) -> list[str]:
    async with ctx.db.acquire() as conn:
        rows = await conn.fetch("SELECT record_id FROM fiscal_records WHERE issued_on = $1 ORDER BY record_id "
                                "LIMIT 100001", day)
    ids = [r["record_id"] for r in rows]
    if not ids:
        raise HTTPException(422, f"no registered record was issued on {day.isoformat()}")
    if len(ids) > 100_000:
        raise HTTPException(422, f"more than 100,000 records were issued on {day.isoformat()}; submit them in parts")
    return ids


def install_seed_routes(app: FastAPI, ctx: IngestContext, submitter: Submitter, admin: list[Any]) -> None:
    from services.ingest.api import JobSource

    @app.post("/api/v1/fiscal/process", status_code=202, response_model=ProcessAccepted, dependencies=admin,
              responses=error_responses(400, 403, 409, 413, 422, 503), tags=["seed 000"])
    async def process(body: ProcessRequest, response: Response,
                      date: Annotated[dt.date | None, Query(description="Re-process the registered records "
                                                            "issued this day (YYYY-MM-DD).")] = None,
                      ) -> ProcessAccepted:
        """Seed 000's submission: the same job as `POST /api/v1/jobs`, the seed's request and answer."""
        if body.source is SeedSource.S3:
            raise HTTPException(422, "source s3 is not supported yet: put the documents on an issuer's SFTP "
                                     "region, or register them and use source api")
        if body.validation_rules is ValidationRules.LENIENT:
            raise HTTPException(422, "validation_rules lenient is not supported yet: every rule rejects (strict)")
        if body.max_retries is not None and body.max_retries != ctx.settings.retry_max_attempts:
            raise HTTPException(422, f"max_retries per job is not supported yet: the stages make "
                                     f"{ctx.settings.retry_max_attempts} attempts (FISCALFLOW_RETRY_MAX_ATTEMPTS)")
        submitted_at = dt.datetime.now(dt.UTC)
        if date is not None:
            if body.record_ids is not None or body.file_pattern is not None:
                raise HTTPException(422, "?date= selects the records: give neither record_ids nor file_pattern")
            job_id, ids = await submitter.submit(body.priority, body.callback_url,
                                                 record_ids=await _issued_on(ctx, date))
        elif body.source is SeedSource.SFTP:
            if body.file_pattern is None:
                raise HTTPException(422, "source sftp needs file_pattern")
            region, sep, pattern = body.file_pattern.partition(":")
            if sep and region in ctx.sftp:
                sources = [JobSource(region=region, pattern=pattern)]
            elif sep and "/" not in region and "*" not in region:
                raise HTTPException(422, f"unknown region {region!r}; known: {', '.join(sorted(ctx.sftp))}")
            else:  # no region: every region
                sources = [JobSource(region=r, pattern=body.file_pattern) for r in sorted(ctx.sftp)]
            if len(sources) == 1:
                job_id, ids = await submitter.submit(body.priority, body.callback_url, source=sources[0])
            else:
                job_id, ids = await submitter.submit(body.priority, body.callback_url, sources=sources)
        else:
            if body.record_ids is None:
                raise HTTPException(422, "source api needs record_ids (or ?date=)")
            job_id, ids = await submitter.submit(body.priority, body.callback_url, record_ids=body.record_ids)
        metrics = await queue_metrics(ctx)
        eta = (metrics.queue_depth + len(ids)) / metrics.rate_per_s if metrics.rate_per_s else None
        response.headers["Location"] = f"/api/v1/jobs/{job_id}"
        return ProcessAccepted(job_id=job_id, submitted_at=submitted_at.isoformat(), record_count=len(ids),
                               estimated_duration=go_duration(eta) if eta is not None else None,
                               estimated_duration_s=round(eta, 1) if eta is not None else None, metrics=metrics)
