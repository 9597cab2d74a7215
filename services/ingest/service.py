"""The ingest stage: record ids in, download tasks out — and the HTTP job API in the same process.

Each id is looked up (batched); an unknown id is a dead letter (UNKNOWN_RECORD); an archived
or duplicate record is skipped and counted, never reprocessed; a record already past download
is left to the later stages.  Otherwise a guarded, batched transition moves it to downloading
(a redelivery repeats it harmlessly: same audit key, same task) and a DownloadTask goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Iterator, Sequence

import asyncpg
import uvicorn
from prometheus_client import Counter

from services.download.service import build_pools
from services.ingest.api import IngestContext, create_app
from services.ingest.backpressure import LagMonitor
from services.ingest.requests import JOB_HEADER, parse_request
from shared.db import jobs
from shared.db.batcher import MicroBatcher
from shared.db.conditions import condition_hook
from shared.db.health import db_ready
from shared.db.migrate import connect_pool
from shared.db.records import RecordRow, Transition, lookup
from shared.db.rejections import DB_ERRORS, RejectionRecorder, transitions_or_transient
from shared.domain.messages import DownloadTask
from shared.domain.reasons import ReasonCode
from shared.domain.records import RecordStatus
from shared.runtime import Emit, Message, PermanentError, StageSpec, TransientError
from shared.runtime import headers as H
from shared.runtime.kafka import AsyncProducer, producer_config
from shared.runtime.tracing import current_trace_id
from shared.settings import Settings
from shared.topics import Stage

log = logging.getLogger("fiscalflow.ingest")

SKIPPED = Counter("fiscalflow_ingest_skipped_total", "Ingest requests not sent to download, by record status.",
                  ["status"])

# Pending: first time; rejected: a replay or a resubmitted job; downloading: a redelivery.
_STARTABLE = (RecordStatus.PENDING, RecordStatus.REJECTED, RecordStatus.DOWNLOADING)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside the stage's event loop: the stage runner owns SIGTERM (drain, commit, then
    on_stop closes the API), so uvicorn must not install its own signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class IngestStage:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.actor = f"ingest/{os.environ.get('FISCALFLOW_REPLICA_ID', '0')}"
        self.spec: StageSpec | None = None
        self.pool: asyncpg.Pool | None = None
        self.rejections: RejectionRecorder | None = None
        self._lookups: MicroBatcher[str, RecordRow | None] = MicroBatcher(self._lookup, 500, 0.005)
        self._members: MicroBatcher[tuple[str, str], None] = MicroBatcher(self._add_members, 500, 0.005)
        self._transitions: MicroBatcher[Transition, bool] = MicroBatcher(self._apply, 500, 0.005)
        self._http: _EmbeddedServer | None = None
        self._http_task: asyncio.Task[None] | None = None
        self._extras: list[LagMonitor] = []
        self._producer: AsyncProducer | None = None
        self._sftp = build_pools(settings)

    # ------------------------------------------------------------------ the handler
    async def handle(self, msg: Message) -> Sequence[Emit]:
        req = parse_request(msg)
        row = await self._lookups.submit(req.record_id)
        if row is None:
            raise PermanentError(ReasonCode.UNKNOWN_RECORD, f"record {req.record_id!r} is not registered")
        if req.job_id:
            await self._members.submit((req.job_id, req.record_id))
        if row.status in (RecordStatus.ARCHIVED, RecordStatus.DUPLICATE,
                          RecordStatus.DOWNLOADED, RecordStatus.VALIDATED):
            SKIPPED.labels(row.status.value).inc()
            return []
        # The original coordinates survive retries, so a retried message has the same audit key.
        origin = (f"{msg.headers.get(H.ORIGIN_TOPIC, msg.topic)}:{msg.headers.get(H.ORIGIN_PARTITION, msg.partition)}"
                  f":{msg.headers.get(H.ORIGIN_OFFSET, msg.offset)}")
        applied = await self._transitions.submit(Transition(
            record_id=row.record_id, to_status=RecordStatus.DOWNLOADING, allowed_from=_STARTABLE, stage="ingest",
            actor=self.actor, idempotency_key=f"{row.record_id}:downloading:{origin}", job_id=req.job_id,
            detail={"job_id": req.job_id, "priority": msg.priority}, trace_id=current_trace_id() or None,
        ))
        if not applied:  # another delivery moved it on between look-up and transition
            SKIPPED.labels("raced").inc()
            return []
        task = DownloadTask(record_id=row.record_id, job_id=req.job_id, region=row.region, path=row.remote_path,
                            expected_sha256=row.expected_sha256, size=row.size)
        return [Emit(value=task.encode(), stage=Stage.DOWNLOAD, headers={JOB_HEADER: req.job_id} if req.job_id else {})]

    # ------------------------------------------------------------------ batched statements
    async def _lookup(self, ids: list[str]) -> list[RecordRow | None]:
        assert self.pool is not None
        try:
            found = await lookup(self.pool, list(set(ids)))
        except DB_ERRORS as exc:
            raise TransientError(f"postgres: {exc}", downstream="postgres") from exc
        return [found.get(i) for i in ids]

    async def _add_members(self, pairs: list[tuple[str, str]]) -> list[None]:
        assert self.pool is not None
        try:
            async with self.pool.acquire() as conn:
                await jobs.add_members(conn, sorted(set(pairs)))
        except DB_ERRORS as exc:
            raise TransientError(f"postgres: {exc}", downstream="postgres") from exc
        return [None] * len(pairs)

    async def _apply(self, items: list[Transition]) -> list[bool]:
        assert self.pool is not None
        return await transitions_or_transient(self.pool, items)

    async def record_rejection(self, msg: Message, reason: str, message: str, details: dict[str, object]) -> None:
        assert self.rejections is not None
        await self.rejections(msg, reason, message, dict(details))

    # ------------------------------------------------------------------ lifecycle: stage and HTTP API
    def namespace(self) -> str:
        return self.spec.topic_namespace if self.spec is not None else ""

    async def start(self) -> None:
        s = self.settings
        self.pool = await connect_pool(s.pg_dsn.get_secret_value(), max_size=s.pg_pool_size)
        self.rejections = RejectionRecorder("ingest", self.pool, self.actor)
        self._producer = AsyncProducer(producer_config(s, f"fiscalflow-ingest-api-{socket.gethostname()}"))
        assert self.spec is not None
        lag = LagMonitor(s, self.spec.consumer_group, [self.spec.normal_topic, self.spec.priority_topic])
        # Job completion callbacks are the report service's (signed, retried): one sender only.
        self._extras = [lag]
        for extra in self._extras:
            extra.start()
        app = create_app(IngestContext(s, self.pool, self._producer, self._sftp, lag, self.namespace))
        config = uvicorn.Config(app, host=s.http_host, port=s.ingest_port, log_config=None, access_log=False,
                                lifespan="off")
        self._http = _EmbeddedServer(config)
        self._http_task = asyncio.create_task(self._http.serve(), name="ingest-http")
        while not self._http.started:  # fail fast (port taken) instead of running without the API
            if self._http_task.done():
                await self._http_task
                raise RuntimeError(f"ingest API could not bind {s.http_host}:{s.ingest_port}")
            await asyncio.sleep(0.02)
        log.info("ingest API on http://%s:%s", s.http_host, s.ingest_port)

    async def stop(self) -> None:
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            with contextlib.suppress(Exception):
                await self._http_task
        for extra in self._extras:
            await extra.stop()
        if self._producer is not None:
            await asyncio.to_thread(self._producer.close)
        for p in self._sftp.values():
            await p.close()
        if self.pool is not None:
            await self.pool.close()

    async def ready(self) -> bool:
        return self._http is not None and self._http.started and await db_ready(self.pool)


async def build_stage(settings: Settings) -> StageSpec:
    stage = IngestStage(settings)
    spec = StageSpec(stage=Stage.INGEST, handler=stage.handle, on_start=stage.start, on_stop=stage.stop,
                     on_dead_letter=stage.record_rejection, ready_check=stage.ready,
                     on_condition=condition_hook(lambda: stage.pool))
    stage.spec = spec
    return spec
