"""Fixtures for ``fiscalflow dlq`` tests: dead letters as the runtime writes them, a per-test
topic namespace for replays (so replayed records never reach a real stage's topic), reading a
topic to its end, and the CLI run in-process against the test stack."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import Message as KafkaMessage
from confluent_kafka import Producer
from typer.testing import CliRunner

from shared.dlq.cli import app
from shared.runtime import headers as H
from shared.runtime.admin import ensure_topics
from shared.settings import Settings, get_settings
from shared.topics import DLQ, PARKING, Stage, TopicSpec, input_topic, priority_topic
from tests.support.stacks import db as pg  # noqa: F401  (the dlq tests import pg from here)


def dead_letter_headers(origin_topic: str, stage: str, reason: str, *, error: str = "it failed",
                        details: dict[str, Any] | None = None, attempts: int = 1, failed_ms: int | None = None,
                        job_id: str | None = None, replay_count: int | None = None) -> dict[str, str]:
    """Headers like StageRunner._dead_letter writes them (domain headers + failure headers)."""
    now = failed_ms if failed_ms is not None else int(time.time() * 1000)
    h = {
        H.TRACEPARENT: f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01",
        H.ORIGIN_TOPIC: origin_topic, H.ORIGIN_PARTITION: "1", H.ORIGIN_OFFSET: "42",
        H.STAGE: stage, H.REASON: reason, H.ERROR_MESSAGE: error, H.ATTEMPT: str(attempts),
        H.FIRST_FAILURE_MS: str(now - 5000), H.LAST_FAILURE_MS: str(now),
        H.TRACE_ID: uuid.uuid4().hex, "x-source": "manifest-7",
    }
    if details is not None:
        h[H.DETAILS] = json.dumps(details)
    if job_id:
        h[H.JOB_ID] = job_id
    if replay_count is not None:
        h[H.REPLAY_COUNT] = str(replay_count)
    if origin_topic.endswith(".priority"):
        h[H.PRIORITY] = "1"
    return h


def produce(settings: Settings, topic: str, items: list[tuple[str, bytes, dict[str, str]]]) -> None:
    p = Producer({"bootstrap.servers": settings.bootstrap_servers, "partitioner": "murmur2_random"})
    for key, value, headers in items:
        p.produce(topic, value, key=key.encode(), headers=[(k, v.encode()) for k, v in headers.items()])
    assert p.flush(30) == 0


def headers_of(m: KafkaMessage) -> dict[str, str]:
    return H.to_dict(m.headers())


@dataclass
class DlqWorld:
    settings: Settings
    ns: str  # "" for the shared fiscal.dlq

    def topic(self, name: str) -> str:
        return f"{self.ns}.{name}" if self.ns else name

    @property
    def dlq(self) -> str:
        return self.topic(DLQ)

    def ids(self, n: int) -> list[str]:
        run = uuid.uuid4().hex[:8]
        return [f"dlq-{run}-{i}" for i in range(n)]

    def dead_letter(self, record_id: str, stage: Stage = Stage.VALIDATE, reason: str = "INVALID_CFDI",
                    priority: bool = False, value: bytes | None = None, **kw: Any) -> tuple[bytes, dict[str, str]]:
        """Produce a dead letter; returns its value and headers (for ``redeliver``)."""
        origin = self.topic(priority_topic(stage) if priority else input_topic(stage))
        body = value if value is not None else json.dumps({"record_id": record_id, "v": 1}).encode()
        headers = dead_letter_headers(origin, stage.value, reason, **kw)
        produce(self.settings, self.dlq, [(record_id, body, headers)])
        return body, headers

    def redeliver(self, record_id: str, letter: tuple[bytes, dict[str, str]]) -> None:
        """The same dead letter again, as a stage killed before committing its input writes it on
        redoing that input: same value and origin, new failure time and trace."""
        body, headers = letter
        later = int(time.time() * 1000) + 1
        again = {**headers, H.FIRST_FAILURE_MS: str(later), H.LAST_FAILURE_MS: str(later),
                 H.TRACE_ID: uuid.uuid4().hex, H.TRACEPARENT: f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"}
        produce(self.settings, self.dlq, [(record_id, body, again)])

    def cli(self, *args: str) -> Any:
        ns = ["--namespace", self.ns] if self.ns else []
        result = CliRunner().invoke(app, [*args, *ns], catch_exceptions=False)
        return result

    def json_lines(self, *args: str) -> list[dict[str, Any]]:
        result = self.cli(*args, "--json")
        assert result.exit_code == 0, result.output
        return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


@pytest.fixture
def shared_dlq(stack_settings: Settings) -> Iterator[DlqWorld]:
    """The real fiscal.dlq, shared by every test: always filter by your own record ids."""
    get_settings.cache_clear()  # the CLI reads settings from the test stack's environment
    yield DlqWorld(stack_settings, "")
    get_settings.cache_clear()


@pytest.fixture
def isolated(stack_settings: Settings) -> Iterator[DlqWorld]:
    """A topic namespace of its own: replays go to topics no stage consumes."""
    get_settings.cache_clear()
    ns = "dlqt" + uuid.uuid4().hex[:8]
    names = [DLQ, PARKING, *(t for s in (Stage.VALIDATE, Stage.DOWNLOAD) for t in (input_topic(s), priority_topic(s)))]
    ensure_topics(stack_settings, [TopicSpec(f"{ns}.{n}", 2) for n in names])
    yield DlqWorld(stack_settings, ns)
    get_settings.cache_clear()
