"""What the report stage reads, as typed rows: archived documents (fiscal.stored) and dead letters
(fiscal.dlq, whose headers carry the reason).  Pure: no Kafka, no ClickHouse."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import orjson
from pydantic import ValidationError

from shared.domain.messages import StoredEvent
from shared.domain.reasons import ReasonCode
from shared.domain.records import RecordStatus
from shared.runtime import headers as H

# Outcomes are the registry's final statuses, so ClickHouse and PostgreSQL counts line up.
ARCHIVED = RecordStatus.ARCHIVED.value
REJECTED = RecordStatus.REJECTED.value
DUPLICATE = RecordStatus.DUPLICATE.value


@dataclass(frozen=True, slots=True)
class Archived:
    record_id: str
    uuid: str
    issuer_rfc: str
    receiver_rfc: str
    day: dt.date
    fecha: str
    tipo: str
    moneda: str
    tipo_cambio: Decimal
    total: Decimal
    total_mxn: Decimal
    job_id: str
    s3_key: str
    archived_at: dt.datetime
    version: int  # ms; the latest event of a record wins

    def row(self) -> list[object]:
        return [self.record_id, self.uuid, self.issuer_rfc, self.receiver_rfc, self.day, self.fecha, self.tipo,
                self.moneda, self.tipo_cambio, self.total, self.total_mxn, self.job_id, self.s3_key,
                self.archived_at, self.version]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record_id: str
    stage: str
    reason: str
    error: str
    details: str
    origin_topic: str
    attempt: int
    job_id: str
    failed_at: dt.datetime
    version: int

    @property
    def outcome(self) -> str:
        return DUPLICATE if self.reason == ReasonCode.DUPLICATE_UUID else REJECTED

    def row(self) -> list[object]:
        return [self.record_id, self.stage, self.reason, self.error, self.details, self.origin_topic, self.attempt,
                self.job_id, self.failed_at, self.version]


Event = Archived | DeadLetter


def _ms(ts: dt.datetime) -> int:
    return int(ts.timestamp() * 1000)


def parse_stored(value: bytes) -> Archived | None:
    """None for a body that is not a StoredEvent (logged and skipped by the caller: the store stage
    produced it, so it can only be a bug; blocking the partition on it would stop all reports)."""
    try:
        ev = StoredEvent.model_validate_json(value)
        at = dt.datetime.fromisoformat(ev.archived_at.replace("Z", "+00:00"))
        day = dt.date.fromisoformat(ev.facts.fecha[:10])
    except (ValidationError, ValueError):
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    f = ev.facts
    return Archived(record_id=ev.record_id, uuid=f.uuid.upper(), issuer_rfc=f.issuer_rfc.upper(),
                    receiver_rfc=f.receiver_rfc, day=day, fecha=f.fecha, tipo=f.tipo, moneda=f.moneda,
                    tipo_cambio=f.tipo_cambio, total=f.total, total_mxn=f.total_mxn, job_id=ev.job_id or "",
                    s3_key=ev.s3_key, archived_at=at, version=_ms(at))


def parse_dead_letter(key: bytes | None, value: bytes, headers: dict[str, str], timestamp_ms: int) -> DeadLetter:
    """Dead letters keep the original value; the runtime's headers say why."""
    record_id = key.decode("utf-8", "replace") if key else ""
    job_id = headers.get("ff-job-id", "")
    if not job_id:
        try:
            body = orjson.loads(value)
            job_id = str(body.get("job_id") or "") if isinstance(body, dict) else ""
        except orjson.JSONDecodeError:
            pass
    last = headers.get(H.LAST_FAILURE_MS, "")
    version = int(last) if last.isdigit() else timestamp_ms
    try:
        attempt = int(headers.get(H.ATTEMPT, "0") or 0)
    except ValueError:
        attempt = 0
    return DeadLetter(record_id=record_id, stage=headers.get(H.STAGE, ""),
                      reason=headers.get(H.REASON, "") or ReasonCode.MALFORMED_MESSAGE,
                      error=headers.get(H.ERROR_MESSAGE, ""), details=headers.get(H.DETAILS, ""),
                      origin_topic=headers.get(H.ORIGIN_TOPIC, ""), attempt=attempt, job_id=job_id,
                      failed_at=dt.datetime.fromtimestamp(version / 1000, dt.UTC), version=version)
