"""Outages of the pipeline's downstreams while a run is in flight: S3 down 30 s, a region's SFTP
server down 30 s at the same time, and PostgreSQL restarted twice (during the outage and just after
S3 returns, when the store stage writes). Every job completes, every valid document is archived
once, and the only dead letters are the generator's planted defects, each with its reason."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.faults.world import World
from tooling.stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

PER_REGION = 100
OUTAGE_S = 30
PG_VERSION_DIR = "/etc/postgresql"


def restart_postgres() -> float:
    """Restart the machine's PostgreSQL server (the stack's database lives there); seconds down."""
    import os
    import subprocess

    version = sorted(os.listdir(PG_VERSION_DIR))[-1]
    t0 = time.monotonic()
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True,
                   capture_output=True, timeout=60)
    while subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"], check=False).returncode != 0:
        assert time.monotonic() - t0 < 60, "PostgreSQL did not come back"
        time.sleep(0.1)
    return time.monotonic() - t0


def test_s3_and_a_region_down_30_s_and_postgres_restarted_lose_nothing_and_dead_letter_nothing(
        world: World) -> None:
    written = {r: world.generate(r, "outage", PER_REGION, seed=7100 + i, bad_fraction=0.06)
               for i, r in enumerate(("north", "central", "south"))}
    # FILE_NOT_FOUND invoices are never written, so a job by pattern never lists them.
    expected = {inv.record_id: (inv.expected_verdict, inv.expected_reason)
                for pairs in written.values() for inv, _ in pairs if inv.defect != "file_not_found"}
    valid = {rid for rid, (verdict, _) in expected.items() if verdict == "valid"}
    planted = {rid: reason for rid, (verdict, reason) in expected.items() if verdict != "valid"}
    assert planted and len(valid) > 250
    ids = list(expected)

    def archived() -> int:
        return int(world.db("SELECT count(*) AS n FROM fiscal_records WHERE record_id = ANY($1) "
                            "AND status = 'archived'", ids)[0]["n"])

    stack = LocalStack(world.settings)
    jobs = [world.submit({"source": {"region": r, "pattern": "outage/*.xml"}}) for r in written]
    deadline = time.monotonic() + 60
    while archived() < 10:  # the faults hit a run in flight, not an idle pipeline
        assert time.monotonic() < deadline, "nothing archived in 60 s"
        time.sleep(0.1)
    stack.stop("s3")
    stack.stop("sftp-north")
    down = time.monotonic()
    try:
        at_stop = archived()
        time.sleep(8)
        pg_down = [restart_postgres()]
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down)))
        during = archived()
    finally:
        stack.start("s3")
        stack.start("sftp-north")
    time.sleep(2)
    pg_down.append(restart_postgres())
    # The outage mattered: archiving stopped while S3 was away, with documents still to go.
    assert during < len(valid), (during, len(valid))

    states = world.wait_jobs(jobs, timeout=240)
    assert [s["record_count"] for s in states] == [
        sum(1 for inv, _ in written[r] if inv.defect != "file_not_found") for r in written]

    rows = world.records(ids)
    assert {rid for rid, r in rows.items() if r["status"] == "archived"} == valid
    assert {rid: r["reason"] for rid, r in rows.items() if r["status"] != "archived"} == planted

    # Dead letters: exactly the planted defects, one each, with their reasons; nothing from the faults.
    letters = world.dead_letters(ids)
    assert {rid: [dl.reason for dl in dls] for rid, dls in letters.items()} == {
        rid: [reason] for rid, reason in planted.items()}

    # Every valid document archived once: one object per record, at the key its row names.
    keys = Counter(world.s3_keys())
    assert {rows[rid]["s3_key"] for rid in valid} <= set(keys)
    assert all(keys[rows[rid]["s3_key"]] == 1 for rid in valid)
    assert len({rows[rid]["s3_key"] for rid in valid}) == len(valid)

    world.assert_alive()
    assert set(world.health().values()) == {200}
    print(f"archived {at_stop} at the outage, {during} after {OUTAGE_S} s of it; PostgreSQL down "
          f"{pg_down[0]:.1f} s and {pg_down[1]:.1f} s; {len(valid)} archived, {len(planted)} planted rejects")
