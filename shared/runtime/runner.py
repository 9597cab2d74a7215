"""The stage runtime, composed: one :class:`StageRunner` per process.

Guarantees:

* at-least-once: a message's offset is committed only after everything it emitted (outputs,
  retries, dead letters) was acknowledged by the broker, and only below the lowest offset of
  its partition still in flight (:mod:`.inflight`, :mod:`.committer`);
* a transient failure never blocks its partition: the message moves to the stage's retry
  topic with a due time and the partition goes on; a permanent failure is a dead letter at once,
  key and value unchanged, with headers (:mod:`.policy`, :mod:`.encoding`, :mod:`.process`);
* an output over the Kafka message limit (refused by the producer or the broker) is a
  permanent failure of its input (``MESSAGE_TOO_LARGE``), never retried: no retry makes it fit
  (:mod:`.delivery`);
* an open circuit breaker defers (per-message downstream) or pauses (stage-wide downstream)
  work instead of burning attempts (:mod:`.gate`);
* priority records overtake a backlog (:mod:`.engine`, :mod:`.kafka_backend`).

The broker is a :class:`~shared.runtime.backend.Backend`: Kafka by default, in memory for tests.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

from shared.runtime import metrics as M
from shared.runtime.backend import Backend
from shared.runtime.budget import ByteBudget
from shared.runtime.condition import Condition, ConditionReporter
from shared.runtime.delivery import MessageTooLarge, OutputNotDelivered, delivery_failure
from shared.runtime.engine import Engine
from shared.runtime.gate import BreakerGate
from shared.runtime.host import Readiness, dependency_ok
from shared.runtime.inflight import InFlight
from shared.runtime.kafka import keepalive_s
from shared.runtime.kafka_backend import KafkaBackend
from shared.runtime.policy import RejectRatio, RetryPolicy
from shared.runtime.process import Processor
from shared.runtime.stage import StageSpec
from shared.settings import Settings

__all__ = ["MessageTooLarge", "OutputNotDelivered", "StageRunner", "delivery_failure"]

log = logging.getLogger("fiscalflow.runtime")


class StageRunner:
    def __init__(self, spec: StageSpec, settings: Settings, replica_id: str | None = None,
                 backend: Backend | None = None) -> None:
        if backend is None:
            backend = KafkaBackend(settings)
        self.spec = spec
        self.settings = settings
        self.stage = spec.stage.value
        self.replica_id = replica_id or settings.replica_id
        client_id = f"fiscalflow-{self.stage}-{socket.gethostname()}-{self.replica_id}-{os.getpid()}"
        self.producer = backend.producer(client_id)
        self._stopped = asyncio.Event()
        stopping = asyncio.Event()
        self.reject = RejectRatio(settings.reject_ratio_window, settings.reject_ratio_threshold)
        M.HALTED.labels(self.stage).set(0)
        self.gate = BreakerGate(spec, settings.breaker_failure_threshold, settings.breaker_reset_s, self._wake,
                                stopping)
        self.processor = Processor(spec, self.producer, self.gate,
                                   RetryPolicy(settings.retry_max_attempts, settings.retry_base_ms,
                                               settings.retry_max_ms),
                                   self.reject, self._halt, stopping, settings.message_max_bytes)
        self.inflight = InFlight(self.stage, spec.max_in_flight or settings.max_in_flight, self.processor.process,
                                 ByteBudget(self.stage, settings.max_in_flight_bytes))
        self.engine = Engine(self.stage, backend.consumer(spec.subscriptions(), spec.priority_topic, client_id),
                             spec.priority_topic, self.inflight, self.gate.open, lambda: bool(self.reject.halted),
                             settings.commit_interval_ms / 1000, stopping, keepalive_s(settings),
                             spec.fair_key, spec.look_ahead, spec.on_assignment)
        self._conditions = ConditionReporter(spec.on_condition, (self.stage, self.replica_id, socket.gethostname(),
                                             spec.topic_namespace), self.condition)

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        """Consume until :meth:`stop` (the service host calls it on SIGTERM), then drain and commit."""
        self._conditions.start()
        committer = await self.engine.start()
        log.info("stage %s replica %s consuming %s", self.stage, self.replica_id, self.spec.subscriptions())
        try:
            await self.engine.poll_loop()
        finally:
            await self._shutdown(committer)

    def stop(self) -> None:
        """Graceful: stop fetching, finish in-flight work, commit, leave the group."""
        if not self.engine.stopping.is_set():
            log.info("stage %s replica %s stopping", self.stage, self.replica_id)
            self.engine.stop()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def _shutdown(self, committer: asyncio.Task[None]) -> None:
        await self.engine.shutdown(committer, self.settings.shutdown_grace_s)
        await asyncio.get_running_loop().run_in_executor(None, self.producer.close)
        await self._conditions.stop()  # before the host stops the parts (the pool) the hook uses
        self._stopped.set()
        log.info("stage %s replica %s stopped", self.stage, self.replica_id)

    def _wake(self) -> None:
        self.inflight.slot.set()

    def _halt(self, reason: str) -> None:
        log.error("stage %s %s", self.stage, reason)
        M.HALTED.labels(self.stage).set(1)
        self._wake()

    # ------------------------------------------------------------------ introspection
    @property
    def halted(self) -> str:
        return self.reject.halted

    @property
    def assignment(self) -> set[tuple[str, int]]:
        return self.engine.assignment

    @property
    def last_error(self) -> str:
        return self.gate.last_error

    def ready(self) -> bool:
        return bool(self.engine.assignment) and not self.engine.stopping.is_set() and not self.halted

    async def readiness(self) -> Readiness:
        """/readyz: partitions assigned, not stopping nor halted, and the stage's dependencies answer."""
        deps_ok = True if self.spec.ready_check is None else await dependency_ok(self.spec.ready_check)
        condition = self.condition()
        # "condition": halted or paused and why, in one place (`fiscalflow stack status` shows it).
        return self.ready() and deps_ok, {"dependencies": deps_ok, **self.status(),
                                          "condition": {"state": condition.state, "reason": condition.reason}}

    def condition(self) -> Condition:
        """Halted (until restarted), paused (while a stage-wide downstream's breaker is not closed), or ""."""
        if self.halted:
            return Condition("halted", self.halted)
        down = self.gate.down()
        if down:
            return Condition("paused", f"paused: {', '.join(down)} down (last error: {self.last_error}); "
                             "resumes by itself when it answers again")
        return Condition()

    def status(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "replica": self.replica_id,
            "assigned": sorted(f"{t}[{p}]" for t, p in self.engine.assignment),
            "in_flight": self.inflight.handling,
            "delayed_retries": self.inflight.delayed,
            "waiting": len(self.engine.pending),
            "paused": self.engine.paused_all,
            "breakers": self.gate.states(),
            "last_error": self.last_error,
            "halted": self.halted,
        }
