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

Position = tuple[str, int, int]  # (dlq topic, partition, offset)


def position(dl: DeadLetter) -> Position:
    return (dl.dlq_topic, dl.dlq_partition, dl.dlq_offset)


def idempotency_key(dl: DeadLetter) -> str:
    """One audit event per dead letter, however often it is replayed (timestamp: see the ledger)."""
    return f"dlq:{dl.dlq_topic}:{dl.dlq_partition}:{dl.dlq_offset}:{dl.dlq_timestamp_ms}"


@dataclass(frozen=True)
class LedgerEntry:
    letter: DeadLetter
    action: str  # 'replayed' | 'parked'
    target_topic: str
    replay_count: int
    current_status: str | None  # fiscal_records.status when planned; None: not a registered record


_CLAIM_SQL = """
INSERT INTO dlq_replays AS r (dlq_topic, dlq_partition, dlq_offset, dlq_timestamp_ms, record_id, action,
                              target_topic, replay_count, state, actor)
SELECT t.*, 'claimed', $9
FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::int[]) AS t
ON CONFLICT (dlq_topic, dlq_partition, dlq_offset) DO UPDATE SET
    dlq_timestamp_ms = EXCLUDED.dlq_timestamp_ms, record_id = EXCLUDED.record_id, action = EXCLUDED.action,
    target_topic = EXCLUDED.target_topic, replay_count = EXCLUDED.replay_count, state = 'claimed',
    actor = EXCLUDED.actor, claimed_at = now(), sent_at = NULL
WHERE r.dlq_timestamp_ms <> EXCLUDED.dlq_timestamp_ms OR r.record_id <> EXCLUDED.record_id
   OR (r.state = 'claimed' AND r.claimed_at < now() - make_interval(secs => $10))
RETURNING r.dlq_topic, r.dlq_partition, r.dlq_offset
"""

_DONE_SQL = """
SELECT r.dlq_topic, r.dlq_partition, r.dlq_offset
FROM dlq_replays r
JOIN unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[], $5::text[]) AS t(topic, p, o, ts, rid)
  ON r.dlq_topic = t.topic AND r.dlq_partition = t.p AND r.dlq_offset = t.o
WHERE r.dlq_timestamp_ms = t.ts AND r.record_id = t.rid
  AND (r.state = 'sent' OR r.claimed_at >= now() - make_interval(secs => $6))
"""

_CONFIRM_SQL = """
UPDATE dlq_replays r SET state = 'sent', sent_at = now()
FROM unnest($1::text[], $2::int[], $3::bigint[]) AS t(topic, p, o)
WHERE r.dlq_topic = t.topic AND r.dlq_partition = t.p AND r.dlq_offset = t.o
"""

_RELEASE_SQL = """
DELETE FROM dlq_replays r
USING unnest($1::text[], $2::int[], $3::bigint[]) AS t(topic, p, o)
WHERE r.dlq_topic = t.topic AND r.dlq_partition = t.p AND r.dlq_offset = t.o AND r.state = 'claimed'
"""

_AUDIT_SQL = """
INSERT INTO audit_events (record_id, stage, from_status, to_status, reason, detail, actor, trace_id, idempotency_key)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::text[],
                     $8::text[], $9::text[])
ON CONFLICT (idempotency_key) DO NOTHING
"""


def _positions(letters: Sequence[DeadLetter]) -> tuple[list[str], list[int], list[int]]:
    return ([d.dlq_topic for d in letters], [d.dlq_partition for d in letters], [d.dlq_offset for d in letters])


class ReplayLedger:
    def __init__(self, conn: asyncpg.Connection, actor: str) -> None:
        self.conn = conn
        self.actor = actor

    async def statuses(self, record_ids: Sequence[str]) -> dict[str, str]:
        rows = await self.conn.fetch("SELECT record_id, status FROM fiscal_records WHERE record_id = ANY($1::text[])",
                                     list(record_ids))
        return {r["record_id"]: r["status"] for r in rows}

    async def already_replayed(self, letters: Sequence[DeadLetter]) -> set[Position]:
        """Dead letters sent before, or being sent right now by another run."""
        if not letters:
            return set()
        rows = await self.conn.fetch(_DONE_SQL, *_positions(letters), [d.dlq_timestamp_ms for d in letters],
                                     [d.record_id for d in letters], CLAIM_TIMEOUT_S)
        return {(r[0], r[1], r[2]) for r in rows}

    async def claim(self, entries: Sequence[LedgerEntry]) -> set[Position]:
        """Claim entries for this run; returns those claimed (the others are another run's or done)."""
        if not entries:
            return set()
        letters = [e.letter for e in entries]
        rows = await self.conn.fetch(
            _CLAIM_SQL, *_positions(letters), [d.dlq_timestamp_ms for d in letters], [d.record_id for d in letters],
            [e.action for e in entries], [e.target_topic for e in entries], [e.replay_count for e in entries],
            self.actor, CLAIM_TIMEOUT_S,
        )
        return {(r[0], r[1], r[2]) for r in rows}

    async def confirm(self, entries: Sequence[LedgerEntry]) -> None:
        """Mark entries sent and write their audit events, in one transaction."""
        if not entries:
            return
        letters = [e.letter for e in entries]
        async with self.conn.transaction():
            await self.conn.execute(_CONFIRM_SQL, *_positions(letters))
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
            await self.conn.execute(_RELEASE_SQL, *_positions([e.letter for e in entries]))


def _detail(e: LedgerEntry) -> dict[str, Any]:
    d = e.letter
    return {
        "dead_letter": {"topic": d.dlq_topic, "partition": d.dlq_partition, "offset": d.dlq_offset},
        "origin_topic": d.origin_topic, "target_topic": e.target_topic, "replay_count": e.replay_count,
        "failed_stage": d.stage, "failed_reason": d.reason,
    }
