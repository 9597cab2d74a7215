"""A service process's garbage collector: young collections every 20,000 net allocations, not 700."""

from __future__ import annotations

import gc
from collections import deque
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from shared.runtime.memory import tune_collector
from shared.settings import Settings


@pytest.fixture
def collector() -> Iterator[None]:
    before = gc.get_threshold()
    gc.collect()
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _young_collections_while_churning(messages: int = 40_000, window: int = 500) -> int:
    """Like a stage: ``window`` messages alive at once, and each leaves a small reference cycle that only
    the collector frees (the young generation counts allocations net of frees: acyclic objects cancel out)."""
    start = gc.get_stats()[0]["collections"]
    alive: deque[dict[str, object]] = deque(maxlen=window)
    for n in range(messages):
        message: dict[str, object] = {"offset": n, "headers": [("k", b"v")], "facts": {"uuid": str(n)}}
        message["self"] = message
        alive.append(message)
    return int(gc.get_stats()[0]["collections"] - start)


def test_the_tuned_collector_examines_the_young_generation_far_less_often(collector: None) -> None:
    gc.set_threshold(700, 10, 10)
    default = _young_collections_while_churning()
    tune_collector(Settings().gc_young_threshold)
    tuned = _young_collections_while_churning()
    assert gc.get_threshold() == (20_000, 10, 10)  # the older generations keep their ratios
    assert default >= 100, default  # 40,000 cycles of 3 containers / 700
    assert tuned <= default // 20, (default, tuned)


def test_cyclic_garbage_is_still_freed_without_an_explicit_collect(collector: None) -> None:
    tune_collector(20_000)
    freed = 0

    class Node:
        def __init__(self) -> None:
            self.me = self  # a cycle: only the collector frees it

        def __del__(self) -> None:
            nonlocal freed
            freed += 1

    for _ in range(200_000):
        Node()
    assert freed >= 200_000 - 2 * 20_000, freed  # at most about one threshold's worth waits


def test_a_threshold_below_the_interpreters_default_is_refused() -> None:
    with pytest.raises(ValidationError, match="gc_young_threshold"):
        Settings(gc_young_threshold=100)
