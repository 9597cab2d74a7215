"""One message, start to finish: breaker gate, handler, outcome, and everything it produces.

Its offset is finished only after everything it emitted (outputs, a retry, a dead letter) was
acknowledged by the broker.  The hot path: one span (recorded only when exported), metric
children resolved once, the deliveries awaited together.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry import trace

from shared.domain.reasons import ReasonCode
from shared.runtime import headers as H
from shared.runtime import metrics as M
from shared.runtime import tracing
from shared.runtime.backend import ProducerBackend
from shared.runtime.breaker import BreakerState
from shared.runtime.delivery import MessageTooLarge, OutputNotDelivered, delivery_failure, message_size
from shared.runtime.encoding import dead_letter_headers, out_headers, retry_headers
from shared.runtime.errors import PermanentError, TransientError
from shared.runtime.gate import BreakerGate
from shared.runtime.inflight import now_ms
from shared.runtime.message import Emit, Message
from shared.runtime.policy import DeadLetter, Outcome, RejectRatio, Retry, RetryPolicy, record_max_attempts
from shared.runtime.stage import StageSpec

log = logging.getLogger("fiscalflow.runtime")
Sent = tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]  # topic, value, key, headers


class Processor:
    def __init__(self, spec: StageSpec, producer: ProducerBackend, gate: BreakerGate, policy: RetryPolicy,
                 reject: RejectRatio, on_halt: Callable[[str], None], stopping: asyncio.Event,
                 message_limit: int) -> None:
        self.spec = spec
        self.stage = spec.stage.value
        self.producer = producer
        self.gate = gate
        self.policy = policy
        self.reject = reject
        self._on_halt = on_halt
        self._stopping = stopping
        self._limit = message_limit
        self.last_dead_letter = ""
        # Labelled metric children, resolved once: .labels() per message is measurable.
        self._m_latency = M.LATENCY.labels(self.stage)
        self._m_ok = M.PROCESSED.labels(self.stage, "ok")

    async def process(self, msg: Message) -> bool:
        """Handle; if the broker would not take the outputs, try again until it does (or we stop).
        True when the message is finished, False when it stays uncommitted."""
        delay = 0.5
        while True:
            try:
                await self.handle(msg)
                return True
            except OutputNotDelivered as exc:
                self.gate.last_error = f"broker: {exc}"
                log.warning("outputs of %s not delivered (%s); retrying", msg.record_id, exc)
                if self._stopping.is_set():
                    return False  # left uncommitted: redelivered after restart
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def handle(self, msg: Message) -> None:
        with tracing.consumer_span(
            f"{self.stage} process", msg.headers,
            {"fiscalflow.record_id": msg.record_id, "messaging.destination.name": msg.topic,
             "fiscalflow.attempt": msg.attempt},
        ) as span:
            key_breaker = self.gate.key_breaker(msg)
            if key_breaker is not None and not key_breaker.allow():
                # The message's own downstream is known to be down: wait for it without an attempt.
                await self._retry(msg, self.policy.deferral(key_breaker.next_probe_in(), key_breaker.name))
                return
            probe = key_breaker is not None and key_breaker.state is BreakerState.HALF_OPEN
            await self.gate.wait_open()
            started = time.perf_counter()
            failure: Exception | None = None
            try:
                emits = await self.spec.handler(msg)
            except Exception as exc:
                failure = exc
            finally:
                self._m_latency.observe(time.perf_counter() - started)
            if failure is not None:
                await self._failed(msg, failure, probe, span)
                return
            self.gate.succeeded(key_breaker)
            try:
                await self.emit(msg, emits or ())
            except MessageTooLarge as exc:
                # Refused for its size by the producer or the broker: no retry can make it fit, so
                # the input is a dead letter now and the partition moves on (retried as an outage,
                # it held its partition's commit back forever).
                log.error("%s: %s; dead-lettering the input", msg.record_id, exc)
                M.FAILED.labels(self.stage, ReasonCode.MESSAGE_TOO_LARGE).inc()
                span.set_attribute("fiscalflow.outcome", "dead_letter")
                await self.apply(msg, self.policy.on_too_large(str(exc), exc.details))
                return
            self._count(rejected=False)
            span.set_attribute("fiscalflow.outcome", "ok")
            self._m_ok.inc()

    async def _failed(self, msg: Message, exc: Exception, probe: bool, span: trace.Span) -> None:
        if isinstance(exc, PermanentError):
            M.FAILED.labels(self.stage, exc.reason).inc()
        elif isinstance(exc, TransientError):
            M.FAILED.labels(self.stage, "TRANSIENT").inc()
            self.gate.last_error = f"{exc.downstream or 'unknown'}: {exc}"
            probe = self.gate.failed(exc.downstream, probe)
        else:  # a bug or an input the handler did not foresee
            log.error("handler crashed on record %s", msg.record_id, exc_info=exc)
            M.FAILED.labels(self.stage, ReasonCode.HANDLER_CRASHED).inc()
        outcome = self.policy.on_error(msg.attempt, exc, probe, record_max_attempts(msg.headers))
        span.set_attribute("fiscalflow.outcome", "retry" if isinstance(outcome, Retry) else "dead_letter")
        await self.apply(msg, outcome)

    async def apply(self, msg: Message, outcome: Outcome) -> None:
        if isinstance(outcome, Retry):
            await self._retry(msg, outcome)
            M.PROCESSED.labels(self.stage, "retry").inc()
            return
        failed_ms = now_ms()  # one failure time: the rejection's record and the dead letter's headers
        try:
            if self.spec.on_dead_letter is not None:
                await self.spec.on_dead_letter(msg, outcome.reason, outcome.message, outcome.details, failed_ms)
        except Exception as hook_exc:
            if outcome.must_record:  # the state store is down: retry, never lose the reject
                await self.apply(msg, self.policy.on_record_failure(msg.attempt, hook_exc,
                                                                    record_max_attempts(msg.headers)))
                return
            log.exception("could not record the rejection of %s; the dead letter still carries it", msg.record_id)
        await self._dead_letter(msg, outcome, failed_ms)
        M.PROCESSED.labels(self.stage, "dead_letter").inc()
        self._count(rejected=True)

    def _count(self, rejected: bool) -> None:
        halted = self.reject.record(rejected, self.last_dead_letter)
        if halted:
            self._on_halt(halted)

    # ------------------------------------------------------------------ outputs
    async def emit(self, msg: Message, emits: Sequence[Emit]) -> None:
        futs = []
        sent: list[Sent] = []
        for e in emits:
            topic = self.spec.next_topic(msg.priority) if e.topic is None else self.spec.ns(e.topic)
            key = e.key if e.key is not None else msg.key
            headers = out_headers(msg, e.headers)
            futs.append(self.producer.send(topic, e.value, key, headers))
            sent.append((topic, e.value, key, headers))
        if futs:
            await self._await_deliveries(futs, sent)

    async def _await_deliveries(self, futs: Sequence[asyncio.Future[Any]], sent: Sequence[Sent]) -> None:
        # librdkafka retries delivery itself for message.timeout.ms; a failure after that is a
        # broker outage: the message stays uncommitted (its offset holds the partition's commit)
        # and is redelivered after a restart; its effects are idempotent.  A refusal for size is
        # not an outage: MessageTooLarge, never retried.
        if len(futs) == 1:  # most handlers emit one message: no gather (its future and callbacks)
            try:
                await futs[0]
                return
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # this handler is being cancelled, not the delivery
                results: list[Any] = [exc]
            except Exception as exc:  # classified below, as gather(return_exceptions=True) returns it
                results = [exc]
        else:
            results = await asyncio.gather(*futs, return_exceptions=True)
            if not any(isinstance(r, BaseException) for r in results):
                return
        sizes = [(topic, message_size(value, key, headers)) for topic, value, key, headers in sent]
        failure = delivery_failure(sizes, results, self._limit)
        if failure is not None:
            raise failure

    async def _send(self, topic: str, msg: Message, extra: dict[str, str], value: bytes | None = None) -> None:
        """The input (or ``value``) with its headers plus ``extra`` to ``topic``, acknowledged."""
        body = msg.value if value is None else value
        headers = out_headers(msg, extra)
        await self._await_deliveries([self.producer.send(topic, body, msg.key, headers)],
                                     [(topic, body, msg.key, headers)])

    async def _retry(self, msg: Message, retry: Retry) -> None:
        M.RETRIES.labels(self.stage, retry.downstream).inc()
        await self._send(self.spec.retry_topic, msg, retry_headers(msg, retry, now_ms()))

    async def _dead_letter(self, msg: Message, dead: DeadLetter, failed_ms: int) -> None:
        extra = dead_letter_headers(msg, dead, self.stage, failed_ms, tracing.current_trace_id())
        M.DEAD_LETTERS.labels(self.stage, dead.reason).inc()
        self.last_dead_letter = f"{dead.reason} ({msg.record_id})"
        try:
            await self._send(self.spec.dlq_topic, msg, extra)
        except MessageTooLarge as exc:
            # The input fitted its own topic, so only the dead-letter headers can tip it over (or a
            # smaller limit on the dead-letter topic): keep the reason, drop the value, which stays
            # readable at its origin offset (headers) until the input topic's retention.
            log.error("dead letter of %s too large (%s): sent without its value", msg.record_id, exc)
            extra.pop(H.DETAILS, None)
            extra[H.ERROR_MESSAGE] = f"{dead.message[:1000]} (value of {len(msg.value)} bytes dropped: {exc})"[:2000]
            await self._send(self.spec.dlq_topic, msg, extra, value=b"")
