"""Register the files of a region that match a pattern, listed over SFTP.

Pattern semantics (relative to the region root, like .gitignore): a pattern without ``/`` matches
file names at any depth (``*.xml``); a pattern with ``/`` matches the whole relative path, one
glob per path segment (``batch-7/*.xml``).  The record id is the file stem; the expected sha256
and size come from a ``MANIFEST.csv`` in the same directory when there is one.
"""

from __future__ import annotations

import asyncio
import csv
import io
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import PurePosixPath

import asyncssh

from shared.db.records import Registration
from shared.sftp.pool import RegionPool

MANIFEST = "MANIFEST.csv"
# Caps of one pattern job, each refused with a 422 and its reason: how deep a pattern or a name
# search goes, how many directory entries one listing may scan (matching or not), how long the
# listing and its manifests may take, and how large one MANIFEST.csv may be (it is read whole).
MAX_DEPTH = 8
MAX_SCANNED = 1_000_000
LIST_TIMEOUT_S = 120.0
MAX_MANIFEST_BYTES = 32 * 1024 * 1024


class PatternError(ValueError):
    """The pattern is empty, absolute or escapes the root."""


class TooManyFiles(ValueError):
    """The job would be too large: too many files, entries to scan, a listing too slow or a
    manifest too large."""


class ManifestUnreadable(ValueError):
    """A MANIFEST.csv is there but the SFTP user may not read it: registering those files without
    their checksums would silently skip verification, so the job is refused instead."""


def check_pattern(pattern: str) -> PurePosixPath:
    p = PurePosixPath(pattern)
    if not pattern.strip() or p.is_absolute() or "\\" in pattern:
        raise PatternError(f"pattern {pattern!r} must be a relative path under the region root")
    if ".." in p.parts:
        raise PatternError(f"pattern {pattern!r} may not contain '..'")
    if len(p.parts) > MAX_DEPTH:
        raise PatternError(f"pattern {pattern!r} has {len(p.parts)} path segments; at most {MAX_DEPTH}")
    return p


@dataclass(frozen=True)
class _Match:
    path: str  # relative to the region root
    size: int


def _has_glob(part: str) -> bool:
    return any(c in part for c in "*?[")


async def list_matching(pool: RegionPool, pattern: str, limit: int) -> list[_Match]:
    parts = check_pattern(pattern).parts
    by_name = len(parts) == 1
    # Start at the literal prefix of the pattern: no need to list what cannot match.
    base: list[str] = []
    for part in parts[:-1]:
        if _has_glob(part):
            break
        base.append(part)
    found: list[_Match] = []
    scanned = 0
    async with pool.channel() as sftp:
        stack = [(base, len(base))]
        while stack:
            prefix, depth = stack.pop()
            directory = "/".join(prefix) or "."
            try:
                # Streamed, not listed first: 33,000 SFTPName objects at once were ~20 MB of heap per
                # region that the process kept after the job was registered.
                async for entry in sftp.scandir(directory):
                    name = entry.filename if isinstance(entry.filename, str) else entry.filename.decode()
                    if name in (".", ".."):
                        continue
                    scanned += 1
                    if scanned > MAX_SCANNED:
                        raise TooManyFiles(f"pattern {pattern!r} scans more than {MAX_SCANNED:,} directory entries; "
                                           "narrow it to the directories that hold the files")
                    rel = [*prefix, name]
                    if entry.attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY:
                        if (by_name and depth < MAX_DEPTH) or (not by_name and depth < len(parts) - 1
                                                              and fnmatchcase(name, parts[depth])):
                            stack.append((rel, depth + 1))
                    elif entry.attrs.type == asyncssh.FILEXFER_TYPE_REGULAR:
                        ok = fnmatchcase(name, parts[0]) if by_name else (
                            depth == len(parts) - 1 and fnmatchcase(name, parts[-1]))
                        if ok and name != MANIFEST:
                            found.append(_Match("/".join(rel), entry.attrs.size or 0))
                            if len(found) > limit:
                                raise TooManyFiles(f"pattern {pattern!r} matches more than {limit} files")
            except asyncssh.SFTPNoSuchFile:
                continue
    return sorted(found, key=lambda m: m.path)


async def _manifest(pool: RegionPool, directory: str) -> dict[str, tuple[str, int | None]]:
    """path → (sha256, size) from the directory's MANIFEST.csv (empty when there is none)."""
    path = f"{directory}/{MANIFEST}" if directory else MANIFEST
    try:
        async with pool.channel() as sftp, sftp.open(path, "rb") as f:
            raw = await f.read(MAX_MANIFEST_BYTES + 1)
    except asyncssh.SFTPNoSuchFile:
        return {}
    except asyncssh.SFTPPermissionDenied:
        raise ManifestUnreadable(f"{pool.region}:{path} exists but is not readable over SFTP") from None
    assert isinstance(raw, bytes)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise TooManyFiles(f"{pool.region}:{path} is larger than {MAX_MANIFEST_BYTES // 2**20} MiB; split the "
                           "directory (one manifest per batch directory)")
    return parse_manifest(raw)


def parse_manifest(raw: bytes) -> dict[str, tuple[str, int | None]]:
    """path → (sha256, size) of a batch directory's MANIFEST.csv (rows without both are skipped)."""
    out: dict[str, tuple[str, int | None]] = {}
    for row in csv.DictReader(io.StringIO(raw.decode("utf-8", "replace"))):
        if row.get("path") and row.get("sha256"):
            size = row.get("size") or ""
            out[row["path"]] = (row["sha256"].lower(), int(size) if size.isdigit() else None)
    return out


async def registrations(pool: RegionPool, pattern: str, limit: int,
                        timeout_s: float = LIST_TIMEOUT_S) -> list[Registration]:
    try:
        async with asyncio.timeout(timeout_s):
            return await _registrations(pool, pattern, limit)
    except TimeoutError:
        raise TooManyFiles(f"listing {pool.region}:{pattern!r} and its manifests took longer than {timeout_s:.0f} s; "
                           "narrow the pattern or submit the files as a manifest") from None


async def _registrations(pool: RegionPool, pattern: str, limit: int) -> list[Registration]:
    matches = await list_matching(pool, pattern, limit)
    manifests: dict[str, dict[str, tuple[str, int | None]]] = {}
    rows = []
    for m in matches:
        directory = str(PurePosixPath(m.path).parent).removeprefix(".")
        if directory not in manifests:
            manifests[directory] = await _manifest(pool, directory)
        sha, size = manifests[directory].get(m.path, (None, None))
        rows.append(Registration(PurePosixPath(m.path).stem, pool.region, m.path, sha, size if size is not None
                                 else m.size))
    return rows
