"""Is the pipeline keeping up?  The ingest stage's lag, measured in the background.

Each topic's lag is measured in the group that reads it: the runtime reads the priority lane in a
group of its own (``fiscalflow-ingest.priority``).  Measured in the normal group, whose offsets on
the priority topic are never committed, every priority request ever published counted as lag, for
good: past MAX_PIPELINE_LAG of them the API would refuse every job.

The local broker under-reports end offsets (ListOffsets "latest" is the newest batch's base
offset + 1), so this lag is a lower bound there; on Apache Kafka it is exact.

Every refusal the API answers to slow a client down goes through :func:`refusal`: one status, one
Retry-After, one count in ``fiscalflow_api_backpressure_total``.
"""

from __future__ import annotations

import asyncio
import math

from confluent_kafka import Consumer, TopicPartition
from fastapi import HTTPException

from services.ingest.metrics import BACKPRESSURE, BACKPRESSURE_REASONS
from shared.runtime.kafka import client_config
from shared.settings import Settings


def refusal(status: int, reason: str, detail: str, retry_after_s: float) -> HTTPException:
    """The HTTPException to raise (503 or 429, ``Retry-After`` in whole seconds, at least 1), counted."""
    assert reason in BACKPRESSURE_REASONS[str(status)], (status, reason)
    BACKPRESSURE.labels(str(status), reason).inc()
    return HTTPException(status, detail, headers={"Retry-After": str(max(1, math.ceil(retry_after_s)))})


class LagMonitor:
    """The ingest lag, measured every ``interval_s`` by a periodic task of the service host."""

    def __init__(self, settings: Settings, groups: dict[str, list[str]], interval_s: float = 5.0) -> None:
        self.settings = settings
        self.groups = groups  # consumer group -> the topics it reads
        self.interval_s = interval_s
        self.lag = 0

    async def tick(self) -> None:
        self.lag = await asyncio.to_thread(self.measure)

    def measure(self) -> int:
        return group_lag(self.settings, self.groups)


def group_lag(settings: Settings, groups: dict[str, list[str]]) -> int:
    """Messages not yet committed by the groups on the topics they read (blocking: run in a thread)."""
    return sum(_one_group_lag(settings, group, topics) for group, topics in groups.items())


def _one_group_lag(settings: Settings, group: str, topics: list[str]) -> int:
    c = Consumer({**client_config(settings), "group.id": group, "enable.auto.commit": False})
    try:
        md = c.list_topics(timeout=5)
        parts = [TopicPartition(t, p) for t in topics if t in md.topics for p in md.topics[t].partitions]
        if not parts:
            return 0
        total = 0
        for tp in c.committed(parts, timeout=5):
            _, high = c.get_watermark_offsets(tp, timeout=5)
            low = tp.offset if tp.offset >= 0 else 0
            total += max(0, high - low)
        return total
    finally:
        c.close()
