"""The SFTP connection's write coalescing (shared/sftp/pool.py): what asyncssh writes in one
event-loop turn leaves in one send, in order, and closing still sends what was written."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from shared.sftp.pool import _CoalescingTransport


class Recording(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []
        self.events: list[str] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.sent.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.events.append("close")
        self.closing = True

    def abort(self) -> None:
        self.events.append("abort")
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 22)}.get(name, default)


async def _turn() -> None:
    await asyncio.sleep(0)


def test_packets_of_one_turn_leave_in_one_send_in_order() -> None:
    async def go() -> Recording:
        raw = Recording()
        t = _CoalescingTransport(raw)
        for p in (b"open", b"read", b"close"):
            t.write(p)
        assert raw.sent == [], "nothing sent within the turn"
        await _turn()
        t.write(b"next")
        await _turn()
        assert cast(Any, t).get_extra_info("peername") == ("127.0.0.1", 22)
        return raw

    assert asyncio.run(go()).sent == [b"openreadclose", b"next"]


def test_close_sends_what_was_written_and_abort_drops_it() -> None:
    async def go() -> tuple[Recording, Recording]:
        closed, aborted = Recording(), Recording()
        a, b = _CoalescingTransport(closed), _CoalescingTransport(aborted)
        a.write(b"disconnect")
        a.close()
        b.write(b"late")
        b.abort()
        await _turn()
        return closed, aborted

    closed, aborted = asyncio.run(go())
    assert (closed.sent, closed.events) == ([b"disconnect"], ["close"])
    assert (aborted.sent, aborted.events) == ([], ["abort"])


def test_a_flush_scheduled_before_asyncssh_aborts_goes_out_first() -> None:
    """asyncssh sends DISCONNECT then schedules ``transport.abort`` with call_soon."""
    async def go() -> Recording:
        raw = Recording()
        t = _CoalescingTransport(raw)
        t.write(b"disconnect")
        asyncio.get_running_loop().call_soon(t.abort)
        await _turn()
        await _turn()
        return raw

    raw = asyncio.run(go())
    assert (raw.sent, raw.events) == ([b"disconnect"], ["abort"])
