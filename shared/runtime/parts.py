"""The parts a service declares on its host (:mod:`.host`): started in order before the workload,
stopped in reverse order after it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator

import uvicorn
from starlette.types import ASGIApp

from shared.db.migrate import new_pool, open_pool

log = logging.getLogger("fiscalflow.host")

Step = Callable[[], Awaitable[None]]


class Hooks:
    """A service's own start and stop steps (open a producer; close its clients)."""

    def __init__(self, name: str, start: Step | None = None, stop: Step | None = None) -> None:
        self.name = name
        self._start = start
        self._stop = stop

    async def start(self) -> None:
        if self._start is not None:
            await self._start()

    async def stop(self) -> None:
        if self._stop is not None:
            await self._stop()


class Postgres:
    """The process's asyncpg pool, there from the service's construction, connected at start."""

    name = "postgresql"

    def __init__(self, dsn: str, max_size: int, app_name: str | None = None) -> None:
        self.pool = new_pool(dsn, max_size=max_size, app_name=app_name)

    async def start(self) -> None:
        try:
            await open_pool(self.pool)
        except BaseException:
            self.pool.terminate()
            raise

    async def stop(self) -> None:
        await self.pool.close()


class Periodic:
    """``tick()`` now and every ``interval_s`` after, inside the service's event loop."""

    def __init__(self, name: str, interval_s: float, tick: Step) -> None:
        self.name = name
        self.interval_s = interval_s
        self.tick = tick
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # a failed tick is logged and tried again next interval
                log.exception("%s failed", self.name)
            await asyncio.sleep(self.interval_s)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the host owns SIGTERM/SIGINT and stops every part in order


class EmbeddedApi:
    """uvicorn inside the service's event loop.

    The host binds the port itself, before uvicorn starts: a port already taken is an ``OSError``
    raised by :meth:`start` (uvicorn would ``sys.exit`` from inside its task instead)."""

    def __init__(self, name: str, app: Callable[[], ASGIApp], host: str, port: int) -> None:
        self.name = name
        self.host = host
        self.port = port
        self._app = app
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def serving(self) -> bool:
        return (self._server is not None and self._server.started and not self._server.should_exit
                and self._task is not None and not self._task.done())

    async def start(self) -> None:
        sock = _bind(self.host, self.port)
        self.port = int(sock.getsockname()[1])  # port 0: the one the OS picked
        config = uvicorn.Config(self._app(), log_config=None, log_level="warning", access_log=False, lifespan="off")
        server = self._server = _Server(config)
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name=self.name)
        while not server.started:
            if self._task.done():
                sock.close()
                await self._task  # its exception, if it has one
                raise RuntimeError(f"{self.name} stopped while starting on {self.host}:{self.port}")
            await asyncio.sleep(0.01)
        log.info("%s on http://%s:%s", self.name, self.host, self.port)

    def failure(self) -> str | None:
        """Why the server is not running although it started (None while it serves): the host asks
        this while the workload runs, so uvicorn ending on its own fails the process."""
        if self._task is None or not self._task.done():
            return None
        if self._task.cancelled():
            return "cancelled"
        exc = self._task.exception()
        return f"{type(exc).__name__}: {exc}" if exc is not None else "the server returned"

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True  # finishes the requests in hand, then closes the socket
        with contextlib.suppress(Exception):
            await self._task


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket whose protocol is IPPROTO_TCP, not 0: the connections it accepts
    inherit it, and asyncio sets TCP_NODELAY on a connection only when it is.  With proto 0
    (``socket.create_server``) every API response waited out Nagle against the client's delayed
    ACK: 44-48 ms per request, openapi.json included, and +40 ms on the idle latency benchmark
    (a job view polled until completed)."""
    family, _, _, _, addr = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                               proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(socket.SOMAXCONN)
    except OSError:
        sock.close()
        raise
    return sock
