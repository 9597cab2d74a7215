"""Replay after fixing the cause: files missing or with the wrong content dead-letter
(FILE_NOT_FOUND, CHECKSUM_MISMATCH); once the right files are back, `fiscalflow dlq replay` (the CLI,
as an operator runs it) sends them through and each is archived exactly once; replaying again
sends nothing and changes nothing."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pytest

from tests.faults.world import World

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def _summary(out: str) -> dict[str, Any]:
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return dict(json.loads(lines[-1])["summary"])


def test_missing_and_corrupt_files_replayed_after_the_fix_are_archived_exactly_once(
        world: World, tmp_path: Any) -> None:
    written = world.generate("south", "replay", 24, seed=7200)
    root = world.settings.region_root("south")
    missing = [row for _, row in written[:3]]
    corrupt = [row for _, row in written[3:6]]
    originals = {row.record_id: (root / row.path).read_bytes() for row in missing + corrupt}
    for row in missing:
        (root / row.path).unlink()
    for row in corrupt:  # a document cut short, as an interrupted upload leaves it
        (root / row.path).write_bytes(originals[row.record_id][: len(originals[row.record_id]) // 2])
    ids = [row.record_id for _, row in written]
    broken = {row.record_id: "FILE_NOT_FOUND" for row in missing} | {
        row.record_id: "CHECKSUM_MISMATCH" for row in corrupt}

    # Registered from the manifest (a job by pattern would not even list the missing files).
    world.cli("register", str(root / "replay" / "MANIFEST.csv"))
    job = world.submit({"record_ids": ids})
    state = world.wait_jobs([job])[0]
    assert state["counts"] == {"archived": len(ids) - len(broken), "rejected": len(broken)}, state
    letters = world.dead_letters(ids)
    assert {rid: [dl.reason for dl in dls] for rid, dls in letters.items()} == {
        rid: [reason] for rid, reason in broken.items()}

    # The fix: the right files back. Then replay exactly these records' dead letters.
    for row in missing + corrupt:
        (root / row.path).write_bytes(originals[row.record_id])
    records_file = tmp_path / "ids.txt"
    records_file.write_text("\n".join(broken) + "\n")
    first = _summary(world.cli("dlq", "replay", "--records-file", str(records_file), "--json").stdout)
    assert (first["replayed"], first["failed"]) == (len(broken), 0), first

    deadline = time.monotonic() + 120
    while (rows := world.records(ids)) and {r["status"] for r in rows.values()} != {"archived"}:
        assert time.monotonic() < deadline, {rid: r["status"] for rid, r in rows.items() if rid in broken}
        time.sleep(0.5)
    keys = Counter(world.s3_keys())
    assert all(keys[r["s3_key"]] == 1 for r in rows.values())
    assert len({r["s3_key"] for r in rows.values()}) == len(ids)
    audit = world.db("SELECT record_id, count(*) AS n FROM audit_events WHERE record_id = ANY($1) AND "
                     "reason = 'REPLAYED' GROUP BY 1", list(broken))
    assert {r["record_id"]: r["n"] for r in audit} == dict.fromkeys(broken, 1)
    assert world.job(job)["counts"] == {"archived": len(ids)}

    # Replaying again sends nothing: the ledger knows these dead letters went back already.
    before = (world.dead_letters(ids), world.records(ids), sorted(world.s3_keys()))
    again = _summary(world.cli("dlq", "replay", "--records-file", str(records_file), "--json").stdout)
    time.sleep(3)
    after = (world.dead_letters(ids), world.records(ids), sorted(world.s3_keys()))
    assert after == before
    assert again["replayed"] == 0 and again["skipped_archived"] == len(broken), again
    assert world.db("SELECT count(*) AS n FROM audit_events WHERE record_id = ANY($1) AND reason = 'REPLAYED'",
                    list(broken))[0]["n"] == len(broken)
