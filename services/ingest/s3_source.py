"""Seed 000's ``source: s3``: a job over the documents under a prefix of the S3 source bucket.

``file_pattern`` names objects of ``FISCALFLOW_S3_SOURCE_BUCKET`` the way an SFTP pattern names
files: a key glob (``inbox/2025-06-01/*.xml``).  The part before the first wildcard is the listing
prefix (one paginated ListObjectsV2, never the whole bucket unless asked); the rest is matched
segment by segment, ``*`` never crossing a ``/``.  Each ``.xml`` object becomes a record of region
``s3`` whose remote path is its key and whose id is its name without ``.xml``, as for SFTP.  A
``MANIFEST.csv`` object in a matched object's directory (``path,sha256[,size]``, paths relative to
the bucket) gives the checksums the download stage verifies, as an SFTP manifest does.

The same caps as an SFTP pattern: path segments, objects listed, listing time, manifest size.
"""

from __future__ import annotations

import asyncio
import fnmatch
from pathlib import PurePosixPath
from typing import Any

from services.ingest.sources import (
    LIST_TIMEOUT_S,
    MANIFEST,
    MAX_MANIFEST_BYTES,
    MAX_SCANNED,
    TooManyFiles,
    check_pattern,
    parse_manifest,
)
from shared.db.records import Registration
from shared.domain.records import S3_REGION
from shared.runtime.errors import TransientError
from shared.s3 import S3Store

_WILDCARDS = "*?["


def listing_prefix(pattern: str) -> str:
    """The longest literal start of ``pattern``: what S3 lists under."""
    cut = min((i for i, ch in enumerate(pattern) if ch in _WILDCARDS), default=len(pattern))
    return pattern[:cut]


def matches(pattern: str, key: str) -> bool:
    """``key`` matches ``pattern`` segment by segment (``*`` stays within one segment)."""
    want, got = PurePosixPath(pattern).parts, PurePosixPath(key).parts
    return len(want) == len(got) and all(fnmatch.fnmatchcase(g, w) for w, g in zip(want, got, strict=True))


async def registrations(store: S3Store, bucket: str, pattern: str, limit: int,
                        timeout_s: float = LIST_TIMEOUT_S) -> list[Registration]:
    """The records a ``source: s3`` job names; PatternError/TooManyFiles with the reason; an S3 outage
    is a TransientError('s3')."""
    check_pattern(pattern)
    try:
        async with asyncio.timeout(timeout_s):
            return await _registrations(store, bucket, pattern, limit)
    except TimeoutError:
        raise TooManyFiles(f"listing s3://{bucket}/{listing_prefix(pattern)} took longer than {timeout_s:.0f} s; "
                           "narrow the pattern") from None


async def _registrations(store: S3Store, bucket: str, pattern: str, limit: int) -> list[Registration]:
    from botocore.exceptions import BotoCoreError, ClientError

    client = await store.client()
    found: list[tuple[str, int]] = []
    scanned = 0
    try:
        paginator = client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=bucket, Prefix=listing_prefix(pattern)):
            for obj in page.get("Contents", ()):
                scanned += 1
                if scanned > MAX_SCANNED:
                    raise TooManyFiles(f"pattern {pattern!r} lists more than {MAX_SCANNED:,} objects; narrow it")
                key = obj["Key"]
                if key.endswith(".xml") and matches(pattern, key):
                    found.append((key, int(obj.get("Size", 0))))
                    if len(found) > limit:
                        raise TooManyFiles(f"pattern {pattern!r} matches more than {limit} objects")
        manifests: dict[str, dict[str, tuple[str, int | None]]] = {}
        rows = []
        for key, size in sorted(found):
            directory = str(PurePosixPath(key).parent).removeprefix(".")
            if directory not in manifests:
                manifests[directory] = await _manifest(client, bucket, directory)
            sha, listed = manifests[directory].get(key, (None, None))
            rows.append(Registration(PurePosixPath(key).stem, S3_REGION, key, sha,
                                     listed if listed is not None else size))
        return rows
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code == "NoSuchBucket":
            raise TooManyFiles(f"the S3 source bucket {bucket!r} does not exist") from None
        raise TransientError(f"s3: {exc}", downstream="s3") from exc
    except (BotoCoreError, OSError) as exc:
        raise TransientError(f"s3: {exc}", downstream="s3") from exc


async def _manifest(client: Any, bucket: str, directory: str) -> dict[str, tuple[str, int | None]]:
    from botocore.exceptions import ClientError

    key = f"{directory}/{MANIFEST}" if directory else MANIFEST
    try:
        resp = await client.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{MAX_MANIFEST_BYTES}")
        async with resp["Body"] as body:
            raw: bytes = await body.read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return {}
        raise
    if len(raw) > MAX_MANIFEST_BYTES:
        raise TooManyFiles(f"s3://{bucket}/{key} is larger than {MAX_MANIFEST_BYTES // 2**20} MiB; split the prefix")
    return parse_manifest(raw)
