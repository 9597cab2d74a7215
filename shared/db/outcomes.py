"""Record a dead-lettered record's final status (``rejected``, or ``duplicate`` for DUPLICATE_UUID).

Used by a stage's ``on_dead_letter`` hook, batched: hundreds of rejections make one statement.
Idempotent: the audit event's key names the record, stage, reason and replay count.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from shared.db.batcher import MicroBatcher
from shared.db.records import Transition, apply_transitions
from shared.domain.reasons import ReasonCode
from shared.domain.records import RecordStatus
from shared.runtime.errors import TransientError
from shared.runtime.headers import REPLAY_COUNT
from shared.runtime.message import Message
from shared.runtime.tracing import current_trace_id

# Every status but archived: a replayed record may come from any of them; archived is final.
NOT_ARCHIVED = tuple(s for s in RecordStatus if s is not RecordStatus.ARCHIVED)

PG_DOWN = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError)


def status_for(reason: str) -> RecordStatus:
    return RecordStatus.DUPLICATE if reason == ReasonCode.DUPLICATE_UUID else RecordStatus.REJECTED


class RejectionRecorder:
    def __init__(self, stage: str, actor: str) -> None:
        self.stage = stage
        self.actor = actor
        self.pool: asyncpg.Pool | None = None
        self._batcher: MicroBatcher[Transition, bool] = MicroBatcher(self._flush, 200, 0.01)

    async def record(self, msg: Message, reason: str, message: str, details: dict[str, Any]) -> None:
        replay = msg.headers.get(REPLAY_COUNT, "0")
        t = Transition(
            record_id=msg.record_id, to_status=status_for(reason), allowed_from=NOT_ARCHIVED, stage=self.stage,
            actor=self.actor, idempotency_key=f"{msg.record_id}:{status_for(reason)}:{self.stage}:{reason}:{replay}",
            reason=reason, last_error=message[:500], detail=details or None, trace_id=current_trace_id() or None,
        )
        await self._batcher.submit(t)

    async def _flush(self, items: list[Transition]) -> list[bool]:
        assert self.pool is not None, "RejectionRecorder.pool is set at stage start"
        try:
            async with self.pool.acquire() as conn:
                return await apply_transitions(conn, items)
        except PG_DOWN as exc:
            raise TransientError(f"postgres: {exc}", downstream="postgres") from exc
