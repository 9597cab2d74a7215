"""Halted and paused stage replicas in PostgreSQL (table ``stage_conditions``): written by every
stage through :attr:`StageSpec.on_condition`, read by the job API.

A row is only believed while it is fresh: its replica refreshes it every
:data:`shared.runtime.condition.REFRESH_S` while the condition lasts, so one older than
:data:`STALE_AFTER_S` belongs to a replica that died without clearing it (SIGKILL, lost node).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from shared.runtime.condition import REFRESH_S, ConditionHook, StageCondition

# Four missed refreshes: a replica busy for a moment (or PostgreSQL slow) does not flicker.
STALE_AFTER_S = 4 * REFRESH_S


@dataclass(frozen=True)
class StageConditionRow:
    stage: str
    replica: str
    host: str
    state: str  # halted | paused
    reason: str
    since: datetime
    updated_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "replica": self.replica, "host": self.host, "state": self.state,
                "reason": self.reason, "since": self.since.isoformat(), "updated_at": self.updated_at.isoformat()}


def is_fresh(updated_at: datetime, now: datetime, stale_after_s: float = STALE_AFTER_S) -> bool:
    """Was the row refreshed recently enough to believe (``now``: the database's clock, the one
    that wrote ``updated_at``: no skew between the replicas' and the reader's clocks)."""
    return now - updated_at <= timedelta(seconds=stale_after_s)


async def publish(pool: asyncpg.Pool, c: StageCondition) -> None:
    """Upsert this replica's condition, or delete its row when the condition is over."""
    if not c.state:
        await pool.execute("DELETE FROM stage_conditions WHERE namespace = $1 AND stage = $2 AND host = $3"
                           " AND replica = $4", c.namespace, c.stage, c.host, c.replica)
        return
    await pool.execute(
        "INSERT INTO stage_conditions (namespace, stage, host, replica, state, reason, since, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, now())"
        " ON CONFLICT (namespace, stage, host, replica) DO UPDATE SET state = EXCLUDED.state,"
        " reason = EXCLUDED.reason, since = EXCLUDED.since, updated_at = now()",
        c.namespace, c.stage, c.host, c.replica, c.state, c.reason[:2000], c.since)


def condition_hook(pool_of: Callable[[], asyncpg.Pool | None]) -> ConditionHook:
    """The ``on_condition`` of a stage whose pool its service host opens (``host.postgres()``)."""

    async def hook(c: StageCondition) -> None:
        pool = pool_of()
        if pool is None:
            raise RuntimeError("no PostgreSQL pool yet")
        await publish(pool, c)

    return hook


async def current(conn: asyncpg.Connection | asyncpg.Pool, namespace: str = "") -> list[StageConditionRow]:
    """The fresh conditions of ``namespace``'s stages, halted first."""
    rows = await conn.fetch(
        "SELECT stage, replica, host, state, reason, since, updated_at, now() AS db_now FROM stage_conditions"
        " WHERE namespace = $1 ORDER BY state, stage, host, replica", namespace)
    return [StageConditionRow(r["stage"], r["replica"], r["host"], r["state"], r["reason"], r["since"],
                              r["updated_at"]) for r in rows if is_fresh(r["updated_at"], r["db_now"])]
