"""Who may call the HTTP APIs: two bearer tokens, the same on the ingest and the report API.

- the read token (``FISCALFLOW_READ_TOKEN``): reports, records, job views;
- the admin token (``FISCALFLOW_API_TOKEN``): submit jobs, rebuild the reports; it reads too.

``ApiAuth(settings).require_read`` guards a whole app (``FastAPI(dependencies=[...])``: a route
added later cannot escape it); ``require_admin(action)`` guards a mutating route on top.  No or a
wrong token is a 401 with ``WWW-Authenticate: Bearer``; the read token on an admin route a 403
that says so.  Tokens are compared in constant time (``hmac.compare_digest``), both of them on
every request.  The ops port (/metrics /healthz /readyz, shared/runtime/ops.py) is another
server, and /openapi.json and /docs stay open: they describe the API and hold no data.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from enum import IntEnum

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.settings import Settings

SCHEME_DESCRIPTION = (
    "`Authorization: Bearer <token>`. The read token (FISCALFLOW_READ_TOKEN) reads reports, records and job "
    "views; the admin token (FISCALFLOW_API_TOKEN) also submits jobs and rebuilds the reports (the read token "
    "there: 403). Every route of this document needs one; /openapi.json and /docs need none (they hold no "
    "data), nor does the ops port (/metrics, /healthz, /readyz).")

# One scheme for both APIs: their OpenAPI documents declare it, and every operation requires it.
BEARER = HTTPBearer(auto_error=False, scheme_name="bearer", description=SCHEME_DESCRIPTION)

UNAUTHORIZED = "missing or wrong bearer token: send `Authorization: Bearer <token>` (the read token reads, " \
               "the admin token also writes)"


class Access(IntEnum):
    NONE = 0
    READ = 1
    ADMIN = 2


class ApiAuth:
    """The two tokens of ``settings`` as FastAPI dependencies."""

    def __init__(self, settings: Settings) -> None:
        self._admin = settings.api_token.get_secret_value().encode()
        self._read = settings.read_token.get_secret_value().encode()

    def access(self, creds: HTTPAuthorizationCredentials | None) -> Access:
        """What the presented credentials may do (an empty token, or an empty setting, matches nothing)."""
        presented = creds.credentials.encode() if creds is not None else b""
        # Both compared every time: how long the check takes says nothing of which token it was.
        admin = hmac.compare_digest(presented, self._admin) and bool(self._admin)
        read = hmac.compare_digest(presented, self._read) and bool(self._read)
        if not presented:
            return Access.NONE
        return Access.ADMIN if admin else Access.READ if read else Access.NONE

    def require_read(self, creds: HTTPAuthorizationCredentials | None = Depends(BEARER)) -> Access:
        """The read or the admin token, else 401."""
        got = self.access(creds)
        if got is Access.NONE:
            raise HTTPException(401, UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})
        return got

    def require_admin(self, action: str) -> Callable[..., None]:
        """A dependency that lets the admin token only; ``action`` ("submit jobs") says what the
        read token cannot do in its 403."""

        def admin(got: Access = Depends(self.require_read)) -> None:
            if got is not Access.ADMIN:
                raise HTTPException(403, f"the read token cannot {action}; use the admin token",
                                    headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'})

        return admin
