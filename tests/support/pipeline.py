"""Test helpers shared by the ingest and download tests: demo files in the regional roots, and the
ingest and download stages running in-process on an isolated topic namespace of the real broker."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message as KafkaMessage
from confluent_kafka import Producer

from shared.db.records import Registration
from shared.runtime.admin import ensure_topics
from shared.runtime.runner import StageRunner
from shared.settings import Settings
from shared.topics import DLQ, Stage, TopicSpec, input_topic
from tests.support.stages import RunningStage
from tests.support.topics import reader_from_start
from tooling.issuers.defects import Defect
from tooling.issuers.generator import InvoiceGenerator
from tooling.issuers.output import ManifestRow, batch_dir, merge_manifest, write_invoice
from tooling.issuers.pki import DemoPKI


def write_batch(settings: Settings, region: str, count: int, defects: Iterable[Defect | None] = (),
                batch: str | None = None) -> tuple[str, list[ManifestRow]]:
    """``count`` good invoices (plus one per given defect) in a fresh batch of ``region``; a random
    seed keeps record ids unique across test runs on the same database."""
    batch = batch or f"b{uuid.uuid4().hex[:10]}"
    gen = InvoiceGenerator(DemoPKI.ensure(settings.pki_dir()), seed=random.randrange(1 << 30))
    root = settings.region_root(region)
    batch_dir(root, batch).mkdir(parents=True, exist_ok=True)
    invoices = [gen.generate(i, defect=None) for i in range(count)]
    invoices += [gen.generate(count + n, defect=d) for n, d in enumerate(defects)]
    rows = [write_invoice(root, region, batch, inv) for inv in invoices]
    # merge_manifest writes the manifest 0600 (a temporary file renamed): the SFTP user could not
    # read it, and the ingest API refuses a job whose manifest it cannot read.
    merge_manifest(batch_dir(root, batch), rows)
    return batch, rows


def registrations(rows: Iterable[ManifestRow]) -> list[Registration]:
    return [Registration(r.record_id, r.region, r.path, r.sha256, r.size) for r in rows]


@dataclass
class Pipeline:
    """Stages of this test on their own topics (``<ns>.fiscal.*``) and consumer groups."""

    settings: Settings
    stages: tuple[Stage, ...]
    ns: str = field(default_factory=lambda: "t" + uuid.uuid4().hex[:10])
    running: list[RunningStage] = field(default_factory=list)

    def topic(self, stage_or_topic: Stage | str) -> str:
        name = input_topic(stage_or_topic) if isinstance(stage_or_topic, Stage) else stage_or_topic
        return f"{self.ns}.{name}"

    async def __aenter__(self) -> Pipeline:
        specs = [TopicSpec(f"{self.ns}.{t.name}", t.partitions)
                 for t in self.settings.topics()]
        await asyncio.to_thread(ensure_topics, self.settings, specs)
        for stage in self.stages:
            self.running.append(await RunningStage.start(self.settings, stage, topic_namespace=self.ns,
                                                         group_id=f"{self.ns}-{stage.value}"))
        await self.wait_ready()
        return self

    @property
    def runners(self) -> list[StageRunner]:
        return [r.runner for r in self.running]

    async def wait_ready(self, within_s: float = 30) -> None:
        """Every stage ready as its /readyz says (partitions assigned, its API serving)."""
        deadline = time.monotonic() + within_s
        while not all([(await r.host.readiness())[0] for r in self.running]):
            for r in self.running:
                if r.task.done():
                    await r.task  # a stage that failed to start: its exception
            if time.monotonic() > deadline:
                raise TimeoutError(f"stages not ready: {[r.status() for r in self.runners]}")
            await asyncio.sleep(0.1)

    async def __aexit__(self, *exc: Any) -> None:
        for r in self.running:
            r.host.stop()
        await asyncio.gather(*(r.task for r in self.running))

    def produce(self, stage: Stage, items: Iterable[tuple[str, bytes, dict[str, str]]]) -> None:
        p = Producer({"bootstrap.servers": self.settings.bootstrap_servers, "partitioner": "murmur2_random"})
        for key, value, headers in items:
            p.produce(self.topic(stage), value, key.encode(), headers=list(headers.items()))
        assert p.flush(30) == 0

    async def read(self, topic: str, keys: Iterable[str], within_s: float = 60) -> dict[str, KafkaMessage]:
        return await asyncio.to_thread(read_topic, self.settings, self.topic(topic), set(keys), within_s)


def read_topic(settings: Settings, topic: str, keys: set[str], timeout: float) -> dict[str, KafkaMessage]:
    """The first message of each key (stops when all keys were seen, or at the timeout)."""
    c = reader_from_start(settings, topic, timeout)
    found: dict[str, KafkaMessage] = {}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and (not keys or len(found) < len(keys)):
            for m in c.consume(500, 0.2):
                key = (m.key() or b"").decode()
                if m.error() is None and (not keys or key in keys) and key not in found:
                    found[key] = m
    finally:
        c.close()
    return found


def headers_of(m: KafkaMessage) -> dict[str, str]:
    return {k: (v or b"").decode() for k, v in (m.headers() or [])}


__all__ = ["DLQ", "Pipeline", "headers_of", "read_topic", "registrations", "write_batch"]
