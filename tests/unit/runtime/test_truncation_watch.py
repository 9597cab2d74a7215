"""Which partitions the truncation watch reads again from their start, from librdkafka's statistics
(the fields as librdkafka 2.x reports them; the integration test runs it against the real broker)."""

from __future__ import annotations

import json

from shared.runtime.kafka_backend import TruncationWatch


def _stats(**parts: tuple[int, int]) -> str:
    """Statistics of topic ``t`` with partition N at (position, log end), as ``pN=(pos, end)``."""
    partitions: dict[str, dict[str, object]] = {
        "-1": {"fetch_state": "none", "desired": False, "next_offset": 0, "hi_offset": -1001}}
    for name, (position, end) in parts.items():
        partitions[name.removeprefix("p")] = {"fetch_state": "active", "desired": True, "next_offset": position,
                                              "hi_offset": end}
    return json.dumps({"name": "c#consumer-1", "topics": {"t": {"partitions": partitions}}})


def test_a_position_past_the_end_in_two_snapshots_running_is_reported_once() -> None:
    watch = TruncationWatch()
    watch.observe(_stats(p0=(100, 5), p1=(40, 40)))
    assert watch.take() == {}  # one snapshot is not enough
    watch.observe(_stats(p0=(100, 5), p1=(40, 40)))
    assert watch.take() == {("t", 0): (100, 5)}  # partition 1 is at its end: normal
    assert watch.take() == {}
    watch.observe(_stats(p0=(100, 5)))  # still past the end right after: a new pair is needed
    assert watch.take() == {}


def test_a_position_that_moved_between_snapshots_or_a_partition_not_fetched_is_left_alone() -> None:
    watch = TruncationWatch()
    watch.observe(_stats(p0=(100, 5)))
    watch.observe(_stats(p0=(101, 5)))
    assert watch.take() == {}
    idle = json.loads(_stats(p0=(100, 5)))
    idle["topics"]["t"]["partitions"]["0"]["fetch_state"] = "stopped"  # revoked, or not fetching
    watch.observe(json.dumps(idle))
    watch.observe(json.dumps(idle))
    unknown = _stats(p0=(100, -1001))  # the end is not known yet
    watch.observe(unknown)
    watch.observe(unknown)
    assert watch.take() == {}
    watch.observe("not json")  # statistics never break the consumer
    assert watch.take() == {}
