"""AWS Signature Version 4 for one S3 request, without botocore's request machinery.

The store stage signs one PUT per document.  botocore's ``S3SigV4Auth`` (through ``AWSRequest``
and its header dictionaries) cost ~10 % of the stage's CPU; this signs the same canonical request
(every header sent, the payload's sha256, no query string) with the day's signing key cached.
``tests/unit/s3/test_sigv4.py`` checks it against botocore's signature byte for byte.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping

ALGORITHM = "AWS4-HMAC-SHA256"


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


class SigV4Signer:
    def __init__(self, access_key: str, secret_key: str, region: str, service: str = "s3") -> None:
        self.access_key = access_key
        self._secret = secret_key
        self.region = region
        self.service = service
        self._day = ""
        self._key = b""

    def _signing_key(self, day: str) -> bytes:
        if day != self._day:
            k = _hmac(f"AWS4{self._secret}".encode(), day)
            for part in (self.region, self.service, "aws4_request"):
                k = _hmac(k, part)
            self._day, self._key = day, k
        return self._key

    def sign(self, method: str, host: str, path: str, headers: Mapping[str, str], body: bytes,
             now: dt.datetime | None = None) -> dict[str, str]:
        """The headers to send: ``headers`` plus Host, X-Amz-Date, X-Amz-Content-SHA256 and
        Authorization.  ``path`` is already URI-encoded (S3 paths are signed as sent)."""
        stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
        day = stamp[:8]
        payload = hashlib.sha256(body).hexdigest()
        out = {**headers, "Host": host, "X-Amz-Date": stamp, "X-Amz-Content-SHA256": payload}
        canon = sorted((k.lower(), " ".join(v.split())) for k, v in out.items())
        signed = ";".join(k for k, _ in canon)
        request = "\n".join((method, path, "", *(f"{k}:{v}" for k, v in canon), "", signed, payload))
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        to_sign = f"{ALGORITHM}\n{stamp}\n{scope}\n{hashlib.sha256(request.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(day), to_sign.encode(), hashlib.sha256).hexdigest()
        out["Authorization"] = (f"{ALGORITHM} Credential={self.access_key}/{scope}, SignedHeaders={signed},"
                                f" Signature={signature}")
        return out
