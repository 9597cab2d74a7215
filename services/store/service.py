"""The store stage: gzip each valid document into S3 under its UUID's single key, move its record
to ``archived`` in PostgreSQL (guarded, with an audit event), and tell the report stage.

Idempotent end to end: a redelivered document finds its object (same sha256) and its record
already archived, writes nothing new and re-emits the same StoredEvent.  A different document
with an archived UUID is a DUPLICATE_UUID dead letter.  S3 or PostgreSQL outages are transient.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Sequence

from services.store.archive import ArchiveObject, BadFacts, build_archive_object
from services.store.bucket import ArchiveBucket, PutOutcome
from shared.db.archive import ArchivedRow, ArchiveResult, archive, archived_by_uuid
from shared.db.batcher import MicroBatcher
from shared.db.conditions import condition_hook
from shared.db.health import db_ready
from shared.db.records import Transition, lookup
from shared.db.rejections import NOT_ARCHIVED, RejectionRecorder
from shared.documents import receive_document
from shared.domain.messages import StoredEvent, ValidatedDocument
from shared.domain.reasons import ReasonCode
from shared.domain.records import RecordStatus
from shared.runtime import Emit, Message, PermanentError, StageSpec, TransientError
from shared.runtime.host import ServiceHost
from shared.runtime.tracing import current_trace_id
from shared.s3 import S3Store
from shared.topics import Stage

log = logging.getLogger("fiscalflow.store")

# gzip of a large document off the event loop above this size (ISA-L: ~0.25 ms at 256 KB, ~1 ms
# at 1 MB, decision 0030; documents reach tens of MB).
_THREAD_GZIP_BYTES = 256 * 1024
BUSY_DELAY_S = 0.02


def _profile_fields(doc: ValidatedDocument) -> dict[str, str]:
    """The profile the document was judged by, and what a lenient one let pass, for the record view."""
    out = {"validation_rules": doc.validation_rules.value}
    if doc.warnings:
        out["warnings"] = json.dumps([w.model_dump(exclude_none=True) for w in doc.warnings])
    return out


def _iso(ts: dt.datetime) -> str:
    return ts.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class StoreStage:
    def __init__(self, host: ServiceHost) -> None:
        self.settings = host.settings
        self.actor = host.actor
        self.pool = host.postgres()
        self.s3 = S3Store(self.settings)
        self.bucket = ArchiveBucket(self.s3)
        self.rejections = RejectionRecorder("store", self.pool, self.actor)
        # Hot path: one look-up and one transition statement per batch of in-flight documents, the
        # batches gathered for 5 ms, or for 20 ms while the stage is busy (shared/db/batcher.py):
        # under load they held a median of 6-9 documents at 5 ms (30,000-invoice throughput run).
        # A batch holding a quarter of the documents in flight goes at once: waiting longer would
        # leave the stage's slots parked in it.
        size = max(8, min(500, self.settings.max_in_flight // 4))
        self._archived: MicroBatcher[str, ArchivedRow | None] = MicroBatcher(
            self._flush_lookups, size, 0.005, busy_delay_s=BUSY_DELAY_S)
        self._transitions: MicroBatcher[Transition, ArchiveResult] = MicroBatcher(
            self._flush_archive, size, 0.005, busy_delay_s=BUSY_DELAY_S)

    # ------------------------------------------------------------------ lifecycle
    async def close(self) -> None:
        await self.bucket.close()
        await self.s3.close()

    async def ready(self) -> bool:
        return await db_ready(self.pool)

    # ------------------------------------------------------------------ handler
    async def handle(self, msg: Message) -> Sequence[Emit]:
        doc, xml = await receive_document(msg.value, ValidatedDocument, self.s3)
        try:
            if len(xml) > _THREAD_GZIP_BYTES:
                obj = await asyncio.to_thread(build_archive_object, xml, doc.facts, self.settings.gzip_level)
            else:
                obj = build_archive_object(xml, doc.facts, self.settings.gzip_level)
        except BadFacts as exc:
            raise PermanentError(ReasonCode.MALFORMED_MESSAGE, str(exc)) from None

        # Cheap check first (batched): most duplicates never touch S3.
        existing = await self._archived.submit(obj.uuid)
        if existing is not None:
            if existing.record_id != doc.record_id:
                raise self._duplicate(doc, obj, existing.record_id, existing.sha256 == obj.sha256)
            # A redelivery: the registry's size is the archived object's (which may be an older gzip).
            return [self._stored(doc, obj, existing.archived_at, existing.s3_key or obj.key,
                                 existing.gz_size or len(obj.body))]

        # gz_size: of the object under the key, ours or one a crashed earlier delivery uploaded.
        outcome, gz_size = await self.bucket.put_once(obj, doc.record_id)
        if outcome is PutOutcome.CONFLICT:
            # The key (UUID + issuer + day) holds another document whose record is not archived
            # (yet): the first upload owns the UUID.
            raise self._duplicate(doc, obj, None, same=False)
        # One archive time for the registry and the event: the reports can then be checked against
        # the registry to the millisecond (services/report/verify.py).
        at = dt.datetime.now(dt.UTC)
        result = await self._transitions.submit(self._transition(msg, doc, obj, at, gz_size))
        if result is ArchiveResult.UUID_TAKEN:
            if outcome is PutOutcome.CREATED:
                # Our key differs from the winner's (else S3 had said 412): leave one object per UUID.
                await self.bucket.delete(obj.key)
            raise self._duplicate(doc, obj, None, same=False)
        if result is ArchiveResult.NOT_APPLIED:
            await self._check_already_archived(doc.record_id)
        return [self._stored(doc, obj, at, obj.key, gz_size)]

    def _transition(self, msg: Message, doc: ValidatedDocument, obj: ArchiveObject, at: dt.datetime,
                    gz_size: int) -> Transition:
        f = doc.facts
        return Transition(
            record_id=doc.record_id, to_status=RecordStatus.ARCHIVED, allowed_from=NOT_ARCHIVED, stage="store",
            actor=self.actor, idempotency_key=f"{doc.record_id}:archived", job_id=doc.job_id,
            detail={"s3_key": obj.key, "sha256": obj.sha256, "gz_size": gz_size, "region": doc.region,
                    **({"validation_rules": doc.validation_rules.value,
                        "warnings": [w.rule for w in doc.warnings]} if doc.warnings else {})},
            trace_id=current_trace_id() or None,
            fields={"s3_key": obj.key, "size": str(obj.size), "sha256": obj.sha256, "gz_size": str(gz_size),
                    "tfd_uuid": obj.uuid, "issuer_rfc": f.issuer_rfc.upper(), "issued_on": obj.issued_on,
                    "trust": f.trust,
                    # what the reports need, so they can be verified and rebuilt from the registry
                    "receiver_rfc": f.receiver_rfc, "fecha": f.fecha, "tipo": f.tipo, "moneda": f.moneda,
                    "tipo_cambio": str(f.tipo_cambio), "total": str(f.total), "total_mxn": str(f.total_mxn),
                    "archived_at": _iso(at), **_profile_fields(doc),
                    **({"invoice_id": f.invoice_id} if f.invoice_id else {})},
        )

    async def _check_already_archived(self, record_id: str) -> None:
        """The guard refused the move: fine if an earlier delivery archived this very record."""
        assert self.pool is not None
        row = (await lookup(self.pool, [record_id])).get(record_id)
        if row is None:
            raise PermanentError(ReasonCode.UNKNOWN_RECORD, f"record {record_id} is not registered")
        if row.status is not RecordStatus.ARCHIVED:  # only possible in a race with another writer
            raise TransientError(f"record {record_id} is {row.status}, not archivable yet", downstream=None)

    def _duplicate(self, doc: ValidatedDocument, obj: ArchiveObject, owner: str | None, same: bool) -> PermanentError:
        return PermanentError(
            ReasonCode.DUPLICATE_UUID,
            f"TFD UUID {obj.uuid} is already archived" + (f" by record {owner}" if owner else ""),
            {"uuid": obj.uuid, "archived_record_id": owner, "same_document": same, "s3_key": obj.key},
        )

    def _stored(self, doc: ValidatedDocument, obj: ArchiveObject, at: dt.datetime, key: str, gz_size: int) -> Emit:
        event = StoredEvent(record_id=doc.record_id, job_id=doc.job_id, s3_key=key, sha256=obj.sha256,
                            size=obj.size, gz_size=gz_size, archived_at=_iso(at), facts=doc.facts,
                            region=doc.region, lines=doc.lines, lines_in_archive=doc.lines_in_archive)
        return Emit(value=event.encode())

    # ------------------------------------------------------------------ batched PostgreSQL
    async def _flush_lookups(self, uuids: list[str]) -> list[ArchivedRow | None]:
        assert self.pool is not None
        found = await archived_by_uuid(self.pool, uuids)
        return [found.get(u) for u in uuids]

    async def _flush_archive(self, items: list[Transition]) -> list[ArchiveResult]:
        assert self.pool is not None
        return await archive(self.pool, items)


async def build_stage(host: ServiceHost, topic_namespace: str = "") -> StageSpec:
    stage = StoreStage(host)
    host.hooks("s3 clients", stop=stage.close)
    return StageSpec(stage=Stage.STORE, handler=stage.handle, on_dead_letter=stage.rejections, ready_check=stage.ready,
                     on_condition=condition_hook(lambda: stage.pool), topic_namespace=topic_namespace,
                     group_id=f"{topic_namespace}-store" if topic_namespace else None)
