"""Publish record ids to the ingest lane (normal or priority), keyed by record id.

Used by the HTTP API and by ``fiscalflow publish``: one place that knows what a producer sends.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice

from shared.domain.messages import IngestRequest
from shared.domain.records import RECORD_ID_RULE, Priority, valid_record_id
from shared.runtime import headers as H
from shared.runtime.kafka import AsyncProducer
from shared.topics import Stage, input_topic, priority_topic

# Ids produced per ``send_many`` call; between two the event loop runs (the job's members are copied
# into PostgreSQL meanwhile: see ``Submitter.submit``).
CHUNK = 5_000

# Every id of a list at once: the list joined by newlines is a newline-separated run of valid ids
# (one C-level match, ~20x faster than a match per id at 100,000 ids), and holds no more newlines
# than the separators, so no id had one inside.  The same rule as ``valid_record_id``.
_ID_RUN = re.compile(r"[A-Za-z0-9._-]{1,200}(?:\n[A-Za-z0-9._-]{1,200})*")


def ingest_topic(priority: Priority, namespace: str = "") -> str:
    topic = priority_topic(Stage.INGEST) if priority is Priority.HIGH else input_topic(Stage.INGEST)
    return f"{namespace}.{topic}" if namespace else topic


def encode(record_id: str, job_id: str | None, priority: Priority) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) of one ingest request."""
    value = IngestRequest(record_id=record_id, job_id=job_id, priority=priority).encode()
    headers = [(H.JOB_ID, job_id.encode())] if job_id else []
    return record_id.encode(), value, headers


def check_record_ids(record_ids: Sequence[str]) -> None:
    """Raise ValueError naming the first id that breaks the rule (``valid_record_id``)."""
    if not record_ids:
        return
    try:
        joined = "\n".join(record_ids)
    except TypeError:
        joined = ""  # not all strings: the slow path names the first
    if joined and _ID_RUN.fullmatch(joined) is not None and joined.count("\n") == len(record_ids) - 1:
        return
    for rid in record_ids:
        if not isinstance(rid, str) or not valid_record_id(rid):
            raise ValueError(f"record id {str(rid)[:60]!r}: {RECORD_ID_RULE}")


def _encode_many(record_ids: Iterable[str], job_id: str | None,
                 priority: Priority) -> Iterator[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """``encode`` for a batch, without a pydantic model per id: the same bytes as
    ``IngestRequest.encode`` (compact JSON, UTF-8, no null fields), one shared header list.  Every
    id is checked first, so a bad one refuses the batch before anything is sent."""
    ids = record_ids if isinstance(record_ids, Sequence) else list(record_ids)
    check_record_ids(ids)
    return _messages(ids, job_id, priority)


def _messages(ids: Sequence[str], job_id: str | None,
              priority: Priority) -> Iterator[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """Checked ids' messages.  A valid id needs no JSON escaping (letters, digits, '.', '_', '-'):
    its value is three byte strings joined (``json.dumps`` per id was half the encoding's time)."""
    headers = [(H.JOB_ID, job_id.encode())] if job_id else []
    head = b'{"v":1,"record_id":"'
    tail = ('"' + (f',"job_id":{json.dumps(job_id, ensure_ascii=False)}' if job_id else "")
            + f',"priority":{json.dumps(priority.value)}}}').encode()
    for rid in ids:
        key = rid.encode()
        yield key, head + key + tail, headers


async def publish(producer: AsyncProducer, record_ids: Iterable[str], priority: Priority, job_id: str | None,
                  namespace: str = "") -> int:
    """Publish and wait until the broker acknowledged every id (raises on a failed delivery; a bad
    id raises ValueError before anything is sent).

    In chunks of ``CHUNK`` ids, each its own ``send_many``, the event loop running between two: a
    big job does not hold the loop for its whole produce loop (a third of a second at 100,000 ids),
    so what runs beside it (the job's COPY into PostgreSQL, the stage's consumer) keeps moving.
    The chunks' deliveries are awaited together, not one after the other."""
    messages = _encode_many(record_ids, job_id, priority)  # every id checked before the first is sent
    topic = ingest_topic(priority, namespace)
    sends: list[asyncio.Future[int]] = []
    try:
        while chunk := list(islice(messages, CHUNK)):
            sends.append(asyncio.ensure_future(producer.send_many(topic, chunk)))
            await asyncio.sleep(0)  # that chunk is produced now; whatever else is ready runs too
    finally:
        results = await asyncio.gather(*sends, return_exceptions=True)
    sent = 0
    for result in results:
        if isinstance(result, BaseException):
            raise result
        sent += result
    return sent
