"""The download replicas' shares of an issuer's connections (services/download/service.py)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from services.download.service import ConnectionShare, connections_for


def test_replicas_together_stay_within_the_issuers_budget() -> None:
    for partitions in (1, 4, 6, 12):
        for replicas in range(1, partitions + 1):
            # The range assignor: the first partitions % replicas replicas hold one more.
            held = [partitions // replicas + (1 if i < partitions % replicas else 0) for i in range(replicas)]
            shares = [connections_for(10, n, partitions) for n in held]
            assert all(s >= 1 for s in shares)
            if replicas <= 10:  # more replicas than connections: one each, the issuer refuses the surplus
                assert sum(shares) <= 10, (partitions, replicas, shares)
    assert connections_for(10, 6, 6) == 10  # one replica: the whole budget
    assert connections_for(10, 2, 6) == 3  # three replicas: 3 each, 9 of 10
    assert connections_for(10, 1, 6) == 1
    assert connections_for(1, 1, 6) == 1  # never none: the priority lane needs one


class _Pool:
    def __init__(self) -> None:
        self.budgets: list[int] = []

    def set_budget(self, n: int) -> None:
        self.budgets.append(n)


def test_a_smaller_share_applies_at_once_a_larger_one_once_it_held() -> None:
    async def run() -> list[int]:
        pool = _Pool()
        share = ConnectionShare(cast(Any, {"north": pool}), 10, "fiscal.download", 6, settle_s=0.05)
        share(frozenset({("fiscal.download", p) for p in range(6)} | {("fiscal.download.priority", 0)}))
        assert pool.budgets == [10], "before any download"
        share(frozenset())  # a rebalance revokes everything first: nothing changes
        share(frozenset({("fiscal.download", 0), ("fiscal.download", 1), ("fiscal.download.retry", 0)}))
        assert pool.budgets == [10, 3], "a replica joined: handed back at once"
        share(frozenset({("fiscal.download", p) for p in range(4)}))
        share(frozenset({("fiscal.download", 0), ("fiscal.download", 1)}))  # back within the settling time
        await asyncio.sleep(0.15)
        assert pool.budgets == [10, 3]
        share(frozenset({("ns1.fiscal.download", p) for p in range(4)}))  # a namespaced topic is the topic
        assert pool.budgets == [10, 3], "not before the larger share held"
        await asyncio.sleep(0.15)
        return pool.budgets

    assert asyncio.run(run()) == [10, 3, 6]


def test_the_brokers_partition_count_decides_the_share_not_the_settings() -> None:
    """A topic made with 12 partitions while ``partitions_download`` says 6: two replicas holding 6
    each took the whole budget each (20 connections asked of an issuer that takes 10)."""
    asked: list[str] = []

    def broker_count(topic: str) -> int | None:
        asked.append(topic)
        return 12

    async def run() -> tuple[list[int], list[int]]:
        first, second = _Pool(), _Pool()
        a = ConnectionShare(cast(Any, {"north": first}), 10, "fiscal.download", 6, settle_s=0.05, count=broker_count)
        b = ConnectionShare(cast(Any, {"north": second}), 10, "fiscal.download", 6, settle_s=0.05, count=broker_count)
        a(frozenset({("ns1.fiscal.download", p) for p in range(6)} | {("ns1.fiscal.download.priority", 0)}))
        b(frozenset({("ns1.fiscal.download", p) for p in range(6, 12)}))
        assert (first.budgets, second.budgets) == ([10], [5]), "holding partition 11: at least 12 partitions"
        await a.counted()
        await b.counted()
        return first.budgets, second.budgets

    first, second = asyncio.run(run())
    assert first == [10, 5], "the settings' guess first, the broker's count at once after"
    assert second == [5]
    assert asked == ["ns1.fiscal.download", "ns1.fiscal.download"], "the assigned topic, namespace and all"


def test_a_broker_that_does_not_answer_leaves_the_share_as_it_was() -> None:
    async def run() -> list[int]:
        pool = _Pool()
        share = ConnectionShare(cast(Any, {"north": pool}), 10, "fiscal.download", 6, settle_s=0.05,
                                count=lambda topic: None)
        share(frozenset({("fiscal.download", 0), ("fiscal.download", 1)}))
        await share.counted()
        return pool.budgets

    assert asyncio.run(run()) == [3]


def test_a_lagging_broker_never_shrinks_the_count_below_the_partitions_held() -> None:
    """Just after the topic grew from 6 to 12, a broker's metadata may still say 6: the replica
    holding 6-11 would then take the whole budget beside its peer's 5."""
    async def run() -> list[int]:
        pool = _Pool()
        share = ConnectionShare(cast(Any, {"north": pool}), 10, "fiscal.download", 6, settle_s=0.05,
                                count=lambda topic: 6)
        share(frozenset({("fiscal.download", p) for p in range(6, 12)}))
        await share.counted()
        await asyncio.sleep(0.2)
        return pool.budgets

    assert asyncio.run(run()) == [5]


def test_a_topic_with_fewer_partitions_than_the_settings_gets_its_larger_share_once_it_held() -> None:
    async def run() -> list[int]:
        pool = _Pool()
        share = ConnectionShare(cast(Any, {"north": pool}), 10, "fiscal.download", 12, settle_s=0.5,
                                count=lambda topic: 6)
        share(frozenset({("fiscal.download", p) for p in range(3)}))
        await share.counted()
        assert pool.budgets == [2], "the broker said 6, but a larger share waits for the settling time"
        await asyncio.sleep(1.0)
        return pool.budgets

    assert asyncio.run(run()) == [2, 5]
