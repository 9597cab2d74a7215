"""A dead letter as the runtime wrote it: the failed message, unchanged, plus why it failed.

The one decoder of dead-letter messages: ``fiscalflow dlq`` (reader.py) and the report service
(services/report/events.py) both build a :class:`DeadLetter` here, so they agree on what a dead
letter is and on when two messages are the same one (:func:`letter_id`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from shared.domain.messages import MalformedBody, envelope_of
from shared.runtime import headers as H


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _time(ms: str | None) -> datetime | None:
    n = _int(ms)
    return datetime.fromtimestamp(n / 1000, UTC) if n is not None else None


def letter_id(record_id: str, headers: dict[str, str], topic: str, partition: int, offset: int,
              timestamp_ms: int) -> str:
    """A dead letter's identity: the input delivery that failed, in which stage and which pass.

    A stage killed after its dead letter was acknowledged but before its input offset was
    committed handles that input again and writes the same dead letter a second time (the
    chaos suite saw 14–35 such copies a run).  A copy has the same record, stage, origin
    (topic, partition, offset and timestamp of the input's first delivery: they survive the
    retry lane) and replay count; only failure times and trace id differ.  A real new failure
    differs in one of those: a replay or re-drive is a new input message (new origin) and a
    replay carries its count.  A message without origin headers (not written by the runtime)
    is only itself: its position in the dead-letter topic, with its timestamp because the local
    broker's memory storage reuses offsets after a restart.
    """
    origin = (headers.get(H.ORIGIN_TOPIC), headers.get(H.ORIGIN_PARTITION), headers.get(H.ORIGIN_OFFSET))
    if not all(origin):
        return f"pos:{topic}:{partition}:{offset}:{timestamp_ms}"
    replays = _int(headers.get(H.REPLAY_COUNT)) or 0
    parts = [record_id, headers.get(H.STAGE, ""), *[str(o) for o in origin],
             headers.get(H.ORIGIN_TIMESTAMP_MS, ""), str(replays)]
    # A digest, not the joined text: unambiguous whatever a record id contains, and a fixed-size key.
    return hashlib.blake2b(json.dumps(parts).encode(), digest_size=16).hexdigest()


def _body_job_id(value: bytes | None) -> str | None:
    """The job id in a JSON message body or a framed document's envelope (a stage's task carries
    it), for a dead letter whose input had no ``ff-job-id`` header.  Only a JSON object is parsed:
    an XML document is not."""
    try:
        value = envelope_of(value) if value else value
    except MalformedBody:
        return None
    if not value or not value.lstrip().startswith(b"{"):
        return None
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    job = body.get("job_id") if isinstance(body, dict) else None
    return str(job) if job else None


def _details(raw: str | None) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:  # the runtime truncates ff-details at 50 kB: keep what is there
        return raw


class DeadLetter(BaseModel):
    """One dead letter: the first message of the dead-letter topic with its :func:`letter_id`.

    Its position (partition, offset) is that first message's; ``copies`` are the positions of
    the redelivered copies of it that :func:`collapse_copies` folded in.  A record that failed
    twice (again after a replay, or in another stage) has two dead letters.
    """

    model_config = ConfigDict(frozen=True)

    letter_id: str
    record_id: str
    dlq_topic: str
    dlq_partition: int
    dlq_offset: int
    dlq_timestamp_ms: int
    origin_topic: str
    origin_partition: int | None
    origin_offset: int | None
    origin_timestamp_ms: int | None = None
    stage: str
    reason: str
    error: str
    details: Any = None
    attempts: int
    first_failure: datetime | None
    last_failure: datetime | None
    failed_at_ms: int  # the last failure, else the message's own time (see failed_at)
    trace_id: str
    job_id: str | None
    replay_count: int
    value_size: int
    copies: tuple[str, ...] = ()  # PARTITION:OFFSET of each redelivered copy, not counted again
    headers: dict[str, str] = Field(default_factory=dict)
    # The message itself travels on when replayed; it is not part of the listing.
    key: bytes | None = Field(None, exclude=True, repr=False)
    value: bytes = Field(b"", exclude=True, repr=False)

    @classmethod
    def from_kafka(cls, topic: str, partition: int, offset: int, timestamp_ms: int, key: bytes | None,
                   value: bytes | None, headers: dict[str, str]) -> DeadLetter:
        record_id = key.decode("utf-8", "replace") if key else ""
        return cls(
            letter_id=letter_id(record_id, headers, topic, partition, offset, timestamp_ms),
            record_id=record_id,
            dlq_topic=topic, dlq_partition=partition, dlq_offset=offset, dlq_timestamp_ms=timestamp_ms,
            origin_topic=headers.get(H.ORIGIN_TOPIC, ""),
            origin_partition=_int(headers.get(H.ORIGIN_PARTITION)),
            origin_offset=_int(headers.get(H.ORIGIN_OFFSET)),
            origin_timestamp_ms=_int(headers.get(H.ORIGIN_TIMESTAMP_MS)),
            stage=headers.get(H.STAGE, ""),
            reason=headers.get(H.REASON, ""),
            error=headers.get(H.ERROR_MESSAGE, ""),
            details=_details(headers.get(H.DETAILS)),
            attempts=_int(headers.get(H.ATTEMPT)) or 0,
            first_failure=_time(headers.get(H.FIRST_FAILURE_MS)),
            last_failure=_time(headers.get(H.LAST_FAILURE_MS)),
            failed_at_ms=_int(headers.get(H.LAST_FAILURE_MS)) or timestamp_ms,
            trace_id=headers.get(H.TRACE_ID, ""),
            job_id=headers.get(H.JOB_ID) or _body_job_id(value),
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
        return datetime.fromtimestamp(self.failed_at_ms / 1000, UTC)

    def supersedes(self, other: DeadLetter) -> bool:
        """Is this a later dead letter than ``other``?  A record's letters share a partition (keyed
        by record id), where the offset decides; across partitions (a hand-produced letter, another
        topic) the broker's timestamps do."""
        if (self.dlq_topic, self.dlq_partition) == (other.dlq_topic, other.dlq_partition):
            return self.dlq_offset > other.dlq_offset
        return (self.dlq_timestamp_ms, self.dlq_offset) > (other.dlq_timestamp_ms, other.dlq_offset)


def collapse_copies(letters: Iterable[DeadLetter]) -> list[DeadLetter]:
    """Each dead letter once, in the order of first appearance: the first copy read stands for
    all (a record's copies share its partition, keyed by record id, so the first read is the
    first written); the later copies' positions go to ``copies`` and their values are dropped."""
    first: dict[str, DeadLetter] = {}
    copies: dict[str, list[str]] = {}
    for dl in letters:
        if dl.letter_id in first:
            copies.setdefault(dl.letter_id, []).append(dl.position)
        else:
            first[dl.letter_id] = dl
    return [dl.model_copy(update={"copies": tuple(copies[i])}) if i in copies else dl for i, dl in first.items()]
