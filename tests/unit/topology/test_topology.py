"""The topology value (shared/topics.py) and the code built from it agree, with no broker."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from services.registry import load_builder
from services.report.app import build_app
from services.report.events import Event
from shared.runtime.host import ServiceHost
from shared.runtime.stage import StageSpec
from shared.settings import Settings
from shared.topics import SHARED_TOPICS, TOPOLOGY, Consumer, Lane, Stage, all_topics


def _names() -> set[str]:
    return {t.name for t in Settings().topics()}


def test_the_topics_and_groups_deployed_clusters_have_keep_their_names() -> None:
    """Renaming a topic or group strands its messages and committed offsets in a running cluster."""
    assert [t.name for t in Settings().topics()] == [
        *(f"fiscal.{s}{lane}" for s in ("ingest", "download", "validate", "store")
          for lane in ("", ".priority", ".retry")),
        "fiscal.stored", "fiscal.stored.priority", "fiscal.dlq", "fiscal.parking"]
    assert TOPOLOGY[Stage.VALIDATE].subscriptions() == {
        "fiscalflow-validate": ["fiscal.validate", "fiscal.validate.retry"],
        "fiscalflow-validate.priority": ["fiscal.validate.priority"]}
    assert TOPOLOGY[Stage.REPORT].subscriptions() == {
        "fiscalflow-report": ["fiscal.stored", "fiscal.stored.priority", "fiscal.dlq"]}


def test_partitions_follow_each_stage_and_the_shared_setting() -> None:
    partitions = {s: i + 2 for i, s in enumerate(Stage)}
    got = {t.name: t.partitions for t in all_topics(partitions, 9, side_lanes=max(partitions.values()))}
    for stage, t in TOPOLOGY.items():
        assert {got[name] for name in t.topics} == {partitions[stage]}
    assert {got[name] for name in SHARED_TOPICS} == {9}


def test_the_priority_and_retry_lanes_have_the_side_lane_partitions_at_most() -> None:
    """Each partition is in every fetch of the consumer that holds it, data or not (decision 0039):
    the lanes with few records get few partitions, the input keeps the stage's parallelism."""
    partitions = {Stage.INGEST: 4, Stage.DOWNLOAD: 6, Stage.VALIDATE: 1, Stage.STORE: 4, Stage.REPORT: 2}
    got = {t.name: t.partitions for t in all_topics(partitions, 2, side_lanes=2)}
    for stage, t in TOPOLOGY.items():
        assert got[t.topic(Lane.NORMAL)] == partitions[stage]
        for lane in (lane for lane in t.lanes if lane is not Lane.NORMAL):
            assert got[t.topic(lane)] == min(2, partitions[stage]), t.topic(lane)
    assert got["fiscal.download.priority"] == got["fiscal.download.retry"] == 2
    assert got["fiscal.validate.retry"] == 1  # never more than the stage's own
    # The defaults: one partition per side lane, what the stack, the chart's Job and the tests create.
    defaults = {t.name: t.partitions for t in Settings().topics()}
    assert defaults["fiscal.download"] == 6 and defaults["fiscal.download.priority"] == 1
    assert defaults["fiscal.stored.priority"] == 1 and defaults["fiscal.dlq"] == 2


def test_every_topic_a_stage_writes_or_reads_is_created() -> None:
    names = _names()
    for t in TOPOLOGY.values():
        assert set(t.topics) | set(t.side_inputs) <= names
        if t.dead_letters:
            assert t.dead_letters in SHARED_TOPICS
        if t.next is not None:
            # A priority record stays on the priority lane into the next stage.
            assert {Lane.NORMAL, Lane.PRIORITY} <= set(TOPOLOGY[t.next].lanes), t.stage


def test_every_stage_is_reached_from_ingest_once() -> None:
    path = [Stage.INGEST]
    while (nxt := TOPOLOGY[path[-1]].next) is not None:
        path.append(nxt)
    assert path == list(Stage)


def test_a_result_goes_to_the_next_stage_on_the_lane_it_came_on() -> None:
    async def handler(msg: object) -> None:
        return None

    store = StageSpec(stage=Stage.STORE, handler=handler, topic_namespace="t1")
    assert (store.next_topic(False), store.next_topic(True)) == ("t1.fiscal.stored", "t1.fiscal.stored.priority")
    with pytest.raises(ValueError):
        StageSpec(stage=Stage.REPORT, handler=handler).next_topic(False)


@pytest.mark.parametrize("stage", [s for s, t in TOPOLOGY.items() if t.consumer is Consumer.RUNNER])
def test_each_runner_stage_consumes_and_breaks_as_its_topology_declares(stage: Stage) -> None:
    """The spec its service builds: the groups and topics the runner subscribes, and its breakers."""
    spec = asyncio.run(load_builder(stage)(ServiceHost(Settings(), stage)))
    t = TOPOLOGY[stage]
    assert spec.subscriptions() == t.subscriptions()
    assert spec.own_downstreams == t.per_message_downstreams
    assert (spec.breaker_key is not None) == bool(t.per_message_downstreams), "per-message breakers need a key"


def test_the_report_app_consumes_what_its_topology_declares() -> None:
    """faust consumes every agent's topics in the group named by the app id."""

    async def no_batch(events: Sequence[Event]) -> None:
        return None

    app = build_app(Settings(), no_batch)
    consumed = {(app.conf.id, topic) for agent in app.agents.values() for topic in agent.channel.topics}
    assert consumed == {(g, topic) for g, topics in TOPOLOGY[Stage.REPORT].subscriptions().items() for topic in topics}
