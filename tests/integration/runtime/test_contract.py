"""The runtime's contract, on both backends: in memory (fast) and on the real local broker.

The same test must pass on both: what a stage promises (at-least-once with commits below the
work in flight, retries with backoff, dead letters with their headers, breakers, the reject
ratio, priority lanes) does not depend on which broker carries the messages.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator

import pytest

from shared.runtime import headers as H
from shared.runtime.message import Message
from shared.runtime.tracing import setup_tracing
from shared.settings import Settings
from tests.integration.runtime.harness import PARTITIONS, Harness

BACKENDS = ["memory", pytest.param("kafka", marks=pytest.mark.integration)]


@pytest.fixture(params=BACKENDS)
def h(request: pytest.FixtureRequest) -> Iterator[Harness]:
    if request.param == "memory":
        base = Settings(_env_file=None)  # type: ignore[call-arg]
    else:
        base = request.getfixturevalue("runtime_settings")
    setup_tracing("fiscalflow-test-contract")  # as every stage does: records carry their trace id
    yield Harness(request.param, base.model_copy(update={"retry_base_ms": 100, "commit_interval_ms": 100}))


def _with(h: Harness, **overrides: object) -> Settings:
    return h.settings.model_copy(update=overrides)


def _fair_key(msg: Message) -> str | None:
    return str(json.loads(msg.value).get("key"))


def _backlog_after_last_priority(order: list[str]) -> int:
    """Backlog records ("n…") handled after the last priority record ("p…")."""
    last_priority = max(i for i, rid in enumerate(order) if rid.startswith("p"))
    return sum(1 for rid in order[last_priority:] if rid.startswith("n"))


async def test_every_message_is_handled_once_emitted_and_committed(h: Harness) -> None:
    n = 2_000
    h.produce([{"id": f"r{i}"} for i in range(n)])
    async with h.runner() as runner:
        await h.wait_for(lambda: len(h.handled.order) >= n)
        await h.wait_for(lambda: not runner.inflight.offsets.to_commit(), within_s=10)
    out = await h.read("out", until=n)
    assert sorted(h.handled.order) == sorted(f"r{i}" for i in range(n)), "each record handled exactly once"
    assert len(out) == n and {g.key for g in out} == {f"r{i}".encode() for i in range(n)}
    # A new replica of the group starts after the committed offsets: nothing is handled again.
    h.produce([{"id": "late"}])
    async with h.runner():
        await h.wait_for(lambda: "late" in h.handled.order)
    assert len(h.handled.order) == n + 1


async def test_a_permanent_error_is_a_dead_letter_at_once_with_every_header(h: Harness) -> None:
    rejected: list[tuple[str, str]] = []
    failed_at: list[int] = []

    async def on_dead_letter(msg: object, reason: str, message: str, details: dict[str, object],
                             failed_at_ms: int) -> None:
        rejected.append((reason, message))
        failed_at.append(failed_at_ms)

    h.produce([{"id": f"ok{i}"} for i in range(20)] + [{"id": "poison", "permanent": True}])
    async with h.runner(on_dead_letter=on_dead_letter):
        dead = await h.read("fiscal.dlq", until=1)
        await h.wait_for(lambda: len(h.handled.order) == 20)
    assert len(dead) == 1 and dead[0].key == b"poison"
    assert json.loads(dead[0].value) == {"id": "poison", "permanent": True}, "value unchanged"
    hd = dead[0].headers
    assert hd[H.ORIGIN_TOPIC] == h.topic("fiscal.validate") and int(hd[H.ORIGIN_PARTITION]) in range(PARTITIONS)
    assert (hd[H.STAGE], hd[H.REASON], hd[H.ATTEMPT]) == ("validate", "TEST_PERMANENT", "1")
    assert "poison" in hd[H.ERROR_MESSAGE] and json.loads(hd[H.DETAILS]) == {"why": "test"}
    assert int(hd[H.FIRST_FAILURE_MS]) <= int(hd[H.LAST_FAILURE_MS])
    assert H.TRACEPARENT in hd and len(hd[H.TRACE_ID]) == 32
    assert rejected == [("TEST_PERMANENT", "record poison is poison")], "the rejection was recorded first"
    # ... at the time its dead letter carries: the registry and the report time it alike
    assert failed_at == [int(hd[H.LAST_FAILURE_MS])]
    assert h.handled.attempts["poison"] == [0], "a permanent error is not retried"


async def test_a_transient_error_backs_off_while_its_partition_moves_on(h: Harness) -> None:
    h.produce([{"id": "flaky", "transient": 3}], partition=0)
    h.produce([{"id": f"after{i}"} for i in range(200)], partition=0)
    async with h.runner(_with(h, retry_base_ms=300)):
        await h.wait_for(lambda: "flaky" in h.handled.order)
    order = h.handled.order
    assert order.index("flaky") > order.index("after199"), "later records of the partition waited"
    assert h.handled.attempts["flaky"] == [0, 1, 2, 3]
    retries = await h.read("fiscal.validate.retry", until=3)
    assert sorted(int(g.headers[H.ATTEMPT]) for g in retries) == [1, 2, 3]
    for g in retries:
        attempt = int(g.headers[H.ATTEMPT])
        delay_ms = int(g.headers[H.DUE_AT_MS]) - int(g.headers[H.LAST_FAILURE_MS])
        assert 150 <= delay_ms <= 300 * 2 ** (attempt - 1), (attempt, delay_ms)  # full jitter above base/2
        assert g.headers[H.ORIGIN_TOPIC] == h.topic("fiscal.validate")


@pytest.mark.parametrize("body,reason", [({"transient": 99}, "RETRIES_EXHAUSTED"),
                                         ({"crash": True}, "HANDLER_CRASHED")])
async def test_retries_run_out_into_a_dead_letter(h: Harness, body: dict[str, object], reason: str) -> None:
    h.produce([{"id": "always", **body}, {"id": "fine"}])
    async with h.runner(_with(h, retry_base_ms=20, retry_max_attempts=3)):
        dead = await h.read("fiscal.dlq", until=1)
    assert len(dead) == 1
    hd = dead[0].headers
    assert (hd[H.REASON], hd[H.ATTEMPT]) == (reason, "3")
    assert hd[H.ORIGIN_TOPIC] == h.topic("fiscal.validate"), "the origin, not the retry topic"
    assert int(hd[H.FIRST_FAILURE_MS]) < int(hd[H.LAST_FAILURE_MS])
    assert h.handled.order == ["fine"] and h.handled.attempts["always"] == [0, 1, 2]


async def test_the_reject_ratio_halts_the_stage_and_says_why(h: Harness) -> None:
    h.produce([{"id": f"bad{i}", "permanent": True} for i in range(300)])
    settings = _with(h, reject_ratio_window=40, reject_ratio_threshold=0.5)
    async with h.runner(settings, max_in_flight=4) as runner:
        await h.wait_for(lambda: bool(runner.halted))
        dead = await h.read("fiscal.dlq", until=40, settle=1.0)
        assert 40 <= len(dead) <= 40 + 8, "it stopped instead of draining the backlog into the DLQ"
        c = runner.condition()
        assert c.state == "halted" and "TEST_PERMANENT" in c.reason and "restart" in c.reason
        assert not runner.ready()


async def test_a_stage_wide_breaker_pauses_the_stage_and_it_resumes_by_itself(h: Harness) -> None:
    h.flags["s3"] = True
    h.produce([{"id": f"s{i}", "fail_while": "s3", "downstream": "s3"} for i in range(12)])
    async with h.runner(_with(h, breaker_reset_s=0.5, breaker_failure_threshold=3), max_in_flight=4) as runner:
        await h.wait_for(lambda: runner.condition().state == "paused")
        reason = runner.condition().reason
        assert reason.startswith("paused: s3 down") and "s3 is down" in reason
        assert runner.status()["breakers"]["s3"] in ("open", "half_open")
        h.flags["s3"] = False
        await h.wait_for(lambda: len(h.handled.ids()) == 12)
        await h.wait_for(lambda: runner.condition().state == "")
    # Attempts while the breaker was open cost nothing: none ran out.
    assert not await h.read("fiscal.dlq", until=0, settle=1.5)


async def test_an_open_per_message_breaker_defers_its_messages_without_attempts(h: Harness) -> None:
    h.flags["north"] = True
    north = [{"id": f"n{i}", "fail_while": "north", "downstream": "sftp:north", "region": "north"} for i in range(8)]
    h.produce([*north, *({"id": f"c{i}", "region": "central"} for i in range(20))])

    def region(msg: object) -> str | None:
        return "sftp:" + json.loads(msg.value)["region"]  # type: ignore[attr-defined]

    settings = _with(h, breaker_reset_s=0.3, breaker_failure_threshold=2, retry_max_attempts=4)
    # The test stage borrows validate's lanes, not its breakers: it declares sftp: per-message itself.
    async with h.runner(settings, breaker_key=region, per_message_downstreams=("sftp:",), max_in_flight=2) as runner:
        await h.wait_for(lambda: runner.status()["breakers"].get("sftp:north") == "open")
        await h.wait_for(lambda: len(h.handled.ids()) == 20)  # the other region went on
        assert runner.condition().state == "", "a per-message downstream does not pause the stage"
        h.flags["north"] = False
        await h.wait_for(lambda: len(h.handled.ids()) == 28, within_s=60)
    assert not await h.read("fiscal.dlq", until=0, settle=1.5), "deferrals cost no attempt"


async def test_priority_records_overtake_a_backlog(h: Harness) -> None:
    backlog = 600
    h.produce([{"id": f"n{i}", "sleep_ms": 5} for i in range(backlog)])
    async with h.runner(max_in_flight=4):
        await h.wait_for(lambda: len(h.handled.order) >= 20)
        h.produce([{"id": f"p{i}", "sleep_ms": 5} for i in range(10)], priority=True)
        await h.wait_for(lambda: len(h.handled.order) >= backlog + 10, within_s=120)
    assert _backlog_after_last_priority(h.handled.order) >= backlog // 2, \
        "the priority records did not queue behind the backlog"


async def test_priority_records_overtake_a_backlog_waiting_read_ahead_in_the_replica(h: Harness) -> None:
    """With a fair key the backlog waits in the replica, read ahead (up to ``look_ahead``), not only in
    the topic: priority records still overtake it, the second wave as the first."""
    backlog = 600
    h.produce([{"id": f"n{i}", "sleep_ms": 20} for i in range(backlog)])
    async with h.runner(max_in_flight=4, fair_key=_fair_key, look_ahead=1_000) as runner:
        await h.wait_for(lambda: len(h.handled.order) >= 20)
        assert len(runner.engine.pending) > 100, "the backlog waits in the replica"
        for wave in range(2):
            h.produce([{"id": f"p{wave}-{i}"} for i in range(3)], priority=True)
            await h.wait_for(lambda w=wave: all(f"p{w}-{i}" in h.handled.ids() for i in range(3)), within_s=60)
        await h.wait_for(lambda: len(h.handled.order) >= backlog + 6, within_s=120)
    assert _backlog_after_last_priority(h.handled.order) >= backlog // 2, \
        "the second wave of priority records queued behind the backlog waiting in the replica"


async def test_while_priority_records_flow_the_backlog_read_ahead_waits_as_the_topic_does(h: Harness) -> None:
    """The lanes pause while priority records are in flight; what the replica read ahead waits too, so
    the priority record does not share the stage (and the stages after it) with a read-ahead backlog."""
    backlog = 600
    h.produce([{"id": f"n{i}", "sleep_ms": 20} for i in range(backlog)])
    async with h.runner(max_in_flight=4, fair_key=_fair_key, look_ahead=1_000) as runner:
        await h.wait_for(lambda: len(runner.engine.pending) > 300)
        before = len(h.handled.order)
        h.produce([{"id": "p0", "sleep_ms": 2_000}], priority=True)
        await h.wait_for(lambda: "p0" in h.handled.ids(), within_s=60)
        during = h.handled.order.index("p0") - before
        await h.wait_for(lambda: len(h.handled.ids()) == backlog + 1, within_s=120)
    # At 4 slots of 20 ms the backlog finishes ~200 records a second: ~400 during the 2 s priority
    # record if its waiting messages kept starting; those in flight and polled before it, otherwise.
    assert during <= 50, f"{during} backlog records ran beside the priority record"
    assert len(h.handled.order) == backlog + 1


async def test_a_replica_whose_slots_are_all_stuck_still_starts_priority_records(h: Harness) -> None:
    """Past ``keepalive_s`` with no slot freed the replica pauses its lanes (decision 0027) but keeps
    the priority lane: a priority record starts beside the stuck work, not after it."""
    settings = _with(h, max_poll_interval_ms=10_000)  # keepalive_s: 2 s
    # Stuck for 8 s: past the 2 s keepalive, with 6 s left for the priority record to start.
    h.produce([{"id": f"stuck{i}", "sleep_ms": 8_000} for i in range(2)] + [{"id": f"n{i}"} for i in range(20)],
              partition=0)
    async with h.runner(settings, max_in_flight=2) as runner:
        await h.wait_for(lambda: runner.inflight.handling == 2, within_s=30)
        await h.wait_for(lambda: runner.engine.paused_all, within_s=30)
        h.produce([{"id": "p0"}], priority=True)
        await h.wait_for(lambda: "p0" in h.handled.ids(), within_s=60)
        assert not any(rid.startswith("stuck") for rid in h.handled.order), \
            "the priority record waited for the stuck work to end"
        await h.wait_for(lambda: len(h.handled.ids()) == 23, within_s=60)
    assert len(h.handled.order) == 23


async def test_a_graceful_stop_finishes_its_work_and_commits(h: Harness) -> None:
    n = 400
    h.produce([{"id": f"r{i}", "sleep_ms": 10} for i in range(n)])
    async with h.runner(max_in_flight=20):
        await h.wait_for(lambda: len(h.handled.order) >= 50)
    stopped_at = len(h.handled.order)
    assert stopped_at < n
    async with h.runner(max_in_flight=20):
        await h.wait_for(lambda: len(h.handled.ids()) == n)
    assert len(h.handled.order) == n, "nothing was handled twice"


async def test_two_replicas_split_the_partitions_and_handle_each_record_once(h: Harness) -> None:
    async with h.runner() as a, h.runner() as b:
        await h.wait_for(lambda: len(a.assignment | b.assignment) == 3 * PARTITIONS and bool(a.assignment)
                         and bool(b.assignment), within_s=60)
        assert not a.assignment & b.assignment, "no partition is owned twice"
        h.produce([{"id": f"r{i}"} for i in range(500)])
        await h.wait_for(lambda: len(h.handled.ids()) == 500)
        assert a.status()["assigned"] and b.status()["assigned"]
    assert len(h.handled.order) == 500, "each record handled once"


async def test_an_output_over_the_message_limit_dead_letters_its_input_and_the_partition_moves_on(h: Harness) -> None:
    rejected: list[tuple[str, str]] = []

    async def on_dead_letter(msg: Message, reason: str, message: str, details: dict[str, object],
                             failed_at_ms: int) -> None:
        rejected.append((msg.record_id, reason))

    limit = h.settings.message_max_bytes
    items = [{"id": f"before{i}"} for i in range(5)] + [{"id": "huge", "emit_bytes": limit + 1000}]
    items += [{"id": f"after{i}"} for i in range(5)]
    h.produce(items, partition=0)
    async with h.runner(on_dead_letter=on_dead_letter):
        dead = await h.read("fiscal.dlq", until=1)
        await h.wait_for(lambda: len(h.handled.order) == len(items))
        await h.wait_for(lambda: h.committed(0) == len(items), within_s=30)
    assert [g.key for g in dead] == [b"huge"]
    hd = dead[0].headers
    assert (hd[H.REASON], hd[H.ATTEMPT]) == ("MESSAGE_TOO_LARGE", "1")
    details = json.loads(hd[H.DETAILS])
    assert details["limit"] == limit and details["size"] > limit and details["topic"] == h.topic("out")
    assert json.loads(dead[0].value) == items[5], "the input, unchanged"
    assert rejected == [("huge", "MESSAGE_TOO_LARGE")], "recorded by the stage's hook"
    out = await h.read("out", until=10)
    assert sorted(g.key for g in out) == sorted(str(i["id"]).encode() for i in items if i["id"] != "huge")
    assert h.handled.attempts["huge"] == [0], "never retried"


async def test_a_long_run_of_one_keys_records_does_not_starve_another_and_loses_nothing_on_a_stop(h: Harness) -> None:
    """The download stage's regions: a run of key a's slow records lies ahead of key b's in the
    partition.  b's records take the first slots that free, not the run's end; a stop meanwhile
    commits below the a's still waiting, so the next replica handles each of them once."""
    run, others = 200, 20
    h.produce([{"id": f"a{i}", "key": "a", "sleep_ms": 100} for i in range(run)]
              + [{"id": f"b{i}", "key": "b"} for i in range(others)], partition=0)
    b_ids = {f"b{i}" for i in range(others)}
    async with h.runner(max_in_flight=10, fair_key=_fair_key, look_ahead=1_000) as runner:
        await h.wait_for(lambda: b_ids <= h.handled.ids(), within_s=60)
        a_before_b = sum(1 for rid in h.handled.order if rid.startswith("a"))
        assert a_before_b <= 50, f"{a_before_b} of the run's records were handled before the other key's"
        assert len(runner.engine.pending) > 0, "the run's records wait, read but not started"
    first = {rid for rid in h.handled.order if rid.startswith("a")}
    assert len(first) < run
    # Stopped: the committed offset is the first a not handled (offsets 0.. are a0..), below the b's.
    assert h.committed(0) == len(first), (h.committed(0), len(first))
    async with h.runner(max_in_flight=10, fair_key=_fair_key, look_ahead=1_000):
        await h.wait_for(lambda: len({r for r in h.handled.order if r.startswith("a")}) == run, within_s=120)
    a_counts = collections.Counter(rid for rid in h.handled.order if rid.startswith("a"))
    assert set(a_counts.values()) == {1}, "each of the run's records handled once, none lost"
    assert b_ids <= h.handled.ids()
