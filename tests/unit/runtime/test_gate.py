"""The breaker gate: per-message downstreams (declared in the StageSpec) defer, others pause the stage."""

from __future__ import annotations

import asyncio

from shared.runtime.gate import BreakerGate
from shared.runtime.message import Message
from shared.runtime.stage import StageSpec
from shared.topics import Stage


async def _noop(msg: Message) -> None:
    return None


def _gate(reopened: list[int], **spec: object) -> BreakerGate:
    s = StageSpec(stage=Stage.DOWNLOAD, handler=_noop, **spec)  # type: ignore[arg-type]
    return BreakerGate(s, failure_threshold=2, reset_s=0.05, on_reopen=lambda: reopened.append(1),
                       stopping=asyncio.Event())


def _msg(region: str) -> Message:
    return Message("t", 0, 0, b"k", region.encode(), {}, 0)


async def test_a_stage_wide_downstream_closes_the_gate_until_a_probe_may_go_and_a_success_closes_it() -> None:
    reopened: list[int] = []
    gate = _gate(reopened)
    assert gate.failed("s3", probe=False) is False
    assert gate.open.is_set() and gate.down() == [], "one failure is under the threshold"
    assert gate.failed("s3", probe=False) is False, "the failure that opens it still costs an attempt"
    assert not gate.open.is_set() and gate.down() == ["s3"]
    assert gate.failed("s3", probe=False) is True, "a failure while it is open costs nothing"
    await asyncio.wait_for(gate.wait_open(), 2)
    assert reopened and gate.states() == {"s3": "half_open"}, "reopened for a probe"
    gate.succeeded(None)
    assert gate.states() == {"s3": "closed"} and gate.down() == []


async def test_a_per_message_downstream_never_closes_the_gate() -> None:
    reopened: list[int] = []
    gate = _gate(reopened, breaker_key=lambda m: f"sftp:{m.value.decode()}")
    for _ in range(3):
        gate.failed("sftp:north", probe=False)
    assert gate.open.is_set() and gate.down() == []
    north = gate.key_breaker(_msg("north"))
    assert north is not None and not north.allow(), "its own messages are deferred"
    central = gate.key_breaker(_msg("central"))
    assert central is not None and central.allow()


async def test_which_downstreams_are_per_message_is_declared_by_the_stage() -> None:
    gate = _gate([], per_message_downstreams=("bucket:",))
    for _ in range(2):
        gate.failed("sftp:north", probe=False)
    assert gate.down() == ["sftp:north"], "for this stage an SFTP server is stage-wide"
    assert gate.key_breaker(_msg("x")) is None, "no breaker key declared: nothing to defer"


async def test_a_stopping_stage_does_not_pause() -> None:
    gate = _gate([])
    gate._stopping.set()
    for _ in range(3):
        gate.failed("postgres", probe=False)
    assert gate.open.is_set()
