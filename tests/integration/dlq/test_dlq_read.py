"""``fiscalflow dlq list | show | stats`` on the real, shared fiscal.dlq (filtered by our ids)."""

from __future__ import annotations

import time

import pytest

from shared.runtime import headers as H
from shared.topics import Stage

from .conftest import DlqWorld

pytestmark = pytest.mark.integration


def test_list_and_stats_select_by_record_stage_reason_job_and_time(shared_dlq: DlqWorld) -> None:
    w = shared_dlq
    a, b, c, d = w.ids(4)
    job = "6f1c2d1e-0000-4000-8000-00000000abcd"
    hour_ago = int(time.time() * 1000) - 3_600_000
    w.dead_letter(a, Stage.VALIDATE, "INVALID_CFDI", details={"rules": ["TOTAL_MISMATCH"]}, job_id=job)
    w.dead_letter(b, Stage.DOWNLOAD, "CHECKSUM_MISMATCH", attempts=1)
    w.dead_letter(c, Stage.DOWNLOAD, "RETRIES_EXHAUSTED", attempts=6, failed_ms=hour_ago)
    w.dead_letter(d, Stage.VALIDATE, "INVALID_CFDI", job_id=job)
    mine = [f"--record={r}" for r in (a, b, c, d)]

    rows = w.json_lines("list", *mine)
    assert {r["record_id"] for r in rows} == {a, b, c, d}
    first = next(r for r in rows if r["record_id"] == a)
    assert first["stage"] == "validate" and first["reason"] == "INVALID_CFDI" and first["job_id"] == job
    assert first["details"] == {"rules": ["TOTAL_MISMATCH"]} and first["value_size"] > 0
    assert first["origin_topic"] == "fiscal.validate" and first["origin_offset"] == 42

    assert {r["record_id"] for r in w.json_lines("list", *mine, "--stage", "download")} == {b, c}
    assert {r["record_id"] for r in w.json_lines("list", *mine, "--reason", "checksum_mismatch")} == {b}
    assert {r["record_id"] for r in w.json_lines("list", *mine, "--job", job)} == {a, d}
    assert {r["record_id"] for r in w.json_lines("list", *mine, "--since", "30m")} == {a, b, d}
    assert {r["record_id"] for r in w.json_lines("list", *mine, "--until", "30m")} == {c}
    assert len(w.json_lines("list", *mine, "--limit", "2")) == 2

    stats = w.json_lines("stats", *mine)[0]
    assert stats["total"] == {"count": 4, "records": 4, "copies": 0}
    counts = {(g["stage"], g["reason"]): g["count"] for g in stats["groups"]}
    assert counts == {("validate", "INVALID_CFDI"): 2, ("download", "CHECKSUM_MISMATCH"): 1,
                      ("download", "RETRIES_EXHAUSTED"): 1}

    table = w.cli("list", *mine)
    assert table.exit_code == 0 and "4 dead letters" in table.stdout
    assert w.cli("stats", *mine, "--stage", "download").exit_code == 0


def test_records_file_and_bad_filters(shared_dlq: DlqWorld, tmp_path: pytest.TempPathFactory) -> None:
    w = shared_dlq
    a, b = w.ids(2)
    w.dead_letter(a)
    w.dead_letter(b)
    f = tmp_path / "ids.txt"  # type: ignore[operator]
    f.write_text(f"# records to look at\n{a}\n\n")
    assert [r["record_id"] for r in w.json_lines("list", "--records-file", str(f))] == [a]
    assert w.cli("list", "--since", "yesterday-ish").exit_code == 2


def test_show_by_record_and_by_position_prints_every_header(shared_dlq: DlqWorld) -> None:
    w = shared_dlq
    (a,) = w.ids(1)
    w.dead_letter(a, Stage.VALIDATE, "INVALID_CFDI", details={"rules": ["XSD"], "n": 1},
                  value=b"<cfdi:Comprobante " + b"x" * 2000)
    (shown,) = w.json_lines("show", a)
    assert shown["headers"]["x-source"] == "manifest-7" and shown["headers"][H.REASON] == "INVALID_CFDI"
    assert shown["value_preview"].startswith("<cfdi:Comprobante") and len(shown["value_preview"]) == 600
    pos = f"{shown['dlq_partition']}:{shown['dlq_offset']}"
    (by_pos,) = w.json_lines("show", pos)
    assert by_pos["record_id"] == a

    pretty = w.cli("show", a)
    assert pretty.exit_code == 0
    for text in (H.ORIGIN_TOPIC, "x-source", '"rules"', "<cfdi:Comprobante", "INVALID_CFDI"):
        assert text in pretty.stdout
    assert w.cli("show", a + "-nope").exit_code == 1


def test_a_redelivered_dead_letter_is_listed_and_counted_once(shared_dlq: DlqWorld) -> None:
    w = shared_dlq
    a, b = w.ids(2)
    letter = w.dead_letter(a, Stage.VALIDATE, "INVALID_CFDI")
    w.redeliver(a, letter)
    w.redeliver(a, letter)
    w.dead_letter(b, Stage.VALIDATE, "INVALID_CFDI")
    mine = [f"--record={a}", f"--record={b}"]

    stats = w.json_lines("stats", *mine)[0]
    assert stats["total"] == {"count": 2, "records": 2, "copies": 2}
    assert [(g["stage"], g["reason"], g["count"]) for g in stats["groups"]] == [("validate", "INVALID_CFDI", 2)]
    (row,) = w.json_lines("list", f"--record={a}")
    assert len(row["copies"]) == 2 and row["letter_id"]
    # A copy's position shows the dead letter it is a copy of.
    (by_copy,) = w.json_lines("show", row["copies"][-1])
    assert by_copy["record_id"] == a and by_copy["dlq_offset"] == row["dlq_offset"]
    table = w.cli("stats", *mine)
    assert table.exit_code == 0 and "2 redelivered copies not counted" in table.stdout
