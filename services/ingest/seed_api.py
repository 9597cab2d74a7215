"""Seed 000's job route, ``POST /api/v1/fiscal/process``: the request and answer of the Go
pipeline this system replaces, on top of the same submission as ``POST /api/v1/jobs``.

- ``source: api`` takes ``record_ids``; ``source: sftp`` takes ``file_pattern``, optionally led by a
  region (``north:batch-7/*.xml``); without one it means every region.  ``?date=YYYY-MM-DD``
  re-processes the registered records issued that day.
- ``priority: high`` is the priority lane, within the priority share (seed 002: 429 and Retry-After
  beyond it, services/ingest/quota.py).
- ``validation_rules``: strict rejects a document on any failed rule; lenient archives one whose
  only failed rules are in the documented lenient set (services/validate/profile.py), with those
  rules as warnings on the record.  ``max_retries`` replaces the stages' retry budget for the
  job's records (attempts = max_retries + 1).  Both travel on the records' messages.
- ``source: s3`` takes ``file_pattern`` as a key glob in the S3 source bucket
  (``FISCALFLOW_S3_SOURCE_BUCKET``, services/ingest/s3_source.py): its objects become records of
  region ``s3``, downloaded from the bucket by the download stage.
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

from shared.db.jobs import JobProfile
from shared.domain.messages import ValidationProfile
from shared.domain.records import RECORD_ID_PATTERN, RECORD_ID_RULE, Priority
from shared.http_errors import error_responses

if TYPE_CHECKING:
    from services.ingest.api import IngestContext, Submitter

class SeedSource(StrEnum):
    SFTP = "sftp"
    S3 = "s3"
    API = "api"


class ProcessRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: SeedSource = Field(SeedSource.API, description="api: `record_ids`; sftp: `file_pattern` over the SFTP "
                                "regions; s3: `file_pattern` as a key glob in the S3 source bucket.")
    file_pattern: str | None = Field(
        None, min_length=1, max_length=1000, description="Glob under the region roots, optionally led by a region "
        "(`north:batch-7/*.xml`); without one, every region.", examples=["*.xml", "north:batch-7/*.xml"])
    record_ids: list[Annotated[str, Field(pattern=RECORD_ID_PATTERN, description=RECORD_ID_RULE)]] | None = Field(
        None, min_length=1, max_length=100_000)
    validation_rules: ValidationProfile = Field(
        ValidationProfile.STRICT, description="strict: every failed rule rejects; lenient: the rules listed in "
        "docs/seed-api.md become warnings on an archived record.")
    priority: Priority = Priority.NORMAL
    callback_url: AnyHttpUrl | None = None
    max_retries: int | None = Field(None, ge=0, le=100, description="Retries of a record's failing stage after "
                                    "its first attempt, for this job's records; default: the stages' own "
                                    "(FISCALFLOW_RETRY_MAX_ATTEMPTS - 1).")

    @model_validator(mode="after")
    def _inputs_match_the_source(self) -> ProcessRequest:
        if self.source is SeedSource.API and self.file_pattern is not None:
            raise ValueError("source api takes record_ids, not file_pattern")
        if self.source in (SeedSource.SFTP, SeedSource.S3) and self.record_ids is not None:
            raise ValueError(f"source {self.source.value} takes file_pattern, not record_ids")
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


async def queue_metrics(ctx: IngestContext) -> QueueMetrics:
    """The backlog and the pace, from the process's cached measurement (services/ingest/capacity.py)."""
    pace = await ctx.pace.pace()
    return QueueMetrics(queue_depth=pace.in_flight + ctx.lag.lag, workers=pace.workers, rate_per_s=pace.rate_per_s)


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
              responses=error_responses(400, 403, 409, 413, 422, 429, 503), tags=["seed 000"])
    async def process(body: ProcessRequest, response: Response,
                      date: Annotated[dt.date | None, Query(description="Re-process the registered records "
                                                            "issued this day (YYYY-MM-DD).")] = None,
                      ) -> ProcessAccepted:
        """Seed 000's submission: the same job as `POST /api/v1/jobs`, the seed's request and answer."""
        profile = JobProfile(body.validation_rules.value, body.max_retries)
        submitted_at = dt.datetime.now(dt.UTC)
        if date is not None:
            if body.record_ids is not None or body.file_pattern is not None:
                raise HTTPException(422, "?date= selects the records: give neither record_ids nor file_pattern")
            job_id, ids = await submitter.submit(body.priority, body.callback_url, profile=profile,
                                                 record_ids=await _issued_on(ctx, date))
        elif body.source is SeedSource.S3:
            if body.file_pattern is None:
                raise HTTPException(422, "source s3 needs file_pattern (a key glob in the S3 source bucket)")
            job_id, ids = await submitter.submit(body.priority, body.callback_url, profile=profile,
                                                 s3_pattern=body.file_pattern)
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
                job_id, ids = await submitter.submit(body.priority, body.callback_url, profile=profile,
                                                     source=sources[0])
            else:
                job_id, ids = await submitter.submit(body.priority, body.callback_url, profile=profile,
                                                     sources=sources)
        else:
            if body.record_ids is None:
                raise HTTPException(422, "source api needs record_ids (or ?date=)")
            job_id, ids = await submitter.submit(body.priority, body.callback_url, profile=profile,
                                                 record_ids=body.record_ids)
        metrics = await queue_metrics(ctx)
        eta = (metrics.queue_depth + len(ids)) / metrics.rate_per_s if metrics.rate_per_s else None
        response.headers["Location"] = f"/api/v1/jobs/{job_id}"
        return ProcessAccepted(job_id=job_id, submitted_at=submitted_at.isoformat(), record_count=len(ids),
                               estimated_duration=go_duration(eta) if eta is not None else None,
                               estimated_duration_s=round(eta, 1) if eta is not None else None, metrics=metrics)
