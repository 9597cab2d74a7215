"""The record registry's guarded transitions against the real PostgreSQL."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from shared.db.migrate import connect_pool, migrate
from shared.db.records import (
    _SEEN_SQL,
    _TRANSITION_SQL,
    RegionConflict,
    Registration,
    Transition,
    apply_transitions,
    history,
    lookup,
    register,
)
from shared.domain.records import RecordStatus
from shared.settings import Settings

_START = (RecordStatus.PENDING,)


def _move(rid: str, to: RecordStatus, key: str) -> Transition:
    return Transition(rid, to, _START, "test", "test", f"{rid}:{key}")


async def test_a_batch_applies_one_transition_per_record_and_says_which(stack_settings: Settings) -> None:
    ids = [f"db-{uuid.uuid4().hex[:12]}" for _ in range(600)]
    conn = await asyncpg.connect(stack_settings.pg_dsn.get_secret_value())
    try:
        await migrate(conn)
        await register(conn, [Registration(rid, "north", f"t/{rid}.xml") for rid in ids])
        first = [_move(rid, RecordStatus.DOWNLOADING, "a") for rid in ids]
        # The same records again, later in the same batch: only the first of each applies.
        second = [_move(rid, RecordStatus.REJECTED, "b") for rid in ids[:300]]
        # Equal to an applied item field for field, yet a different submission: not applied.
        twin = _move(ids[0], RecordStatus.DOWNLOADING, "a")
        applied = await apply_transitions(conn, [*first, *second, twin])
        assert applied == [True] * 600 + [False] * 300 + [False]
        rows = await lookup(conn, ids)
        assert {r.status for r in rows.values()} == {RecordStatus.DOWNLOADING}
        assert [e["to_status"] for e in await history(conn, ids[0])] == ["downloading"]
        # A redelivery of the whole batch finds every record moved on: nothing applies, nothing audited.
        assert await apply_transitions(conn, first) == [False] * 600
        assert len(await history(conn, ids[0])) == 1
    finally:
        await conn.close()


async def test_a_redelivered_start_does_not_restart_a_record_rejected_since(stack_settings: Settings) -> None:
    """Ingest's start of a record from ``rejected`` applies once per request: the redelivery of the
    request that started the pass that was rejected does not start it again; a new request does."""
    rid = f"db-{uuid.uuid4().hex[:12]}"
    startable = (RecordStatus.PENDING, RecordStatus.REJECTED, RecordStatus.DOWNLOADING)

    def start(origin: str) -> Transition:
        return Transition(rid, RecordStatus.DOWNLOADING, startable, "ingest", "test",
                          f"{rid}:downloading:{origin}", restart_once=True)

    conn = await asyncpg.connect(stack_settings.pg_dsn.get_secret_value())
    try:
        await migrate(conn)
        await register(conn, [Registration(rid, "north", f"t/{rid}.xml")])
        assert await apply_transitions(conn, [start("in:0:7")]) == [True]
        # Its consumer died before the commit: the same request again re-sends the task.
        assert await apply_transitions(conn, [start("in:0:7")]) == [True]
        rejected = Transition(rid, RecordStatus.REJECTED, startable, "validate", "test", f"{rid}:rejected")
        assert await apply_transitions(conn, [rejected]) == [True]
        # Rejected since: that request once more must not start the record again ...
        assert await apply_transitions(conn, [start("in:0:7")]) == [False]
        assert (await lookup(conn, [rid]))[rid].status is RecordStatus.REJECTED
        # ... a new request (a resubmitted job) does.
        assert await apply_transitions(conn, [start("in:3:12")]) == [True]
        assert [e["to_status"] for e in await history(conn, rid)] == ["downloading", "rejected", "downloading"]
    finally:
        await conn.close()


async def test_a_batch_on_a_large_registry_probes_the_primary_key(stack_settings: Settings) -> None:
    """The services' sessions plan a 500-record batch as key look-ups, not a scan of the registry
    or of the audit trail (a scan per batch made the transition's cost grow with the table)."""
    pool = await connect_pool(stack_settings.pg_dsn.get_secret_value(), max_size=1)
    try:
        async with pool.acquire() as conn:
            ids = [f"db-{uuid.uuid4().hex[:12]}" for _ in range(30_000)]
            await register(conn, [Registration(rid, "north", f"t/{rid}.xml") for rid in ids])
            # ... and as large an audit trail: the restart guard probes its key index.  Final
            # statuses: 29,500 records in flight would be stalled ones for the other tests of this
            # database (tests/integration/db/test_stalled.py lists the oldest 10,000).
            for i in range(500, len(ids), 5000):
                await apply_transitions(conn, [_move(rid, RecordStatus.REJECTED, "a") for rid in ids[i:i + 5000]])
            await conn.execute("ANALYZE fiscal_records")
            await conn.execute("ANALYZE audit_events")
            batch = ids[:500]
            n = len(batch)
            async with conn.transaction():
                plan = "\n".join(r[0] for r in await conn.fetch(
                    "EXPLAIN " + _TRANSITION_SQL, batch, ["downloading"] * n, ["pending"] * n,
                    [None] * n, [None] * n, [None] * n, ["{}"] * n, [None] * n,
                    ["ingest"] * n, [None] * n, ["test"] * n, [None] * n, [f"{r}:k" for r in batch],
                    [None] * n))
            assert "Seq Scan on fiscal_records" not in plan, plan
            seen = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + _SEEN_SQL, [f"{r}:k" for r in batch]))
            assert "Seq Scan" not in seen, seen
            assert "fiscal_records_pkey" in plan, plan
            found = "\n".join(r[0] for r in await conn.fetch(
                "EXPLAIN SELECT record_id FROM fiscal_records WHERE record_id = ANY($1::text[])", batch))
            assert "Seq Scan" not in found, found
    finally:
        await pool.close()


async def test_a_record_id_is_never_re_pointed_to_another_region(stack_settings: Settings) -> None:
    """Record ids are global: the same file name registered in a second region (or in two regions in
    one batch) is refused whole, naming both regions; a pending record keeps its region and path."""
    rid, fresh = (f"db-{uuid.uuid4().hex[:12]}" for _ in range(2))
    conn = await asyncpg.connect(stack_settings.pg_dsn.get_secret_value())
    try:
        await migrate(conn)
        await register(conn, [Registration(rid, "north", f"a/{rid}.xml")])
        with pytest.raises(RegionConflict, match="is in region north, not south") as refused:
            await register(conn, [Registration(fresh, "south", f"b/{fresh}.xml"),
                                  Registration(rid, "south", f"b/{rid}.xml")])
        assert refused.value.conflicts == [(rid, "north", "south")]
        rows = await lookup(conn, [rid, fresh])
        assert (rows[rid].region, rows[rid].remote_path) == ("north", f"a/{rid}.xml")
        assert fresh not in rows  # nothing of the refused batch was kept
        # The same region again is a re-registration while pending: the new path is taken.
        await register(conn, [Registration(rid, "north", f"c/{rid}.xml")])
        assert (await lookup(conn, [rid]))[rid].remote_path == f"c/{rid}.xml"
        with pytest.raises(RegionConflict) as twice:
            await register(conn, [Registration(fresh, "north", "x.xml"), Registration(fresh, "central", "x.xml")])
        assert twice.value.conflicts == [(fresh, "central", "north")]
    finally:
        await conn.close()
