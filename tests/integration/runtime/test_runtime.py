"""The stage runtime on the real broker and PostgreSQL, through a test stage run as a process."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from shared.runtime import headers as H
from tests.integration.runtime.conftest import PARTITIONS, Namespace

pytestmark = pytest.mark.integration


def _deliveries(rows: list) -> dict[str, int]:
    return {r["record_id"]: r["deliveries"] for r in rows}


def test_ten_thousand_messages_none_lost_none_twice(namespace: Namespace) -> None:
    n = 10_000
    namespace.produce([{"id": f"r{i}"} for i in range(n)])
    stage = namespace.stage()
    rows = namespace.wait_sink(n)
    out = namespace.read("out", until=n)
    assert stage.terminate() == 0
    deliveries = _deliveries(rows)
    assert len(deliveries) == n, f"lost {n - len(deliveries)} records"
    assert set(deliveries.values()) == {1}, "a record was handled twice without any failure"
    keys = [m.key() for m in out]
    assert len(keys) == n and len(set(keys)) == n


def test_permanent_error_dead_letters_with_every_header(namespace: Namespace) -> None:
    items = [{"id": f"ok{i}"} for i in range(20)] + [{"id": "poison", "permanent": True}]
    namespace.produce(items)
    namespace.stage()
    dead = namespace.read("fiscal.dlq", until=1)
    rows = namespace.wait_sink(20)
    assert len(dead) == 1 and len(rows) == 20
    m = dead[0]
    assert m.key() == b"poison"
    assert json.loads(m.value()) == {"id": "poison", "permanent": True}  # value unchanged
    headers = {k: v.decode() for k, v in m.headers()}
    assert headers[H.ORIGIN_TOPIC] == namespace.topic("fiscal.validate")
    assert int(headers[H.ORIGIN_PARTITION]) in range(PARTITIONS)
    assert int(headers[H.ORIGIN_OFFSET]) >= 0
    assert headers[H.STAGE] == "validate"
    assert headers[H.REASON] == "TEST_PERMANENT"
    assert "poison" in headers[H.ERROR_MESSAGE]
    assert headers[H.ATTEMPT] == "1"
    assert int(headers[H.FIRST_FAILURE_MS]) <= int(headers[H.LAST_FAILURE_MS])
    assert len(headers[H.TRACE_ID]) == 32
    assert json.loads(headers[H.DETAILS]) == {"why": "test"}
    assert H.TRACEPARENT in headers


def test_transient_error_backs_off_and_succeeds_while_the_partition_moves_on(namespace: Namespace) -> None:
    # The failing record first, then 200 records on the same partition: they must not wait for it.
    namespace.produce([{"id": "flaky", "transient": 3}], partition=0)
    namespace.produce([{"id": f"after{i}"} for i in range(200)], partition=0)
    namespace.stage(env={"FISCALFLOW_RETRY_BASE_MS": "400"})
    rows = namespace.wait_sink(201)
    order = [r["record_id"] for r in rows]
    assert len(order) == 201
    assert order.index("flaky") > order.index("after199"), "later records of the partition waited"
    assert _deliveries(rows)["flaky"] == 1
    retries = namespace.read("fiscal.validate.retry", until=3)
    assert [m.key() for m in retries] == [b"flaky"] * 3
    for m in retries:
        h = {k: v.decode() for k, v in m.headers()}
        attempt = int(h[H.ATTEMPT])
        delay_ms = int(h[H.DUE_AT_MS]) - int(h[H.LAST_FAILURE_MS])
        # exponential backoff with jitter: attempt a waits between base/2 and base * 2^(a-1)
        assert 200 <= delay_ms <= 400 * 2 ** (attempt - 1), (attempt, delay_ms)
    assert sorted(int(dict(m.headers())[H.ATTEMPT]) for m in retries) == [1, 2, 3]


def test_retries_exhausted_becomes_a_dead_letter(namespace: Namespace) -> None:
    namespace.produce([{"id": "always", "transient": 99, "downstream": "sftp:north"}, {"id": "fine"}])
    namespace.stage(env={"FISCALFLOW_RETRY_BASE_MS": "50", "FISCALFLOW_RETRY_MAX_ATTEMPTS": "3"})
    dead = namespace.read("fiscal.dlq", until=1)
    assert len(dead) == 1
    h = {k: v.decode() for k, v in dead[0].headers()}
    assert h[H.REASON] == "RETRIES_EXHAUSTED"
    assert h[H.ATTEMPT] == "3"
    assert h[H.ORIGIN_TOPIC] == namespace.topic("fiscal.validate")  # not the retry topic
    assert int(h[H.FIRST_FAILURE_MS]) < int(h[H.LAST_FAILURE_MS])
    assert [r["record_id"] for r in namespace.wait_sink(1)] == ["fine"]


def test_a_records_own_retry_budget_replaces_the_stages(namespace: Namespace) -> None:
    """A job's max_retries travels as ff-max-attempts: its record gets that many attempts, through
    the retry topic and back, whatever the stage's FISCALFLOW_RETRY_MAX_ATTEMPTS; a record without
    the header keeps the stage's budget."""
    # Two downstreams: the failures of one must not open the other's breaker (deferrals cost no attempt).
    namespace.produce([{"id": "job-budget", "transient": 99, "downstream": "sftp:north"}],
                      headers={H.MAX_ATTEMPTS: "2", H.JOB_ID: "j1"})
    namespace.produce([{"id": "stage-budget", "transient": 99, "downstream": "sftp:south"}])
    namespace.stage(env={"FISCALFLOW_RETRY_BASE_MS": "50", "FISCALFLOW_RETRY_MAX_ATTEMPTS": "4"})
    dead = namespace.read("fiscal.dlq", until=2)
    attempts = {m.key(): {k: v.decode() for k, v in m.headers()} for m in dead}
    assert len(dead) == 2, [(m.key(), m.headers()) for m in dead]
    assert attempts[b"job-budget"][H.ATTEMPT] == "2" and attempts[b"stage-budget"][H.ATTEMPT] == "4"
    assert attempts[b"job-budget"][H.MAX_ATTEMPTS] == "2"  # it travels on, with the job id
    assert attempts[b"job-budget"][H.JOB_ID] == "j1" and H.MAX_ATTEMPTS not in attempts[b"stage-budget"]
    assert {h[H.REASON] for h in attempts.values()} == {"RETRIES_EXHAUSTED"}


def test_an_output_over_the_message_limit_is_a_dead_letter_and_its_partition_moves_on(namespace: Namespace) -> None:
    """The producer refuses an output over message.max.bytes: no retry can make it fit, so its input
    is a MESSAGE_TOO_LARGE dead letter at once, recorded by the stage's hook, and the records after it
    on the same partition are handled and committed (before: retried every 10 s, commit held back)."""
    limit = 1_000_000
    items = [{"id": f"before{i}"} for i in range(5)] + [{"id": "huge", "emit_bytes": 1_200_000}]
    items += [{"id": f"after{i}"} for i in range(5)]
    namespace.produce(items, partition=0)
    stage = namespace.stage(env={"FISCALFLOW_MESSAGE_MAX_BYTES": str(limit)})
    dead = namespace.read("fiscal.dlq", until=1, timeout=60)
    out = namespace.read("out", until=10, timeout=60)
    assert [m.key() for m in dead] == [b"huge"]
    h = {k: v.decode() for k, v in dead[0].headers()}
    assert h[H.REASON] == "MESSAGE_TOO_LARGE" and h[H.ATTEMPT] == "1"
    details = json.loads(h[H.DETAILS])
    assert details["limit"] == limit and details["size"] > 1_200_000 and details["topic"] == namespace.topic("out")
    assert f"{details['size']}-byte message" in h[H.ERROR_MESSAGE]
    assert json.loads(dead[0].value()) == items[5]  # the input, unchanged
    (rejection,) = namespace.rejections()
    assert (rejection["record_id"], rejection["reason"]) == ("huge", "MESSAGE_TOO_LARGE")
    assert sorted(m.key().decode() for m in out) == sorted(i["id"] for i in items if i["id"] != "huge")
    deadline = time.monotonic() + 30
    while namespace.committed(0) < len(items) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert namespace.committed(0) == len(items), "the partition's commit is held back"
    assert stage.terminate() == 0
    log = stage.log.read_text()
    assert "not delivered" not in log and "retrying" not in log


def test_sigkill_mid_stream_and_restart_lose_nothing(namespace: Namespace) -> None:
    n = 10_000
    namespace.produce([{"id": f"r{i}", "sleep_ms": 1} for i in range(n)])
    first = namespace.stage("--max-in-flight", "64")
    assert 0 < len(namespace.wait_sink(2_000)) < n, "the kill must land mid-stream"
    first.kill()
    namespace.stage("--max-in-flight", "64")
    rows = namespace.wait_sink(n)
    assert len(_deliveries(rows)) == n
    out = namespace.read("out", until=n, distinct_keys=True)
    assert len({m.key() for m in out}) == n  # every record reached the output at least once


def test_sigterm_drains_and_commits(namespace: Namespace) -> None:
    n = 3_000
    namespace.produce([{"id": f"r{i}", "sleep_ms": 20} for i in range(n)])
    first = namespace.stage("--max-in-flight", "50")
    namespace.wait_sink(300)
    assert first.terminate(timeout=60) == 0
    done_before = len(namespace.sink())
    assert done_before < n
    namespace.stage("--max-in-flight", "50")
    rows = namespace.wait_sink(n)
    deliveries = _deliveries(rows)
    assert len(deliveries) == n
    # Graceful stop finished its in-flight work and committed: nothing was handled twice.
    assert set(deliveries.values()) == {1}


def _readyz(log_dir: str, replica: str) -> tuple[int, dict[str, Any]]:
    """Status and body of a replica's /readyz (its ops address is in the runtime info file)."""
    info = json.loads((Path(log_dir) / "run" / f"validate-{replica}.json").read_text())
    try:
        with urllib.request.urlopen(info["ops"] + "/readyz", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _assigned(log_dir: str, replica: str) -> set[str]:
    return set(_readyz(log_dir, replica)[1]["assigned"])


def test_two_replicas_split_the_partitions(namespace: Namespace) -> None:
    a = namespace.stage(env={"FISCALFLOW_REPLICA_ID": "a"})
    b = namespace.stage(env={"FISCALFLOW_REPLICA_ID": "b"})
    log_dir = str(a.log.parent)
    deadline = time.monotonic() + 60
    got_a: set[str] = set()
    got_b: set[str] = set()
    while time.monotonic() < deadline:
        try:
            got_a, got_b = _assigned(log_dir, "a"), _assigned(log_dir, "b")
        except (OSError, KeyError, ValueError):
            got_a, got_b = set(), set()
        if got_a and got_b and len(got_a | got_b) == 3 * PARTITIONS:
            break
        time.sleep(0.5)
    assert got_a and got_b, "each replica owns partitions"
    assert not got_a & got_b, "no partition is owned twice"
    assert len(got_a | got_b) == 3 * PARTITIONS
    namespace.produce([{"id": f"r{i}"} for i in range(2_000)])
    rows = namespace.wait_sink(2_000)
    assert len(rows) == 2_000 and set(_deliveries(rows).values()) == {1}
    assert a.alive() and b.alive()


def test_priority_records_overtake_a_backlog(namespace: Namespace) -> None:
    backlog = 5_000
    namespace.produce([{"id": f"n{i}", "sleep_ms": 20} for i in range(backlog)])
    namespace.stage("--max-in-flight", "20")
    namespace.wait_sink(100)
    namespace.produce([{"id": f"p{i}", "sleep_ms": 20} for i in range(20)], priority=True)
    rows = namespace.wait_sink(backlog + 20, timeout=180)
    order = [r["record_id"] for r in rows]
    assert len(order) == backlog + 20
    last_priority = max(i for i, rid in enumerate(order) if rid.startswith("p"))
    normal_after = sum(1 for rid in order[last_priority:] if rid.startswith("n"))
    # The priority records did not queue behind the backlog: most of it was still waiting.
    assert normal_after >= 3_000, f"only {normal_after} normal records were left behind the priority ones"


def test_reject_ratio_breaker_halts_the_stage_and_says_why(namespace: Namespace) -> None:
    poison = 300
    namespace.produce([{"id": f"bad{i}", "permanent": True} for i in range(poison)])
    stage = namespace.stage("--max-in-flight", "4", env={"FISCALFLOW_REJECT_RATIO_WINDOW": "40",
                                                         "FISCALFLOW_REJECT_RATIO_THRESHOLD": "0.5",
                                                         "FISCALFLOW_REPLICA_ID": "r"})
    dead = namespace.read("fiscal.dlq", until=poison, timeout=15)
    # It stopped after the window filled instead of draining the whole backlog into the DLQ.
    assert 40 <= len(dead) <= 40 + 8, len(dead)
    status, body = _readyz(str(stage.log.parent), "r")
    assert status == 503
    assert "halted" in str(body["halted"]) and "TEST_PERMANENT" in str(body["halted"])
    assert stage.alive()
