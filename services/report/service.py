"""The report service: a faust-streaming app materialising fiscal.stored, fiscal.stored.priority
and fiscal.dlq into ClickHouse, job completion callbacks, and the report HTTP API — one process.

Not a StageRunner stage: ``fiscalflow service run report`` runs :func:`build_service`'s workload,
the faust app, on the service host like every stage (signals, ops port, run-info, PostgreSQL
pool, the API, the job checks: shared/runtime/host.py).  Ports, all on ``Settings.http_host``
(127.0.0.1 by default): the API on ``report_port``, /metrics /healthz /readyz on ``metrics_port``.
chDB allows one process per data directory: run one replica with the embedded default; scale out
against a ClickHouse server (``FISCALFLOW_CLICKHOUSE_URL``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import replace

import asyncpg
import faust
from fastapi import FastAPI

from services.report.api import create_api
from services.report.app import build_app
from services.report.backend import ReportBackend
from services.report.callbacks import CallbackSender
from services.report.consistency import Consistency
from services.report.console import Console
from services.report.events import Archived, Event
from services.report.metrics import BATCH_SECONDS, ROWS, WRITE_FAILURES
from services.report.rebuild import archived_lines
from services.report.sink import Written, connect, create_schema, repair_derived
from shared.db import jobs
from shared.egress import EgressPolicy
from shared.http_auth import ApiAuth
from shared.runtime.host import Readiness, ServiceHost

log = logging.getLogger("fiscalflow.report")

SWEEP_S = 10.0  # completed jobs missed while PostgreSQL was down are found by this sweep
# Jobs the batches touched are re-derived on this tick, not per batch: a job's state is an
# aggregate over all its records (18 ms of PostgreSQL CPU for a 33,000-record job), and every
# half-second batch touches every running job (decision 0011, docs/decisions/0011-job-status-on-a-tick.md).
JOB_CHECK_S = 2.0
ARCHIVE_LINES_ATTEMPTS = 5  # S3 reads of a batch's archived lines (0.5 s to 4 s apart) before it goes without


class ReportService:
    """The faust app as the host's workload; ClickHouse, callbacks, the API and the job checks as its parts."""

    def __init__(self, host: ServiceHost, topic_namespace: str = "") -> None:
        self.settings = s = host.settings
        self.topic_namespace = topic_namespace
        self.pool = host.postgres()
        secret = s.callback_secret.get_secret_value() or s.api_token.get_secret_value()
        self.callbacks = CallbackSender(self.pool, secret.encode(), EgressPolicy.from_settings(s),
                                        attempts=s.callback_attempts,
                                        base_delay_s=s.callback_base_s, max_delay_s=s.callback_max_s)
        self.backend: ReportBackend | None = None
        self.consistency: Consistency | None = None  # verify and rebuild (services/report/consistency.py)
        self.app: faust.App | None = None
        self._touched: set[str] = set()  # jobs with records in batches since the last check
        self._last_sweep = time.monotonic()
        # The app's two agents (priority lane, normal lane) share this: one batch written at a time,
        # so the sink's read-then-insert dedup per record stays exact (a record can reach both lanes:
        # a job resubmitted with another priority).  FIFO: a priority batch waits for at most the
        # one normal batch being written, never for a backlog.
        self._write_lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self.batches = 0
        self.last_error = ""
        # Started in this order after the pool; stopped in the reverse one once the app has stopped.
        host.hooks("clickhouse and callbacks", self._open, self._close)
        host.api("report API", self._api, s.report_port)
        host.every("job checks", JOB_CHECK_S, self.check_jobs)

    async def _open(self) -> None:
        client = await asyncio.to_thread(connect, self.settings.clickhouse_dsn())
        self.backend = ReportBackend(client, self.pool, self.settings.redrive_lease_s,
                                     bucket=self.settings.s3_bucket)
        await self.backend.ch(create_schema, client)
        await self.backend.ch(repair_derived, client)  # after a crash mid-insert (see repair_derived)
        await self.callbacks.resume()
        self.consistency = Consistency(self.backend, self.settings, self.topic_namespace, self.write_exclusive)

    async def _close(self) -> None:
        if self.consistency is not None:
            await self.consistency.stop()
        await self.callbacks.close()
        if self.backend is not None:
            self.backend.close()

    def _api(self) -> FastAPI:
        assert self.backend is not None and self.consistency is not None
        auth = ApiAuth(self.settings)
        api = create_api(self.backend, auth)
        self.consistency.install(api, auth)
        Console(self.backend, self.settings, self.topic_namespace).install(api, auth)  # docs/console.md
        return api

    # ------------------------------------------------------------------ the workload: the faust app
    async def run(self) -> None:
        self.app = build_app(self.settings, self.on_batch, self.topic_namespace)
        try:
            await self.app.start()
            log.info("report: consuming (faust app %s)", self.app.conf.id)
            if self.consistency is not None:
                self.consistency.start()  # checks the tables against PostgreSQL now, then every few minutes
            while not self._stop.is_set():
                # A crashed app consumes nothing and never recovers by itself: fail the process so the
                # supervisor or Kubernetes restarts it (unacked events are read again).
                if self.app.crashed:
                    raise RuntimeError(f"report: the faust app crashed: {self.app._crash_reason!r}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 1.0)
        finally:
            await self.app.stop()  # finishes the batch in hand; unacked events are read again

    def stop(self) -> None:
        self._stop.set()

    async def on_batch(self, events: Sequence[Event]) -> None:
        """Write a batch; retried until it is written (an unwritten batch is never acknowledged)."""
        if not events:
            return
        events = await self._archive_lines(events)
        async with self._write_lock:
            await self._write(events)
        self._touched.update(e.job_id for e in events if e.job_id)

    async def _archive_lines(self, events: Sequence[Event]) -> Sequence[Event]:
        """``events`` with the lines of the documents whose stored event left them in the archive
        (too many to travel: shared/domain/messages.py MAX_EVENT_LINES), read from S3 as a rebuild
        reads them.  Records whose lines ClickHouse holds already (a redelivery) are not read again.
        S3 is retried a few times; still failing, the batch is written without those lines (the
        reports' totals must not wait for S3) and `fiscalflow report rebuild` restores them."""
        wanted = [e for e in events if isinstance(e, Archived) and e.lines_in_archive]
        if not wanted or self.backend is None or self.consistency is None:
            return events
        have = await self.backend.ch(self.backend.sink.records_with_lines, [a.record_id for a in wanted])
        wanted = [a for a in wanted if a.record_id not in have]
        if not wanted:
            return events
        delay = 0.5
        for attempt in range(1, ARCHIVE_LINES_ATTEMPTS + 1):
            try:
                found = await archived_lines(self.consistency.s3, wanted)
                break
            except Exception as exc:  # S3 errors have no common base with the decoding thread's
                if attempt == ARCHIVE_LINES_ATTEMPTS:
                    log.warning("lines of %d archived documents not read (%s): written without them;"
                                " `fiscalflow report rebuild` restores them", len(wanted), exc)
                    return events
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        for rid, lines in found.items():
            if lines is None:
                log.warning("record %s: the lines of its archived document could not be read", rid)
        return [replace(e, lines=found[e.record_id]) if isinstance(e, Archived) and found.get(e.record_id) else e
                for e in events]

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
        ROWS.labels("invoice_lines").inc(written.lines)
        self.batches += 1

    async def check_jobs(self) -> None:
        """Every JOB_CHECK_S: derive the touched jobs' states (completion, callbacks); every
        SWEEP_S also the jobs still awaiting a callback (missed while PostgreSQL was down)."""
        due, self._touched = self._touched, set()
        if time.monotonic() - self._last_sweep >= SWEEP_S:
            self._last_sweep = time.monotonic()
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

    async def readiness(self) -> Readiness:
        ok = False
        if self.backend is not None:
            try:
                ok = await asyncio.wait_for(self.backend.ping(), 2.0)
            except Exception as exc:  # readiness reports any dependency failure
                self.last_error = str(exc)
        started = self.app is not None and self.app.started
        return ok and started, {"dependencies": ok, "batches": self.batches, "last_error": self.last_error,
                                "consistency": self.consistency.readiness() if self.consistency else {}}


async def build_service(host: ServiceHost) -> ReportService:
    """The workload of ``fiscalflow service run report`` (see services/registry.py)."""
    return ReportService(host, host.settings.topic_namespace)
