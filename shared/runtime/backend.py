"""The broker as the stage engine sees it: two small interfaces, after arroyo's backends.

:class:`ConsumerBackend` is every consumer of one replica (the Kafka backend has two: the
priority lane has a consumer of its own); :class:`ProducerBackend` sends with an awaitable
delivery.  Implementations: :mod:`shared.runtime.kafka_backend` (confluent-kafka, the real
broker) and :mod:`shared.runtime.inmemory` (one process, for fast tests of the runtime).

Threading contract: every ``ConsumerBackend`` call happens on the engine's one consumer thread
(librdkafka calls rebalance callbacks there, inside ``poll``); ``ProducerBackend.send`` on the
event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from shared.runtime import headers as H
from shared.runtime.message import Message

# A consumer whose partitions are all paused fetches nothing, and polling it costs ~100 µs: it is
# polled every second, so a rebalance another replica starts waits a second for it (the group cannot
# finish one until every member has served its revoke inside a poll), not the keepalive interval.
PAUSED_KEEPALIVE_S = 1.0

RawHeaders = list[tuple[str, str | bytes | None]] | dict[str, str | bytes | None] | None
Part = tuple[str, int]  # (topic, partition)
Offset = tuple[str, int, int]  # (topic, partition, offset to commit: the next one to read)
# on_assign(partitions, lanes): ``lanes`` is True for the consumer of the normal and retry lanes
# (its new assignment starts unpaused), False for the priority lane's.
AssignCallback = Callable[[list[Part], bool], None]
RevokeCallback = Callable[[list[Part]], None]


class ConsumerBackend(Protocol):
    def subscribe(self, on_assign: AssignCallback, on_revoke: RevokeCallback, on_lost: RevokeCallback) -> None:
        """Join the groups; the callbacks run on the consumer thread, inside :meth:`poll`."""

    def poll(self, limit: int, lanes: bool, wait: bool = True) -> tuple[list[Message], list[Message]]:
        """(priority, normal+retry) messages: the priority lane first; the other lanes only when it
        had nothing and ``lanes`` (they are not paused for it).  Waits briefly when all are idle,
        unless not ``wait``."""
        ...

    def poll_priority(self, limit: int) -> list[Message]:
        """The priority lane's messages without waiting; the other lanes' consumer is not polled."""
        ...

    def keepalive(self) -> tuple[list[Message], list[Message]]:
        """Poll every consumer without waiting while the engine has paused every partition: it
        serves the group (heartbeats, rebalance callbacks) and keeps the consumer in it.  Returns
        (priority, other) messages it took anyway: a partition assigned in this call starts unpaused."""
        ...

    def pause(self, parts: Sequence[Part]) -> None:
        """Stop fetching these partitions; a partition no longer assigned is ignored."""

    def resume(self, parts: Sequence[Part]) -> None: ...

    def commit(self, offsets: Sequence[Offset]) -> None:
        """Synchronous; raises if any commit failed (the committer commits them again)."""

    def lag(self, parts: Sequence[Part]) -> list[tuple[str, int, int]]:
        """(topic, partition, messages behind the end) for the assigned partitions it knows."""
        ...

    def rewind_truncated(self) -> list[Part]:
        """Partitions whose log now ends before the consumer's position (the broker lost it: a
        topic made again, a memory broker restarted), moved to their log's start; the caller drops
        their work in flight and their offsets.  Kafka answers such a fetch with OFFSET_OUT_OF_RANGE
        and the client resets itself; a broker that answers with nothing needs this."""
        ...

    def close(self) -> None: ...


class ProducerBackend(Protocol):
    def send(self, topic: str, value: bytes | None, key: bytes | None = None,
             headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[Any]:
        """Resolves when the broker acknowledged the message; fails with the broker's refusal."""
        ...

    def close(self) -> None: ...


class Backend(Protocol):
    """Makes one replica's clients."""

    def consumer(self, groups: dict[str, list[str]], priority_topic: str, client_id: str) -> ConsumerBackend: ...

    def producer(self, client_id: str) -> ProducerBackend: ...


def to_message(topic: str, partition: int, offset: int, key: bytes | str | None, value: bytes | str | None,
               raw_headers: RawHeaders, timestamp_ms: int, priority_lane: bool) -> Message:
    """A consumed record as the handler sees it (the lane and attempt it travels on, from its headers)."""
    hdrs = H.to_dict(raw_headers)
    return Message(
        topic=topic, partition=partition, offset=offset,
        key=key.encode() if isinstance(key, str) else key,
        value=value.encode() if isinstance(value, str) else (value or b""),
        headers=hdrs, timestamp_ms=timestamp_ms,
        priority=priority_lane or hdrs.get(H.PRIORITY) == "1",
        attempt=int(hdrs.get(H.ATTEMPT, "0") or 0),
    )
