"""The Kafka backend (confluent-kafka): the priority lane's own consumer, polled first.

The priority topic has a consumer of its own, so a fetch queue of its own: the local broker
answers a fetch with a whole backlog, which would otherwise sit in front of a priority record
(docs/decisions/0001-priority-consumer.md).

A log that ends before the consumer's position (the broker lost it) is read again from its start:
:class:`TruncationWatch` finds it in librdkafka's statistics (docs/decisions/0025-truncated-logs.md).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Sequence

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka import Message as KafkaMessage

from shared.runtime.backend import PAUSED_KEEPALIVE_S, AssignCallback, Offset, Part, RevokeCallback, to_message
from shared.runtime.kafka import AsyncProducer, consumer_config, keepalive_s, producer_config
from shared.runtime.message import Message
from shared.settings import Settings

log = logging.getLogger("fiscalflow.runtime")
FETCH_WAIT_S = 0.05  # how long an idle poll turn waits for the normal lanes
STATS_INTERVAL_MS = 2000  # librdkafka statistics: what the truncation watch reads
MAX_KEEPALIVE = 100  # a keepalive poll returns messages only when a partition was assigned within it


class TruncationWatch:
    """Partitions whose fetch position is past their log's end in two statistics snapshots running.

    In Kafka a position is never past the end (high watermark) the broker reports: a fetch there
    is answered OFFSET_OUT_OF_RANGE and the client resets to ``auto.offset.reset``.  The local
    broker answers it with nothing, so a consumer whose broker lost the log (memory storage
    restarted, a topic made again) and that kept its old position, or was given an old committed
    offset, skipped the new log until it grew past that offset: records lost without a trace
    until a re-drive.  Two snapshots, the same position both times, so a snapshot taken between a
    fetch and its watermark update never moves a partition.
    """

    def __init__(self) -> None:
        self._seen: dict[Part, int] = {}  # past the end in the last snapshot: its position
        self._confirmed: dict[Part, tuple[int, int]] = {}  # (position, log end)
        self._lock = threading.Lock()  # statistics arrive inside poll; the check runs elsewhere

    def observe(self, stats_json: str) -> None:
        try:
            topics = json.loads(stats_json).get("topics", {})
        except ValueError:
            return
        now: dict[Part, tuple[int, int]] = {}
        for topic, t in topics.items():
            for pid, p in t.get("partitions", {}).items():
                position, end = int(p.get("next_offset", -1)), int(p.get("hi_offset", -1))
                if (pid != "-1" and p.get("desired") and p.get("fetch_state") == "active" and end >= 0
                        and position > end):
                    now[(topic, int(pid))] = (position, end)
        with self._lock:
            for part, (position, end) in now.items():
                if self._seen.get(part) == position:
                    self._confirmed[part] = (position, end)
            self._seen = {part: position for part, (position, _) in now.items()}

    def take(self) -> dict[Part, tuple[int, int]]:
        """The confirmed partitions with (position, log end), each reported once."""
        with self._lock:
            out, self._confirmed = self._confirmed, {}
            for part in out:
                self._seen.pop(part, None)
        return out


class KafkaBackend:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def consumer(self, groups: dict[str, list[str]], priority_topic: str, client_id: str) -> KafkaConsumers:
        (lanes_group, lanes_topics), = [(g, t) for g, t in groups.items() if priority_topic not in t]
        (prio_group, _), = [(g, t) for g, t in groups.items() if priority_topic in t]
        return KafkaConsumers(self.settings, (lanes_group, lanes_topics), prio_group, priority_topic, client_id)

    def producer(self, client_id: str) -> AsyncProducer:
        return AsyncProducer(producer_config(self.settings, client_id))


def _fetch(consumer: Consumer, limit: int, timeout: float) -> list[KafkaMessage]:
    """Up to ``limit`` messages, returning as soon as there is one (or after ``timeout``).

    Not ``consume(limit, timeout)``: that waits out the whole timeout unless ``limit`` messages
    arrive, so an idle stage sat on each record for up to the timeout, at every hop."""
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(limit - 1, 0)] if limit > 1 else [first]


def _messages(batch: list[KafkaMessage], priority: bool) -> list[Message]:
    out = []
    for km in batch:
        err = km.error()
        if err is None:
            out.append(to_message(str(km.topic()), int(km.partition() or 0), int(km.offset() or 0), km.key(),
                                  km.value(), km.headers(), km.timestamp()[1], priority))
        elif err.code() != KafkaError._PARTITION_EOF:
            log.warning("consume error: %s", err)
    return out


class KafkaConsumers:
    """Both consumers of a replica behind one :class:`~shared.runtime.backend.ConsumerBackend`."""

    def __init__(self, settings: Settings, lanes: tuple[str, list[str]], priority_group: str, priority_topic: str,
                 client_id: str) -> None:
        self._topics = lanes[1]
        # Polled for nothing while priority work keeps its partitions paused.
        self._lanes_keepalive_s = min(keepalive_s(settings), PAUSED_KEEPALIVE_S)
        self._lanes_polled = time.monotonic()
        self._priority_topic = priority_topic
        # One watch per consumer: each one's statistics name only its own partitions.
        self._watches = (TruncationWatch(), TruncationWatch())
        self._consumer = Consumer({**consumer_config(settings, lanes[0], client_id),
                                   "statistics.interval.ms": STATS_INTERVAL_MS, "stats_cb": self._watches[0].observe})
        self._pconsumer = Consumer({**consumer_config(settings, priority_group, client_id + "-p"),
                                    "statistics.interval.ms": STATS_INTERVAL_MS, "stats_cb": self._watches[1].observe})

    def subscribe(self, on_assign: AssignCallback, on_revoke: RevokeCallback, on_lost: RevokeCallback) -> None:
        for consumer, topics in ((self._consumer, self._topics), (self._pconsumer, [self._priority_topic])):
            lanes = consumer is self._consumer

            def assigned(c: Consumer, tps: list[TopicPartition], lanes: bool = lanes) -> None:
                on_assign(_parts(tps), lanes)

            consumer.subscribe(topics, on_assign=assigned, on_revoke=lambda c, tps: on_revoke(_parts(tps)),
                               on_lost=lambda c, tps: on_lost(_parts(tps)))

    def poll(self, limit: int, lanes: bool, wait: bool = True) -> tuple[list[Message], list[Message]]:
        prio = self._pconsumer.consume(limit, 0)
        if prio or not lanes:
            # The lanes' consumer is not polled while priority records flow (its partitions are
            # paused): polled for nothing now and then, it stays in its group.
            batch: list[KafkaMessage] = []
            if time.monotonic() - self._lanes_polled >= self._lanes_keepalive_s:
                batch = self._consumer.consume(limit, 0)
                self._lanes_polled = time.monotonic()
            return _messages(prio, True), _messages(batch, False)
        self._lanes_polled = time.monotonic()
        return [], _messages(_fetch(self._consumer, limit, FETCH_WAIT_S if wait else 0), False)

    def poll_priority(self, limit: int) -> list[Message]:
        return _messages(self._pconsumer.consume(limit, 0), True)

    def keepalive(self) -> tuple[list[Message], list[Message]]:
        prio, batch = self._pconsumer.consume(MAX_KEEPALIVE, 0), self._consumer.consume(MAX_KEEPALIVE, 0)
        self._lanes_polled = time.monotonic()
        return _messages(prio, True), _messages(batch, False)

    def pause(self, parts: Sequence[Part]) -> None:
        self._each(parts, "pause")

    def resume(self, parts: Sequence[Part]) -> None:
        self._each(parts, "resume")

    def _each(self, parts: Sequence[Part], method: str) -> None:
        for consumer, tps in self._by_consumer(parts).items():
            with contextlib.suppress(Exception):  # partitions revoked meanwhile
                getattr(consumer, method)(tps)

    def commit(self, offsets: Sequence[Offset]) -> None:
        error: Exception | None = None
        for consumer, tps in self._by_consumer(offsets).items():
            # Never an offset past the log's end as the broker last reported it: only work done on
            # a log the broker has since lost gives one, and committed it would make the next
            # owner of the partition skip the new log up to there.
            tps = [tp for tp in tps if not _past_end(consumer, tp)]
            if not tps:
                continue
            try:
                consumer.commit(offsets=tps, asynchronous=False)
            except Exception as exc:  # the other consumer's commits still go
                error = error or exc
        if error is not None:
            raise error

    def lag(self, parts: Sequence[Part]) -> list[tuple[str, int, int]]:
        """The high watermark the fetches reported (the local broker's ListOffsets is wrong, fetch
        responses are right) minus the consumer's position."""
        out = []
        for consumer, tps in self._by_consumer(parts).items():
            for tp in consumer.position(tps):
                if tp.offset < 0:
                    continue
                _, high = consumer.get_watermark_offsets(tp, cached=True)
                if high >= 0:
                    out.append((tp.topic, tp.partition, max(0, high - tp.offset)))
        return out

    def rewind_truncated(self) -> list[Part]:
        found = {**self._watches[0].take(), **self._watches[1].take()}
        for (topic, partition), (position, end) in sorted(found.items()):
            consumer = self._pconsumer if topic == self._priority_topic else self._consumer
            try:
                consumer.seek(TopicPartition(topic, partition, OFFSET_BEGINNING))
            except Exception as exc:  # revoked meanwhile: its next owner starts from the group's offset
                log.warning("%s[%d]: could not rewind: %s", topic, partition, exc)
                found.pop((topic, partition))
                continue
            log.warning("%s[%d]: the log ends at %d, before this consumer's position %d: the broker lost "
                        "it (topic made again, or a broker on memory storage restarted); reading the "
                        "partition again from its start", topic, partition, end, position)
        return sorted(found)

    def close(self) -> None:
        self._consumer.close()
        self._pconsumer.close()

    def _by_consumer(self, items: Sequence[Part] | Sequence[Offset]) -> dict[Consumer, list[TopicPartition]]:
        out: dict[Consumer, list[TopicPartition]] = {}
        for item in items:
            consumer = self._pconsumer if item[0] == self._priority_topic else self._consumer
            out.setdefault(consumer, []).append(TopicPartition(*item))
        return out


def _past_end(consumer: Consumer, tp: TopicPartition) -> bool:
    try:
        _, end = consumer.get_watermark_offsets(tp, cached=True)
    except Exception:  # nothing known of it: nothing to hold against the offset
        return False
    if end >= 0 and tp.offset > end:
        log.warning("%s[%d]: not committing offset %d past the log's end %d (the broker lost the log)",
                    tp.topic, tp.partition, tp.offset, end)
        return True
    return False


def _parts(tps: list[TopicPartition]) -> list[Part]:
    return [(tp.topic, tp.partition) for tp in tps]
