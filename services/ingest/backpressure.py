"""Is the pipeline keeping up?  The ingest consumer group's lag, measured in the background.

The local broker under-reports end offsets (ListOffsets "latest" is the newest batch's base
offset + 1), so this lag is a lower bound there; on Apache Kafka it is exact.
"""

from __future__ import annotations

import asyncio

from confluent_kafka import Consumer, TopicPartition

from services.ingest.periodic import Periodic
from shared.settings import Settings


class LagMonitor(Periodic):
    def __init__(self, settings: Settings, group: str, topics: list[str], interval_s: float = 5.0) -> None:
        self.settings = settings
        self.group = group
        self.topics = topics
        self.interval_s = interval_s
        self.lag = 0

    async def tick(self) -> None:
        self.lag = await asyncio.to_thread(self.measure)

    def measure(self) -> int:
        c = Consumer({"bootstrap.servers": self.settings.bootstrap_servers, "group.id": self.group,
                      "enable.auto.commit": False})
        try:
            md = c.list_topics(timeout=5)
            parts = [TopicPartition(t, p) for t in self.topics if t in md.topics for p in md.topics[t].partitions]
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
