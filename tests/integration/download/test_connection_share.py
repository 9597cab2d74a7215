"""The download replicas' connection share asks the real broker how many partitions its topic has."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import pytest

from services.download.service import ConnectionShare
from shared.runtime.admin import ensure_topics, partition_counts, topic_partitions
from shared.settings import Settings
from shared.topics import TopicSpec

pytestmark = pytest.mark.integration


class _Pool:
    def __init__(self) -> None:
        self.budgets: list[int] = []

    def set_budget(self, n: int) -> None:
        self.budgets.append(n)


def test_a_topic_made_with_more_partitions_than_the_settings_say_halves_each_share(
        stack_settings: Settings, unique_name: Callable[[str], str]) -> None:
    topic = f"{unique_name('share')}.fiscal.download"
    ensure_topics(stack_settings, [TopicSpec(topic, 12)])  # made by hand, before partitions_download was 6
    assert topic_partitions(stack_settings, topic) == 12

    async def run() -> tuple[list[int], list[int]]:
        first, second = _Pool(), _Pool()
        def count(name: str) -> int | None:
            return topic_partitions(stack_settings, name)

        a = ConnectionShare(cast(Any, {"north": first}), 10, "fiscal.download", 6, settle_s=0.05, count=count)
        b = ConnectionShare(cast(Any, {"north": second}), 10, "fiscal.download", 6, settle_s=0.05, count=count)
        a(frozenset({(topic, p) for p in range(6)}))
        b(frozenset({(topic, p) for p in range(6, 12)}))
        await a.counted()
        await b.counted()
        return first.budgets, second.budgets

    first, second = asyncio.run(run())
    assert (first, second) == ([10, 5], [5]), "the two replicas together within the issuer's 10 connections"


def test_asking_for_a_topic_the_broker_does_not_have_does_not_create_it(
        stack_settings: Settings, unique_name: Callable[[str], str]) -> None:
    """Tansu creates an unknown topic, with 4 partitions, for a client that lets it: a topic deleted
    between an assignment and the lookup must not come back."""
    topic = f"{unique_name('gone')}.fiscal.download"
    assert topic_partitions(stack_settings, topic) is None
    assert topic not in partition_counts(stack_settings)
