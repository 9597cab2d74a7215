"""Publish record ids to the ingest lane (normal or priority), keyed by record id.

Used by the HTTP API and by ``fiscalflow publish``: one place that knows what a producer sends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from services.ingest.requests import JOB_HEADER
from shared.domain.messages import IngestRequest
from shared.domain.records import Priority
from shared.runtime.kafka import AsyncProducer
from shared.topics import Stage, input_topic, priority_topic


def ingest_topic(priority: Priority, namespace: str = "") -> str:
    topic = priority_topic(Stage.INGEST) if priority is Priority.HIGH else input_topic(Stage.INGEST)
    return f"{namespace}.{topic}" if namespace else topic


def encode(record_id: str, job_id: str | None, priority: Priority) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) of one ingest request."""
    value = IngestRequest(record_id=record_id, job_id=job_id, priority=priority).encode()
    headers = [(JOB_HEADER, job_id.encode())] if job_id else []
    return record_id.encode(), value, headers


async def publish(producer: AsyncProducer, record_ids: Iterable[str], priority: Priority, job_id: str | None,
                  namespace: str = "") -> int:
    """Publish and wait until the broker acknowledged every id (raises on a failed delivery)."""
    topic = ingest_topic(priority, namespace)
    futures = []
    for rid in record_ids:
        key, value, headers = encode(rid, job_id, priority)
        futures.append(producer.send(topic, value, key, headers))
    await asyncio.gather(*futures)
    return len(futures)
