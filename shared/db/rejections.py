"""Record a dead-lettered record as rejected, batched: the ``on_dead_letter`` hook of every stage.

If PostgreSQL is down the hook raises ``TransientError('postgres')`` and the runtime retries the
message, so no rejection is ever only in the dead-letter topic.
"""

from __future__ import annotations

import os
from typing import Any

import asyncpg

from shared.db.batcher import MicroBatcher
from shared.db.records import Transition, apply_transitions
from shared.domain.records import RecordStatus
from shared.runtime import Message, TransientError
from shared.runtime import headers as H
from shared.runtime.tracing import current_trace_id

# A replayed record may be rejected again from wherever it stopped.
REJECTABLE = (RecordStatus.PENDING, RecordStatus.DOWNLOADING, RecordStatus.DOWNLOADED, RecordStatus.VALIDATED,
              RecordStatus.REJECTED)

DB_ERRORS = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError)


async def transitions_or_transient(pool: asyncpg.Pool, items: list[Transition]) -> list[bool]:
    """``apply_transitions`` on a pooled connection; a database outage is transient."""
    try:
        async with pool.acquire() as conn:
            return await apply_transitions(conn, items)
    except DB_ERRORS as exc:
        raise TransientError(f"postgres: {exc}", downstream="postgres") from exc


class RejectionRecorder:
    def __init__(self, stage: str, pool: asyncpg.Pool, actor: str | None = None) -> None:
        self.stage = stage
        self.pool = pool
        self.actor = actor or f"{stage}/{os.environ.get('FISCALFLOW_REPLICA_ID', '0')}"
        self._batch: MicroBatcher[Transition, bool] = MicroBatcher(self._flush, 200, 0.01)

    async def __call__(self, msg: Message, reason: str, message: str, details: dict[str, Any]) -> None:
        replay = msg.headers.get(H.REPLAY_COUNT, "0")
        await self._batch.submit(Transition(
            record_id=msg.record_id, to_status=RecordStatus.REJECTED, allowed_from=REJECTABLE, stage=self.stage,
            actor=self.actor, idempotency_key=f"{msg.record_id}:rejected:{self.stage}:{reason}:{replay}",
            reason=reason, last_error=message[:500], detail=details or None, trace_id=current_trace_id() or None,
        ))

    async def _flush(self, items: list[Transition]) -> list[bool]:
        return await transitions_or_transient(self.pool, items)
