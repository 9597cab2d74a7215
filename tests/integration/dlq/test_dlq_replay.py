"""``fiscalflow dlq replay`` on the real broker and PostgreSQL, in a topic namespace of its own."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from shared.db.migrate import connect_pool
from shared.db.records import Registration, register
from shared.runtime import headers as H
from shared.topics import PARKING, Stage, input_topic, priority_topic
from tests.support.topics import read_to_end

from .conftest import DlqWorld, headers_of, pg

pytestmark = pytest.mark.integration


def _summary(w: DlqWorld, *args: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    lines = w.json_lines("replay", *args)
    return lines[:-1], lines[-1]["summary"]


def _audit(w: DlqWorld, ids: list[str]) -> list[Any]:
    return pg(w.settings, "SELECT record_id, reason, from_status, to_status, detail FROM audit_events"
              " WHERE stage = 'dlq' AND record_id = ANY($1::text[]) ORDER BY event_id", ids)


def _register(w: DlqWorld, ids: list[str], status: str | None = None) -> None:
    async def go() -> None:
        pool = await connect_pool(w.settings.pg_dsn.get_secret_value())
        try:
            async with pool.acquire() as conn:
                await register(conn, [Registration(r, "north", f"x/{r}.xml") for r in ids])
                if status:
                    await conn.execute("UPDATE fiscal_records SET status = $2 WHERE record_id = ANY($1::text[])",
                                       ids, status)
        finally:
            await pool.close()
    asyncio.run(go())


def test_dry_run_sends_nothing(isolated: DlqWorld) -> None:
    w = isolated
    ids = w.ids(3)
    for r in ids:
        w.dead_letter(r)
    items, summary = _summary(w, "--dry-run", *(f"--record={r}" for r in ids))
    assert summary["dry_run"] and summary["replayed"] == 3
    assert {i["target_topic"] for i in items} == {w.topic(input_topic(Stage.VALIDATE))}
    assert read_to_end(w.settings, w.topic(input_topic(Stage.VALIDATE))) == []
    assert _audit(w, ids) == []
    table = w.cli("replay", "--dry-run", "--all")
    assert table.exit_code == 0 and "dry run: nothing sent" in table.stdout


def test_replay_sends_to_origin_lane_once_with_domain_headers_and_audits_once(isolated: DlqWorld) -> None:
    w = isolated
    normal, prio, unknown_record = w.ids(3)
    _register(w, [normal, prio], status="rejected")
    job = "0b7e4c8a-1111-4222-8333-444455556666"
    w.dead_letter(normal, Stage.VALIDATE, "INVALID_CFDI", job_id=job, value=b"<xml normal/>")
    w.dead_letter(prio, Stage.DOWNLOAD, "RETRIES_EXHAUSTED", priority=True, replay_count=1, value=b"prio-body")
    w.dead_letter(unknown_record, Stage.VALIDATE, "INVALID_CFDI")
    ids = [normal, prio, unknown_record]

    _, summary = _summary(w, *(f"--record={r}" for r in ids))
    assert summary["replayed"] == 3 and summary["failed"] == 0

    (n,) = read_to_end(w.settings, w.topic(input_topic(Stage.VALIDATE)), {normal})
    assert n.key() == normal.encode() and n.value() == b"<xml normal/>"
    h = headers_of(n)
    assert h[H.REPLAY_COUNT] == "1" and h[H.JOB_ID] == job
    assert h["x-source"] == "manifest-7" and h[H.TRACEPARENT].startswith("00-")
    assert not {H.REASON, H.STAGE, H.ERROR_MESSAGE, H.ATTEMPT, H.ORIGIN_TOPIC, H.TRACE_ID,
                H.LAST_FAILURE_MS} & set(h)
    (p,) = read_to_end(w.settings, w.topic(priority_topic(Stage.DOWNLOAD)), {prio})
    assert p.value() == b"prio-body" and headers_of(p)[H.REPLAY_COUNT] == "2"
    assert read_to_end(w.settings, w.topic(input_topic(Stage.DOWNLOAD)), {prio}) == []

    audit = _audit(w, ids)
    assert sorted(r["record_id"] for r in audit) == sorted(ids)
    by_id = {r["record_id"]: r for r in audit}
    assert by_id[normal]["reason"] == "REPLAYED" and by_id[normal]["to_status"] == "rejected"
    assert by_id[unknown_record]["to_status"] == "pending" and by_id[unknown_record]["from_status"] is None
    detail = json.loads(by_id[prio]["detail"])
    assert detail["target_topic"] == w.topic(priority_topic(Stage.DOWNLOAD))
    assert detail["origin_topic"] == w.topic(priority_topic(Stage.DOWNLOAD))

    # The same dead letters again: the ledger sends nothing and audits nothing more.
    _, again = _summary(w, *(f"--record={r}" for r in ids))
    assert again["replayed"] == 0 and again["skipped_already_replayed"] == 3
    assert len(read_to_end(w.settings, w.topic(input_topic(Stage.VALIDATE)), {normal, unknown_record})) == 2
    assert len(_audit(w, ids)) == 3


def test_only_the_latest_dead_letter_of_a_record_is_replayed(isolated: DlqWorld) -> None:
    w = isolated
    (r,) = w.ids(1)
    w.dead_letter(r, Stage.VALIDATE, "INVALID_CFDI", value=b"first")
    w.dead_letter(r, Stage.DOWNLOAD, "CHECKSUM_MISMATCH", replay_count=1, value=b"second")
    _, summary = _summary(w, f"--record={r}")
    assert summary["replayed"] == 1 and summary["skipped_superseded"] == 1
    assert read_to_end(w.settings, w.topic(input_topic(Stage.VALIDATE)), {r}) == []
    (m,) = read_to_end(w.settings, w.topic(input_topic(Stage.DOWNLOAD)), {r})
    assert m.value() == b"second" and headers_of(m)[H.REPLAY_COUNT] == "2"
    # A filter that only selects the older letter replays nothing: the record moved on.
    _, s2 = _summary(w, f"--record={r}", "--stage", "validate")
    assert s2["replayed"] == 0 and s2["skipped_superseded"] == 1


def test_a_redelivered_dead_letter_is_replayed_once(isolated: DlqWorld) -> None:
    w = isolated
    r, other = w.ids(2)
    letter = w.dead_letter(r, Stage.VALIDATE, "INVALID_CFDI", value=b"<xml once/>")
    w.redeliver(r, letter)
    _, summary = _summary(w, f"--record={r}")
    assert summary["replayed"] == 1 and summary["skipped_superseded"] == 0
    (m,) = read_to_end(w.settings, w.topic(input_topic(Stage.VALIDATE)), {r})
    assert m.value() == b"<xml once/>" and headers_of(m)[H.REPLAY_COUNT] == "1"
    assert len(_audit(w, [r])) == 1

    # A copy written after the replay (the killed stage came back late) is the letter replayed.
    w.redeliver(r, letter)
    w.dead_letter(other)
    _, again = _summary(w, f"--record={r}", f"--record={other}")
    assert again["replayed"] == 1 and again["skipped_already_replayed"] == 1
    sent = read_to_end(w.settings, w.topic(input_topic(Stage.VALIDATE)), {r, other})
    assert sorted(x.key() for x in sent) == sorted([r.encode(), other.encode()])
    assert len(_audit(w, [r])) == 1


def test_archived_records_are_skipped(isolated: DlqWorld) -> None:
    w = isolated
    done, todo = w.ids(2)
    _register(w, [done], status="archived")
    _register(w, [todo], status="rejected")
    w.dead_letter(done)
    w.dead_letter(todo)
    items, summary = _summary(w, f"--record={done}", f"--record={todo}")
    assert summary["skipped_archived"] == 1 and summary["replayed"] == 1
    assert {i["record_id"]: i["outcome"] for i in items} == {done: "skipped_archived", todo: "replayed"}
    assert [m.key() for m in read_to_end(w.settings, w.topic(input_topic(Stage.VALIDATE)), {done, todo})] == [
        todo.encode()]
    assert [r["record_id"] for r in _audit(w, [done, todo])] == [todo]


def test_over_the_replay_limit_goes_to_parking_and_to_moves_stage(isolated: DlqWorld) -> None:
    w = isolated
    tired, moved = w.ids(2)
    w.dead_letter(tired, Stage.VALIDATE, "INVALID_CFDI", replay_count=3, error="total mismatch")
    w.dead_letter(moved, Stage.VALIDATE, "INVALID_CFDI", replay_count=0)
    _, summary = _summary(w, f"--record={tired}", f"--record={moved}", "--to", "download")
    assert summary["parked"] == 1 and summary["replayed"] == 1
    (parked,) = read_to_end(w.settings, w.topic(PARKING), {tired})
    h = headers_of(parked)
    assert h[H.REASON] == "REPLAY_LIMIT" and h[H.REPLAY_COUNT] == "3"
    assert json.loads(h[H.DETAILS])["last_reason"] == "INVALID_CFDI" and "total mismatch" in h[H.ERROR_MESSAGE]
    assert read_to_end(w.settings, w.topic(input_topic(Stage.DOWNLOAD)), {tired}) == []
    (m,) = read_to_end(w.settings, w.topic(input_topic(Stage.DOWNLOAD)), {moved})
    assert headers_of(m)[H.REPLAY_COUNT] == "1"
    reasons = {r["record_id"]: r["reason"] for r in _audit(w, [tired, moved])}
    assert reasons == {tired: "PARKED", moved: "REPLAYED"}
    # A higher limit does not re-park or resend what was already handled.
    _, again = _summary(w, f"--record={tired}", "--max-replays", "5")
    assert again["skipped_already_replayed"] == 1


def test_rate_limit_spaces_the_sends(isolated: DlqWorld) -> None:
    w = isolated
    ids = w.ids(6)
    for r in ids:
        w.dead_letter(r)
    started = time.monotonic()
    _, summary = _summary(w, *(f"--record={r}" for r in ids), "--rate", "4")
    elapsed = time.monotonic() - started
    assert summary["replayed"] == 6
    # 6 sends at 4/s are at least 5 intervals of 0.25 s apart; generous bound for a busy machine.
    assert summary["elapsed_s"] >= 1.0 and elapsed >= 1.0, (summary, elapsed)


def test_replay_needs_a_filter_or_all(isolated: DlqWorld) -> None:
    assert isolated.cli("replay").exit_code == 2
