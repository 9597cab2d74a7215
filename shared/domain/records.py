"""Records and their lifecycle."""

from __future__ import annotations

import re
from enum import StrEnum

# A record id: what names it everywhere (keys, audit, S3 metadata, logs, URLs), so no spaces,
# separators, quotes or control characters.  API, manifests and producers' messages all check it.
RECORD_ID_PATTERN = r"^[A-Za-z0-9._-]{1,200}$"
RECORD_ID_RULE = "1 to 200 characters: letters A-Z a-z, digits, '.', '_' and '-'"
# The region of records registered by a `source: s3` job (seed 000): downloaded from the S3 source
# bucket, not an SFTP server.  No SFTP region may take this name.
S3_REGION = "s3"
_RECORD_ID = re.compile(RECORD_ID_PATTERN)


def valid_record_id(record_id: str) -> bool:
    return _RECORD_ID.fullmatch(record_id) is not None


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


class ValidationProfile(StrEnum):
    """A job's ``validation_rules`` (seed 000): strict rejects on every rule; lenient archives a
    document whose only failed rules are in ``services.validate.profile.LENIENT_RULES``, with
    them as warnings."""

    STRICT = "strict"
    LENIENT = "lenient"
