"""The report HTTP API (FastAPI; OpenAPI at /openapi.json).  JSON, amounts as decimal strings; a
bad parameter is a 400 and an unknown id a 404, each with ``{"error", "detail"}``
(shared/http_errors.py).  Every route needs the read token (or the admin token), the rebuild routes
the admin token (shared/http_auth.py)."""

from __future__ import annotations

import binascii
import datetime as dt
import uuid
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import ORJSONResponse

from services.report.backend import ReportBackend
from services.report.contract import DailyReport, FiscalRecords, RecordLines, RegionsReport
from services.report.queries import decode_cursor
from shared.domain.records import RecordStatus
from shared.http_auth import ApiAuth
from shared.http_docs import install_docs
from shared.http_errors import error_responses, install_error_handlers

MAX_RANGE_DAYS = 366
MAX_TREND_HOURS = 24 * 31

# ``?region=``: the records of one issuer region (the SFTP server a document came from,
# ``fiscal_records.region``).  A region without any is an empty answer, like any other filter (the
# daily report: a 404, as for a day without documents).
Region = Annotated[str | None, Query(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f]+$",
                                     description="Only the records of this issuer region (e.g. north).")]


def _bad(reason: str) -> HTTPException:
    return HTTPException(status_code=400, detail=reason)


def _job_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise _bad(f"job_id {value!r} is not a UUID") from None


def create_api(backend: ReportBackend, auth: ApiAuth) -> FastAPI:
    # Every route needs at least the read token (one added later too); /openapi.json and /docs are open.
    api = FastAPI(title="fiscalflow reports", version="1", default_response_class=ORJSONResponse,
                  responses=error_responses(400, 401, 404), dependencies=[Depends(auth.require_read)],
                  docs_url=None, redoc_url=None)
    install_docs(api)  # Swagger UI with its own assets, no CDN

    install_error_handlers(api, validation_status=400)

    @api.get("/api/v1/reports/summary")
    async def summary(job_id: str | None = None, region: Region = None) -> dict[str, Any]:
        """Records by status (in-progress ones too) and rejected/duplicate ones by reason code."""
        if job_id is not None:
            job_id = _job_id(job_id)
            if not await backend.job_exists(job_id):
                raise HTTPException(404, f"job {job_id} not found")
        return await backend.summary(job_id, region)

    @api.get("/api/v1/reports/daily", response_model=None, responses={200: {"model": DailyReport}})
    async def daily(date: dt.date, region: Region = None) -> dict[str, Any]:
        """Archived documents of one day (date part of Fecha as written): per TipoDeComprobante and
        Moneda, and per issuer; with the seed contract's totals.  A day without any is a 404 (of the
        region, with ``region``)."""
        body = await backend.daily(date, region)
        if not body["record_count"]:
            raise HTTPException(404, f"no archived documents dated {date.isoformat()}"
                                     + (f" from region {region}" if region is not None else ""))
        return body

    @api.get("/api/v1/reports/issuers")
    async def issuers(start: Annotated[dt.date, Query(alias="from")],
                      end: Annotated[dt.date, Query(alias="to")], region: Region = None) -> dict[str, Any]:
        """Per issuer, per TipoDeComprobante and Moneda, over days ``from``..``to`` (inclusive)."""
        if end < start:
            raise _bad("'to' is before 'from'")
        if (end - start).days >= MAX_RANGE_DAYS:
            raise _bad(f"at most {MAX_RANGE_DAYS} days per request")
        return await backend.issuers(start, end, region)

    @api.get("/api/v1/reports/regions", response_model=None, responses={200: {"model": RegionsReport}})
    async def regions(start: Annotated[dt.date | None, Query(alias="from")] = None,
                      end: Annotated[dt.date | None, Query(alias="to")] = None) -> dict[str, Any]:
        """Per issuer region: archived documents and their MXN total over days ``from``..``to``
        (inclusive; neither: every day, with the rejected and duplicate records too)."""
        if (start is None) != (end is None):
            raise _bad("give both 'from' and 'to', or neither (every day)")
        if start is not None and end is not None and end < start:
            raise _bad("'to' is before 'from'")
        return await backend.regions(start, end)

    @api.get("/api/v1/reports/trend")
    async def trend(hours: Annotated[int, Query(ge=1, le=MAX_TREND_HOURS)] = 24,
                    region: Region = None) -> dict[str, Any]:
        """Archived count and MXN total per hour of processing time, the last ``hours`` hours."""
        return await backend.trend(hours, region)

    @api.get("/api/v1/records")
    async def records(status: RecordStatus | None = None, issuer: str | None = None, date: dt.date | None = None,
                      reason: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                      cursor: str | None = None, region: Region = None) -> dict[str, Any]:
        """Records from the registry, ordered by id; pass ``next_cursor`` back for the next page."""
        after = None
        if cursor:
            try:
                after = decode_cursor(cursor)
            except (binascii.Error, UnicodeDecodeError, ValueError):
                raise _bad("cursor is not one this API returned") from None
        return await backend.records(status=status.value if status else None, issuer=issuer, day=date,
                                     reason=reason, limit=limit, after=after, region=region)

    @api.get("/api/v1/fiscal/records", response_model=None, responses={200: {"model": FiscalRecords}})
    async def fiscal_records(status: RecordStatus | None = None,
                             limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                             region: Region = None) -> dict[str, Any]:
        """The seed contract's record list (docs/seed-api.md): the most recently changed records
        first, in the Go system's fields."""
        return await backend.fiscal_records(status, limit, region)

    @api.get("/api/v1/records/{record_id}")
    async def record(record_id: str) -> dict[str, Any]:
        """One record with its audit history (every state transition, oldest first)."""
        found = await backend.record(record_id)
        if found is None:
            raise HTTPException(404, f"record {record_id} not found")
        return found

    @api.get("/api/v1/records/{record_id}/lines", response_model=None, responses={200: {"model": RecordLines}})
    async def record_lines(record_id: str) -> dict[str, Any]:
        """The lines (``cfdi:Concepto``) of an archived record's document, in document order.  A 404
        says why there are none: no such record, a record that is not archived, or an archived one
        whose lines the reports do not hold (archived before line items were kept: ``fiscalflow
        report rebuild`` reads them from its document)."""
        found = await backend.record_lines(record_id)
        if found is not None:
            return found
        status = await backend.record_status(record_id)
        if status is None:
            raise HTTPException(404, f"record {record_id} not found")
        if status != RecordStatus.ARCHIVED:
            raise HTTPException(404, f"record {record_id} is {status}: only an archived record has lines")
        raise HTTPException(404, f"no lines known for record {record_id}: archived before line items were kept"
                                 " (`fiscalflow report rebuild` reads them from its document), or still on its"
                                 " way to the reports")

    @api.get("/api/v1/jobs/{job_id}")
    async def job(job_id: str) -> dict[str, Any]:
        """A job's progress: counts per status derived from its records."""
        found = await backend.job(_job_id(job_id))
        if found is None:
            raise HTTPException(404, f"job {job_id} not found")
        return found

    return api
