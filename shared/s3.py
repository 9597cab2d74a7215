"""S3 adapter (aiobotocore): the archive bucket and claim-check staging, behind a small interface."""

from __future__ import annotations

import contextlib
from typing import Any

from shared.domain.reasons import ReasonCode
from shared.runtime.errors import PermanentError, TransientError
from shared.settings import Settings


class S3Store:
    """One client per process, opened lazily. Outages surface as ``TransientError('s3')``.

    aiobotocore is imported with the first client, not with this module: importing it costs
    ~27 MB of RSS, and the validate stage (documents inline, claim checks only above ~899 KB) usually
    never needs S3 — that was most of its margin over the 150 MB per-process budget.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.bucket = settings.s3_bucket
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None

    async def client(self) -> Any:
        if self._client is None:
            from aiobotocore.session import get_session
            from botocore.config import Config

            self._stack = contextlib.AsyncExitStack()
            session = get_session()
            # s3_credentials=chain: the client resolves botocore's chain itself (and refreshes it).
            keys = {} if self.settings.s3_credentials == "chain" else {
                "aws_access_key_id": self.settings.s3_access_key.get_secret_value(),
                "aws_secret_access_key": self.settings.s3_secret_key.get_secret_value()}
            self._client = await self._stack.enter_async_context(session.create_client(
                "s3", endpoint_url=self.settings.s3_endpoint, region_name=self.settings.s3_region, **keys,
                config=Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=30,
                              max_pool_connections=64, s3={"addressing_style": "path"}),
            ))
        return self._client

    async def get(self, key: str) -> bytes:
        client = await self.client()
        from botocore.exceptions import BotoCoreError, ClientError  # loaded with the client: free

        try:
            resp = await client.get_object(Bucket=self.bucket, Key=key)
            async with resp["Body"] as body:
                data: bytes = await body.read()
                return data
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise PermanentError(ReasonCode.CLAIM_CHECK_MISSING, f"s3://{self.bucket}/{key} is gone") from None
            raise TransientError(f"s3: {exc}", downstream="s3") from exc
        except (BotoCoreError, OSError) as exc:
            raise TransientError(f"s3: {exc}", downstream="s3") from exc

    async def get_source(self, bucket: str, key: str, max_bytes: int) -> bytes:
        """A document of a ``source: s3`` job: FILE_NOT_FOUND when it is gone, DOCUMENT_TOO_LARGE
        over ``max_bytes`` (by the object's size, before reading it), an outage transient."""
        client = await self.client()
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            resp = await client.get_object(Bucket=bucket, Key=key)
            size = int(resp.get("ContentLength") or 0)
            async with resp["Body"] as body:
                if size > max_bytes:
                    raise PermanentError(ReasonCode.DOCUMENT_TOO_LARGE, f"s3://{bucket}/{key} is {size} bytes "
                                         f"(limit {max_bytes})", {"size": size, "limit": max_bytes})
                data: bytes = await body.read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NoSuchBucket"):
                raise PermanentError(ReasonCode.FILE_NOT_FOUND, f"s3://{bucket}/{key} does not exist") from None
            raise TransientError(f"s3: {exc}", downstream="s3") from exc
        except (BotoCoreError, OSError) as exc:
            raise TransientError(f"s3: {exc}", downstream="s3") from exc
        if len(data) > max_bytes:
            raise PermanentError(ReasonCode.DOCUMENT_TOO_LARGE, f"s3://{bucket}/{key} is {len(data)} bytes "
                                 f"(limit {max_bytes})", {"size": len(data), "limit": max_bytes})
        return data

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None
            self._client = None
