"""The ingest stage: record ids in, download tasks out — and the HTTP job API in the same process.

Each id is looked up (batched); an unknown id is a dead letter (UNKNOWN_RECORD); an archived
or duplicate record is skipped and counted, never reprocessed; a record already past download
is left to the later stages.  Otherwise a guarded, batched transition moves it to downloading
(a redelivery repeats it harmlessly: same audit key, same task) and a DownloadTask goes on.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
from collections.abc import Sequence

from fastapi import FastAPI
from prometheus_client import Counter

from services.ingest.api import IngestContext, create_app
from services.ingest.backpressure import LagMonitor, group_lag
from services.ingest.completion import SWEEP_S, JobCompletions
from services.ingest.reconciler import Reconciler
from services.ingest.requests import parse_request
from shared.db import jobs
from shared.db.batcher import MicroBatcher
from shared.db.conditions import condition_hook
from shared.db.health import db_ready
from shared.db.records import RecordRow, Transition, apply_transitions, lookup
from shared.db.rejections import RejectionRecorder
from shared.domain.messages import DownloadTask
from shared.domain.reasons import ReasonCode
from shared.domain.records import RecordStatus
from shared.runtime import Emit, Message, PermanentError, StageSpec
from shared.runtime import headers as H
from shared.runtime.host import ServiceHost
from shared.runtime.kafka import AsyncProducer, producer_config
from shared.runtime.tracing import current_trace_id
from shared.s3 import S3Store
from shared.sftp.pool import build_pools
from shared.topics import TOPOLOGY, Stage

log = logging.getLogger("fiscalflow.ingest")

REDRIVEN = Counter("fiscalflow_records_redriven_total", "Stalled records started again from download, by who "
                   "asked (job, reconciler, cli).", ["by"])
SKIPPED = Counter("fiscalflow_ingest_skipped_total", "Ingest requests not sent to download, by record status.",
                  ["status"])

# Pending: first time; rejected: a replay or a resubmitted job; downloading: a redelivery.
_STARTABLE = (RecordStatus.PENDING, RecordStatus.REJECTED, RecordStatus.DOWNLOADING)
# Neither final nor waiting to start: a record some stage's message is carrying (or lost).
_IN_FLIGHT = tuple(s for s in RecordStatus
                   if not s.is_final and s not in (RecordStatus.PENDING, RecordStatus.REJECTED))


PROFILE_CACHE = 10_000
DEFAULT_PROFILE = jobs.JobProfile()


def profile_headers(profile: jobs.JobProfile) -> dict[str, str]:
    """The job's profile as the headers its record's messages carry through every stage."""
    out: dict[str, str] = {}
    if profile.validation_rules != DEFAULT_PROFILE.validation_rules:
        out[H.RULES] = profile.validation_rules
    if profile.max_retries is not None:
        out[H.MAX_ATTEMPTS] = str(profile.max_retries + 1)
    return out


class IngestStage:
    def __init__(self, host: ServiceHost) -> None:
        self.settings = settings = host.settings
        self.actor = host.actor
        self.spec: StageSpec | None = None
        self.pool = host.postgres()
        self.rejections = RejectionRecorder("ingest", self.pool, self.actor)
        self._lookups: MicroBatcher[str, RecordRow | None] = MicroBatcher(self._lookup, 500, 0.005)
        self._members: MicroBatcher[tuple[str, str], None] = MicroBatcher(self._add_members, 500, 0.005)
        self._transitions: MicroBatcher[Transition, bool] = MicroBatcher(self._apply, 500, 0.005)
        # Jobs' profiles never change once the job exists: each is read once per process.
        self._profiles: dict[str, jobs.JobProfile] = {}
        self._profile_lookups: MicroBatcher[str, jobs.JobProfile] = MicroBatcher(self._lookup_profiles, 500, 0.005)
        self.lag = LagMonitor(settings, {})  # its groups are the spec's (namespaced in tests): set at open
        self.reconciler: Reconciler | None = None
        self._producer: AsyncProducer | None = None
        self._sftp = build_pools(settings)
        self._s3_source = S3Store(settings)  # source: s3 jobs (a client only once one comes)

    # ------------------------------------------------------------------ the handler
    async def handle(self, msg: Message) -> Sequence[Emit]:
        req = parse_request(msg)
        row = await self._lookups.submit(req.record_id)
        if row is None:
            raise PermanentError(ReasonCode.UNKNOWN_RECORD, f"record {req.record_id!r} is not registered")
        if req.job_id:
            await self._members.submit((req.job_id, req.record_id))
        if row.status in (RecordStatus.ARCHIVED, RecordStatus.DUPLICATE):
            SKIPPED.labels(row.status.value).inc()
            return []
        stalled = self._stalled(row, msg)
        if row.status not in _STARTABLE and not stalled:
            # Downloaded and on its way through validate and store: those messages carry it.
            SKIPPED.labels("in_flight").inc()
            return []
        profile = profile_headers(await self._profile(req.job_id)) if req.job_id else {}
        redrive = self._redrive(row, msg, req.job_id) if stalled else None
        transition = redrive or self._start(row, msg, req.job_id, profile)
        if not await self._transitions.submit(transition):  # another delivery moved it on meanwhile
            SKIPPED.labels("raced").inc()
            return []
        task = DownloadTask(record_id=row.record_id, job_id=req.job_id, region=row.region, path=row.remote_path,
                            expected_sha256=row.expected_sha256, size=row.size)
        headers = {H.JOB_ID: req.job_id, **profile} if req.job_id else {}
        if redrive is not None:
            headers[H.REDRIVE] = str(row.redrives + 1)
        return [Emit(value=task.encode(), headers=headers)]

    def _start(self, row: RecordRow, msg: Message, job_id: str | None, profile: dict[str, str]) -> Transition:
        # The original coordinates survive retries, so a retried message has the same audit key; a
        # redelivered one finds the record downloading and sends its task again.
        origin = (f"{msg.headers.get(H.ORIGIN_TOPIC, msg.topic)}:{msg.headers.get(H.ORIGIN_PARTITION, msg.partition)}"
                  f":{msg.headers.get(H.ORIGIN_OFFSET, msg.offset)}")
        detail: dict[str, object] = {"job_id": job_id, "priority": msg.priority}
        if profile:  # the job's own validation_rules / retry budget, for the record's history
            detail["profile"] = {k.removeprefix(H.PREFIX): v for k, v in profile.items()}
        if H.REDRIVE_BY in msg.headers:  # a pending record whose first request was lost, sent again
            detail["by"] = msg.headers[H.REDRIVE_BY]
        return Transition(
            record_id=row.record_id, to_status=RecordStatus.DOWNLOADING, allowed_from=_STARTABLE, stage="ingest",
            actor=self.actor, idempotency_key=f"{row.record_id}:downloading:{origin}", job_id=job_id,
            detail=detail, trace_id=current_trace_id() or None,
            # the audit key probe only where it matters: off the hot path of records starting fresh
            restart_once=row.status is RecordStatus.REJECTED,
        )

    def _lease_s(self, msg: Message) -> float:
        """The reconciler and the CLI say which lease they selected a record by; a job uses the setting."""
        try:
            return max(1.0, float(msg.headers[H.REDRIVE_LEASE_S]))
        except (KeyError, ValueError):
            return self.settings.redrive_lease_s

    def _stalled(self, row: RecordRow, msg: Message) -> bool:
        """Not final, and no transition for longer than the lease: its messages may have been lost."""
        if row.status in (RecordStatus.PENDING, RecordStatus.REJECTED) or row.updated_at is None:
            return False
        return (dt.datetime.now(dt.UTC) - row.updated_at).total_seconds() > self._lease_s(msg)

    def _redrive(self, row: RecordRow, msg: Message, job_id: str | None) -> Transition:
        """Start a stalled record again from download.  A still-live twin of its earlier pass is
        harmless (every effect is idempotent on the record id); the lease guard lets one of two
        racing re-drives apply; a record that stalls ``redrive_max`` times is rejected."""
        if row.redrives >= self.settings.redrive_max:
            raise PermanentError(ReasonCode.REDRIVE_EXHAUSTED,
                                 f"record {row.record_id} stalled at {row.status} {row.redrives + 1} times; "
                                 "its last error or the stage logs say why", {"status": row.status.value})
        lease = self._lease_s(msg)
        by = msg.headers.get(H.REDRIVE_BY) or "job"
        REDRIVEN.labels(by).inc()
        return Transition(
            record_id=row.record_id, to_status=RecordStatus.DOWNLOADING, allowed_from=_IN_FLIGHT, stage="ingest",
            actor=self.actor, idempotency_key=f"{row.record_id}:redriven:{row.attempts}", job_id=job_id,
            reason="REDRIVEN", redrive_lease_s=lease, trace_id=current_trace_id() or None,
            detail={"by": by, "job_id": job_id, "stalled_at": row.status.value, "lease_s": lease,
                    "last_transition": row.updated_at.isoformat() if row.updated_at else None,
                    "redrive": row.redrives + 1, "priority": msg.priority},
        )

    # ------------------------------------------------------------------ batched statements
    async def _lookup(self, ids: list[str]) -> list[RecordRow | None]:
        assert self.pool is not None
        found = await lookup(self.pool, list(set(ids)))
        return [found.get(i) for i in ids]

    async def _profile(self, job_id: str) -> jobs.JobProfile:
        profile = self._profiles.get(job_id)
        if profile is None:
            profile = await self._profile_lookups.submit(job_id)
            if len(self._profiles) >= PROFILE_CACHE:
                self._profiles.clear()
            self._profiles[job_id] = profile
        return profile

    async def _lookup_profiles(self, job_ids: list[str]) -> list[jobs.JobProfile]:
        assert self.pool is not None
        found = await jobs.profiles(self.pool, sorted(set(job_ids)))
        return [found.get(j, DEFAULT_PROFILE) for j in job_ids]

    async def _add_members(self, pairs: list[tuple[str, str]]) -> list[None]:
        assert self.pool is not None
        await jobs.add_members(self.pool, sorted(set(pairs)))
        return [None] * len(pairs)

    async def _apply(self, items: list[Transition]) -> list[bool]:
        assert self.pool is not None
        return await apply_transitions(self.pool, items)

    # ------------------------------------------------------------------ parts: producer, periodic tasks, HTTP API
    async def _backlog(self, stages: Sequence[Stage]) -> int:
        """Unconsumed messages on the stages' input topics (every lane), for the reconciler."""
        groups: dict[str, list[str]] = {}
        for stage in stages:
            groups.update(TOPOLOGY[stage].subscriptions(namespace=self.namespace()))
        return await asyncio.to_thread(group_lag, self.settings, groups)

    def namespace(self) -> str:
        return self.spec.topic_namespace if self.spec is not None else ""

    async def open(self) -> None:
        """The API's and the reconciler's producer (the runner has its own)."""
        s = self.settings
        assert self.spec is not None
        self.lag.groups = {self.spec.consumer_group: [self.spec.normal_topic],
                           self.spec.priority_group: [self.spec.priority_topic]}
        self._producer = AsyncProducer(producer_config(s, f"fiscalflow-ingest-api-{socket.gethostname()}"))
        self.reconciler = Reconciler(self.pool, self._producer, s.redrive_lease_s, self._backlog, self.namespace)

    async def close(self) -> None:
        if self._producer is not None:
            await asyncio.to_thread(self._producer.close)
        for p in self._sftp.values():
            await p.close()
        await self._s3_source.close()

    async def reconcile(self) -> None:
        assert self.reconciler is not None
        await self.reconciler.tick()

    def api(self) -> FastAPI:
        assert self._producer is not None
        # Job completion callbacks are the report service's (signed, retried): one sender only.
        return create_app(IngestContext(self.settings, self.pool, self._producer, self._sftp, self.lag,
                                        self.namespace, self._s3_source))

    async def ready(self) -> bool:
        return await db_ready(self.pool)


async def build_stage(host: ServiceHost) -> StageSpec:
    s = host.settings
    stage = IngestStage(host)
    spec = StageSpec(stage=Stage.INGEST, handler=stage.handle, on_dead_letter=stage.rejections,
                     ready_check=stage.ready, on_condition=condition_hook(lambda: stage.pool))
    stage.spec = spec
    # Started in this order after the pool; stopped in the reverse one once the runner has drained.
    host.hooks("ingest producer", stage.open, stage.close)
    host.every("lag monitor", stage.lag.interval_s, stage.lag.tick)
    host.every("job completions", SWEEP_S, JobCompletions(stage.pool).tick)
    if s.redrive_interval_s > 0:
        host.every("reconciler", s.redrive_interval_s, stage.reconcile)
    host.api("ingest API", stage.api, s.ingest_port)
    return spec
