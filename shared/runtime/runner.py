"""The stage engine: poll, dispatch, retry, dead-letter, commit, pause, shut down.

One :class:`StageRunner` per process.  Guarantees:

* at-least-once: a message's offset is committed only after everything it emitted (outputs,
  retries, dead letters) was acknowledged by the broker, and only below the lowest offset of
  its partition still in flight;
* a transient failure never blocks its partition: the message moves to the stage's retry
  topic with a due time and the partition goes on;
* a permanent failure is a dead letter at once, key and value unchanged, with headers;
* an output over the Kafka message limit (refused by the producer or the broker) is a
  permanent failure of its input (``MESSAGE_TOO_LARGE``), never retried: no retry makes it fit;
* an open circuit breaker defers (per-message downstream) or pauses (stage-wide downstream)
  work instead of burning attempts;
* priority records overtake a backlog: the priority topic has its own consumer (so its own
  fetch queue: the local broker answers a fetch with a whole backlog, which would otherwise sit
  in front of it), is polled first, and while priority records flow the normal and retry
  partitions are paused.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import random
import signal
import socket
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka import Message as KafkaMessage
from opentelemetry import trace

from shared.domain.reasons import ReasonCode
from shared.runtime import headers as H
from shared.runtime import metrics as M
from shared.runtime import tracing
from shared.runtime.breaker import BreakerBoard, BreakerState, CircuitBreaker
from shared.runtime.condition import Condition, ConditionReporter
from shared.runtime.errors import PermanentError, TransientError
from shared.runtime.kafka import AsyncProducer, DeliveryError, consumer_config, producer_config
from shared.runtime.message import Emit, Message
from shared.runtime.offsets import OffsetTracker
from shared.runtime.stage import StageSpec
from shared.settings import Settings
from shared.topics import input_topic, priority_topic

log = logging.getLogger("fiscalflow.runtime")

# A retry waiting for its due time holds no handler slot; this bounds how many may wait in memory
# before the retry partitions are paused.
MAX_DELAYED = 20_000
DRAIN_ON_REVOKE_S = 10.0
LAG_EVERY_S = 5.0  # consumer lag metric period


class OutputNotDelivered(Exception):
    """The broker did not acknowledge an output: the input stays uncommitted."""


class MessageTooLarge(OutputNotDelivered):
    """An output was refused for its size: permanent.  (An OutputNotDelivered, so that wherever it
    is not turned into a dead letter it still holds its input back rather than losing it.)"""

    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.details = details


def _now_ms() -> int:
    return int(time.time() * 1000)


def delivery_failure(sent: Sequence[tuple[str, int]], results: Sequence[object],
                     limit: int) -> OutputNotDelivered | None:
    """What failed deliveries mean: ``MessageTooLarge`` (permanent) when any output was refused for
    its size, else ``OutputNotDelivered`` (an outage: hold the input, try again), else None."""
    for (topic, size), r in zip(sent, results, strict=True):
        if isinstance(r, DeliveryError) and r.too_large:
            return MessageTooLarge(f"a {size}-byte message to {topic} is over the message limit ({limit} bytes): {r}",
                                   {"size": size, "limit": limit, "topic": topic})
    errors = [r for r in results if isinstance(r, BaseException)]
    return OutputNotDelivered(str(errors[0])) if errors else None


def _size(value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]) -> int:
    """A message's size as a producer counts it (key, value, header names and values)."""
    return len(value) + len(key or b"") + sum(len(k) + len(v) for k, v in headers)


def _fetch(consumer: Consumer, limit: int, timeout: float) -> list[KafkaMessage]:
    """Up to ``limit`` messages, returning as soon as there is one (or after ``timeout``).

    Not ``consume(limit, timeout)``: that waits out the whole timeout unless ``limit`` messages
    arrive, so an idle stage sat on each record for up to the timeout, at every hop."""
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(limit - 1, 0)] if limit > 1 else [first]


class StageRunner:
    def __init__(self, spec: StageSpec, settings: Settings, replica_id: str | None = None) -> None:
        self.spec = spec
        self.settings = settings
        self.stage = spec.stage.value
        self.replica_id = replica_id or os.environ.get("FISCALFLOW_REPLICA_ID", "0")
        client_id = f"fiscalflow-{self.stage}-{socket.gethostname()}-{self.replica_id}-{os.getpid()}"
        self.max_in_flight = spec.max_in_flight or settings.max_in_flight
        self._consumer = Consumer(consumer_config(settings, spec.consumer_group, client_id))
        self._pconsumer = Consumer(consumer_config(settings, spec.priority_group, client_id + "-p"))
        self.producer = AsyncProducer(producer_config(settings, client_id))
        self._kexec = ThreadPoolExecutor(1, thread_name_prefix=f"{self.stage}-consumer")
        self._offsets = OffsetTracker()
        self._tasks: dict[tuple[str, int, int], asyncio.Task[None]] = {}
        self._handling = 0  # dispatched messages not finished, except retries waiting for their due time
        self._delayed = 0  # retries waiting for their due time
        self._slot = asyncio.Event()
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self.breakers = BreakerBoard(settings.breaker_failure_threshold, settings.breaker_reset_s)
        self._stage_gate = asyncio.Event()
        self._stage_gate.set()
        self.assignment: set[tuple[str, int]] = set()
        self._paused_lanes = False
        self._paused_all = False
        self._priority_topic = spec.priority_topic
        self._topics = spec.subscriptions()[spec.consumer_group]
        self._loop: asyncio.AbstractEventLoop | None = None
        self.last_error: str = ""
        # Labelled metric children, resolved once: .labels() per message is measurable.
        self._m_in_flight = M.IN_FLIGHT.labels(self.stage)
        self._m_latency = M.LATENCY.labels(self.stage)
        self._m_ok = M.PROCESSED.labels(self.stage, "ok")
        for gauge in (M.ASSIGNED, M.PAUSED, M.HALTED):
            gauge.labels(self.stage).set(0)
        # Reject-ratio breaker: a bad deploy or a broken issuer must not drain a backlog into the DLQ.
        self._outcomes: collections.deque[int] = collections.deque(maxlen=settings.reject_ratio_window)
        self.halted: str = ""
        self.last_dead_letter: str = ""
        self._conditions = ConditionReporter(spec.on_condition, (self.stage, self.replica_id, socket.gethostname(),
                                             spec.topic_namespace), self.condition)

    # ------------------------------------------------------------------ lifecycle
    async def run(self, install_signals: bool = True) -> None:
        self._loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self.stop)
        if self.spec.on_start:
            await self.spec.on_start()
        self._conditions.start()
        await self._k(
            self._consumer.subscribe, self._topics, on_assign=self._on_assign,
            on_revoke=self._on_revoke, on_lost=self._on_lost,
        )
        await self._k(
            self._pconsumer.subscribe, [self._priority_topic], on_assign=self._on_assign,
            on_revoke=self._on_revoke, on_lost=self._on_lost,
        )
        committer = asyncio.create_task(self._commit_loop(), name="committer")
        log.info("stage %s replica %s consuming %s", self.stage, self.replica_id, self._topics)
        try:
            await self._poll_loop()
        finally:
            await self._shutdown(committer)

    def stop(self) -> None:
        """Graceful: stop fetching, finish in-flight work, commit, leave the group."""
        if not self._stopping.is_set():
            log.info("stage %s replica %s stopping", self.stage, self.replica_id)
            self._stopping.set()
            self._slot.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def _shutdown(self, committer: asyncio.Task[None]) -> None:
        pending = [t for t in self._tasks.values() if not t.done()]
        if pending:
            _, still = await asyncio.wait(pending, timeout=self.settings.shutdown_grace_s)
            for t in still:
                t.cancel()
        committer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await committer
        await self._commit(sync=True)
        await self._k(self._consumer.close)
        await self._k(self._pconsumer.close)
        await asyncio.get_running_loop().run_in_executor(None, self.producer.close)
        self._kexec.shutdown(wait=False)
        await self._conditions.stop()  # before on_stop: the hook may need what on_stop closes
        if self.spec.on_stop:
            await self.spec.on_stop()
        self._stopped.set()
        log.info("stage %s replica %s stopped", self.stage, self.replica_id)

    async def _k(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a consumer call on the consumer's own thread (librdkafka callbacks happen there)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._kexec, lambda: fn(*args, **kwargs))

    # ------------------------------------------------------------------ polling
    async def _poll_loop(self) -> None:
        while not self._stopping.is_set():
            capacity = self.max_in_flight - self._handling
            if capacity <= 0:
                self._slot.clear()
                await self._slot.wait()
                continue
            if not self._stage_gate.is_set() or self.halted:
                await self._set_paused_all(True)
                await self._wait_gate_or_stop()
                continue
            await self._set_paused_all(False)
            prio, batch = await self._k(self._poll_lanes, min(capacity, 500), not self._paused_lanes)
            prio, batch = self._valid(prio), self._valid(batch)
            for km in prio:
                self._dispatch(km, priority=True)
            await self._steer_lanes(bool(prio))
            if not batch and (prio or self._paused_lanes):
                if not prio:
                    await asyncio.sleep(0.005)  # priority work in flight: poll its topic again soon
                continue
            if self._stopping.is_set() and not batch and not prio:
                break
            for km in batch:
                self._dispatch(km, priority=False)
            if self._delayed > MAX_DELAYED:
                await asyncio.sleep(0.05)

    def _poll_lanes(self, limit: int, normal: bool) -> tuple[list[KafkaMessage], list[KafkaMessage]]:
        """On the consumer thread: the priority lane first; the normal and retry lanes only when
        the priority lane had nothing (and ``normal``: they are not paused for it).

        One hop to the consumer thread per loop turn, not one per consumer: a hop costs ~40 µs
        of CPU, and at a few hundred documents per second a turn often carries one message.
        """
        prio = self._pconsumer.consume(limit, 0)
        if prio or not normal:
            return prio, []
        return [], _fetch(self._consumer, limit, 0.05)

    @staticmethod
    def _valid(batch: list[KafkaMessage]) -> list[KafkaMessage]:
        out = []
        for km in batch:
            err = km.error()
            if err is None:
                out.append(km)
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("consume error: %s", err)
        return out

    async def _wait_gate_or_stop(self) -> None:
        gate = asyncio.create_task(self._stage_gate.wait())
        stop = asyncio.create_task(self._stopping.wait())
        await asyncio.wait([gate, stop], return_when=asyncio.FIRST_COMPLETED, timeout=1.0)
        gate.cancel()
        stop.cancel()

    async def _steer_lanes(self, saw_priority: bool) -> None:
        """Pause normal and retry lanes while priority records flow; resume when they stop."""
        prio_in_flight = any(
            self._offsets.in_flight(t, p) for (t, p) in self.assignment if t == self._priority_topic
        )
        want_paused = saw_priority or prio_in_flight
        if want_paused != self._paused_lanes:
            parts = [TopicPartition(t, p) for (t, p) in self.assignment if t != self._priority_topic]
            if parts:
                fn = self._consumer.pause if want_paused else self._consumer.resume
                with contextlib.suppress(Exception):  # partitions revoked meanwhile
                    await self._k(fn, parts)
            self._paused_lanes = want_paused

    async def _set_paused_all(self, paused: bool) -> None:
        if paused == self._paused_all:
            return
        for consumer, parts in self._parts_by_consumer(self.assignment).items():
            with contextlib.suppress(Exception):
                if paused:
                    await self._k(consumer.pause, parts)
                else:
                    # Resume all; the lane steering pauses the normal lanes again if needed.
                    await self._k(consumer.resume, parts)
        if not paused:
            self._paused_lanes = False
        self._paused_all = paused
        M.PAUSED.labels(self.stage).set(1 if paused else 0)

    # ------------------------------------------------------------------ dispatch
    def _dispatch(self, km: KafkaMessage, priority: bool) -> None:
        hdrs = H.to_dict(km.headers())
        topic, partition, offset = str(km.topic()), int(km.partition() or 0), int(km.offset() or 0)
        key = km.key()
        value = km.value()
        msg = Message(
            topic=topic, partition=partition, offset=offset,
            key=key.encode() if isinstance(key, str) else key,
            value=value.encode() if isinstance(value, str) else (value or b""),
            headers=hdrs, timestamp_ms=km.timestamp()[1],
            priority=priority or hdrs.get(H.PRIORITY) == "1",
            attempt=int(hdrs.get(H.ATTEMPT, "0") or 0),
        )
        self._offsets.start(topic, partition, offset)
        if int(hdrs.get(H.DUE_AT_MS, "0") or 0) > _now_ms():
            self._delayed += 1
        else:
            self._handling += 1
        self._m_in_flight.set(self._handling)
        task = asyncio.create_task(self._process(msg))
        self._tasks[(topic, partition, offset)] = task

    async def _process(self, msg: Message) -> None:
        tp = (msg.topic, msg.partition, msg.offset)
        counted_as = "delayed" if int(msg.headers.get(H.DUE_AT_MS, "0") or 0) > _now_ms() else "handling"
        try:
            if counted_as == "delayed":
                await asyncio.sleep(max(0, int(msg.headers[H.DUE_AT_MS]) - _now_ms()) / 1000)
                self._delayed -= 1
                self._handling += 1
                counted_as = "handling"
            await self._deliver_until_done(msg)
        finally:
            if counted_as == "delayed":
                self._delayed -= 1
            else:
                self._handling -= 1
                self._m_in_flight.set(self._handling)
                self._slot.set()
            self._tasks.pop(tp, None)

    async def _deliver_until_done(self, msg: Message) -> None:
        """Handle; if the broker would not take the outputs, try again until it does (or we stop)."""
        delay = 0.5
        while True:
            try:
                await self._handle(msg)
                self._offsets.done(msg.topic, msg.partition, msg.offset)
                return
            except OutputNotDelivered as exc:
                self.last_error = f"broker: {exc}"
                log.warning("outputs of %s not delivered (%s); retrying", msg.record_id, exc)
                if self._stopping.is_set():
                    return  # left uncommitted: redelivered after restart
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _handle(self, msg: Message) -> None:
        ctx = tracing.extract(msg.headers)
        with tracing.tracer().start_as_current_span(
            f"{self.stage} process", context=ctx, kind=trace.SpanKind.CONSUMER,
            attributes={"fiscalflow.record_id": msg.record_id, "messaging.destination.name": msg.topic,
                        "fiscalflow.attempt": msg.attempt},
        ) as span:
            key_breaker = self._key_breaker(msg)
            if key_breaker is not None and not key_breaker.allow():
                # The message's own downstream is known to be down: wait for it without an attempt.
                await self._to_retry(msg, delay_s=key_breaker.next_probe_in() + random.uniform(0.1, 0.5),
                                     downstream=key_breaker.name, count_attempt=False)
                return
            probe = key_breaker is not None and key_breaker.state is BreakerState.HALF_OPEN
            await self._pass_stage_gate()
            started = time.perf_counter()
            try:
                emits = await self.spec.handler(msg)
            except PermanentError as exc:
                await self._reject(msg, span, exc.reason, exc.message, exc.details)
                return
            except TransientError as exc:
                span.set_attribute("fiscalflow.outcome", "retry")
                downstream = exc.downstream or "unknown"
                M.FAILED.labels(self.stage, "TRANSIENT").inc()
                breaker = self._breaker_for_failure(msg, exc.downstream)
                was_probe = probe or (breaker is not None and breaker.state is not BreakerState.CLOSED)
                if breaker is not None:
                    breaker.record_failure()
                    self._publish_breaker(breaker)
                    self._update_stage_gate()
                self.last_error = f"{downstream}: {exc}"
                await self._retry_or_exhaust(msg, str(exc), downstream, ReasonCode.RETRIES_EXHAUSTED,
                                             count_attempt=not was_probe)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug or an input the handler did not foresee
                log.exception("handler crashed on record %s", msg.record_id)
                M.FAILED.labels(self.stage, ReasonCode.HANDLER_CRASHED).inc()
                await self._retry_or_exhaust(msg, f"{type(exc).__name__}: {exc}", "handler",
                                             ReasonCode.HANDLER_CRASHED, count_attempt=True)
                return
            finally:
                self._m_latency.observe(time.perf_counter() - started)
            if key_breaker is not None and key_breaker.state is not BreakerState.CLOSED:
                key_breaker.record_success()
                self._publish_breaker(key_breaker)
            self._close_stage_breakers_on_success()
            try:
                await self._emit(msg, emits or ())
            except MessageTooLarge as exc:
                # Refused for its size by the producer or the broker: no retry can make it fit, so
                # the input is a dead letter now and the partition moves on (retried as an outage,
                # it held its partition's commit back forever).
                log.error("%s: %s; dead-lettering the input", msg.record_id, exc)
                await self._reject(msg, span, ReasonCode.MESSAGE_TOO_LARGE, str(exc), exc.details)
                return
            self._count_outcome(rejected=False)
            span.set_attribute("fiscalflow.outcome", "ok")
            self._m_ok.inc()

    async def _reject(self, msg: Message, span: trace.Span, reason: str, message: str,
                      details: dict[str, Any]) -> None:
        """A permanent failure: the stage's hook records it, then the input is a dead letter."""
        span.set_attribute("fiscalflow.outcome", "dead_letter")
        M.FAILED.labels(self.stage, reason).inc()
        try:
            await self._record_rejection(msg, reason, message, details)
        except Exception as hook_exc:  # the state store is down: retry, never lose the reject
            await self._retry_or_exhaust(msg, f"recording the rejection failed: {hook_exc}", "postgres",
                                         ReasonCode.RETRIES_EXHAUSTED, count_attempt=True)
            return
        await self._dead_letter(msg, reason, message, details)
        M.PROCESSED.labels(self.stage, "dead_letter").inc()
        self._count_outcome(rejected=True)

    # ------------------------------------------------------------------ breakers
    def _count_outcome(self, rejected: bool) -> None:
        self._outcomes.append(1 if rejected else 0)
        threshold = self.settings.reject_ratio_threshold
        if not rejected or threshold <= 0 or self.halted or len(self._outcomes) < self._outcomes.maxlen:  # type: ignore[operator]
            return
        ratio = sum(self._outcomes) / len(self._outcomes)
        if ratio > threshold:
            self.halted = (f"halted: {ratio:.0%} of the last {len(self._outcomes)} messages became dead letters "
                           f"(threshold {threshold:.0%}); last: {self.last_dead_letter}. Fix the cause, then "
                           "restart the stage (its backlog waits in Kafka).")
            log.error("stage %s %s", self.stage, self.halted)
            M.HALTED.labels(self.stage).set(1)
            self._slot.set()

    def _key_breaker(self, msg: Message) -> CircuitBreaker | None:
        if self.spec.breaker_key is None:
            return None
        key = self.spec.breaker_key(msg)
        return self.breakers.get(key) if key else None

    def _breaker_for_failure(self, msg: Message, downstream: str | None) -> CircuitBreaker | None:
        if downstream is None:
            return None
        return self.breakers.get(downstream)

    def _stage_wide(self, breaker: CircuitBreaker) -> bool:
        """A downstream that is not any message's own key (S3, PostgreSQL...) gates the whole stage."""
        return not breaker.name.startswith(("sftp:", "region:"))

    def _update_stage_gate(self) -> None:
        blocked = any(b.state is BreakerState.OPEN and self._stage_wide(b) for b in self.breakers.breakers.values())
        if blocked and self._stage_gate.is_set() and not self._stopping.is_set():
            log.warning("stage %s paused: downstream down (%s)", self.stage, self.last_error)
            self._stage_gate.clear()
            asyncio.get_running_loop().call_later(self._gate_reopen_in(), self._reopen_gate)

    def _gate_reopen_in(self) -> float:
        waits = [b.next_probe_in() for b in self.breakers.breakers.values()
                 if b.state is BreakerState.OPEN and self._stage_wide(b)]
        return max(0.05, min(waits) if waits else 0.05)

    def _reopen_gate(self) -> None:
        # Half-open: let work through; the first failure re-opens the breaker (and the gate)
        # with a longer reset time, a success closes it.
        for b in self.breakers.breakers.values():
            if b.state is BreakerState.OPEN and self._stage_wide(b):
                b.allow()
                self._publish_breaker(b)
        self._stage_gate.set()
        self._slot.set()

    async def _pass_stage_gate(self) -> None:
        while not self._stage_gate.is_set():
            await self._stage_gate.wait()

    def _close_stage_breakers_on_success(self) -> None:
        for b in self.breakers.breakers.values():
            if b.state is not BreakerState.CLOSED and self._stage_wide(b):
                b.record_success()
                self._publish_breaker(b)
                log.info("stage %s resumed: %s is back", self.stage, b.name)

    def _publish_breaker(self, b: CircuitBreaker) -> None:
        M.BREAKER_STATE.labels(self.stage, b.name).set(int(b.state))

    # ------------------------------------------------------------------ outputs
    def _out_headers(self, msg: Message, extra: dict[str, str]) -> dict[str, str]:
        out = {k: v for k, v in msg.headers.items() if not k.startswith(H.PREFIX) and k not in
               (H.TRACEPARENT, H.TRACESTATE)}
        # The job id and other domain headers travel on; runtime headers are per hop.
        for k in ("ff-job-id", H.REPLAY_COUNT, H.REDRIVE):
            if k in msg.headers:
                out[k] = msg.headers[k]
        if msg.priority:
            out[H.PRIORITY] = "1"
        out.update(extra)
        tracing.inject(out)
        return out

    async def _emit(self, msg: Message, emits: Sequence[Emit]) -> None:
        futs = []
        sent: list[tuple[str, int]] = []
        for e in emits:
            if e.topic is not None:
                topic = self.spec.ns(e.topic)
            elif e.stage is not None:
                topic = self.spec.ns(priority_topic(e.stage) if msg.priority else input_topic(e.stage))
            else:
                raise ValueError("Emit needs a stage or a topic")
            key = e.key if e.key is not None else msg.key
            headers = H.to_list(self._out_headers(msg, e.headers))
            futs.append(self.producer.send(topic, e.value, key, headers))
            sent.append((topic, _size(e.value, key, headers)))
        if futs:
            await self._await_deliveries(futs, sent)

    async def _await_deliveries(self, futs: list[asyncio.Future[Any]], sent: list[tuple[str, int]]) -> None:
        # librdkafka retries delivery itself for message.timeout.ms; a failure after that is a
        # broker outage: the message stays uncommitted (its offset holds the partition's commit)
        # and is redelivered after a restart; its effects are idempotent.  A refusal for size is
        # not an outage: MessageTooLarge, never retried.
        results = await asyncio.gather(*futs, return_exceptions=True)
        failure = delivery_failure(sent, results, self.settings.message_max_bytes)
        if failure is not None:
            raise failure

    async def _to_retry(self, msg: Message, delay_s: float, downstream: str, count_attempt: bool,
                        error: str = "") -> None:
        attempt = msg.attempt + (1 if count_attempt else 0)
        now = _now_ms()
        extra = {
            H.ATTEMPT: str(attempt),
            H.DUE_AT_MS: str(now + int(delay_s * 1000)),
            H.ORIGIN_TOPIC: msg.headers.get(H.ORIGIN_TOPIC, msg.topic),
            H.ORIGIN_PARTITION: msg.headers.get(H.ORIGIN_PARTITION, str(msg.partition)),
            H.ORIGIN_OFFSET: msg.headers.get(H.ORIGIN_OFFSET, str(msg.offset)),
            H.ORIGIN_TIMESTAMP_MS: msg.headers.get(H.ORIGIN_TIMESTAMP_MS, str(msg.timestamp_ms)),
            H.FIRST_FAILURE_MS: msg.headers.get(H.FIRST_FAILURE_MS, str(now)),
            H.LAST_FAILURE_MS: str(now),
            H.ERROR_MESSAGE: (error or msg.headers.get(H.ERROR_MESSAGE, ""))[:1000],
        }
        M.RETRIES.labels(self.stage, downstream).inc()
        await self._send(self.spec.retry_topic, msg, extra)

    async def _send(self, topic: str, msg: Message, extra: dict[str, str], value: bytes | None = None) -> None:
        """The input (or ``value``) with its headers plus ``extra`` to ``topic``, acknowledged."""
        body = msg.value if value is None else value
        headers = H.to_list(self._out_headers(msg, extra))
        await self._await_deliveries([self.producer.send(topic, body, msg.key, headers)],
                                     [(topic, _size(body, msg.key, headers))])

    async def _retry_or_exhaust(self, msg: Message, error: str, downstream: str, exhausted_reason: str,
                                count_attempt: bool) -> None:
        attempts = msg.attempt + (1 if count_attempt else 0)
        if attempts >= self.settings.retry_max_attempts:
            details = {"downstream": downstream}
            try:
                await self._record_rejection(msg, exhausted_reason, error, details)
            except Exception:
                log.exception("could not record the rejection of %s; the dead letter still carries it", msg.record_id)
            await self._dead_letter(msg, exhausted_reason, error, details, attempts=attempts)
            self._count_outcome(rejected=True)
            M.PROCESSED.labels(self.stage, "dead_letter").inc()
            return
        base = self.settings.retry_base_ms / 1000
        cap = self.settings.retry_max_ms / 1000
        # Exponential backoff with full jitter (no thundering herd when a downstream returns).
        delay = random.uniform(base / 2, min(cap, base * (2 ** max(0, attempts - 1))))
        await self._to_retry(msg, delay, downstream, count_attempt, error)
        M.PROCESSED.labels(self.stage, "retry").inc()

    async def _record_rejection(self, msg: Message, reason: str, message: str, details: dict[str, Any]) -> None:
        if self.spec.on_dead_letter is not None:
            await self.spec.on_dead_letter(msg, reason, message, details)

    async def _dead_letter(self, msg: Message, reason: str, message: str, details: dict[str, Any],
                           attempts: int | None = None) -> None:
        now = _now_ms()
        trace_id = tracing.current_trace_id()
        extra = {
            H.ORIGIN_TOPIC: msg.headers.get(H.ORIGIN_TOPIC, msg.topic),
            H.ORIGIN_PARTITION: msg.headers.get(H.ORIGIN_PARTITION, str(msg.partition)),
            H.ORIGIN_OFFSET: msg.headers.get(H.ORIGIN_OFFSET, str(msg.offset)),
            H.ORIGIN_TIMESTAMP_MS: msg.headers.get(H.ORIGIN_TIMESTAMP_MS, str(msg.timestamp_ms)),
            H.STAGE: self.stage,
            H.REASON: reason,
            H.ERROR_MESSAGE: message[:2000],
            H.ATTEMPT: str(attempts if attempts is not None else msg.attempt + 1),
            H.FIRST_FAILURE_MS: msg.headers.get(H.FIRST_FAILURE_MS, str(now)),
            H.LAST_FAILURE_MS: str(now),
            H.TRACE_ID: trace_id,
        }
        if details:
            extra[H.DETAILS] = json.dumps(details, default=str)[:50_000]
        M.DEAD_LETTERS.labels(self.stage, reason).inc()
        self.last_dead_letter = f"{reason} ({msg.record_id})"
        try:
            await self._send(self.spec.dlq_topic, msg, extra)
        except MessageTooLarge as exc:
            # The input fitted its own topic, so only the dead-letter headers can tip it over (or a
            # smaller limit on the dead-letter topic): keep the reason, drop the value, which stays
            # readable at its origin offset (headers) until the input topic's retention.
            log.error("dead letter of %s too large (%s): sent without its value", msg.record_id, exc)
            extra.pop(H.DETAILS, None)
            extra[H.ERROR_MESSAGE] = f"{message[:1000]} (value of {len(msg.value)} bytes dropped: {exc})"[:2000]
            await self._send(self.spec.dlq_topic, msg, extra, value=b"")

    # ------------------------------------------------------------------ commits and rebalances
    async def _commit_loop(self) -> None:
        interval = self.settings.commit_interval_ms / 1000
        lag_every = max(1, round(LAG_EVERY_S / interval))
        ticks = 0
        while True:
            await asyncio.sleep(interval)
            try:
                await self._commit(sync=False)
            except Exception:  # a failed commit is retried next tick; redelivery is idempotent
                log.exception("commit failed")
            ticks += 1
            if ticks % lag_every == 0:
                try:
                    await self._k(self._publish_lag)
                except Exception:  # a metric must never stop the stage
                    log.debug("lag metric failed", exc_info=True)

    def _publish_lag(self) -> None:
        """Consumer lag per assigned partition: the high watermark the fetches reported (the local
        broker's ListOffsets is wrong, fetch responses are right) minus the consumer's position."""
        for consumer, parts in self._parts_by_consumer(set(self.assignment)).items():
            for tp in consumer.position(parts):
                if tp.offset < 0:
                    continue
                _, high = consumer.get_watermark_offsets(tp, cached=True)
                if high >= 0:
                    M.CONSUMER_LAG.labels(self.stage, tp.topic, str(tp.partition)).set(max(0, high - tp.offset))

    async def _commit(self, sync: bool) -> None:
        commits = [c for c in self._offsets.to_commit() if (c[0], c[1]) in self.assignment]
        if not commits:
            return
        for consumer in (self._consumer, self._pconsumer):
            mine = [c for c in commits if (c[0] == self._priority_topic) == (consumer is self._pconsumer)]
            if not mine:
                continue
            try:
                await self._k(consumer.commit, offsets=[TopicPartition(t, p, o) for t, p, o in mine],
                              asynchronous=False)
            except Exception as exc:
                if sync:
                    log.warning("final commit failed: %s", exc)
                    continue
                raise
            self._offsets.mark_committed(mine)

    def _parts_by_consumer(self, keys: set[tuple[str, int]]) -> dict[Consumer, list[TopicPartition]]:
        out: dict[Consumer, list[TopicPartition]] = {}
        for t, p in keys:
            consumer = self._pconsumer if t == self._priority_topic else self._consumer
            out.setdefault(consumer, []).append(TopicPartition(t, p))
        return out

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.assignment.add((tp.topic, tp.partition))
            self._offsets.forget(tp.topic, tp.partition)
        M.ASSIGNED.labels(self.stage).set(len(self.assignment))
        if consumer is self._consumer:  # a new assignment starts unpaused
            self._paused_lanes = False
            self._paused_all = False
        log.info("assigned %s", sorted(self.assignment))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Runs on the consumer thread inside consume(): finish or cancel the partitions' work, commit."""
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        loop = self._loop
        if loop is not None and revoked:
            fut = asyncio.run_coroutine_threadsafe(self._drain(revoked), loop)
            with contextlib.suppress(Exception):
                fut.result(DRAIN_ON_REVOKE_S + 5)
        commits = [c for c in self._offsets.to_commit() if (c[0], c[1]) in revoked]
        if commits:
            try:
                consumer.commit(offsets=[TopicPartition(t, p, o) for t, p, o in commits], asynchronous=False)
            except Exception as exc:
                log.warning("commit on revoke failed: %s", exc)
        for key in revoked:
            self.assignment.discard(key)
            self._offsets.forget(*key)
        M.ASSIGNED.labels(self.stage).set(len(self.assignment))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self.assignment.discard(key)
            self._offsets.forget(*key)
            for tkey, task in list(self._tasks.items()):
                if tkey[:2] == key:
                    task.cancel()

    async def _drain(self, revoked: set[tuple[str, int]]) -> None:
        tasks = [t for k, t in self._tasks.items() if (k[0], k[1]) in revoked and not t.done()]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=DRAIN_ON_REVOKE_S)
        for t in pending:  # the new owner redelivers them; effects are idempotent
            t.cancel()

    # ------------------------------------------------------------------ introspection
    def ready(self) -> bool:
        return bool(self.assignment) and not self._stopping.is_set() and not self.halted

    def condition(self) -> Condition:
        """Halted (until restarted), paused (while a stage-wide downstream's breaker is not closed), or ""."""
        if self.halted:
            return Condition("halted", self.halted)
        down = sorted(b.name for b in self.breakers.breakers.values()
                      if b.state is not BreakerState.CLOSED and self._stage_wide(b))
        if down:
            return Condition("paused", f"paused: {', '.join(down)} down (last error: {self.last_error}); "
                             "resumes by itself when it answers again")
        return Condition()

    def status(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "replica": self.replica_id,
            "assigned": sorted(f"{t}[{p}]" for t, p in self.assignment),
            "in_flight": self._handling,
            "delayed_retries": self._delayed,
            "paused": self._paused_all,
            "breakers": {n: b.state.name.lower() for n, b in self.breakers.breakers.items()},
            "last_error": self.last_error,
            "halted": self.halted,
        }
