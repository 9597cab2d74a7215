"""A dead letter as the runtime wrote it: the failed message, unchanged, plus why it failed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.runtime import headers as H

JOB_ID = "ff-job-id"  # a domain header: the job the record belongs to (carried by the runtime)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _time(ms: str | None) -> datetime | None:
    n = _int(ms)
    return datetime.fromtimestamp(n / 1000, UTC) if n is not None else None


def _details(raw: str | None) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:  # the runtime truncates ff-details at 50 kB: keep what is there
        return raw


class DeadLetter(BaseModel):
    """One message of the dead-letter topic.

    Its identity is its position in that topic (partition, offset): a record dead-lettered twice
    is two dead letters.  ``dlq_timestamp_ms`` tells a message from another one that a recreated
    topic (the local broker's memory storage) put at the same position.
    """

    model_config = ConfigDict(frozen=True)

    record_id: str
    dlq_topic: str
    dlq_partition: int
    dlq_offset: int
    dlq_timestamp_ms: int
    origin_topic: str
    origin_partition: int | None
    origin_offset: int | None
    stage: str
    reason: str
    error: str
    details: Any = None
    attempts: int
    first_failure: datetime | None
    last_failure: datetime | None
    trace_id: str
    job_id: str | None
    replay_count: int
    value_size: int
    headers: dict[str, str] = Field(default_factory=dict)
    # The message itself travels on when replayed; it is not part of the listing.
    key: bytes | None = Field(None, exclude=True, repr=False)
    value: bytes = Field(b"", exclude=True, repr=False)

    @classmethod
    def from_kafka(cls, topic: str, partition: int, offset: int, timestamp_ms: int, key: bytes | None,
                   value: bytes | None, headers: dict[str, str]) -> DeadLetter:
        return cls(
            record_id=key.decode("utf-8", "replace") if key else "",
            dlq_topic=topic, dlq_partition=partition, dlq_offset=offset, dlq_timestamp_ms=timestamp_ms,
            origin_topic=headers.get(H.ORIGIN_TOPIC, ""),
            origin_partition=_int(headers.get(H.ORIGIN_PARTITION)),
            origin_offset=_int(headers.get(H.ORIGIN_OFFSET)),
            stage=headers.get(H.STAGE, ""),
            reason=headers.get(H.REASON, ""),
            error=headers.get(H.ERROR_MESSAGE, ""),
            details=_details(headers.get(H.DETAILS)),
            attempts=_int(headers.get(H.ATTEMPT)) or 0,
            first_failure=_time(headers.get(H.FIRST_FAILURE_MS)),
            last_failure=_time(headers.get(H.LAST_FAILURE_MS)),
            trace_id=headers.get(H.TRACE_ID, ""),
            job_id=headers.get(JOB_ID) or None,
            replay_count=_int(headers.get(H.REPLAY_COUNT)) or 0,
            value_size=len(value or b""),
            headers=headers,
            key=key,
            value=value or b"",
        )

    @property
    def position(self) -> str:
        """``PARTITION:OFFSET``, what ``dlq show`` accepts."""
        return f"{self.dlq_partition}:{self.dlq_offset}"

    @property
    def failed_at(self) -> datetime:
        """When the record failed: the runtime's last-failure time, else the message's own time."""
        return self.last_failure or datetime.fromtimestamp(self.dlq_timestamp_ms / 1000, UTC)

    def supersedes(self, other: DeadLetter) -> bool:
        """Is this a later dead letter than ``other``?  A record's letters share a partition (keyed
        by record id), where the offset decides; across partitions (a hand-produced letter, another
        topic) the broker's timestamps do."""
        if (self.dlq_topic, self.dlq_partition) == (other.dlq_topic, other.dlq_partition):
            return self.dlq_offset > other.dlq_offset
        return (self.dlq_timestamp_ms, self.dlq_offset) > (other.dlq_timestamp_ms, other.dlq_offset)
