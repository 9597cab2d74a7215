"""The region pool against a real SFTP server that accepts few connections and serves slowly."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import asyncssh
import pytest

from shared.sftp.pool import RegionPool
from tests.support.sockets import free_port
from tooling.stack.component import port_open

pytestmark = pytest.mark.integration


@pytest.fixture
def slow_issuer(tmp_path: Path) -> tuple[int, Path, Path]:
    """A slow issuer (50 ms per file, at most 3 connections) with 40 files; yields port, key, known_hosts."""
    root = tmp_path / "root"
    (root / "b").mkdir(parents=True)
    for i in range(40):
        (root / "b" / f"f{i}.xml").write_bytes(f"<x>{i}</x>".encode())
    host_key, client_key = asyncssh.generate_private_key("ssh-ed25519"), asyncssh.generate_private_key("ssh-ed25519")
    host_key.write_private_key(str(tmp_path / "host"))
    client_key.write_private_key(str(tmp_path / "client"))
    (tmp_path / "authorized").write_bytes(client_key.export_public_key())
    port = free_port()
    (tmp_path / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key.export_public_key().decode()}")
    proc = subprocess.Popen([sys.executable, "-m", "tooling.stack.slow_sftp", "--port", str(port), "--root", str(root),
                             "--host-key", str(tmp_path / "host"), "--authorized-keys", str(tmp_path / "authorized"),
                             "--user", "issuer", "--latency-ms", "50", "--max-connections", "3"])
    deadline = time.monotonic() + 20
    while not port_open("127.0.0.1", port) and time.monotonic() < deadline:
        time.sleep(0.1)
    yield port, tmp_path / "client", tmp_path / "known_hosts"
    proc.terminate()
    proc.wait(10)


def _fetch_all(port: int, key: Path, known_hosts: Path, connections: int, channels: int) -> tuple[RegionPool, int]:
    """Fetch the 40 files at once; returns the pool and the most channels it had open."""
    async def run() -> tuple[RegionPool, int]:
        pool = RegionPool("slow", "127.0.0.1", port, "issuer", key, known_hosts, connections, 2, channels)
        peak = 0

        async def get(i: int) -> bytes:
            nonlocal peak
            async with pool.channel() as sftp, sftp.open(f"b/f{i}.xml", "rb") as f:
                peak = max(peak, pool.size)
                data: bytes = await f.read()
                return data

        got = await asyncio.gather(*(get(i) for i in range(40)))
        assert got == [f"<x>{i}</x>".encode() for i in range(40)]
        await pool.close()
        return pool, peak

    return asyncio.run(run())


def test_pool_shrinks_to_the_connections_the_server_accepts(slow_issuer: tuple[int, Path, Path]) -> None:
    pool, peak = _fetch_all(*slow_issuer, connections=6, channels=1)
    assert pool.limit == 3 and peak == 3  # every file arrived although the server refused connections 4-6


def test_several_channels_per_connection(slow_issuer: tuple[int, Path, Path]) -> None:
    pool, peak = _fetch_all(*slow_issuer, connections=2, channels=4)
    # A server that serves one request at a time per channel: concurrency comes from channels.
    assert pool.limit == 2 and peak == 8


def test_a_priority_request_takes_the_next_free_slot_before_waiting_normal_ones(
        slow_issuer: tuple[int, Path, Path]) -> None:
    """One connection, one request at a time: the slot is held, three normal requests queue, then a
    priority one.  When the slot frees, the priority request gets it first; the normal ones follow
    in their order, none left waiting."""
    port, key, known_hosts = slow_issuer

    async def run() -> list[str]:
        pool = RegionPool("slow", "127.0.0.1", port, "issuer", key, known_hosts, 1, 1, 1)
        order: list[str] = []
        hold, held = asyncio.Event(), asyncio.Event()

        async def get(name: str, priority: bool) -> None:
            async with pool.channel(priority) as sftp, sftp.open("b/f1.xml", "rb") as f:
                order.append(name)
                await f.read()
                if name == "holder":
                    held.set()
                    await hold.wait()

        holder = asyncio.create_task(get("holder", False))
        await asyncio.wait_for(held.wait(), 20)
        waiting = [asyncio.create_task(get(f"normal-{i}", False)) for i in range(3)]
        await asyncio.sleep(0.2)  # the three normal requests are waiting for the slot
        waiting.append(asyncio.create_task(get("priority", True)))
        await asyncio.sleep(0.2)
        hold.set()
        await asyncio.wait_for(asyncio.gather(holder, *waiting), 30)
        await pool.close()
        return order

    order = asyncio.run(run())
    assert order == ["holder", "priority", "normal-0", "normal-1", "normal-2"], order


async def _burst(pool: RegionPool, n: int = 12) -> int:
    """Fetch ``n`` files at once; returns the most connections the pool held meanwhile (one channel each)."""
    peak = 0

    async def get(i: int) -> None:
        nonlocal peak
        async with pool.channel() as sftp, sftp.open(f"b/f{i}.xml", "rb") as f:
            peak = max(peak, len(pool._per_conn))
            assert await f.read() == f"<x>{i}</x>".encode()

    await asyncio.gather(*(get(i) for i in range(n)))
    return peak


def test_idle_connections_close_so_another_client_gets_the_issuers_connections(
        slow_issuer: tuple[int, Path, Path]) -> None:
    """Two download replicas, one issuer that takes 3 connections: the first replica's burst holds
    all 3.  Once they have been idle, they close, and the second replica gets all 3."""
    port, key, known_hosts = slow_issuer

    async def run() -> tuple[int, int, int]:
        first = RegionPool("slow", "127.0.0.1", port, "issuer", key, known_hosts, 3, 1, 1, idle_close_s=0.5)
        second = RegionPool("slow", "127.0.0.1", port, "issuer", key, known_hosts, 3, 1, 1, idle_close_s=60)
        held = await _burst(first)
        await asyncio.sleep(1.5)  # idle for longer than idle_close_s (its reaper runs every half of it)
        left = len(first._per_conn)
        got = await _burst(second)
        await first.close()
        await second.close()
        return held, left, got

    held, left, got = asyncio.run(run())
    assert (held, left, got) == (3, 0, 3)


def test_a_smaller_budget_hands_connections_back_as_their_requests_finish(
        slow_issuer: tuple[int, Path, Path]) -> None:
    """A replica's share shrinks (another joined): its surplus connections take no new request and
    close when their requests are done; the requests in flight and after all succeed."""
    port, key, known_hosts = slow_issuer

    async def run() -> tuple[int, int, int, int]:
        pool = RegionPool("slow", "127.0.0.1", port, "issuer", key, known_hosts, 3, 1, 1, idle_close_s=60)
        held = await _burst(pool)
        busy = asyncio.create_task(_burst(pool, 6))
        await asyncio.sleep(0.02)  # requests in flight on every connection
        pool.set_budget(1)
        assert len(pool._retiring) == 2 and all(c.busy for c in pool._channels), "retiring with requests on them"
        await busy
        after = len(pool._per_conn)
        peak = await _burst(pool, 6)
        other = RegionPool("slow", "127.0.0.1", port, "issuer", key, known_hosts, 2, 1, 1, idle_close_s=60)
        other_peak = await _burst(other, 6)  # the two connections handed back are the issuer's again
        await pool.close()
        await other.close()
        return held, after, peak, other_peak

    assert asyncio.run(run()) == (3, 1, 1, 2)


def test_a_refused_pool_tries_one_more_connection_later(slow_issuer: tuple[int, Path, Path],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused while another client held the issuer's connections, a pool does not stay small for
    good: once the other client let go, it grows back to its budget."""
    import shared.sftp.pool as pool_module

    monkeypatch.setattr(pool_module, "LIMIT_PROBE_MIN_S", 0.2)
    monkeypatch.setattr(pool_module, "LIMIT_PROBE_MAX_S", 0.4)
    port, key, known_hosts = slow_issuer

    async def run() -> tuple[int, int]:
        other = RegionPool("slow", "127.0.0.1", port, "issuer", key, known_hosts, 2, 1, 1, idle_close_s=60)
        await _burst(other, 4)  # holds 2 of the issuer's 3
        pool = RegionPool("slow", "127.0.0.1", port, "issuer", key, known_hosts, 3, 1, 1, idle_close_s=60)
        first = await _burst(pool)
        limited = pool.limit
        await other.close()
        for _ in range(10):  # a burst after the probe interval may add one connection
            await asyncio.sleep(0.25)
            await _burst(pool)
        grown = len(pool._per_conn)
        await pool.close()
        return first, limited, grown

    first, limited, grown = asyncio.run(run())
    assert (first, limited) == (1, 1) and grown == 3
