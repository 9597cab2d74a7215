"""Paths on a region's SFTP server: always relative to its root (registered paths and fetches alike)."""

from __future__ import annotations

from pathlib import PurePosixPath

from shared.domain.reasons import ReasonCode
from shared.runtime import PermanentError


def safe_relative(path: str) -> str:
    """Paths are relative to the region root; absolute paths and ``..`` could leave it."""
    p = PurePosixPath(path)
    if not path or p.is_absolute() or path.startswith("\\") or ".." in p.parts or "\\" in path:
        raise PermanentError(ReasonCode.PATH_OUTSIDE_ROOT, f"path {path!r} is not inside the region root")
    return p.as_posix()
