"""Stalled records and the re-drive guard against the real PostgreSQL.

On a database of the test's own: which records are stalled is a question about the whole registry,
and the shared test database holds whatever other tests, and earlier runs, left unfinished (a CI
machine that kept its PostgreSQL had over 10,000 of them, older than these, filling the answer)."""

from __future__ import annotations

import uuid

import asyncpg

from shared.db import jobs
from shared.db.migrate import migrate
from shared.db.records import Registration, Transition, apply_transitions, history, lookup, register
from shared.db.stalled import stalled_records
from shared.domain.records import Priority, RecordStatus

IN_FLIGHT = (RecordStatus.DOWNLOADING, RecordStatus.DOWNLOADED)


def _redrive(rid: str, lease_s: float, n: int) -> Transition:
    return Transition(rid, RecordStatus.DOWNLOADING, IN_FLIGHT, "ingest", "test", f"{rid}:redriven:{n}",
                      reason="REDRIVEN", redrive_lease_s=lease_s)


async def test_stalled_records_are_the_old_in_flight_ones_and_the_old_pending_members_of_running_jobs(
        blank_db: asyncpg.Connection) -> None:
    tag = uuid.uuid4().hex[:8]
    ids = {name: f"st-{tag}-{name}" for name in
           ("old_downloaded", "new_downloaded", "old_pending_member", "old_pending_alone", "old_archived")}
    job_id = str(uuid.uuid4())
    conn = blank_db
    await migrate(conn)
    await register(conn, [Registration(rid, "north", f"t/{rid}.xml") for rid in ids.values()])
    await jobs.create_job(conn, job_id, [ids["old_downloaded"], ids["new_downloaded"],
                                         ids["old_pending_member"], ids["old_archived"]], Priority.HIGH)
    for name, status in (("old_downloaded", "downloaded"), ("new_downloaded", "downloaded"),
                         ("old_archived", "archived")):
        await conn.execute("UPDATE fiscal_records SET status = $2 WHERE record_id = $1", ids[name], status)
    await conn.execute("UPDATE fiscal_records SET updated_at = now() - interval '1 hour'"
                       " WHERE record_id = ANY($1::text[]) AND record_id NOT LIKE '%new_downloaded'",
                       list(ids.values()))

    found = {r.record_id: r for r in await stalled_records(conn, 60, job_id)}
    assert set(found) == {ids["old_downloaded"], ids["old_pending_member"]}
    assert {r.priority for r in found.values()} == {Priority.HIGH}  # back on the job's lane
    assert {r.job_id for r in found.values()} == {job_id}
    past_ingest = await stalled_records(conn, 60, job_id, include_pending=False)
    assert [r.record_id for r in past_ingest] == [ids["old_downloaded"]]
    # Without a job filter: the same two; the pending record of no job stays out
    # (nobody asked for it), and so do the final one and the one that moved a moment ago.
    everywhere = {r.record_id for r in await stalled_records(conn, 60)}
    assert everywhere == {ids["old_downloaded"], ids["old_pending_member"]}
    status = await jobs.job_status(conn, job_id, 60)
    assert status is not None and status.stalled == 2

    # The guard: a re-drive applies only to a record stalled longer than its lease, and of two
    # re-drives racing for it, one applies.
    old, new = ids["old_downloaded"], ids["new_downloaded"]
    assert await apply_transitions(conn, [_redrive(old, 60, 1), _redrive(new, 60, 1)]) == [True, False]
    assert await apply_transitions(conn, [_redrive(old, 60, 2)]) == [False]
    rows = await lookup(conn, [old, new])
    assert (rows[old].status, rows[old].redrives) == (RecordStatus.DOWNLOADING, 1)
    assert (rows[new].status, rows[new].redrives) == (RecordStatus.DOWNLOADED, 0)
    [event] = await history(conn, old)
    assert (event["from_status"], event["to_status"], event["reason"]) == ("downloaded", "downloading",
                                                                           "REDRIVEN")
    assert (await jobs.job_status(conn, job_id, 60)).stalled == 1  # type: ignore[union-attr]
