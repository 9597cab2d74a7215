"""The report service's consistency with the system of record: a check at start and every
``FISCALFLOW_REPORT_VERIFY_INTERVAL_S`` (its result in ``/readyz``, the log and metrics, so an
alert can fire), and the admin API that ``fiscalflow report verify`` and ``fiscalflow report rebuild`` call.

The CLI cannot open ClickHouse itself — the embedded chDB allows one process per data directory,
and this service holds it — so both go through this API (docs/decisions/0020).

- ``GET /api/v1/reports/verify?from&to&settle_s``: the comparison (services/report/verify.py).
- ``GET /api/v1/reports/rebuild?from&to``: how many records the scope holds, where a rebuild got to.
- ``POST /api/v1/reports/rebuild``: one rebuild step (services/report/rebuild.py).

The verify route needs the read token, like every route of the API; the rebuild routes the admin
token (``Authorization: Bearer``, shared/http_auth.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, FastAPI, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.report.backend import ReportBackend
from services.report.metrics import VERIFY_CHECKED_AT, VERIFY_DIFFERENCES, VERIFY_RECORDS_OFF
from services.report.rebuild import MAX_BATCH, Rebuilder, Writer
from services.report.verify import Scope, Verification, Verifier, days_back
from shared.http_auth import ApiAuth
from shared.http_errors import error_responses
from shared.runtime.errors import TransientError
from shared.s3 import S3Store
from shared.settings import Settings

log = logging.getLogger("fiscalflow.report.consistency")

MAX_SETTLE_S = 86400.0


class RebuildStep(BaseModel):
    """One step of a rebuild: the next ``limit`` records of the scope."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    start: dt.date | None = Field(None, alias="from", description="First day of Fecha (none: every record).")
    end: dt.date | None = Field(None, alias="to", description="Last day of Fecha, inclusive.")
    limit: int = Field(500, ge=1, le=MAX_BATCH, description="Records read in this step.")
    dry_run: bool = Field(False, description="Count what would be written; write nothing, keep no checkpoint.")
    after: str | None = Field(None, max_length=200,
                              description="Start after this record id instead of at the checkpoint (dry runs).")
    restart: bool = Field(False, description="Start the scope over instead of resuming an unfinished rebuild.")
    lines: bool = Field(True, description="Also restore invoice lines, which only the archived documents hold (one "
                        "S3 read per archived record whose lines the reports lack). false: the totals alone, "
                        "from PostgreSQL (much faster after losing ClickHouse); a later rebuild with --restart "
                        "restores the lines.")

    @field_validator("after")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("a record id has no NUL character")  # PostgreSQL text cannot hold one
        return value


def _scope(start: dt.date | None, end: dt.date | None) -> Scope:
    if start is not None and end is not None and end < start:
        raise HTTPException(400, "'to' is before 'from'")
    return Scope(start, end)


class Consistency:
    def __init__(self, backend: ReportBackend, settings: Settings, namespace: str, write: Writer) -> None:
        self.verifier = Verifier(backend)
        self.s3 = S3Store(settings)
        self.rebuilder = Rebuilder(backend, self.s3, write, namespace)
        self.days = settings.report_verify_days
        self.interval_s = settings.report_verify_interval_s
        self.settle_s = settings.report_verify_settle_s
        self.last: Verification | None = None
        self.error = ""
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    # ------------------------------------------------------------------ the periodic check
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="report-consistency")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.s3.close()

    def recheck(self) -> None:
        """Check again now (a rebuild finished)."""
        self._wake.set()

    async def _run(self) -> None:
        first = True
        while True:
            await self.check(first)
            first = False
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s if self.interval_s > 0 else None)

    async def check(self, at_start: bool = False) -> Verification | None:
        scope = days_back(self.days)
        try:
            v = await self.verifier.verify(scope, self.settle_s)
        except Exception as exc:  # any dependency failure: say so, try again at the next tick
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("report consistency not checked: %s", self.error)
            return None
        self.last, self.error = v, ""
        VERIFY_DIFFERENCES.set(len(v.differences))
        VERIFY_RECORDS_OFF.set(v.records_off)
        VERIFY_CHECKED_AT.set(v.checked_at.timestamp())
        when = "at start" if at_start else "now"
        if v.consistent:
            log.info("report tables consistent with PostgreSQL %s: %s", when, v.summary())
        else:
            log.warning("report tables differ from PostgreSQL %s: %s — `fiscalflow report rebuild` re-materialises"
                        " them (docs/deploy.md)", when, v.summary())
        return v

    def readiness(self) -> dict[str, Any]:
        """The ``consistency`` field of /readyz (readiness itself does not depend on it: the API
        must stay reachable for the rebuild that repairs it)."""
        v = self.last
        if v is None:
            return {"state": "unknown" if self.error else "checking", "error": self.error}
        return {"state": "consistent" if v.consistent else "inconsistent", "scope": v.scope.label(),
                "checked_at": v.checked_at.isoformat(), "differences": len(v.differences),
                "records_off": v.records_off, "detail": [c.describe() for c in v.differences[:5]],
                "error": self.error}

    # ------------------------------------------------------------------ the API
    def install(self, api: FastAPI, auth: ApiAuth) -> None:
        """The routes on ``api``, whose dependencies already ask every route for the read token."""
        admin = Depends(auth.require_admin("rebuild the reports"))

        @api.get("/api/v1/reports/verify", responses=error_responses(400, 503))
        async def verify(start: Annotated[dt.date | None, Query(alias="from")] = None,
                         end: Annotated[dt.date | None, Query(alias="to")] = None,
                         settle_s: Annotated[float | None, Query(ge=0, le=MAX_SETTLE_S)] = None) -> dict[str, Any]:
            """PostgreSQL's records against the report tables, per day of Fecha (archived: counts and
            MXN totals) and, with no day range, per final status and reason.  Records newer than
            ``settle_s`` seconds are left out of both sides (in flight)."""
            scope = _scope(start, end)
            try:
                return (await self.verifier.verify(scope, self.settle_s if settle_s is None else settle_s)).to_json()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                raise HTTPException(503, f"{type(exc).__name__}: {exc}", headers={"Retry-After": "5"}) from None

        @api.get("/api/v1/reports/rebuild", dependencies=[admin], responses=error_responses(400, 403))
        async def rebuild_plan(start: Annotated[dt.date | None, Query(alias="from")] = None,
                               end: Annotated[dt.date | None, Query(alias="to")] = None) -> dict[str, Any]:
            """Records a rebuild of the scope reads, and where an unfinished one got to."""
            return await self.rebuilder.plan(_scope(start, end))

        @api.post("/api/v1/reports/rebuild", dependencies=[admin], responses=error_responses(400, 403, 503))
        async def rebuild_step(body: RebuildStep) -> dict[str, Any]:
            """One rebuild step: the scope's next records re-materialised from PostgreSQL (or their
            archived documents), idempotently; ``finished`` when the scope is done."""
            scope = _scope(body.start, body.end)
            try:
                step = await self.rebuilder.step(scope, body.limit, dry_run=body.dry_run, after=body.after,
                                                 restart=body.restart, lines=body.lines)
            except Exception as exc:  # S3, PostgreSQL, ClickHouse (no common base): the step is retried whole
                if not isinstance(exc, TransientError | OSError | asyncpg.PostgresError | asyncpg.InterfaceError):
                    log.exception("rebuild step of %s failed", scope.label())
                raise HTTPException(503, f"{type(exc).__name__}: {exc}; retry the step",
                                    headers={"Retry-After": "5"}) from None
            if step.finished and not body.dry_run:
                self.recheck()
            return step.to_json()
