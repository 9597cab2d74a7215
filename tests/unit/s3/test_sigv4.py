"""The store's own SigV4 signer signs exactly what botocore would."""

from __future__ import annotations

import datetime as dt
from urllib.parse import quote

import pytest
from botocore import auth as botocore_auth
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from shared.sigv4 import Credentials as SigCredentials
from shared.sigv4 import SigV4Signer

NOW = dt.datetime(2026, 11, 30, 23, 59, 58, tzinfo=dt.UTC)


@pytest.mark.parametrize("key", ["2026/11/30/ABC-123.xml.gz", "a b/ñandú+x~y.xml.gz"])
@pytest.mark.parametrize("body", [b"", b"\x1f\x8b" + bytes(range(256)) * 20])
def test_the_signature_is_botocores(monkeypatch: pytest.MonkeyPatch, key: str, body: bytes) -> None:
    headers = {"Content-Type": "application/gzip", "If-None-Match": "*", "x-amz-meta-sha256": "ab" * 32,
               "x-amz-meta-record-id": "rec  with   spaces"}
    path = f"/fiscal-archive/{quote(key, safe='/~')}"
    url = f"http://127.0.0.1:18333{path}"

    monkeypatch.setattr(botocore_auth, "get_current_datetime", lambda: NOW.replace(tzinfo=None))
    reference = AWSRequest(method="PUT", url=url, data=body, headers=dict(headers))
    S3SigV4Auth(Credentials("AKIDEXAMPLE", "secret/EXAMPLE+key"), "s3", "us-east-1").add_auth(reference)

    ours = SigV4Signer("AKIDEXAMPLE", "secret/EXAMPLE+key", "us-east-1").sign(
        "PUT", "127.0.0.1:18333", path, headers, body, now=NOW)
    assert ours["Authorization"] == reference.headers["Authorization"]
    assert ours["X-Amz-Date"] == reference.headers["X-Amz-Date"]
    assert ours["X-Amz-Content-SHA256"] == reference.headers["X-Amz-Content-SHA256"]


def test_a_new_day_gets_a_new_signing_key() -> None:
    signer = SigV4Signer("AKIDEXAMPLE", "secret", "us-east-1")
    one = signer.sign("PUT", "h", "/b/k", {}, b"x", now=NOW)
    two = signer.sign("PUT", "h", "/b/k", {}, b"x", now=NOW + dt.timedelta(seconds=3))
    assert one["Authorization"].split("Signature=")[1] != two["Authorization"].split("Signature=")[1]
    assert "/20261201/us-east-1/s3/aws4_request" in two["Authorization"]


def test_temporary_credentials_sign_their_session_token_as_botocore_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """IRSA, instance and container roles give temporary credentials: the token is sent as
    X-Amz-Security-Token and signed, and the signing key follows a refreshed secret."""
    headers = {"Content-Type": "application/gzip", "If-None-Match": "*"}
    path = "/fiscal-archive/2026/11/30/k.xml.gz"
    monkeypatch.setattr(botocore_auth, "get_current_datetime", lambda: NOW.replace(tzinfo=None))
    signer = SigV4Signer("static-unused", "static-unused", "us-east-1")
    for secret, token in (("temp/secret+1", "FwoGZXIvYXdzE-token-1"), ("temp/secret+2", "FwoGZXIvYXdzE-token-2")):
        reference = AWSRequest(method="PUT", url=f"https://s3.amazonaws.com{path}", data=b"x", headers=dict(headers))
        S3SigV4Auth(Credentials("ASIATEMP", secret, token), "s3", "us-east-1").add_auth(reference)
        ours = signer.sign("PUT", "s3.amazonaws.com", path, headers, b"x", now=NOW,
                           credentials=SigCredentials("ASIATEMP", secret, token))
        assert ours["X-Amz-Security-Token"] == reference.headers["X-Amz-Security-Token"] == token
        assert ours["Authorization"] == reference.headers["Authorization"]
