"""A rejection keeps its dead letter's failure time in the registry (shared/db/rejections.py), on
the real PostgreSQL: the report's consistency check cuts the registry and the report tables at one
time, so a rejection must be timed alike on both sides."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import asyncpg

from shared.db.migrate import migrate
from shared.db.records import Registration, register
from shared.db.rejections import RejectionRecorder
from shared.runtime import Message


async def test_a_rejected_record_is_updated_at_its_dead_letters_failure_time(blank_db: asyncpg.Connection) -> None:
    conn = blank_db
    await migrate(conn)
    rid = f"rt-{uuid.uuid4().hex[:8]}"
    await register(conn, [Registration(rid, "north", f"t/{rid}.xml")])
    failed_at_ms = int(time.time() * 1000) - 1234  # the dead letter's time, before this statement's now()
    msg = Message(topic="fiscal.validate", partition=0, offset=7, key=rid.encode(), value=b"", headers={},
                  timestamp_ms=failed_at_ms - 50)
    recorder = RejectionRecorder("validate", conn, "validate/0")  # a connection serves as the pool
    await recorder(msg, "SELLO_INVALID", "the seal does not verify", {}, failed_at_ms)
    row = await conn.fetchrow("SELECT status, reason, updated_at FROM fiscal_records WHERE record_id = $1", rid)
    assert (row["status"], row["reason"]) == ("rejected", "SELLO_INVALID")
    assert row["updated_at"] == dt.datetime.fromtimestamp(failed_at_ms / 1000, dt.UTC)
