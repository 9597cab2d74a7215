"""Records and their lifecycle."""

from __future__ import annotations

from enum import StrEnum


class RecordStatus(StrEnum):
    PENDING = "pending"
    DOWNLOADING = "downloading"
    DOWNLOADED = "downloaded"
    ARCHIVED = "archived"
    REJECTED = "rejected"
    DUPLICATE = "duplicate"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({RecordStatus.ARCHIVED, RecordStatus.REJECTED, RecordStatus.DUPLICATE})


class Priority(StrEnum):
    NORMAL = "normal"
    HIGH = "high"
