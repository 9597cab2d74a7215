"""One error body for every HTTP API of the system: ``{"error": CODE, "detail": WHY}``.

``error`` is a stable machine-readable code (``bad_request``, ``not_found``...), ``detail`` the
reason in words, always a string.  The ingest API (producers) and the report API (analysts)
answered differently before (``detail`` as FastAPI's list of validation errors in one, ``reason``
in the other); a client now reads the same two fields from either.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

ERROR_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type", 422: "unprocessable",
    429: "too_many_requests", 503: "unavailable",
}


class ApiError(BaseModel):
    """The body of every 4xx/5xx answer (documented in each API's OpenAPI)."""

    error: str
    detail: str


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for these refusals, all with the :class:`ApiError` body."""
    return {s: {"model": ApiError, "description": ERROR_CODES.get(s, "error")} for s in statuses}


def error_body(status: int, detail: Any) -> dict[str, str]:
    return {"error": ERROR_CODES.get(status, "error"), "detail": str(detail)}


def validation_detail(exc: RequestValidationError) -> str:
    """``field.path: message; ...`` — the request's own parts (``body``, ``query``) left out."""
    parts = []
    for e in exc.errors():
        loc = tuple(e.get("loc") or ("request",))
        parts.append(f"{'.'.join(str(p) for p in loc[1:]) or loc[0]}: {e.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI, validation_status: int) -> None:
    """Answer every refusal of ``app`` with :func:`error_body`; a malformed request gets ``validation_status``."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body(validation_status, validation_detail(exc)), status_code=validation_status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(exc.status_code, exc.detail), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

