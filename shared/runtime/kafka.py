"""Thin confluent-kafka wrappers: client configuration for the local broker's quirks and an
asyncio-friendly producer whose deliveries are awaitable."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from shared.settings import Settings


def client_config(settings: Settings) -> dict[str, Any]:
    """Where and how every librdkafka client (consumers, producers, admin) connects: the bootstrap
    servers and the security settings (TLS, SASL).  The one place they are built; the report
    service's faust/aiokafka client takes the same settings through :func:`ssl_context`."""
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "security.protocol": settings.kafka_security_protocol.lower(),
    }
    if settings.kafka_security_protocol.startswith("SASL_"):
        conf["sasl.mechanism"] = settings.kafka_sasl_mechanism
        conf["sasl.username"] = settings.kafka_sasl_username
        conf["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        conf["ssl.endpoint.identification.algorithm"] = "https" if settings.kafka_ssl_check_hostname else "none"
        for key, value in (("ssl.ca.location", settings.kafka_ssl_ca_location),
                           ("ssl.certificate.location", settings.kafka_ssl_certificate_location),
                           ("ssl.key.location", settings.kafka_ssl_key_location),
                           ("ssl.key.password", settings.kafka_ssl_key_password.get_secret_value())):
            if value:
                conf[key] = value
    return conf


def admin_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    return {**client_config(settings), **extra}


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of the Kafka security settings for Python clients (aiokafka under faust);
    None for the plaintext protocols."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    ctx = ssl.create_default_context(cafile=settings.kafka_ssl_ca_location or None)
    ctx.check_hostname = settings.kafka_ssl_check_hostname
    if settings.kafka_ssl_certificate_location:
        ctx.load_cert_chain(settings.kafka_ssl_certificate_location, settings.kafka_ssl_key_location or None,
                            settings.kafka_ssl_key_password.get_secret_value() or None)
    return ctx


def keepalive_s(settings: Settings) -> float:
    """How long a consumer may go without a poll before the engine polls it for nothing but the
    group's business (a fifth of ``max.poll.interval.ms``, at most 10 s)."""
    return min(10.0, settings.max_poll_interval_ms / 5000)


def consumer_config(settings: Settings, group_id: str, client_id: str) -> dict[str, Any]:
    return {
        **client_config(settings),
        "group.id": group_id,
        "client.id": client_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        # Tansu: ListOffsets "latest" is wrong and cooperative-sticky loses partitions.
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "range",
        # Tansu's JoinGroup waits session.timeout.ms / 2: keep rebalances to seconds.
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": max(500, settings.session_timeout_ms // 4),
        "max.poll.interval.ms": settings.max_poll_interval_ms,
        # Tansu does not wake long-poll fetches on new data: latency ≈ fetch.wait.max.ms / 2.
        "fetch.wait.max.ms": settings.fetch_wait_max_ms,
        # A small prefetch lets a priority record overtake a backlog instead of queueing behind it.
        "queued.max.messages.kbytes": 4096,
        "queued.min.messages": 200,
        # ... but refill it at once: once the queue reaches those thresholds librdkafka postpones the
        # partition's next fetch by this much (default 1,000 ms), which capped a consumer of
        # document-sized (5 KB) messages at ~1,150 msg/s, 6 MB/s, with the broker idle
        # (decision 0009, docs/decisions/0009-fetch-queue-backoff.md); 5 ms: 61,750 msg/s.
        "fetch.queue.backoff.ms": 5,
        "topic.metadata.refresh.interval.ms": 10_000,
        "statistics.interval.ms": 0,
    }


def producer_config(settings: Settings, client_id: str) -> dict[str, Any]:
    return {
        **client_config(settings),
        "client.id": client_id,
        # Not idempotent: the local broker (Tansu 0.6, s3 storage) acknowledges a retried batch
        # it never stored when the retry crosses a broker restart (its sequence bookkeeping
        # survives, the batch does not).  Measured: 4,100-5,600 keyed records produced across
        # `stack restart broker`, 3 of 5 idempotent runs lost acknowledged records (31, 2, 3),
        # 0 of 5 plain runs lost any (2 duplicates).  A duplicate is harmless here (every effect
        # is idempotent on the record id); a lost acknowledged record is not.  A record has one
        # message in flight per hop, so retry reordering across records changes nothing.
        "enable.idempotence": False,
        "acks": "all",
        "linger.ms": settings.producer_linger_ms,
        "batch.num.messages": 2000,
        "compression.type": "lz4",
        # murmur2_random matches Java Kafka's key→partition mapping.
        "partitioner": "murmur2_random",
        "message.timeout.ms": 120_000,
        # Set, not defaulted: the topics are created with the same max.message.bytes, and the
        # size policy (shared/documents.py) keeps documents' messages under 90 % of it.
        "message.max.bytes": settings.message_max_bytes,
    }


# A message over a size limit: librdkafka's own check before sending (message.max.bytes; it
# raises from produce() with MSG_SIZE_TOO_LARGE, there is no local "_" code for it), the broker's
# per topic (max.message.bytes, same code in the delivery report), or a batch over the broker's
# limit (RECORD_LIST_TOO_LARGE).
_SIZE_CODES = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})


def is_too_large(err: KafkaError | None) -> bool:
    return err is not None and err.code() in _SIZE_CODES


class DeliveryError(Exception):
    """A message the broker did not acknowledge; ``too_large``: refused for its size, which no
    retry can change."""

    def __init__(self, message: str, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large

    @classmethod
    def of(cls, err: KafkaError) -> DeliveryError:
        return cls(str(err), too_large=is_too_large(err))

    @classmethod
    def raised(cls, exc: KafkaException) -> DeliveryError:
        err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        return cls.of(err) if err is not None else cls(str(exc))


class AsyncProducer:
    """A confluent-kafka Producer whose ``send`` returns an awaitable delivery.

    A background thread serves delivery callbacks.  Callbacks only collect their outcome; the
    thread then wakes the event loop once per poll to resolve them all, instead of one
    cross-thread wake-up per message (a measurable share of a no-op stage's CPU).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer(config)
        self._closed = threading.Event()
        # (loop, future, error, result): a Message for send(), the count for send_many()
        self._done: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], KafkaError | None, Any]] = []
        self._thread = threading.Thread(target=self._poll_loop, name="producer-poll", daemon=True)
        self._thread.start()

    def _poll_loop(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.05)
            self._wake()

    def _wake(self) -> None:
        if not self._done:
            return
        done, self._done = self._done, []
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for item in done:
            by_loop.setdefault(item[0], []).append(item)
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # loop closed: nobody waits any more
                loop.call_soon_threadsafe(_resolve_all, items)

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> asyncio.Future[Message]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Message] = loop.create_future()

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            self._done.append((loop, fut, err, msg))

        kwargs: dict[str, Any] = {"value": value, "key": key, "headers": headers, "on_delivery": on_delivery}
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self._producer.produce(topic, **kwargs)
                return fut
            except BufferError:
                # The local queue is full: that is backpressure, wait for deliveries.
                time.sleep(0.005)
            except KafkaException as exc:  # refused before sending, e.g. over message.max.bytes
                fut.set_exception(DeliveryError.raised(exc))
                return fut

    async def send_many(self, topic: str, messages: Iterable[tuple[bytes, bytes, list[tuple[str, bytes]]]]) -> int:
        """Produce (key, value, headers) messages and wait until the broker acknowledged them all;
        raises DeliveryError on the first failed delivery.

        For bulk producers (the ingest API takes 100,000 ids in one request): one future and one
        loop wake-up for the whole batch instead of one per message, and a full local queue is
        waited out with ``await`` instead of ``time.sleep`` (which would stall the event loop).
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        lock = threading.Lock()
        state = _Batch()

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            # Served by whichever thread polls (the poll thread, or flush() in close()): locked.
            with lock:
                state.acked += 1
                if err is not None and state.error is None:
                    state.error = err
                if state.closed and state.acked == state.sent:
                    self._done.append((loop, fut, state.error, state.sent))

        produce = self._producer.produce
        for key, value, headers in messages:
            while True:
                try:
                    produce(topic, value, key, on_delivery=on_delivery, headers=headers)  # type: ignore[arg-type]
                    break
                except BufferError:
                    await asyncio.sleep(0.005)  # local queue full: backpressure, let deliveries drain
                except KafkaException as exc:
                    raise DeliveryError.raised(exc) from exc
            with lock:
                state.sent += 1
        with lock:
            state.closed = True
            finished = state.acked == state.sent  # else the last callback resolves ``fut``
        if finished:
            if state.error is not None:
                raise DeliveryError.of(state.error)
            return state.sent
        return int(await fut)

    async def send_and_wait(
        self, topic: str, value: bytes | None, key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Message:
        return await self.send(topic, value, key, headers)

    def queue_length(self) -> int:
        return len(self._producer)

    def flush(self, timeout: float = 30.0) -> int:
        remaining = int(self._producer.flush(timeout))
        self._wake()
        return remaining

    def close(self, timeout: float = 30.0) -> None:
        if self._closed.is_set():  # closed already: the handle may be gone
            return
        self.flush(timeout)
        self._closed.set()
        self._thread.join(timeout=2)
        self._wake()
        if not self._thread.is_alive():
            # Destroy the librdkafka handle now, not when the last reference goes: a handle kept
            # alive (a test's app object, a reference cycle) reconnects to a broker long stopped.
            self._producer.close()


@dataclass
class _Batch:
    sent: int = 0
    acked: int = 0
    closed: bool = False
    error: KafkaError | None = None


def _resolve_all(items: list[tuple[Any, asyncio.Future[Message], KafkaError | None, Message]]) -> None:
    for _, fut, err, msg in items:
        if fut.done():
            continue
        if err is not None:
            fut.set_exception(DeliveryError.of(err))
        else:
            fut.set_result(msg)
