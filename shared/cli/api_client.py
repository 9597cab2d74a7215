"""The commands' side of the HTTP APIs' tokens (shared/http_auth.py): the read token for reads,
the admin token for writes, and a refusal said in one line on stderr (never a traceback)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from shared.settings import Settings

if TYPE_CHECKING:
    import httpx

READ_TOKEN_VARIABLE = "FISCALFLOW_READ_TOKEN"
ADMIN_TOKEN_VARIABLE = "FISCALFLOW_API_TOKEN"


def bearer(settings: Settings, admin: bool = False) -> dict[str, str]:
    """The ``Authorization`` header of a read (the read token) or a write (the admin token)."""
    token = settings.api_token if admin else settings.read_token
    return {"Authorization": f"Bearer {token.get_secret_value()}"}


def refusal(status: int, body: Any, admin: bool = False) -> str:
    """One line for an API's refusal (``body``: its JSON, or its text)."""
    detail = body.get("detail", body) if isinstance(body, dict) else body
    detail = " ".join((detail if isinstance(detail, str) else json.dumps(detail)).split())  # one line
    variable = ADMIN_TOKEN_VARIABLE if admin else READ_TOKEN_VARIABLE
    if status == 401:
        kind = "admin" if admin else "read"
        return (f"HTTP 401: the API refused the {kind} token; set {variable} (or {variable}_FILE) to the {kind} "
                "token the services were given")
    if status == 403:
        return f"HTTP 403: {detail} ({ADMIN_TOKEN_VARIABLE})"
    return f"HTTP {status}: {detail}"


def fail(status: int, body: Any, admin: bool = False) -> NoReturn:
    """Say the refusal in one line on stderr and exit 1."""
    typer.echo(refusal(status, body, admin), err=True)
    raise typer.Exit(1)


def body_of(resp: httpx.Response) -> Any:
    """An ``httpx.Response``'s JSON, or its text when it is not JSON (a proxy's error page)."""
    try:
        return resp.json()
    except ValueError:
        return resp.text.strip()[:500]
