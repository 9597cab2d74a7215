"""The report service: a faust-streaming app materialising fiscal.stored, fiscal.stored.priority
and fiscal.dlq into ClickHouse, job completion callbacks, and the report HTTP API — one process.

Not a StageRunner stage: ``fiscalflow service run report`` calls :func:`main`.  Ports, all on
``Settings.http_host`` (127.0.0.1 by default): the API on ``report_port``, /metrics /healthz
/readyz on ``metrics_port``.  chDB allows one process per data directory: run one replica with
the embedded default; scale out against a ClickHouse server (``FISCALFLOW_CLICKHOUSE_URL``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterator, Sequence
from typing import Any

import asyncpg
import faust
import uvicorn

from services.report.api import create_api
from services.report.app import build_app
from services.report.backend import ReportBackend
from services.report.callbacks import CallbackSender
from services.report.consistency import Consistency
from services.report.events import Event
from services.report.metrics import BATCH_SECONDS, ROWS, WRITE_FAILURES
from services.report.sink import Written, connect, create_schema, repair_derived
from shared.db import jobs
from shared.db.migrate import connect_pool
from shared.runtime.ops import OpsServer
from shared.runtime.service import _write_runtime_info
from shared.settings import Settings
from shared.topics import Stage

log = logging.getLogger("fiscalflow.report")

SWEEP_S = 10.0  # completed jobs missed while PostgreSQL was down are found by this sweep
# Jobs the batches touched are re-derived on this tick, not per batch: a job's state is an
# aggregate over all its records (18 ms of PostgreSQL CPU for a 33,000-record job), and every
# half-second batch touches every running job (decision 0011, docs/decisions/0011-job-status-on-a-tick.md).
JOB_CHECK_S = 2.0


class _ApiServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the service owns SIGTERM/SIGINT and shuts every part down in order


class ReportService:
    def __init__(self, settings: Settings, topic_namespace: str = "", api_port: int | None = None) -> None:
        self.settings = settings
        self.topic_namespace = topic_namespace
        self.api_port = settings.report_port if api_port is None else api_port
        self.backend: ReportBackend | None = None
        self.callbacks: CallbackSender | None = None
        self.consistency: Consistency | None = None
        self.app: faust.App | None = None
        self.pool: asyncpg.Pool | None = None
        self._api: _ApiServer | None = None
        self._api_task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._touched: set[str] = set()  # jobs with records in batches since the last check
        # The app's two agents (priority lane, normal lane) share this: one batch written at a time,
        # so the sink's read-then-insert dedup per record stays exact (a record can reach both lanes:
        # a job resubmitted with another priority).  FIFO: a priority batch waits for at most the
        # one normal batch being written, never for a backlog.
        self._write_lock = asyncio.Lock()
        self.ops: OpsServer | None = None
        self.batches = 0
        self.last_error = ""

    async def start(self) -> None:
        s = self.settings
        self.pool = await connect_pool(s.pg_dsn.get_secret_value(), max_size=s.pg_pool_size)
        client = await asyncio.to_thread(connect, s.clickhouse_dsn())
        self.backend = ReportBackend(client, self.pool, s.redrive_lease_s)
        await self.backend.ch(create_schema, client)
        await self.backend.ch(repair_derived, client)  # after a crash mid-insert (see repair_derived)
        secret = os.environ.get("FISCALFLOW_CALLBACK_SECRET") or s.api_token.get_secret_value()
        self.callbacks = CallbackSender(self.pool, secret.encode())
        await self.callbacks.resume()
        self._sweeper = asyncio.create_task(self._sweep(), name="job-sweep")
        self.consistency = Consistency(self.backend, s, self.topic_namespace, self.write_exclusive)
        api = create_api(self.backend)
        self.consistency.install(api)  # verify and rebuild (services/report/consistency.py)
        self._api = _ApiServer(uvicorn.Config(api, host=s.http_host, port=self.api_port,
                                              log_level="warning", access_log=False, lifespan="off"))
        self._api_task = asyncio.create_task(self._api.serve(), name="report-api")
        self.ops = OpsServer(s.http_host, s.metrics_port, self._ready)
        port = await self.ops.start()
        _write_runtime_info(s, Stage.REPORT, os.environ.get("FISCALFLOW_REPLICA_ID", "0"), port)
        self.app = build_app(s, self.on_batch, self.topic_namespace)
        await self.app.start()
        self.consistency.start()  # checks the tables against PostgreSQL now, then every few minutes
        log.info("report: API http://%s:%s, ops port %s", s.http_host, self.api_port, port)

    async def stop(self) -> None:
        if self.app is not None:
            await self.app.stop()  # finishes the batch in hand; unacked events are read again
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._api is not None and self._api_task is not None:
            self._api.should_exit = True
            await self._api_task
        if self.ops is not None:
            await self.ops.stop()
        if self.callbacks is not None:
            await self.callbacks.close()
        if self.consistency is not None:
            await self.consistency.stop()
        if self.backend is not None:
            self.backend.close()
        if self.pool is not None:
            await self.pool.close()

    async def on_batch(self, events: Sequence[Event]) -> None:
        """Write a batch; retried until it is written (an unwritten batch is never acknowledged)."""
        if not events:
            return
        async with self._write_lock:
            await self._write(events)
        self._touched.update(e.job_id for e in events if e.job_id)

    async def write_exclusive(self, events: Sequence[Event]) -> Written:
        """A rebuild's write: the live batches' lock, so the sink's dedup stays exact between them."""
        assert self.backend is not None
        async with self._write_lock:
            return await self.backend.write(events)

    async def _write(self, events: Sequence[Event]) -> None:
        assert self.backend is not None
        delay = 0.2
        while True:
            started = time.perf_counter()
            try:
                written = await self.backend.write(events)
                break
            except Exception as exc:  # ClickHouse errors have no common base: any failure is retried
                WRITE_FAILURES.inc()
                self.last_error = f"clickhouse: {exc}"
                log.warning("report batch of %d not written (%s); retrying in %.1fs", len(events), exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        BATCH_SECONDS.observe(time.perf_counter() - started)
        ROWS.labels("archived").inc(written.archived)
        ROWS.labels("record_outcomes").inc(written.outcomes)
        ROWS.labels("dead_letters").inc(written.dead_letters)
        self.batches += 1

    async def _sweep(self) -> None:
        """Every JOB_CHECK_S: derive the touched jobs' states (completion, callbacks); every
        SWEEP_S also the jobs still awaiting a callback (missed while PostgreSQL was down)."""
        assert self.pool is not None and self.callbacks is not None
        last_sweep = time.monotonic()
        while True:
            await asyncio.sleep(JOB_CHECK_S)
            due, self._touched = self._touched, set()
            if time.monotonic() - last_sweep >= SWEEP_S:
                last_sweep = time.monotonic()
                try:
                    due.update(await jobs.awaiting_callback(self.pool))
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("job sweep: %s", exc)
            for job_id in sorted(due):
                try:
                    await self.callbacks.on_job_touched(job_id)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("job %s progress not checked now (%s); checked again in %.0f s",
                                job_id, exc, JOB_CHECK_S)
                    self._touched.add(job_id)

    async def _ready(self) -> tuple[bool, dict[str, Any]]:
        ok = False
        if self.backend is not None:
            try:
                ok = await asyncio.wait_for(self.backend.ping(), 2.0)
            except Exception as exc:  # readiness reports any dependency failure
                self.last_error = str(exc)
        started = self.app is not None and self._api is not None and self._api.started
        return ok and started, {"dependencies": ok, "api": started, "batches": self.batches,
                                "last_error": self.last_error,
                                "consistency": self.consistency.readiness() if self.consistency else {}}


async def run(settings: Settings, topic_namespace: str = "") -> None:
    service = ReportService(settings, topic_namespace)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    try:
        await stop.wait()
    finally:
        await service.stop()


def main(settings: Settings) -> None:
    """Entry point of ``fiscalflow service run report`` (see services/registry.py)."""
    asyncio.run(run(settings, os.environ.get("FISCALFLOW_TOPIC_NAMESPACE", "")))
