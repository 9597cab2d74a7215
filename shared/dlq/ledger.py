"""The replay ledger (table ``dlq_replays``) and the replay audit events, in PostgreSQL.

A dead letter is claimed before it is sent and confirmed after the broker acknowledged it; the
confirmation and its audit event are one transaction, batched per chunk of dead letters.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from shared.dlq.model import DeadLetter

# A claim older than this that was never confirmed belongs to a run that died: take it over.
CLAIM_TIMEOUT_S = 600


def idempotency_key(dl: DeadLetter) -> str:
    """One audit event per dead letter (its identity: a copy is the same), however often replayed."""
    return f"dlq:{dl.letter_id}"


@dataclass(frozen=True)
class LedgerEntry:
    letter: DeadLetter
    action: str  # 'replayed' | 'parked'
    target_topic: str
    replay_count: int
    current_status: str | None  # fiscal_records.status when planned; None: not a registered record


# Rows are keyed by letter_id: a copy of a dead letter replayed before conflicts with its row.
_CLAIM_SQL = """
INSERT INTO dlq_replays AS r (letter_id, dlq_topic, dlq_partition, dlq_offset, dlq_timestamp_ms, record_id, action,
                              target_topic, replay_count, state, actor)
SELECT t.*, 'claimed', $10
FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[], $5::bigint[], $6::text[], $7::text[], $8::text[],
            $9::int[]) AS t
ON CONFLICT (letter_id) DO UPDATE SET
    dlq_topic = EXCLUDED.dlq_topic, dlq_partition = EXCLUDED.dlq_partition, dlq_offset = EXCLUDED.dlq_offset,
    dlq_timestamp_ms = EXCLUDED.dlq_timestamp_ms, action = EXCLUDED.action, target_topic = EXCLUDED.target_topic,
    replay_count = EXCLUDED.replay_count, state = 'claimed', actor = EXCLUDED.actor, claimed_at = now(),
    sent_at = NULL
WHERE r.state = 'claimed' AND r.claimed_at < now() - make_interval(secs => $11)
RETURNING r.letter_id
"""

_DONE_SQL = """
SELECT letter_id FROM dlq_replays
WHERE letter_id = ANY($1::text[]) AND (state = 'sent' OR claimed_at >= now() - make_interval(secs => $2))
"""

_CONFIRM_SQL = "UPDATE dlq_replays SET state = 'sent', sent_at = now() WHERE letter_id = ANY($1::text[])"

_RELEASE_SQL = "DELETE FROM dlq_replays WHERE letter_id = ANY($1::text[]) AND state = 'claimed'"

_AUDIT_SQL = """
INSERT INTO audit_events (record_id, stage, from_status, to_status, reason, detail, actor, trace_id, idempotency_key)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::text[],
                     $8::text[], $9::text[])
ON CONFLICT (idempotency_key) DO NOTHING
"""


def _ids(letters: Sequence[DeadLetter]) -> list[str]:
    return [d.letter_id for d in letters]


class ReplayLedger:
    def __init__(self, conn: asyncpg.Connection, actor: str) -> None:
        self.conn = conn
        self.actor = actor

    async def statuses(self, record_ids: Sequence[str]) -> dict[str, str]:
        rows = await self.conn.fetch("SELECT record_id, status FROM fiscal_records WHERE record_id = ANY($1::text[])",
                                     list(record_ids))
        return {r["record_id"]: r["status"] for r in rows}

    async def already_replayed(self, letters: Sequence[DeadLetter]) -> set[str]:
        """The letter ids of dead letters sent before, or being sent right now by another run."""
        if not letters:
            return set()
        rows = await self.conn.fetch(_DONE_SQL, _ids(letters), CLAIM_TIMEOUT_S)
        return {r[0] for r in rows}

    async def claim(self, entries: Sequence[LedgerEntry]) -> set[str]:
        """Claim entries for this run; returns the letter ids claimed (the others are another
        run's or done)."""
        if not entries:
            return set()
        letters = [e.letter for e in entries]
        rows = await self.conn.fetch(
            _CLAIM_SQL, _ids(letters), [d.dlq_topic for d in letters], [d.dlq_partition for d in letters],
            [d.dlq_offset for d in letters], [d.dlq_timestamp_ms for d in letters], [d.record_id for d in letters],
            [e.action for e in entries], [e.target_topic for e in entries], [e.replay_count for e in entries],
            self.actor, CLAIM_TIMEOUT_S,
        )
        return {r[0] for r in rows}

    async def confirm(self, entries: Sequence[LedgerEntry]) -> None:
        """Mark entries sent and write their audit events, in one transaction."""
        if not entries:
            return
        letters = [e.letter for e in entries]
        async with self.conn.transaction():
            await self.conn.execute(_CONFIRM_SQL, _ids(letters))
            await self.conn.execute(
                _AUDIT_SQL,
                [d.record_id for d in letters],
                ["dlq"] * len(entries),
                [e.current_status for e in entries],
                # Replaying changes no status: the record is where it was until a stage takes it.
                [e.current_status or "pending" for e in entries],
                ["REPLAYED" if e.action == "replayed" else "PARKED" for e in entries],
                [json.dumps(_detail(e)) for e in entries],
                [self.actor] * len(entries),
                [d.trace_id or None for d in letters],
                [idempotency_key(d) for d in letters],
            )

    async def release(self, entries: Sequence[LedgerEntry]) -> None:
        """Give back claims whose messages the broker did not take, so a later run sends them."""
        if entries:
            await self.conn.execute(_RELEASE_SQL, _ids([e.letter for e in entries]))


def _detail(e: LedgerEntry) -> dict[str, Any]:
    d = e.letter
    return {
        "dead_letter": {"topic": d.dlq_topic, "partition": d.dlq_partition, "offset": d.dlq_offset,
                        "letter_id": d.letter_id},
        "origin_topic": d.origin_topic, "target_topic": e.target_topic, "replay_count": e.replay_count,
        "failed_stage": d.stage, "failed_reason": d.reason,
    }
