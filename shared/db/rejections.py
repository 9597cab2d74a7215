"""Record a dead-lettered record's final status, batched: the ``on_dead_letter`` hook of every stage.

``rejected``, or ``duplicate`` for DUPLICATE_UUID.  If PostgreSQL is down the hook raises
``TransientError('postgres')`` (shared/db/outage.py) and the runtime retries the message, so no
rejection is ever only in the dead-letter topic.  Idempotent: the audit event's key names the record, stage, reason and
replay count.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg

from shared.db.batcher import MicroBatcher
from shared.db.records import Transition, apply_transitions
from shared.domain.reasons import ReasonCode
from shared.domain.records import RecordStatus
from shared.runtime import Message
from shared.runtime import headers as H
from shared.runtime.tracing import current_trace_id

# A replayed record may be rejected again from wherever it stopped; archived is final.
NOT_ARCHIVED = tuple(s for s in RecordStatus if s is not RecordStatus.ARCHIVED)


def status_for(reason: str) -> RecordStatus:
    return RecordStatus.DUPLICATE if reason == ReasonCode.DUPLICATE_UUID else RecordStatus.REJECTED


class RejectionRecorder:
    """``await recorder(msg, reason, message, details, failed_at_ms)``; ``actor`` is the service host's.

    The record's ``updated_at`` is the dead letter's failure time (``failed_at_ms``, what its
    headers carry and the report counts it at), not the statement's ``now()`` a few ms before the
    dead letter is sent: the report's consistency check (services/report/verify.py) cuts both sides
    at one time, and a rejection timed differently on each side could fall on either side of it."""

    def __init__(self, stage: str, pool: asyncpg.Pool, actor: str) -> None:
        self.stage = stage
        self.pool = pool
        self.actor = actor
        self._batch: MicroBatcher[Transition, bool] = MicroBatcher(self._flush, 200, 0.01)

    async def __call__(self, msg: Message, reason: str, message: str, details: dict[str, Any],
                       failed_at_ms: int) -> None:
        replay = H.pass_key(msg.headers)
        status = status_for(reason)
        await self._batch.submit(Transition(
            record_id=msg.record_id, to_status=status, allowed_from=NOT_ARCHIVED, stage=self.stage,
            actor=self.actor, idempotency_key=f"{msg.record_id}:{status}:{self.stage}:{reason}:{replay}",
            reason=reason, last_error=message[:500], detail=details or None, trace_id=current_trace_id() or None,
            at=dt.datetime.fromtimestamp(failed_at_ms / 1000, dt.UTC),
        ))

    async def _flush(self, items: list[Transition]) -> list[bool]:
        return await apply_transitions(self.pool, items)
