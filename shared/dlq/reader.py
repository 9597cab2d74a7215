"""Read the dead-letter topic from its beginning to its current end, committing nothing.

The end is where every partition reports end-of-partition (``enable.partition.eof``): the
consumer emits it when it reaches the high watermark of a fetch response, which the local broker
(Tansu 0.6) reports correctly.  Its ListOffsets "latest" is wrong, so
``get_watermark_offsets(cached=False)`` is not used: measured on a 2-partition topic holding
82 + 76 records, it answered high watermarks 5 and 6 (the newest batch's base offset + 1); reading
to end-of-partition found every record (0, 1, 8 and 3,008 records on 3 partitions, ~0.5 s each).
Letters written while we read, past a partition's end, wait for the next read.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from shared.dlq.model import DeadLetter
from shared.runtime import headers as H
from shared.runtime.kafka import client_config
from shared.settings import Settings

log = logging.getLogger("fiscalflow.dlq")


class DeadLetterTopicMissing(Exception):
    pass


def reader_config(settings: Settings) -> dict[str, Any]:
    return {
        **client_config(settings),
        # assign() joins no group and nothing is committed; a unique id keeps even a stray
        # commit from touching anybody's offsets.
        "group.id": f"fiscalflow-dlq-reader-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "allow.auto.create.topics": False,
        "fetch.wait.max.ms": settings.fetch_wait_max_ms,
    }


def read_dead_letters(settings: Settings, topic: str, keep_values: bool = True,
                      idle_timeout_s: float = 10.0) -> Iterator[DeadLetter]:
    """Every dead letter of ``topic`` up to its end, in offset order within each partition.

    ``keep_values=False`` drops the message values (only their size is kept): a listing of a
    large dead-letter topic then holds headers, not documents.

    ``idle_timeout_s`` only guards against a broker that never reports the end: if neither a
    message nor an end arrives for that long, the read stops with a warning (a partial read).
    """
    consumer = Consumer(reader_config(settings))
    try:
        md = consumer.list_topics(topic, timeout=10)
        meta = md.topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise DeadLetterTopicMissing(f"topic {topic} does not exist")
        partitions = sorted(meta.partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        open_parts = set(partitions)
        idle_since = time.monotonic()
        while open_parts:
            batch = consumer.consume(1000, 0.2)
            if not batch:
                if time.monotonic() - idle_since > idle_timeout_s:
                    log.warning("no end of partition for %.0f s on %s %s: the listing may be partial",
                                idle_timeout_s, topic, sorted(open_parts))
                    return
                continue
            idle_since = time.monotonic()
            for km in batch:
                err = km.error()
                part = int(km.partition() or 0)
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if part in open_parts:
                            open_parts.discard(part)
                            # Stop fetching it: what arrives now is past the end we read to.
                            consumer.pause([TopicPartition(topic, part)])
                        continue
                    raise RuntimeError(f"reading {topic}: {err}")
                if part not in open_parts:
                    continue
                key, value = km.key(), km.value()
                if isinstance(value, str):
                    value = value.encode()
                dl = DeadLetter.from_kafka(
                    topic, part, int(km.offset() or 0), int(km.timestamp()[1]),
                    key.encode() if isinstance(key, str) else key, value, H.to_dict(km.headers()),
                )
                yield dl if keep_values else dl.model_copy(update={"value": b""})
    finally:
        consumer.close()
