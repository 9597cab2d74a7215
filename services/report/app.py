"""The report stage as a faust-streaming app: two agents hand batches (size or time, whichever
first) to a callback — one reads the priority lane (fiscal.stored.priority: the store stage keeps
a priority record on its lane), one fiscal.stored and fiscal.dlq.

Priority first: the priority agent has a stream buffer of its own, so its events never queue
behind a fiscal.stored backlog inside this process.  Both agents call the same callback, which
serialises the writes (services/report/service.py): the sink's check-then-insert stays exact.
All topics are read by one consumer group, the app id (faust subscribes one consumer to all).

Local broker quirks (LOCAL-INFRA.md): ``producer_max_batch_size=1``, no exactly-once, no faust
web server (the service serves its own API and ops port on 127.0.0.1), short session timeout.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import faust
from faust.types import EventT, StreamT
from opentelemetry import trace

from services.report.events import Event, parse_dead_letter, parse_stored
from services.report.metrics import EVENTS
from shared.runtime import tracing
from shared.runtime.kafka import ssl_context
from shared.settings import Settings
from shared.topics import TOPOLOGY, Lane, Stage

log = logging.getLogger("fiscalflow.report.app")

REPORT = TOPOLOGY[Stage.REPORT]

BatchHandler = Callable[[Sequence[Event]], Awaitable[None]]


def _headers(raw: Any) -> dict[str, str]:
    items = raw.items() if isinstance(raw, dict) else (raw or [])
    return {k: (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v or "")) for k, v in items}


def to_events(batch: Sequence[EventT[Any]], dlq_topic: str) -> list[Event]:
    out: list[Event] = []
    for ev in batch:
        msg = ev.message
        value = ev.value if isinstance(ev.value, bytes) else bytes(ev.value or b"")
        if msg.topic == dlq_topic:
            out.append(parse_dead_letter(msg.topic, msg.partition, msg.offset, round(msg.timestamp * 1000),
                                         ev.key if isinstance(ev.key, bytes) else None, value, _headers(msg.headers)))
            EVENTS.labels("dead_letter").inc()
            continue
        parsed = parse_stored(value)
        if parsed is None:
            log.error("skipping a body that is not a StoredEvent at %s[%s]@%s", msg.topic, msg.partition, msg.offset)
            EVENTS.labels("malformed").inc()
            continue
        out.append(parsed)
        EVENTS.labels("stored").inc()
    return out


def _span(ev: EventT[Any]) -> trace.Span:
    headers = _headers(ev.message.headers)
    key = ev.key.decode("utf-8", "replace") if isinstance(ev.key, bytes) else str(ev.key or "")
    return tracing.tracer().start_span(
        "report materialise", context=tracing.extract(headers), kind=trace.SpanKind.CONSUMER,
        attributes={"fiscalflow.record_id": key, "messaging.destination.name": ev.message.topic})


def app_id(topic_namespace: str = "") -> str:
    """The faust app id: also the consumer group of every topic the report reads."""
    return f"{topic_namespace}-report" if topic_namespace else REPORT.group


def _materialiser(on_batch: BatchHandler, dlq: str, batch_size: int,
                  flush_s: float) -> Callable[[StreamT[Any]], AsyncIterator[None]]:
    """A batch is written at ``batch_size`` events or after ``flush_s`` (settings report_batch_size,
    report_flush_s)."""
    async def materialise(stream: StreamT[Any]) -> AsyncIterator[None]:
        # take_events acks a batch only after this body returns; on_batch retries until written.
        assert isinstance(stream, faust.Stream)  # take_events is not on the StreamT protocol
        async for batch in stream.take_events(batch_size, within=flush_s):
            # One span per record, a child of the stage that produced the event (W3C traceparent
            # in the Kafka headers), covering its materialisation; none when nothing records them
            # (a span object per event that nobody reads).
            spans = [_span(ev) for ev in batch] if tracing.recording() else []
            try:
                await on_batch(to_events(batch, dlq))
            finally:
                for span in spans:
                    span.end()
            yield None

    return materialise


def broker_credentials(settings: Settings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """The Kafka security settings (shared/runtime/kafka.py's client_config) for faust's aiokafka."""
    context = ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL_"):
        return faust.SASLCredentials(username=settings.kafka_sasl_username,
                                     password=settings.kafka_sasl_password.get_secret_value(),
                                     ssl_context=context, mechanism=settings.kafka_sasl_mechanism)
    return faust.SSLCredentials(context) if context is not None else None


def build_app(settings: Settings, on_batch: BatchHandler, topic_namespace: str = "") -> faust.App:
    def ns(topic: str) -> str:
        return f"{topic_namespace}.{topic}" if topic_namespace else topic

    brokers = [f"kafka://{b.strip()}" for b in settings.bootstrap_servers.split(",") if b.strip()]
    session_s = settings.session_timeout_ms / 1000
    # faust makes a data directory (empty with memory tables) at start, by default in the working
    # directory: a checkout's root then collected one per test namespace.  Under the local dir
    # (the container's /tmp/fiscalflow), each service's own.
    datadir = settings.local_dir / "faust" / app_id(topic_namespace)
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id(topic_namespace), datadir=str(datadir),
        broker=brokers, broker_credentials=broker_credentials(settings), web_enabled=False, autodiscover=False, store="memory://",
        producer_max_batch_size=1, processing_guarantee="at_least_once", topic_disable_leader=True,
        consumer_auto_offset_reset="earliest", broker_session_timeout=session_s,
        broker_heartbeat_interval=max(0.5, session_s / 4), broker_commit_interval=1.0,
    )
    (dlq,) = (ns(t) for t in REPORT.side_inputs)  # its one side input: the dead letters, counted
    lanes = {
        "materialise_priority": app.topic(ns(REPORT.topic(Lane.PRIORITY)), key_serializer="raw",
                                          value_serializer="raw"),
        "materialise": app.topic(ns(REPORT.topic(Lane.NORMAL)), dlq, key_serializer="raw", value_serializer="raw"),
    }
    for name, topic in lanes.items():
        app.agent(topic, name=name, concurrency=1)(
            _materialiser(on_batch, dlq, settings.report_batch_size, settings.report_flush_s))
    return app
