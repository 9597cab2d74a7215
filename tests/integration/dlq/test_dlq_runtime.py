"""Dead letters written by the real stage runtime, replayed into it, and parked at the limit."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from shared.dlq.model import DeadLetter
from shared.runtime import headers as H
from shared.runtime.admin import ensure_topics
from shared.settings import Settings, get_settings
from shared.topics import PARKING, TopicSpec
from tests.integration.runtime.conftest import Namespace
from tests.support.topics import read_to_end

from .conftest import DlqWorld, headers_of

pytestmark = pytest.mark.integration


def _wait_letters(w: DlqWorld, record: str, n: int, timeout: float = 60) -> list[DeadLetter]:
    deadline = time.monotonic() + timeout
    while True:
        rows = w.json_lines("list", f"--record={record}")
        if len(rows) >= n or time.monotonic() > deadline:
            return [DeadLetter.model_validate(r) for r in rows]
        time.sleep(0.3)


def test_runtime_dead_letter_replayed_fails_again_then_is_parked(stack_settings: Settings, tmp_path: Path) -> None:
    get_settings.cache_clear()
    ns = Namespace(stack_settings, tmp_path)
    ensure_topics(stack_settings, [TopicSpec(ns.topic(PARKING), 2)])
    w = DlqWorld(stack_settings, ns.ns)
    (rid,) = w.ids(1)
    try:
        ns.stage()
        ns.produce([{"id": rid, "permanent": True}])
        (first,) = _wait_letters(w, rid, 1)
        assert (first.stage, first.reason, first.replay_count) == ("validate", "TEST_PERMANENT", 0)
        assert first.origin_topic == ns.topic("fiscal.validate") and first.details == {"why": "test"}
        assert first.trace_id and H.TRACEPARENT in first.headers

        assert w.json_lines("replay", f"--record={rid}", "--max-replays", "1")[-1]["summary"]["replayed"] == 1
        letters = _wait_letters(w, rid, 2)
        assert [d.replay_count for d in letters] == [0, 1]  # the runtime carried ff-replay-count on

        last = w.json_lines("replay", f"--record={rid}", "--max-replays", "1")
        assert last[-1]["summary"]["parked"] == 1 and last[-1]["summary"]["skipped_superseded"] == 1
        (parked,) = read_to_end(stack_settings, ns.topic(PARKING), {rid})
        assert headers_of(parked)[H.REASON] == "REPLAY_LIMIT"
    finally:
        ns.close()
        get_settings.cache_clear()
