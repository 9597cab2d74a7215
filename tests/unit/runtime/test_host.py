"""The service host on real loopback sockets: a SIGTERM stops the workload, then the parts in
reverse order; the ops port answers /healthz and /readyz; the run-info file names the replica's
ops port; an API port already taken fails the start at once."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from shared.runtime.host import PartFailed, Readiness, ServiceHost
from shared.runtime.parts import _bind
from shared.settings import Settings


class Work:
    """A workload like a stage's: ready once running, finishes what it has in hand when stopped."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.running = False
        self._stop = asyncio.Event()

    async def run(self) -> None:
        self.log.append("run")
        self.running = True
        await self._stop.wait()
        self.log.append("drained")

    def stop(self) -> None:
        self.log.append("stop")
        self._stop.set()

    async def readiness(self) -> Readiness:
        return self.running, {"dependencies": True, "condition": {"state": "", "reason": ""}}


def _settings(tmp_path: Path) -> Settings:
    return Settings(local_dir=tmp_path, metrics_port=0, http_host="127.0.0.1")


def _hooks(host: ServiceHost, log: list[str], name: str) -> None:
    async def start() -> None:
        log.append(f"start {name}")

    async def stop() -> None:
        log.append(f"stop {name}")

    host.hooks(name, start, stop)


def _hello(log: list[str]) -> Starlette:
    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    log.append("api built")
    return Starlette(routes=[Route("/", hello)])


async def _until(check: Callable[[], bool | Awaitable[bool]]) -> None:
    deadline = time.monotonic() + 10
    while not await _value(check()):
        assert time.monotonic() < deadline, "condition not met within 10 s"
        await asyncio.sleep(0.02)


async def _value(result: bool | Awaitable[bool]) -> bool:
    return await result if inspect.isawaitable(result) else bool(result)


async def test_sigterm_stops_the_workload_then_the_parts_in_reverse_order(tmp_path: Path) -> None:
    log: list[str] = []
    host = ServiceHost(_settings(tmp_path), "demo", replica="7")
    _hooks(host, log, "clients")
    ticks: list[float] = []

    async def tick() -> None:
        ticks.append(time.monotonic())

    host.every("ticker", 0.05, tick)
    api = host.api("demo API", lambda: _hello(log), 0)
    _hooks(host, log, "last")
    work = Work(log)
    task = asyncio.create_task(host.run(work))
    async with httpx.AsyncClient() as http:
        await _until(lambda: _ready(http, host))
        assert (await http.get(f"http://127.0.0.1:{api.port}/")).text == "hello"
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(task, 10)
        assert log == ["start clients", "api built", "start last", "run", "stop", "drained", "stop last",
                       "stop clients"]
        assert len(ticks) >= 2  # ticked at start and again while running
        count = len(ticks)
        await asyncio.sleep(0.15)
        assert len(ticks) == count, "the periodic task stopped with the host"
        with pytest.raises(httpx.ConnectError):  # the API and the ops port are closed
            await http.get(f"http://127.0.0.1:{api.port}/")
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{host.ops_port}/healthz")
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the host's handler went with it


async def _ready(http: httpx.AsyncClient, host: ServiceHost) -> bool:
    if host.ops_port is None:
        return False
    try:
        return (await http.get(f"http://127.0.0.1:{host.ops_port}/readyz")).status_code == 200
    except httpx.HTTPError:
        return False


async def test_the_ops_port_says_alive_then_ready_and_the_run_info_names_it(tmp_path: Path) -> None:
    gate = asyncio.Event()
    log: list[str] = []

    async def slow_start() -> None:
        await gate.wait()

    host = ServiceHost(_settings(tmp_path), "demo", replica="3")
    host.hooks("slow clients", slow_start)
    host.api("demo API", lambda: _hello(log), 0)
    task = asyncio.create_task(host.run(Work(log), install_signals=False))
    async with httpx.AsyncClient() as http:
        await _until(lambda: host.ops_port is not None)
        ops = f"http://127.0.0.1:{host.ops_port}"
        # Starting: alive, not ready, and no run-info yet (`fiscalflow stack up` waits for it).
        assert (await http.get(f"{ops}/healthz")).json() == {"status": "alive"}
        starting = await http.get(f"{ops}/readyz")
        assert starting.status_code == 503
        assert starting.json() == {"ready": False, "dependencies": True, "condition": {"state": "", "reason": ""},
                                   "api": False}
        info_file = tmp_path / "run" / "demo-3.json"
        assert not info_file.exists()
        gate.set()
        await _until(lambda: _ready(http, host))
        assert (await http.get(f"{ops}/readyz")).json() == {
            "ready": True, "dependencies": True, "condition": {"state": "", "reason": ""}, "api": True}
        assert json.loads(info_file.read_text()) == {"stage": "demo", "replica": "3", "pid": os.getpid(),
                                                     "ops": ops}
        metrics = await http.get(f"{ops}/metrics")
        assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
        host.stop()
        await asyncio.wait_for(task, 10)


async def test_an_api_port_already_taken_fails_the_start_at_once(tmp_path: Path) -> None:
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    log: list[str] = []
    host = ServiceHost(_settings(tmp_path), "demo")
    _hooks(host, log, "clients")
    host.api("demo API", lambda: _hello(log), port)
    _hooks(host, log, "after the API")
    started = time.monotonic()
    try:
        with pytest.raises(OSError):
            await asyncio.wait_for(host.run(Work(log), install_signals=False), 10)
    finally:
        taken.close()
    assert time.monotonic() - started < 2
    # What had started is stopped; nothing after the API started, the workload never ran.
    assert log == ["start clients", "stop clients"]
    assert not (tmp_path / "run").exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", host.ops_port or 0), timeout=1).close()


async def test_a_failing_workload_still_stops_every_part(tmp_path: Path) -> None:
    log: list[str] = []

    class Crashing(Work):
        async def run(self) -> None:
            raise RuntimeError("broker gone")

    host = ServiceHost(_settings(tmp_path), "demo")
    _hooks(host, log, "a")
    _hooks(host, log, "b")
    with pytest.raises(RuntimeError, match="broker gone"):
        await host.run(Crashing(log), install_signals=False)
    assert log == ["start a", "start b", "stop b", "stop a"]


async def test_a_failing_tick_is_logged_and_the_next_one_runs(tmp_path: Path) -> None:
    calls: list[int] = []

    async def flaky() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("first tick fails")

    host = ServiceHost(_settings(tmp_path), "demo")
    host.every("flaky", 0.02, flaky)
    task = asyncio.create_task(host.run(Work([]), install_signals=False))
    await _until(lambda: len(calls) >= 3)
    host.stop()
    await asyncio.wait_for(task, 10)


def test_the_actor_names_the_service_and_the_replica(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FISCALFLOW_REPLICA_ID", "4")
    host = ServiceHost(_settings(tmp_path), "ingest")
    assert (host.replica, host.actor) == ("4", "ingest/4")


async def test_api_connections_are_not_delayed_by_nagle() -> None:
    """The API's socket hands asyncio connections it sets TCP_NODELAY on: with a proto-0 socket
    (``socket.create_server``) every response waited ~40 ms for the client's delayed ACK."""
    seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await asyncio.get_running_loop().create_server(Probe, sock=_bind("127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        assert await asyncio.wait_for(seen, 5) != 0
    finally:
        writer.close()
        server.close()


async def test_an_api_that_stops_on_its_own_fails_the_process_after_an_ordered_stop(tmp_path: Path) -> None:
    """uvicorn's task ending while the workload runs (here: told to exit behind the host's back) is
    a crash: alive but unready forever otherwise.  The host drains the workload, stops the parts
    in reverse order and fails, so the supervisor or Kubernetes restarts the process."""
    log: list[str] = []
    host = ServiceHost(_settings(tmp_path), "demo")
    _hooks(host, log, "clients")
    api = host.api("demo API", lambda: _hello(log), 0)
    work = Work(log)
    task = asyncio.create_task(host.run(work, install_signals=False))
    await _until(lambda: work.running and api.serving)
    assert api._server is not None
    api._server.should_exit = True
    with pytest.raises(PartFailed, match="demo API stopped on its own"):
        await asyncio.wait_for(task, 10)
    assert log == ["start clients", "api built", "run", "stop", "drained", "stop clients"]
