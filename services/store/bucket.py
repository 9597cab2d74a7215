"""The archive bucket: write-once objects (``If-None-Match: *``), checked by their sha256 metadata."""

from __future__ import annotations

from enum import StrEnum

from botocore.exceptions import BotoCoreError, ClientError

from services.store.archive import ArchiveObject
from shared.runtime.errors import TransientError
from shared.s3 import S3Store

SHA256_META = "sha256"  # x-amz-meta-sha256: the document's checksum, what "the same document" means


class PutOutcome(StrEnum):
    CREATED = "created"  # this call wrote the object
    SAME = "same"  # the key already held these very bytes (a redelivery, or a crash after upload)
    CONFLICT = "conflict"  # the key holds a different document with the same UUID


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


class ArchiveBucket:
    def __init__(self, s3: S3Store) -> None:
        self.s3 = s3

    async def put_once(self, obj: ArchiveObject, record_id: str) -> PutOutcome:
        """Upload unless the key exists; never overwrites (the key is the UUID's single slot)."""
        client = await self.s3.client()
        try:
            await client.put_object(
                Bucket=self.s3.bucket, Key=obj.key, Body=obj.body, IfNoneMatch="*",
                ContentType="application/gzip", Metadata={SHA256_META: obj.sha256, "record-id": record_id},
            )
            return PutOutcome.CREATED
        except ClientError as exc:
            # 412: the key exists.  409 ConditionalRequestConflict: a concurrent put of the same key.
            if _status(exc) not in (409, 412) and _code(exc) not in ("PreconditionFailed",
                                                                      "ConditionalRequestConflict"):
                raise TransientError(f"s3 put {obj.key}: {exc}", downstream="s3") from exc
        except (BotoCoreError, OSError) as exc:
            raise TransientError(f"s3 put {obj.key}: {exc}", downstream="s3") from exc
        existing = await self.sha256_of(obj.key)
        if existing is None:  # lost a race with a delete: the next attempt puts again
            raise TransientError(f"s3 {obj.key} vanished after 412", downstream="s3")
        return PutOutcome.SAME if existing == obj.sha256 else PutOutcome.CONFLICT

    async def sha256_of(self, key: str) -> str | None:
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
        return meta.get(SHA256_META, "")

    async def delete(self, key: str) -> None:
        """Best effort: removes an object this stage created for a document that lost its UUID."""
        client = await self.s3.client()
        try:
            await client.delete_object(Bucket=self.s3.bucket, Key=key)
        except (ClientError, BotoCoreError, OSError) as exc:
            raise TransientError(f"s3 delete {key}: {exc}", downstream="s3") from exc
