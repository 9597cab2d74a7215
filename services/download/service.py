"""The download stage: fetch each record's file from its region's SFTP server, verify it, pass it on.

Per-region pools keep regions independent: while one region's server is down its records wait
on their own breaker (``sftp:<region>``) and the other regions keep flowing.  A verified document
moves the record downloading → downloaded (batched) and travels to validation inline, or as an
S3 claim check when its message would not fit the Kafka message limit (``shared.documents``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable, Sequence

import orjson
from prometheus_client import Counter
from pydantic import ValidationError

from services.download.fetch import Fetched, fetch
from shared.db.batcher import MicroBatcher
from shared.db.conditions import condition_hook
from shared.db.health import db_ready
from shared.db.records import Transition, apply_transitions
from shared.db.rejections import RejectionRecorder
from shared.documents import encode_document
from shared.domain.messages import DocumentRef, DownloadTask
from shared.domain.reasons import ReasonCode
from shared.domain.records import S3_REGION, RecordStatus
from shared.runtime import Emit, Message, PermanentError, StageSpec
from shared.runtime import headers as H
from shared.runtime.admin import topic_partitions
from shared.runtime.budget import current_hold
from shared.runtime.host import ServiceHost
from shared.runtime.tracing import current_trace_id
from shared.s3 import S3Store
from shared.sftp.pool import RegionPool, build_pools
from shared.topics import Stage, input_topic

log = logging.getLogger("fiscalflow.download")

SKIPPED = Counter("fiscalflow_download_skipped_total", "Download tasks for records already past download.")
BYTES = Counter("fiscalflow_download_bytes_total", "Bytes downloaded, by region.", ["region"])

# A replayed dead letter arrives for a rejected record; a redelivery for an already downloaded one.
_DOWNLOADABLE = (RecordStatus.PENDING, RecordStatus.DOWNLOADING, RecordStatus.DOWNLOADED, RecordStatus.REJECTED)


# A changed assignment applies once it has held this long: a rebalance revokes and assigns again
# within seconds, and a share that goes back and forth would close connections only to reopen them.
SHARE_SETTLE_S = 2.0


def connections_for(budget: int, assigned: int, partitions: int) -> int:
    """This replica's share of an issuer's ``budget`` connections: in proportion to the partitions
    of the download topic it holds, rounded down so that the replicas together stay within the
    budget; at least one (the priority lane, and a replica that holds more than its share)."""
    if partitions <= 0 or assigned >= partitions:
        return max(1, budget)
    return max(1, budget * assigned // partitions)


class ConnectionShare:
    """Shares each issuer's connection budget (``sftp_max_connections``) among the download replicas.

    Each replica holding all of its connections, three replicas ask an issuer that takes 10 for 30:
    the first to connect took them all and kept them, the others' connections were refused over and
    over, and the records of their partitions waited (the scaling benchmark: 3 replicas fetched 1,540
    of 3,000 files, 0.87x one replica's rate, then nothing for 30 s).  So each replica asks for its
    share of the budget, in proportion to the download topic's partitions it holds, and hands back
    connections as soon as its share shrinks (a replica joined; a larger share, once it held for
    ``settle_s``).  An empty assignment (a rebalance in
    progress, or more replicas than partitions) changes nothing: a replica with nothing to fetch lets
    its connections go idle, and idle connections close (``shared.sftp.pool.IDLE_CLOSE_S``).

    The topic's partitions are the broker's, not the settings': a topic created before
    ``partitions_download`` changed, or by someone else, keeps its own count, and two replicas
    holding 6 each of a 12-partition topic that the settings call 6 would each take the whole
    budget.  ``partitions`` (the settings') is the first guess, raised at once to the highest
    partition assigned; ``count`` (blocking, run in a thread) then asks the broker at every new
    assignment, a rebalance being when a topic's partitions change."""

    def __init__(self, pools: dict[str, RegionPool], budget: int, topic: str, partitions: int,
                 settle_s: float = SHARE_SETTLE_S, count: Callable[[str], int | None] | None = None) -> None:
        self.pools, self.budget, self.topic, self.partitions = pools, budget, topic, partitions
        self.settle_s = settle_s
        self.connections: int | None = None  # what the pools were last given
        self._pending: asyncio.TimerHandle | None = None
        self._count = count
        self._configured = partitions  # the settings' count, for the log
        self._assigned = 0
        self._lookup: asyncio.Task[None] | None = None

    def __call__(self, parts: frozenset[tuple[str, int]]) -> None:
        # The topic, or the topic in a namespace (tests run pipelines side by side: "<ns>.<topic>").
        mine = [(topic, p) for topic, p in parts if topic == self.topic or topic.endswith("." + self.topic)]
        if not mine:
            return
        self._assigned = len(mine)
        held = 1 + max(p for _, p in mine)  # the topic has at least this many partitions
        self.partitions = max(self.partitions, held)
        self._share()
        if self._count is not None:
            if self._lookup is not None:
                self._lookup.cancel()
            self._lookup = asyncio.get_running_loop().create_task(self._ask_broker(mine[0][0], held))

    async def counted(self) -> None:
        """Until the broker has answered about the latest assignment (or it could not)."""
        if self._lookup is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._lookup

    async def _ask_broker(self, topic: str, held: int) -> None:
        assert self._count is not None
        try:
            n = await asyncio.to_thread(self._count, topic)
        except Exception as exc:  # the share must not fail the stage
            n = None
            log.debug("partition count lookup failed: %s", exc)
        if n is None:
            log.info("the broker did not say how many partitions %s has: the issuers' connections stay "
                     "shared by %d", topic, self.partitions)
            return
        # A broker's metadata may lag an increase just made: never fewer than this replica holds.
        n = max(n, held)
        if n == self.partitions:
            return
        log.warning("%s has %d partitions on the broker (partitions_download is %d): the issuers' connections "
                    "are shared by %d", topic, n, self._configured, n)
        self.partitions = n
        self._share()

    def _share(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        connections = connections_for(self.budget, self._assigned, self.partitions)
        if self.connections is None or connections < self.connections:
            # The first assignment (before any download), or a smaller share: at once, so that a
            # replica that just joined is not refused what this one is to hand back.
            self._apply(connections, self._assigned)
        else:
            self._pending = asyncio.get_running_loop().call_later(self.settle_s, self._apply, connections,
                                                                  self._assigned)

    def _apply(self, connections: int, assigned: int) -> None:
        self._pending = None
        if connections == self.connections:
            return
        log.info("holding %d of %d partitions of %s: %d of %d connections per issuer", assigned, self.partitions,
                 self.topic, connections, self.budget)
        self.connections = connections
        for pool in self.pools.values():
            pool.set_budget(connections)


def region_of(msg: Message) -> str | None:
    """The breaker key: records of a region whose server is down wait without costing attempts."""
    try:
        region = orjson.loads(msg.value).get("region")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    if region == S3_REGION:
        return "s3"  # the S3 source bucket: the same endpoint as the stage's claim checks
    return f"sftp:{region}" if isinstance(region, str) else None


class DownloadStage:
    def __init__(self, host: ServiceHost) -> None:
        self.settings = settings = host.settings
        self.actor = host.actor
        self.pool = host.postgres()
        self.pools = build_pools(settings)
        self.s3 = S3Store(settings)
        self.rejections = RejectionRecorder("download", self.pool, self.actor)
        self._transitions: MicroBatcher[Transition, bool] = MicroBatcher(self._flush, 500, 0.005)

    async def close(self) -> None:
        for p in self.pools.values():
            await p.close()
        await self.s3.close()

    async def handle(self, msg: Message) -> Sequence[Emit]:
        try:
            task = DownloadTask.model_validate_json(msg.value)
        except ValidationError as exc:
            raise PermanentError(ReasonCode.MALFORMED_MESSAGE, str(exc)[:500]) from None
        if task.region == S3_REGION:  # seed 000's source: s3
            data = await self.s3.get_source(self.settings.s3_source_bucket, task.path, self.settings.max_document_bytes)
            current_hold().charge(len(data))  # its size known only once read (capped at max_document_bytes)
            got = Fetched(data, hashlib.sha256(data).hexdigest())
        else:
            pool = self.pools.get(task.region)
            if pool is None:
                raise PermanentError(ReasonCode.UNKNOWN_REGION, f"no SFTP server for region {task.region!r}")
            got = await fetch(pool, task.path, self.settings.max_document_bytes, task.size, priority=msg.priority)
        if task.expected_sha256 and got.sha256 != task.expected_sha256.lower():
            raise PermanentError(ReasonCode.CHECKSUM_MISMATCH,
                                 f"sha256 {got.sha256} != expected {task.expected_sha256}",
                                 {"sha256": got.sha256, "expected": task.expected_sha256, "size": got.size})
        BYTES.labels(task.region).inc(got.size)
        headers = {H.JOB_ID: task.job_id} if task.job_id else {}
        # Decided (and a claim check written) before the transition, whose audit detail names the claim.
        ref, value = await encode_document(
            DocumentRef(record_id=task.record_id, job_id=task.job_id, region=task.region, path=task.path,
                        sha256=got.sha256, size=got.size),
            got.data, self.s3, self.settings.message_max_bytes, headers)
        applied = await self._transitions.submit(Transition(
            record_id=task.record_id, to_status=RecordStatus.DOWNLOADED, allowed_from=_DOWNLOADABLE,
            stage="download", actor=self.actor, idempotency_key=f"{task.record_id}:downloaded:{got.sha256}:"
            f"{H.pass_key(msg.headers)}",
            detail={"sha256": got.sha256, "size": got.size, "claim_key": ref.claim_key},
            trace_id=current_trace_id() or None, fields={"sha256": got.sha256, "size": str(got.size)},
        ))
        if not applied:
            SKIPPED.inc()  # archived (or a duplicate) meanwhile: the later stages already have it
            return []
        return [Emit(value=value, headers=headers)]

    async def _flush(self, items: list[Transition]) -> list[bool]:
        assert self.pool is not None
        return await apply_transitions(self.pool, items)

    async def ready(self) -> bool:
        return await db_ready(self.pool)


async def build_stage(host: ServiceHost) -> StageSpec:
    settings = host.settings
    stage = DownloadStage(host)
    host.hooks("sftp and s3 clients", stop=stage.close)
    # In flight: what every region's pool serves at once (connections × channels × pipelined
    # requests), no more; their documents' bytes are bounded by the byte budget, not by this count.
    capacity = (settings.sftp_max_connections * settings.sftp_channels_per_connection
                * settings.sftp_requests_per_connection * max(1, len(stage.pools)))
    share = ConnectionShare(stage.pools, settings.sftp_max_connections, input_topic(Stage.DOWNLOAD),
                            settings.partitions()[Stage.DOWNLOAD], count=lambda t: topic_partitions(settings, t))
    return StageSpec(stage=Stage.DOWNLOAD, handler=stage.handle, breaker_key=region_of, on_assignment=share,
                     on_dead_letter=stage.rejections, ready_check=stage.ready,
                     on_condition=condition_hook(lambda: stage.pool),
                     max_in_flight=min(settings.download_max_in_flight, capacity),
                     # Each region gets its share of the slots however the topic orders them (decision 0028).
                     fair_key=region_of, look_ahead=settings.download_look_ahead)
