"""Reading a topic from its start in a test: assigned, never subscribed.

A subscribed reader joins a consumer group, and Tansu holds a JoinGroup for half the session
timeout (3 s at 6,000 ms; 22.5 s at librdkafka's default 45,000).  A reader needs no group: it is
assigned every partition of the topic at its beginning, and reads at once.
"""

from __future__ import annotations

import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka import Message as KafkaMessage

from shared.settings import Settings


def reader_from_start(settings: Settings, topic: str, timeout: float = 30.0, eof: bool = False) -> Consumer:
    """A consumer assigned every partition of ``topic`` at its first offset (``eof``: it reports
    each partition's end as a ``_PARTITION_EOF`` event).

    Waits up to ``timeout`` for the topic to exist (the stage under test may create it), listing
    every topic rather than naming this one, so the broker never creates it for the reader.  A
    caller's read timeout starts after this wait."""
    c = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": f"reader-{uuid.uuid4().hex}",
                  "enable.auto.commit": False, "allow.auto.create.topics": False, "fetch.wait.max.ms": 20,
                  "enable.partition.eof": eof})
    deadline = time.monotonic() + timeout
    while True:
        meta = c.list_topics(timeout=10).topics.get(topic)
        if meta is not None and meta.error is None and meta.partitions:
            c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(meta.partitions)])
            return c
        if time.monotonic() >= deadline:
            c.close()
            raise AssertionError(f"topic {topic} did not appear within {timeout:.0f} s")
        time.sleep(0.2)


def read_to_end(settings: Settings, topic: str, keys: set[str] | None = None,
                timeout: float = 30.0) -> list[KafkaMessage]:
    """Every message of ``topic`` (with one of ``keys``), read to the end of each partition."""
    c = reader_from_start(settings, topic, timeout, eof=True)
    parts = {tp.partition for tp in c.assignment()}
    out: list[KafkaMessage] = []
    ended: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while ended != parts and time.monotonic() < deadline:
            for m in c.consume(1000, 0.2):
                err = m.error()
                if err is not None:
                    assert err.code() == KafkaError._PARTITION_EOF, err
                    ended.add(int(m.partition() or 0))
                elif keys is None or (m.key() or b"").decode() in keys:
                    out.append(m)
    finally:
        c.close()
    assert ended == parts, f"{topic} never reached its end"
    return out
