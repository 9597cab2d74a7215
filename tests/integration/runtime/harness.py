"""The runtime contract's harness: the same test against the in-memory backend and the real broker.

A :class:`Harness` is one isolated pipeline (its own topic namespace and groups) on one backend;
``runner()`` starts a :class:`StageRunner` in this process on that backend, with a test handler
driven by each message's JSON value (as tests/integration/runtime/stage_app.py does).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from shared.runtime import Emit, Message, PermanentError, StageSpec, TransientError
from shared.runtime.admin import ensure_topics
from shared.runtime.backend import Backend
from shared.runtime.inmemory import InMemoryBackend, InMemoryBroker
from shared.runtime.kafka_backend import KafkaBackend
from shared.runtime.runner import StageRunner
from shared.settings import Settings
from shared.topics import Stage, TopicSpec

PARTITIONS = 4
TOPICS = ["fiscal.validate", "fiscal.validate.priority", "fiscal.validate.retry", "fiscal.dlq", "out"]


@dataclass
class Got:
    """A record read back from a topic."""

    key: bytes | None
    value: bytes
    headers: dict[str, str]
    partition: int


@dataclass
class Handled:
    """What the test handler saw: record ids in handling order, and attempts per record."""

    order: list[str] = field(default_factory=list)
    attempts: dict[str, list[int]] = field(default_factory=dict)

    def ids(self) -> set[str]:
        return set(self.order)


def handler(handled: Handled, flags: dict[str, bool]) -> Callable[[Message], Awaitable[Sequence[Emit]]]:
    async def handle(msg: Message) -> Sequence[Emit]:
        body = orjson.loads(msg.value)
        handled.attempts.setdefault(msg.record_id, []).append(msg.attempt)
        if body.get("sleep_ms"):
            await asyncio.sleep(body["sleep_ms"] / 1000)
        if body.get("permanent"):
            raise PermanentError("TEST_PERMANENT", f"record {body['id']} is poison", {"why": "test"})
        if body.get("crash"):
            raise ZeroDivisionError("the handler has a bug")
        if body.get("fail_while") and flags.get(body["fail_while"]):
            raise TransientError(f"{body['fail_while']} is down", downstream=body.get("downstream", "testsink"))
        if msg.attempt < int(body.get("transient", 0)):
            raise TransientError(f"attempt {msg.attempt} fails", downstream=body.get("downstream", "testsink"))
        handled.order.append(msg.record_id)
        return [Emit(value=msg.value + b" " * int(body.get("emit_bytes", 0)), topic="out")]

    return handle


class Harness:
    def __init__(self, kind: str, settings: Settings) -> None:
        self.kind = kind
        self.settings = settings
        self.ns = "c" + uuid.uuid4().hex[:10]
        self.handled = Handled()
        self.flags: dict[str, bool] = {}
        self.broker: InMemoryBroker | None = None
        self.backend: Backend
        if kind == "memory":
            self.broker = InMemoryBroker(PARTITIONS, max_message_bytes=settings.message_max_bytes)
            self.backend = InMemoryBackend(self.broker)
            for t in TOPICS:
                self.broker.create_topic(self.topic(t))
        else:
            ensure_topics(settings, [TopicSpec(self.topic(t), PARTITIONS) for t in TOPICS])
            self.backend = KafkaBackend(settings)
            self._producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "linger.ms": 5,
                                       "partitioner": "murmur2_random"})

    def topic(self, name: str) -> str:
        return f"{self.ns}.{name}"

    def produce(self, items: list[dict[str, Any]], priority: bool = False, partition: int | None = None) -> None:
        topic = self.topic("fiscal.validate.priority" if priority else "fiscal.validate")
        for item in items:
            value, key = orjson.dumps(item), str(item["id"]).encode()
            if self.broker is not None:
                self.broker.produce(topic, value, key, partition=partition)
                continue
            extra: dict[str, Any] = {} if partition is None else {"partition": partition}
            self._producer.produce(topic, value, key=key, **extra)
        if self.broker is None:
            assert self._producer.flush(30) == 0

    def spec(self, **kw: Any) -> StageSpec:
        return StageSpec(stage=Stage.VALIDATE, handler=handler(self.handled, self.flags), topic_namespace=self.ns,
                         group_id=f"{self.ns}-group", **kw)

    @contextlib.asynccontextmanager
    async def runner(self, settings: Settings | None = None, **spec: Any) -> AsyncIterator[StageRunner]:
        runner = StageRunner(self.spec(**spec), settings or self.settings, backend=self.backend)
        task = asyncio.create_task(runner.run())
        try:
            yield runner
        finally:
            runner.stop()
            await asyncio.wait_for(task, 60)

    async def read(self, name: str, until: int, within_s: float = 60.0, settle: float = 0.3) -> list[Got]:
        """Read ``name`` from the start until it holds ``until`` records (or ``within_s``), then for
        ``settle`` more seconds: what arrives meanwhile is counted too (no record sent twice)."""
        if self.broker is not None:
            broker = self.broker
            await self.wait_for(lambda: len(broker.records(self.topic(name))) >= until, within_s, strict=False)
            await asyncio.sleep(settle)
            return [Got(m.key, m.value, m.headers, m.partition) for m in broker.records(self.topic(name))]
        return await asyncio.to_thread(self._read_kafka, name, until, within_s, settle)

    def _read_kafka(self, name: str, until: int, timeout: float, settle: float) -> list[Got]:
        # Assigned, not subscribed: no group to join, so no rebalance wait.
        c = Consumer({"bootstrap.servers": self.settings.bootstrap_servers, "group.id": f"{self.ns}-reader",
                      "fetch.wait.max.ms": 20, "enable.auto.commit": False})
        c.assign([TopicPartition(self.topic(name), p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        out: list[Got] = []
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if len(out) >= until:
                    deadline = min(deadline, time.monotonic() + settle)
                out.extend(Got(m.key(), m.value(), {k: v.decode() for k, v in m.headers() or []}, m.partition())
                           for m in c.consume(1000, 0.05) if m.error() is None)
        finally:
            c.close()
        return out

    def committed(self, partition: int, name: str = "fiscal.validate") -> int:
        """The group's committed offset of one partition (-1001 or less: none yet)."""
        group, topic = f"{self.ns}-group", self.topic(name)
        if self.broker is not None:
            return self.broker.committed.get(group, {}).get((topic, partition), -1001)
        c = Consumer({"bootstrap.servers": self.settings.bootstrap_servers, "group.id": group})
        try:
            (tp,) = c.committed([TopicPartition(topic, partition)], timeout=10)
            return int(tp.offset)
        finally:
            c.close()

    @staticmethod
    async def wait_for(ok: Callable[[], bool], within_s: float = 60.0, strict: bool = True) -> None:
        deadline = time.monotonic() + within_s
        while not ok():
            if time.monotonic() > deadline:
                if strict:
                    raise AssertionError(f"condition not met within {within_s} s")
                return
            await asyncio.sleep(0.02)
