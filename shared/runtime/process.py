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
from shared.runtime import metrics as M
from shared.runtime import tracing
from shared.runtime.backend import ProducerBackend
from shared.runtime.breaker import BreakerState
from shared.runtime.encoding import dead_letter_headers, out_headers, retry_headers
from shared.runtime.errors import PermanentError, TransientError
from shared.runtime.gate import BreakerGate
from shared.runtime.inflight import now_ms
from shared.runtime.message import Emit, Message
from shared.runtime.policy import DeadLetter, Outcome, RejectRatio, Retry, RetryPolicy
from shared.runtime.stage import StageSpec
from shared.topics import input_topic, priority_topic

log = logging.getLogger("fiscalflow.runtime")


class OutputNotDelivered(Exception):
    """The broker did not acknowledge an output: the input stays uncommitted."""


class Processor:
    def __init__(self, spec: StageSpec, producer: ProducerBackend, gate: BreakerGate, policy: RetryPolicy,
                 reject: RejectRatio, on_halt: Callable[[str], None], stopping: asyncio.Event) -> None:
        self.spec = spec
        self.stage = spec.stage.value
        self.producer = producer
        self.gate = gate
        self.policy = policy
        self.reject = reject
        self._on_halt = on_halt
        self._stopping = stopping
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
        with tracing.tracer().start_as_current_span(
            f"{self.stage} process", context=tracing.extract(msg.headers), kind=trace.SpanKind.CONSUMER,
            attributes={"fiscalflow.record_id": msg.record_id, "messaging.destination.name": msg.topic,
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
            await self.emit(msg, emits or ())
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
        outcome = self.policy.on_error(msg.attempt, exc, probe)
        span.set_attribute("fiscalflow.outcome", "retry" if isinstance(outcome, Retry) else "dead_letter")
        await self.apply(msg, outcome)

    async def apply(self, msg: Message, outcome: Outcome) -> None:
        if isinstance(outcome, Retry):
            await self._retry(msg, outcome)
            M.PROCESSED.labels(self.stage, "retry").inc()
            return
        try:
            if self.spec.on_dead_letter is not None:
                await self.spec.on_dead_letter(msg, outcome.reason, outcome.message, outcome.details)
        except Exception as hook_exc:
            if outcome.must_record:  # the state store is down: retry, never lose the reject
                await self.apply(msg, self.policy.on_record_failure(msg.attempt, hook_exc))
                return
            log.exception("could not record the rejection of %s; the dead letter still carries it", msg.record_id)
        await self._dead_letter(msg, outcome)
        M.PROCESSED.labels(self.stage, "dead_letter").inc()
        self._count(rejected=True)

    def _count(self, rejected: bool) -> None:
        halted = self.reject.record(rejected, self.last_dead_letter)
        if halted:
            self._on_halt(halted)

    # ------------------------------------------------------------------ outputs
    async def emit(self, msg: Message, emits: Sequence[Emit]) -> None:
        futs = []
        for e in emits:
            if e.topic is not None:
                topic = self.spec.ns(e.topic)
            elif e.stage is not None:
                topic = self.spec.ns(priority_topic(e.stage) if msg.priority else input_topic(e.stage))
            else:
                raise ValueError("Emit needs a stage or a topic")
            futs.append(self.producer.send(topic, e.value, e.key if e.key is not None else msg.key,
                                           out_headers(msg, e.headers)))
        if futs:
            await self._await_deliveries(futs)

    @staticmethod
    async def _await_deliveries(futs: Sequence[asyncio.Future[Any]]) -> None:
        # librdkafka retries delivery itself for message.timeout.ms; a failure after that is a
        # broker outage: the message stays uncommitted (its offset holds the partition's commit)
        # and is redelivered after a restart; its effects are idempotent.
        results = await asyncio.gather(*futs, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise OutputNotDelivered(str(errors[0]))

    async def _retry(self, msg: Message, retry: Retry) -> None:
        M.RETRIES.labels(self.stage, retry.downstream).inc()
        headers = out_headers(msg, retry_headers(msg, retry, now_ms()))
        await self._await_deliveries([self.producer.send(self.spec.retry_topic, msg.value, msg.key, headers)])

    async def _dead_letter(self, msg: Message, dead: DeadLetter) -> None:
        extra = dead_letter_headers(msg, dead, self.stage, now_ms(), tracing.current_trace_id())
        M.DEAD_LETTERS.labels(self.stage, dead.reason).inc()
        self.last_dead_letter = f"{dead.reason} ({msg.record_id})"
        headers = out_headers(msg, extra)
        await self._await_deliveries([self.producer.send(self.spec.dlq_topic, msg.value, msg.key, headers)])
