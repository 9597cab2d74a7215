"""The archive bucket: write-once objects (``If-None-Match: *``), checked by their sha256 metadata."""

from __future__ import annotations

from enum import StrEnum
from urllib.parse import quote

import yarl
from botocore.exceptions import BotoCoreError, ClientError

from services.store.archive import ArchiveObject
from shared.http1 import Http1Pool
from shared.runtime.errors import TransientError
from shared.s3 import S3Store
from shared.sigv4 import ChainCredentials, SigV4Signer

SHA256_META = "sha256"  # x-amz-meta-sha256: the document's checksum, what "the same document" means


class PutOutcome(StrEnum):
    CREATED = "created"  # this call wrote the object
    SAME = "same"  # the key already held this document, same sha256 (a redelivery, or a crash after upload);
    # its bytes may be an older gzip of it (another level or compressor, decision 0030)
    CONFLICT = "conflict"  # the key holds a different document with the same UUID


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


class ArchiveBucket:
    def __init__(self, s3: S3Store) -> None:
        self.s3 = s3
        settings = s3.settings
        self._signer = SigV4Signer(settings.s3_access_key.get_secret_value(),
                                   settings.s3_secret_key.get_secret_value(), settings.s3_region)
        # s3_credentials=chain: each PUT signed with the chain's current (temporary) credentials.
        self._chain = ChainCredentials() if settings.s3_credentials == "chain" else None
        endpoint = yarl.URL(settings.s3_endpoint)
        self._host = endpoint.raw_authority  # the Host header sent and signed (port included unless default)
        self._prefix = f"{endpoint.raw_path.rstrip('/')}/{quote(self.s3.bucket, safe='')}/"
        self._endpoint = endpoint
        self._http = self._pool()  # an endpoint it cannot reach (an ftp:// URL) fails at start

    async def put_once(self, obj: ArchiveObject, record_id: str) -> tuple[PutOutcome, int]:
        """Upload unless the key exists; never overwrites (the key is the UUID's single slot).

        Returns the outcome and the size of the object now under the key: ``obj``'s, or for
        SAME and CONFLICT the existing object's."""
        try:
            status, text = await self._put(obj.key, obj.body, {
                "Content-Type": "application/gzip", "If-None-Match": "*",
                f"x-amz-meta-{SHA256_META}": obj.sha256, "x-amz-meta-record-id": record_id})
        except (TimeoutError, OSError, BotoCoreError) as exc:
            raise TransientError(f"s3 put {obj.key}: {type(exc).__name__}: {exc}", downstream="s3") from exc
        if status == 200:
            return PutOutcome.CREATED, len(obj.body)
        # 412: the key exists.  409 ConditionalRequestConflict: a concurrent put of the same key.
        if status not in (409, 412):
            raise TransientError(f"s3 put {obj.key}: HTTP {status} {text[:300]}", downstream="s3")
        existing = await self.head(obj.key)
        if existing is None:  # lost a race with a delete: the next attempt puts again
            raise TransientError(f"s3 {obj.key} vanished after 412", downstream="s3")
        sha256, size = existing
        return (PutOutcome.SAME if sha256 == obj.sha256 else PutOutcome.CONFLICT), size

    async def _put(self, key: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        """One signed PUT over a kept-alive connection of our own (``shared.http1``).

        The archive PUT is the store stage's one per-document round trip.  Through aiobotocore it
        cost ~1.4 ms of CPU (half the stage's): event hooks, endpoint rule resolution, user-agent
        building, response parsing; through aiohttp 233-237 µs, through ``Http1Pool`` 123-129 µs
        (``bench/s3_put_bench.py``, decision 0032).  Signing is SigV4 over every header sent and
        the payload's sha256 (``shared.sigv4``, checked against botocore's); HEAD and DELETE (rare)
        still go through the client.
        """
        path = self._prefix + quote(key, safe="/~")
        creds = await self._chain.current() if self._chain is not None else None
        signed = self._signer.sign("PUT", self._host, path, headers, body, credentials=creds)
        resp = await self._http.request("PUT", path, signed, body)
        return resp.status, resp.body.decode("utf-8", "replace") if resp.status != 200 else ""

    def _pool(self) -> Http1Pool:
        endpoint = self._endpoint
        return Http1Pool(endpoint.scheme, endpoint.host or "", endpoint.port or 0, max_connections=64,
                         connect_timeout_s=5, timeout_s=30)

    async def close(self) -> None:
        """Closes the idle connections; a PUT after this opens new ones."""
        closing, self._http = self._http, self._pool()
        await closing.close()

    async def head(self, key: str) -> tuple[str, int] | None:
        """The object's document sha256 (its metadata) and its size in bytes; None: no object."""
        client = await self.s3.client()
        try:
            head = await client.head_object(Bucket=self.s3.bucket, Key=key)
        except ClientError as exc:
            if _status(exc) == 404 or _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise TransientError(f"s3 head {key}: {exc}", downstream="s3") from exc
        except (BotoCoreError, OSError) as exc:
            raise TransientError(f"s3 head {key}: {exc}", downstream="s3") from exc
        meta: dict[str, str] = head.get("Metadata", {})
        return meta.get(SHA256_META, ""), int(head.get("ContentLength", 0))

    async def delete(self, key: str) -> None:
        """Best effort: removes an object this stage created for a document that lost its UUID."""
        client = await self.s3.client()
        try:
            await client.delete_object(Bucket=self.s3.bucket, Key=key)
        except (ClientError, BotoCoreError, OSError) as exc:
            raise TransientError(f"s3 delete {key}: {exc}", downstream="s3") from exc
