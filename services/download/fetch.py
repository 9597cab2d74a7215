"""Fetch one document over SFTP: size cap before reading, sha256 while streaming, errors typed."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import PurePosixPath

import asyncssh

from services.download.pool import PoolUnavailable, RegionPool
from shared.domain.reasons import ReasonCode
from shared.runtime import PermanentError, TransientError

BLOCK = 256 * 1024
FETCH_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class Fetched:
    data: bytes
    sha256: str

    @property
    def size(self) -> int:
        return len(self.data)


def safe_relative(path: str) -> str:
    """Paths are relative to the region root; absolute paths and ``..`` could leave it."""
    p = PurePosixPath(path)
    if not path or p.is_absolute() or path.startswith("\\") or ".." in p.parts or "\\" in path:
        raise PermanentError(ReasonCode.PATH_OUTSIDE_ROOT, f"path {path!r} is not inside the region root")
    return p.as_posix()


async def fetch(pool: RegionPool, path: str, max_bytes: int) -> Fetched:
    rel = safe_relative(path)
    downstream = f"sftp:{pool.region}"
    try:
        return await asyncio.wait_for(_read(pool, rel, max_bytes), FETCH_TIMEOUT_S)
    except asyncssh.SFTPNoSuchFile:
        raise PermanentError(ReasonCode.FILE_NOT_FOUND, f"{pool.region}:{rel} does not exist") from None
    except (TimeoutError, PoolUnavailable, asyncssh.Error, OSError) as exc:
        if isinstance(exc, asyncssh.SFTPError) and not isinstance(exc, asyncssh.SFTPConnectionLost):
            # e.g. permission denied, a directory: the file will not become readable by retrying.
            raise PermanentError(ReasonCode.FILE_NOT_FOUND, f"{pool.region}:{rel}: {exc}") from None
        raise TransientError(f"{type(exc).__name__}: {exc}"[:500] or "timeout", downstream=downstream) from exc


async def _read(pool: RegionPool, rel: str, max_bytes: int) -> Fetched:
    async with pool.channel() as sftp, sftp.open(rel, "rb", block_size=BLOCK) as f:
        size = (await f.stat()).size or 0
        if size > max_bytes:
            raise PermanentError(ReasonCode.FILE_TOO_LARGE, f"{rel} is {size} bytes (limit {max_bytes})",
                                 {"size": size, "limit": max_bytes})
        digest = hashlib.sha256()
        chunks: list[bytes] = []
        total = 0
        while True:
            # One read more than announced: a file that grew past the cap is caught without reading it all.
            want = min(BLOCK, max_bytes - total + 1)
            chunk = await f.read(want)
            assert isinstance(chunk, bytes)
            total += len(chunk)
            if total > max_bytes:
                raise PermanentError(ReasonCode.FILE_TOO_LARGE, f"{rel} grew past {max_bytes} bytes",
                                     {"limit": max_bytes})
            digest.update(chunk)
            chunks.append(chunk)
            if len(chunk) < want:  # asyncssh reads until the size asked or EOF: a short read is EOF
                break
    return Fetched(b"".join(chunks), digest.hexdigest())
