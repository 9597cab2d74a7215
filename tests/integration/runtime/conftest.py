"""Fixtures for runtime tests: an isolated topic namespace per test, test-stage processes,
producing and reading on the real broker, and the PostgreSQL sink the test stage writes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from shared.runtime.admin import ensure_topics
from shared.settings import Settings
from shared.topics import TopicSpec
from tests.support.topics import reader_from_start

APP = Path(__file__).with_name("stage_app.py")
PARTITIONS = 4


@pytest.fixture(scope="session")
def runtime_settings(request: pytest.FixtureRequest) -> Settings:
    """The local test stack's settings (or, with FISCALFLOW_TEST_EXTERNAL=1, an already running stack)."""
    if os.environ.get("FISCALFLOW_TEST_EXTERNAL"):
        return Settings()
    settings: Settings = request.getfixturevalue("stack_settings")
    return settings


@dataclass
class StageProc:
    ns: str
    settings: Settings
    log: Path
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> StageProc:
        env = {**os.environ,
               "FISCALFLOW_BOOTSTRAP_SERVERS": self.settings.bootstrap_servers,
               "FISCALFLOW_PG_DSN": self.settings.pg_dsn.get_secret_value(),
               "FISCALFLOW_LOCAL_DIR": str(self.log.parent),
               **self.env}
        out = self.log.open("ab")
        self.proc = subprocess.Popen([sys.executable, str(APP), self.ns, *self.args], env=env,
                                     stdout=out, stderr=subprocess.STDOUT)
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Namespace:
    """One isolated pipeline on the shared broker: its own topics, group and sink rows."""

    def __init__(self, settings: Settings, tmp: Path) -> None:
        self.settings = settings
        self.ns = "t" + uuid.uuid4().hex[:10]
        self.tmp = tmp
        self.procs: list[StageProc] = []
        names = ["fiscal.validate", "fiscal.validate.priority", "fiscal.validate.retry", "fiscal.dlq", "out"]
        ensure_topics(settings, [TopicSpec(f"{self.ns}.{n}", PARTITIONS) for n in names])
        self._producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "linger.ms": 5,
                                   "partitioner": "murmur2_random"})

    def topic(self, name: str) -> str:
        return f"{self.ns}.{name}"

    def produce(self, items: list[dict[str, Any]], priority: bool = False, partition: int | None = None,
                headers: dict[str, str] | None = None) -> None:
        topic = self.topic("fiscal.validate.priority" if priority else "fiscal.validate")
        extra: dict[str, Any] = {} if partition is None else {"partition": partition}
        if headers:
            extra["headers"] = list(headers.items())
        for item in items:
            while True:
                try:
                    self._producer.produce(topic, orjson.dumps(item), key=str(item["id"]).encode(), **extra)
                    break
                except BufferError:
                    self._producer.poll(0.05)
        assert self._producer.flush(30) == 0

    def stage(self, *args: str, env: dict[str, str] | None = None) -> StageProc:
        p = StageProc(self.ns, self.settings, self.tmp / f"stage-{len(self.procs)}.log", list(args), env or {})
        self.procs.append(p.start())
        return p

    def read(self, topic: str, until: int, timeout: float = 90.0, distinct_keys: bool = False) -> list[Any]:
        """Read ``topic`` from the start until ``until`` messages (or distinct keys) arrived, or the timeout."""
        c = reader_from_start(self.settings, self.topic(topic), timeout)
        out: list[Any] = []
        keys: set[bytes] = set()
        deadline = time.monotonic() + timeout
        try:
            while (len(keys) if distinct_keys else len(out)) < until and time.monotonic() < deadline:
                for m in c.consume(1000, 0.2):
                    if m.error() is None:
                        out.append(m)
                        keys.add(m.key())
        finally:
            c.close()
        return out

    def sink(self) -> list[asyncpg.Record]:
        async def q() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self.settings.pg_dsn.get_secret_value())
            try:
                exists = await conn.fetchval("SELECT to_regclass('runtime_sink') IS NOT NULL")
                if not exists:
                    return []
                return list(await conn.fetch(
                    "SELECT record_id, deliveries, seq FROM runtime_sink WHERE ns = $1 ORDER BY seq", self.ns))
            finally:
                await conn.close()
        return asyncio.run(q())

    def rejections(self) -> list[asyncpg.Record]:
        """What the test stage's ``on_dead_letter`` hook recorded."""
        async def q() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self.settings.pg_dsn.get_secret_value())
            try:
                if not await conn.fetchval("SELECT to_regclass('runtime_rejections') IS NOT NULL"):
                    return []
                return list(await conn.fetch("SELECT record_id, reason, message, details FROM runtime_rejections "
                                             "WHERE ns = $1", self.ns))
            finally:
                await conn.close()
        return asyncio.run(q())

    def committed(self, partition: int, topic: str = "fiscal.validate") -> int:
        """The test stage's committed offset of one input partition (-1001: none yet)."""
        c = Consumer({"bootstrap.servers": self.settings.bootstrap_servers, "group.id": f"{self.ns}-group"})
        try:
            (tp,) = c.committed([TopicPartition(self.topic(topic), partition)], timeout=10)
            return int(tp.offset)
        finally:
            c.close()

    def wait_sink(self, count: int, timeout: float = 120.0) -> list[asyncpg.Record]:
        deadline = time.monotonic() + timeout
        rows = self.sink()
        while len(rows) < count and time.monotonic() < deadline:
            time.sleep(0.3)
            rows = self.sink()
        return rows

    def close(self) -> None:
        for p in self.procs:
            if p.alive():
                p.kill()
        self._producer.flush(5)


@pytest.fixture
def namespace(runtime_settings: Settings, tmp_path: Path) -> Iterator[Namespace]:
    ns = Namespace(runtime_settings, tmp_path)
    yield ns
    ns.close()
