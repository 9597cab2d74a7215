"""Claim checks: a document too large to travel inside a message waits in S3 under a
deterministic key (``staging/<record_id>``), so a redelivery overwrites it with the same bytes."""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError

from shared.runtime import TransientError
from shared.s3 import S3Store

STAGING_PREFIX = "staging/"


def staging_key(record_id: str) -> str:
    return f"{STAGING_PREFIX}{record_id}"


async def put_claim(s3: S3Store, record_id: str, data: bytes, sha256: str) -> str:
    key = staging_key(record_id)
    client = await s3.client()
    try:
        await client.put_object(Bucket=s3.bucket, Key=key, Body=data, ContentType="application/xml",
                                Metadata={"sha256": sha256})
    except (ClientError, BotoCoreError, OSError) as exc:
        raise TransientError(f"s3: {exc}", downstream="s3") from exc
    return key
