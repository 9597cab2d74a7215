"""The service host: what every service process has, whatever it runs.

One :class:`ServiceHost` per process owns, in this order at start and the reverse at stop:

1. SIGTERM/SIGINT: both ask for a graceful stop (:meth:`ServiceHost.stop`);
2. the ops port (/metrics, /healthz, /readyz: :mod:`.ops`);
3. the parts the service declared — its PostgreSQL pool, its clients, its periodic tasks, its
   embedded HTTP API (:mod:`.parts`) — started in the order declared;
4. the run-info file ``<local_dir>/run/<service>-<replica>.json`` (``fiscalflow stack`` finds
   the replica's ops port there), once everything but the workload is up;
5. the workload: a :class:`~shared.runtime.runner.StageRunner`, or the report's faust app.

A stop request stops the workload first (a stage drains its in-flight work and commits), then the
parts in reverse order, then the ops port.  A part that fails to start (an API port already taken)
stops what had started and fails the process at once.  A part that stops on its own while the
workload runs (the embedded API's server task ended) is a crash: the host stops the workload and
the other parts in order and fails the process, so that the supervisor or Kubernetes restarts it
(it would otherwise stay alive, unready, forever).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import asyncpg
from starlette.types import ASGIApp

from shared.db.migrate import application_name
from shared.runtime.ops import OpsServer
from shared.runtime.parts import EmbeddedApi, Hooks, Periodic, Postgres
from shared.settings import Settings

log = logging.getLogger("fiscalflow.host")

Readiness = tuple[bool, dict[str, Any]]
WATCH_S = 1.0  # how often the host looks for a part that stopped on its own


class PartFailed(RuntimeError):
    """A part stopped on its own while the workload ran."""


class Part(Protocol):
    """Something the host starts before the workload and stops after it."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Workload(Protocol):
    """What the service does until asked to stop: ``run`` returns once ``stop`` was called and the
    work in hand is finished (or raises, which fails the process after the ordered stop)."""

    async def run(self) -> None: ...

    def stop(self) -> None: ...

    async def readiness(self) -> Readiness: ...


P = TypeVar("P", bound=Part)


class ServiceHost:
    def __init__(self, settings: Settings, service: str, replica: str | None = None) -> None:
        self.settings = settings
        self.service = str(service)
        self.replica = replica if replica is not None else settings.replica_id
        # Who a state transition's audit event names (``audit_events.actor``).
        self.actor = f"{self.service}/{self.replica}"
        self.parts: list[Part] = []
        self.ops_port: int | None = None
        self._postgres: Postgres | None = None
        self._main: Workload | None = None
        self._running = False
        self._stopping = False

    # ------------------------------------------------------------------ declaring parts
    def add(self, part: P) -> P:
        self.parts.append(part)
        return part

    def hooks(self, name: str, start: Callable[[], Awaitable[None]] | None = None,
              stop: Callable[[], Awaitable[None]] | None = None) -> Hooks:
        """A service's own resources (clients, producers), opened and closed in the host's order."""
        return self.add(Hooks(name, start, stop))

    def postgres(self) -> asyncpg.Pool:
        """The process's PostgreSQL pool (one, however often asked): connected, and the database
        migrated, when the host starts; closed after the workload stopped."""
        if self._postgres is None:
            s = self.settings
            self._postgres = self.add(Postgres(s.pg_dsn.get_secret_value(), s.pg_pool_size,
                                               application_name(self.service, self.replica)))
        return self._postgres.pool

    def every(self, name: str, interval_s: float, tick: Callable[[], Awaitable[None]]) -> Periodic:
        """A background task: ``tick()`` now and every ``interval_s`` after (a failure is logged)."""
        return self.add(Periodic(name, interval_s, tick))

    def api(self, name: str, app: Callable[[], ASGIApp], port: int) -> EmbeddedApi:
        """An HTTP API served in this process on ``settings.http_host``; ``app`` is called at start
        (after the parts declared before it started).  A port that cannot be bound fails the start."""
        return self.add(EmbeddedApi(name, app, self.settings.http_host, port))

    # ------------------------------------------------------------------ running
    async def run(self, main: Workload, install_signals: bool = True) -> None:
        """Start everything, run ``main`` until a stop request (or its end), stop everything."""
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT) if install_signals else ()
        for sig in signals:
            loop.add_signal_handler(sig, self.stop)
        self._main = main
        ops = OpsServer(self.settings.http_host, self.settings.metrics_port, self.readiness)
        started: list[Part] = []
        try:
            self.ops_port = await ops.start()
            log.info("%s replica %s: ops port %s (/metrics /healthz /readyz)", self.service, self.replica,
                     self.ops_port)
            for part in self.parts:
                if self._stopping:
                    break
                await part.start()
                started.append(part)
            if not self._stopping:
                write_run_info(self.settings, self.service, self.replica, self.ops_port)
                self._running = True
                await self._run_watched(main)
        finally:
            self._stopping = True
            self._running = False
            for part in reversed(started):
                try:
                    await part.stop()
                except Exception:  # the other parts still stop: log it and go on
                    log.exception("%s: stopping %s failed", self.service, part.name)
            await ops.stop()
            for sig in signals:
                loop.remove_signal_handler(sig)
            log.info("%s replica %s stopped", self.service, self.replica)

    async def _run_watched(self, main: Workload) -> None:
        """``main.run()``, while every part that can fail on its own is still up."""
        task = asyncio.create_task(main.run(), name=f"{self.service} workload")
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=WATCH_S)
                failed = None if self._stopping else next(
                    ((p.name, why) for p in self.parts if (why := getattr(p, "failure", lambda: None)()) is not None),
                    None)
                if failed is not None:
                    log.error("%s replica %s: %s stopped on its own (%s): stopping the service to be restarted",
                              self.service, self.replica, *failed)
                    self.stop()
                    await task  # the workload finishes what it has in hand
                    raise PartFailed(f"{failed[0]} stopped on its own: {failed[1]}")
        except BaseException:
            if not task.done():
                task.cancel()
            raise
        await task  # its exception, if any

    def stop(self) -> None:
        """Graceful (what SIGTERM does): the workload finishes what it has in hand, then the parts stop."""
        if not self._stopping:
            log.info("%s replica %s stopping", self.service, self.replica)
        self._stopping = True
        if self._running and self._main is not None:
            self._main.stop()

    async def readiness(self) -> Readiness:
        """/readyz: the workload's own answer, ``api`` added when the service embeds an HTTP API;
        never ready before the workload runs nor once stopping."""
        if self._main is None:  # not running yet
            return False, {}
        ok, detail = await self._main.readiness()
        apis = [p for p in self.parts if isinstance(p, EmbeddedApi)]
        if apis:
            detail["api"] = all(a.serving for a in apis)
            ok = ok and detail["api"]
        return ok and self._running and not self._stopping, detail


async def dependency_ok(check: Callable[[], Awaitable[bool]], timeout_s: float = 2.0) -> bool:
    """A readiness check of a dependency: false when it fails or takes longer than ``timeout_s``."""
    try:
        return await asyncio.wait_for(check(), timeout_s)
    except Exception:  # readiness reports any dependency failure as not ready
        return False


def write_run_info(settings: Settings, service: str, replica: str, ops_port: int) -> None:
    """``<local_dir>/run/<service>-<replica>.json``: the replica's pid and ops URL."""
    run_dir = settings.local_dir / "run"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        info = {"stage": service, "replica": replica, "pid": os.getpid(),
                "ops": f"http://{settings.http_host}:{ops_port}"}
        (run_dir / f"{service}-{replica}.json").write_text(json.dumps(info))
    except OSError:  # read-only filesystem in a container: the ops port is in the log
        pass
