"""The download replicas' connection share asks the real broker how many partitions its topic has."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import pytest

from services.download.service import ConnectionShare
from shared.runtime.admin import ensure_topics, topic_partitions
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
        for _ in range(100):  # the broker answers in milliseconds; 10 s at most
            if first.budgets[-1] + second.budgets[-1] <= 10:
                break
            await asyncio.sleep(0.1)
        return first.budgets, second.budgets

    first, second = asyncio.run(run())
    assert (first, second) == ([10, 5], [5]), "the two replicas together within the issuer's 10 connections"
