"""Fetch one document over SFTP: size cap before reading, sha256 while streaming, errors typed.

A document over the cap is a ``DOCUMENT_TOO_LARGE`` dead letter whose message and details
carry its size: known from the manifest before opening it, or for a bare record id from the
server's FSTAT (or, from a server that will not say, once the read passed the cap) — never read
whole."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

import asyncssh

from shared.domain.reasons import ReasonCode
from shared.runtime import PermanentError, TransientError
from shared.runtime.budget import current_hold
from shared.sftp.paths import safe_relative
from shared.sftp.pool import PoolUnavailable, RegionPool

BLOCK = 256 * 1024
FETCH_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class Fetched:
    data: bytes
    sha256: str

    @property
    def size(self) -> int:
        return len(self.data)


def too_large(rel: str, size: int, max_bytes: int) -> PermanentError:
    return PermanentError(ReasonCode.DOCUMENT_TOO_LARGE, f"{rel} is {size} bytes (limit {max_bytes})",
                          {"size": size, "limit": max_bytes})


async def _stat_size(f: asyncssh.SFTPClientFile) -> int | None:
    """The file's size from the server (one FSTAT); None if it will not say."""
    try:
        return (await f.stat()).size
    except (asyncssh.Error, OSError):
        return None


async def _size_of(f: asyncssh.SFTPClientFile, read: int) -> int:
    """The file's size from the server; what was read (a lower bound) if it will not say."""
    size = await _stat_size(f)
    return size if size is not None and size >= read else read


async def fetch(pool: RegionPool, path: str, max_bytes: int, expected_size: int | None = None,
                priority: bool = False) -> Fetched:
    rel = safe_relative(path)
    if expected_size is not None and expected_size > max_bytes:  # known from the job's manifest
        raise too_large(rel, expected_size, max_bytes)
    downstream = f"sftp:{pool.region}"
    try:
        async with asyncio.timeout(FETCH_TIMEOUT_S):  # not wait_for: no task of its own per document
            return await _read(pool, rel, max_bytes, expected_size, priority)
    except asyncssh.SFTPNoSuchFile:
        raise PermanentError(ReasonCode.FILE_NOT_FOUND, f"{pool.region}:{rel} does not exist") from None
    except (TimeoutError, PoolUnavailable, asyncssh.Error, OSError) as exc:
        if isinstance(exc, asyncssh.SFTPError) and not isinstance(exc, asyncssh.SFTPConnectionLost):
            # e.g. permission denied, a directory: the file will not become readable by retrying.
            raise PermanentError(ReasonCode.FILE_NOT_FOUND, f"{pool.region}:{rel}: {exc}") from None
        raise TransientError(f"{type(exc).__name__}: {exc}"[:500] or "timeout", downstream=downstream) from exc


async def _read(pool: RegionPool, rel: str, max_bytes: int, expected_size: int | None = None,
                priority: bool = False) -> Fetched:
    """open, READ…, close (the loop stops one byte past the cap); FSTAT only for a bare record id.

    Each ``f.read`` is one SFTP READ (``block_size=0``) of at most the server's read limit.  A
    short read is taken as the end of the file only when it lands exactly on the size the job's
    manifest announced (the checksum then confirms the content); otherwise reading goes on
    until the server says EOF, since SFTP lets a server answer any READ with fewer bytes.
    So a document of a manifest job costs three requests (open, read, close), one of a bare
    record id five (its size is asked first, for the byte budget).

    The document's bytes are reserved on the message's byte budget (``shared/runtime/budget.py``)
    before they are read: the announced size before taking a channel, else the server's answer to
    FSTAT.  A failed read keeps its reservation until the message's work ends.
    """
    hold = current_hold()
    reserved = 0
    if expected_size is not None:  # the document's bytes, before taking a channel to read them
        await hold.reserve(reserved := expected_size)
    # A priority-lane document takes the next free channel before the backlog's waiting downloads.
    async with pool.channel(priority) as sftp, sftp.open(rel, "rb", block_size=0) as f:
        if expected_size is None:
            # A bare record id: its size from the server (one FSTAT), or the cap if it will not say.
            size = await _stat_size(f)
            if size is not None and size > max_bytes:
                raise too_large(rel, size, max_bytes)
            await hold.reserve(reserved := max_bytes if size is None else size)
        step = min(BLOCK, sftp.limits.max_read_len or BLOCK)
        digest = hashlib.sha256()
        chunks: list[bytes] = []
        total = 0
        while True:
            # One byte more than the cap allows: a file past the cap is caught without reading it all.
            want = min(step, max_bytes - total + 1)
            chunk = await f.read(want)
            assert isinstance(chunk, bytes)
            if not chunk:  # EOF
                break
            total += len(chunk)
            if total > max_bytes:
                raise too_large(rel, await _size_of(f, total), max_bytes)
            if total > reserved:  # longer than announced: already read, so counted without waiting
                hold.charge(total - reserved)
                reserved = total
            digest.update(chunk)
            chunks.append(chunk)
            if len(chunk) < want and total == expected_size:
                break
    hold.give_back(reserved - total)
    return Fetched(b"".join(chunks), digest.hexdigest())
