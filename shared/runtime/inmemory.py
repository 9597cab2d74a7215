"""An in-memory broker for fast tests of the runtime: topics, consumer groups with range
assignment and rebalances, committed offsets, pause/resume, lag (after arroyo's LocalBroker).

Like Kafka, rebalance callbacks run inside ``poll`` on the polling thread, and a consumer that
joins or leaves makes every member of its group give up its partitions and get a new share.
Not a Kafka emulator: no retention, no transactions, no message timeouts.
"""

from __future__ import annotations

import asyncio
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.runtime.backend import AssignCallback, Offset, Part, RevokeCallback, to_message
from shared.runtime.kafka import DeliveryError
from shared.runtime.message import Message

FETCH_WAIT_S = 0.05


@dataclass(slots=True)
class Record:
    key: bytes | None
    value: bytes
    headers: list[tuple[str, str | bytes | None]]
    timestamp_ms: int


class InMemoryBroker:
    def __init__(self, partitions: int = 4, max_message_bytes: int = 1_000_000) -> None:
        self.default_partitions = partitions
        self.max_message_bytes = max_message_bytes
        self.topics: dict[str, list[list[Record]]] = {}
        self.committed: dict[str, dict[Part, int]] = {}
        self._members: dict[str, list[_Member]] = {}
        self._cond = threading.Condition()

    # ------------------------------------------------------------------ storage
    def create_topic(self, topic: str, partitions: int | None = None) -> None:
        with self._cond:
            self.topics.setdefault(topic, [[] for _ in range(partitions or self.default_partitions)])

    def produce(self, topic: str, value: bytes | None, key: bytes | None = None,
                headers: Sequence[tuple[str, str | bytes | None]] = (), partition: int | None = None) -> int:
        """Append a record (a new topic gets the default partition count, as the local broker does)."""
        body = value or b""
        size = len(body) + len(key or b"") + sum(len(k) + len(v or b"") for k, v in headers)
        if size > self.max_message_bytes:  # as the producer's message.max.bytes check does
            raise DeliveryError(f"Broker: Message size too large ({size} > {self.max_message_bytes} bytes)",
                                too_large=True)
        with self._cond:
            parts = self.topics.get(topic)
            if parts is None:
                parts = self.topics[topic] = [[] for _ in range(self.default_partitions)]
            if partition is None:
                partition = zlib.crc32(key) % len(parts) if key else int(time.monotonic_ns()) % len(parts)
            parts[partition].append(Record(key, body, list(headers), int(time.time() * 1000)))
            self._cond.notify_all()
            return partition

    def records(self, topic: str) -> list[Message]:
        """Every record of ``topic``, partition by partition (for tests)."""
        with self._cond:
            parts = self.topics.get(topic, [])
            return [to_message(topic, p, o, r.key, r.value, r.headers, r.timestamp_ms, False)
                    for p, recs in enumerate(parts) for o, r in enumerate(recs)]

    def wait(self, ready: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``ready()`` or a new record arrives, at most ``timeout``."""
        with self._cond:
            return ready() or self._cond.wait(timeout)

    # ------------------------------------------------------------------ groups
    def join(self, member: _Member) -> None:
        with self._cond:
            self._members.setdefault(member.group, []).append(member)
            self._rebalance(member.group)

    def leave(self, member: _Member) -> None:
        with self._cond:
            group = self._members.get(member.group, [])
            if member in group:
                group.remove(member)
                member.assignment = set()
                self._rebalance(member.group)

    def _rebalance(self, group: str) -> None:
        members = self._members.get(group, [])
        shares: dict[int, set[Part]] = {id(m): set() for m in members}
        for topic in sorted({t for m in members for t in m.topics}):
            self.topics.setdefault(topic, [[] for _ in range(self.default_partitions)])
            subscribers = [m for m in members if topic in m.topics]
            n = len(self.topics[topic])
            for i, m in enumerate(subscribers):  # range: consecutive partitions per member
                lo, hi = i * n // len(subscribers), (i + 1) * n // len(subscribers)
                shares[id(m)].update((topic, p) for p in range(lo, hi))
        for m in members:
            m.reassign(shares[id(m)])
        self._cond.notify_all()

    def commit(self, group: str, offsets: Sequence[Offset]) -> None:
        with self._cond:
            mine = self.committed.setdefault(group, {})
            for t, p, o in offsets:
                mine[(t, p)] = o

    def take_events(self, member: _Member) -> list[tuple[str, list[Part]]]:
        with self._cond:
            events, member.events = member.events, []
            return events

    def set_paused(self, parts: list[tuple[_Member, Part]], paused: bool) -> None:
        with self._cond:
            for m, part in parts:
                if not paused:
                    m.paused.discard(part)
                elif part in m.assignment:  # a partition no longer assigned is ignored
                    m.paused.add(part)
            self._cond.notify_all()

    def end(self, topic: str, partition: int) -> int:
        with self._cond:
            return len(self.topics[topic][partition])

    def fetch(self, member: _Member, limit: int) -> list[Message]:
        out: list[Message] = []
        with self._cond:
            for t, p in sorted(member.assignment - member.paused):
                pos = member.positions.get((t, p))
                if pos is None:
                    pos = self.committed.get(member.group, {}).get((t, p), 0)
                recs = self.topics[t][p][pos:pos + limit - len(out)]
                out.extend(to_message(t, p, pos + i, r.key, r.value, r.headers, r.timestamp_ms, member.priority)
                           for i, r in enumerate(recs))
                member.positions[(t, p)] = pos + len(recs)
                if len(out) >= limit:
                    break
        return out


@dataclass(eq=False)
class _Member:
    group: str
    topics: list[str]
    priority: bool
    assignment: set[Part] = field(default_factory=set)
    paused: set[Part] = field(default_factory=set)
    positions: dict[Part, int] = field(default_factory=dict)
    # Rebalance callbacks waiting for the next poll: ("revoke" | "assign", partitions)
    events: list[tuple[str, list[Part]]] = field(default_factory=list)

    def reassign(self, share: set[Part]) -> None:
        if self.assignment:
            self.events.append(("revoke", sorted(self.assignment)))
        self.assignment, self.paused, self.positions = set(share), set(), {}
        self.events.append(("assign", sorted(share)))


class InMemoryConsumers:
    """A replica's two lanes on the in-memory broker, polled like the Kafka backend: priority first."""

    def __init__(self, broker: InMemoryBroker, groups: dict[str, list[str]], priority_topic: str) -> None:
        self.broker = broker
        self._members = [_Member(g, list(t), priority_topic in t) for g, t in groups.items()]
        self._members.sort(key=lambda m: not m.priority)  # the priority lane first
        self._callbacks: tuple[AssignCallback, RevokeCallback, RevokeCallback] | None = None

    def subscribe(self, on_assign: AssignCallback, on_revoke: RevokeCallback, on_lost: RevokeCallback) -> None:
        self._callbacks = (on_assign, on_revoke, on_lost)
        for m in self._members:
            self.broker.join(m)

    def _run_callbacks(self) -> None:
        assert self._callbacks is not None
        on_assign, on_revoke, _ = self._callbacks
        for m in self._members:
            for kind, parts in self.broker.take_events(m):  # outside the lock: a revoke waits for in-flight work
                if kind == "revoke":
                    on_revoke(parts)
                else:
                    on_assign(parts, not m.priority)

    def poll(self, limit: int, lanes: bool, wait: bool = True) -> tuple[list[Message], list[Message]]:
        self._run_callbacks()
        prio_member, lanes_member = self._members
        prio = self.broker.fetch(prio_member, limit)
        if prio or not lanes:
            return prio, []
        batch = self.broker.fetch(lanes_member, limit)
        if not batch and wait and self.broker.wait(lambda: any(m.events for m in self._members), FETCH_WAIT_S):
            self._run_callbacks()
            batch = self.broker.fetch(lanes_member, limit)
        return [], batch

    def poll_priority(self, limit: int) -> list[Message]:
        self._run_callbacks()
        return self.broker.fetch(self._members[0], limit)

    def keepalive(self) -> tuple[list[Message], list[Message]]:
        self._run_callbacks()  # this broker has no poll interval: nothing else to keep alive
        return [], []

    def _member(self, topic: str) -> _Member:
        return next(m for m in self._members if topic in m.topics)

    def pause(self, parts: Sequence[Part]) -> None:
        self.broker.set_paused([(self._member(p[0]), p) for p in parts], True)

    def resume(self, parts: Sequence[Part]) -> None:
        self.broker.set_paused([(self._member(p[0]), p) for p in parts], False)

    def commit(self, offsets: Sequence[Offset]) -> None:
        for m in self._members:
            mine = [o for o in offsets if o[0] in m.topics]
            if mine:
                self.broker.commit(m.group, mine)

    def lag(self, parts: Sequence[Part]) -> list[tuple[str, int, int]]:
        out = []
        for t, p in parts:
            pos = self._member(t).positions.get((t, p))
            if pos is not None:
                out.append((t, p, max(0, self.broker.end(t, p) - pos)))
        return out

    def rewind_truncated(self) -> list[Part]:
        return []  # its logs are never truncated

    def close(self) -> None:
        for m in self._members:
            self.broker.leave(m)


class InMemoryProducer:
    def __init__(self, broker: InMemoryBroker) -> None:
        self.broker = broker

    def send(self, topic: str, value: bytes | None, key: bytes | None = None,
             headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        try:
            fut.set_result(self.broker.produce(topic, value, key, headers or []))
        except DeliveryError as exc:
            fut.set_exception(exc)
        return fut

    def close(self) -> None:
        pass


class InMemoryBackend:
    def __init__(self, broker: InMemoryBroker | None = None) -> None:
        self.broker = broker or InMemoryBroker()

    def consumer(self, groups: dict[str, list[str]], priority_topic: str, client_id: str) -> InMemoryConsumers:
        return InMemoryConsumers(self.broker, groups, priority_topic)

    def producer(self, client_id: str) -> InMemoryProducer:
        return InMemoryProducer(self.broker)
