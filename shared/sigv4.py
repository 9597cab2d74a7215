"""AWS Signature Version 4 for one S3 request, without botocore's request machinery.

The store stage signs one PUT per document.  botocore's ``S3SigV4Auth`` (through ``AWSRequest``
and its header dictionaries) cost ~10 % of the stage's CPU; this signs the same canonical request
(every header sent, the payload's sha256, no query string) with the day's signing key cached, with
static keys or with temporary credentials (session token) from botocore's chain.
``tests/unit/s3/test_sigv4.py`` checks it against botocore's signature byte for byte.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any, NamedTuple

ALGORITHM = "AWS4-HMAC-SHA256"


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


class SigV4Signer:
    def __init__(self, access_key: str, secret_key: str, region: str, service: str = "s3") -> None:
        self.access_key = access_key
        self._secret = secret_key
        self.region = region
        self.service = service
        self._cached_secret, self._cached_day = "", ""  # of the cached signing key
        self._key = b""

    def _signing_key(self, secret: str, day: str) -> bytes:
        # A new day, or credentials refreshed (secrets compared in constant time, as everywhere).
        if day != self._cached_day or not hmac.compare_digest(secret.encode(), self._cached_secret.encode()):
            k = _hmac(f"AWS4{secret}".encode(), day)
            for part in (self.region, self.service, "aws4_request"):
                k = _hmac(k, part)
            self._cached_secret, self._cached_day, self._key = secret, day, k
        return self._key

    def sign(self, method: str, host: str, path: str, headers: Mapping[str, str], body: bytes,
             now: dt.datetime | None = None, credentials: Credentials | None = None) -> dict[str, str]:
        """The headers to send: ``headers`` plus Host, X-Amz-Date, X-Amz-Content-SHA256,
        X-Amz-Security-Token (temporary credentials) and Authorization.  ``path`` is already
        URI-encoded (S3 paths are signed as sent).  ``credentials``: this request's, when they
        come from a refreshing provider; else the signer's static keys."""
        access, secret, token = credentials or Credentials(self.access_key, self._secret, None)
        stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
        day = stamp[:8]
        payload = hashlib.sha256(body).hexdigest()
        out = {**headers, "Host": host, "X-Amz-Date": stamp, "X-Amz-Content-SHA256": payload}
        if token:
            out["X-Amz-Security-Token"] = token
        canon = sorted((k.lower(), " ".join(v.split())) for k, v in out.items())
        signed = ";".join(k for k, _ in canon)
        request = "\n".join((method, path, "", *(f"{k}:{v}" for k, v in canon), "", signed, payload))
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        to_sign = f"{ALGORITHM}\n{stamp}\n{scope}\n{hashlib.sha256(request.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(secret, day), to_sign.encode(), hashlib.sha256).hexdigest()
        out["Authorization"] = (f"{ALGORITHM} Credential={access}/{scope}, SignedHeaders={signed},"
                                f" Signature={signature}")
        return out


class Credentials(NamedTuple):
    access_key: str
    secret_key: str
    token: str | None


class ChainCredentials:
    """botocore's credential chain (environment, profile, web identity, container and instance
    roles), as the store's signer needs them: current, refreshed before they expire.  botocore
    refreshes synchronously (an STS or metadata call), so a refresh runs in a thread."""

    def __init__(self) -> None:
        from botocore.session import get_session

        found = get_session().get_credentials()
        if found is None:
            raise RuntimeError("s3_credentials=chain: botocore's credential chain found no credentials")
        self._found: Any = found

    async def current(self) -> Credentials:
        refresh = getattr(self._found, "refresh_needed", None)
        if refresh is not None and refresh():
            frozen = await asyncio.to_thread(self._found.get_frozen_credentials)
        else:
            frozen = self._found.get_frozen_credentials()
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token)
