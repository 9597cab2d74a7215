"""What the report stage reads, as typed rows: archived documents (fiscal.stored) and dead letters
(fiscal.dlq, whose headers carry the reason, decoded by shared/dlq/model.py like ``fiscalflow
dlq`` does, so both agree on which messages are one dead letter).  Pure: no Kafka, no ClickHouse."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from pydantic import ValidationError

from shared.dlq import model as dlq
from shared.domain.messages import InvoiceLine, StoredEvent
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
    # The document's lines (table invoice_lines); None: not known from this event — too many to
    # travel (lines_in_archive: read them from s3_key) or an event from before line items.
    lines: tuple[InvoiceLine, ...] | None = None
    lines_in_archive: bool = False
    region: str = ""  # the record's issuer region; '' not known (an event from before the store stage sent it)

    def row(self) -> list[object]:
        return [self.record_id, self.uuid, self.issuer_rfc, self.receiver_rfc, self.day, self.fecha, self.tipo,
                self.moneda, self.tipo_cambio, self.total, self.total_mxn, self.job_id, self.s3_key,
                self.archived_at, self.version, self.region]

    def line_rows(self) -> list[list[object]]:
        """Rows of invoice_lines (schema.py LINE_COLUMNS), numbered from 1 in document order."""
        return [[self.record_id, self.uuid, n, line.product_code or "", line.description, line.quantity,
                 line.unit_price, line.amount, line.discount, line.tax_rate, self.version]
                for n, line in enumerate(self.lines or (), 1)]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    letter_id: str  # a redelivered copy has the same one (shared/dlq/model.py letter_id)
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
    region: str = ""  # a dead letter's message need not say: the report service asks the registry (backend.py)

    @property
    def outcome(self) -> str:
        return DUPLICATE if self.reason == ReasonCode.DUPLICATE_UUID else REJECTED

    def row(self) -> list[object]:
        return [self.record_id, self.stage, self.reason, self.error, self.details, self.origin_topic, self.attempt,
                self.job_id, self.failed_at, self.version, self.letter_id, self.region]


@dataclass(frozen=True, slots=True)
class Outcome:
    """A record's final outcome as the registry holds it (a rebuild, services/report/rebuild.py):
    it moves the record's outcome like a dead letter would, but is no dead letter itself."""

    record_id: str
    outcome: str
    reason: str
    job_id: str
    version: int
    region: str = ""


Event = Archived | DeadLetter | Outcome


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
                    s3_key=ev.s3_key, archived_at=at, version=_ms(at), lines=ev.lines,
                    lines_in_archive=ev.lines_in_archive and ev.lines is None, region=ev.region or "")


def parse_dead_letter(topic: str, partition: int, offset: int, timestamp_ms: int, key: bytes | None, value: bytes,
                      headers: dict[str, str]) -> DeadLetter:
    """Dead letters keep the original value; the runtime's headers say why."""
    d = dlq.DeadLetter.from_kafka(topic, partition, offset, timestamp_ms, key, value, headers)
    return DeadLetter(letter_id=d.letter_id, record_id=d.record_id, stage=d.stage,
                      reason=d.reason or ReasonCode.MALFORMED_MESSAGE, error=d.error,
                      details=headers.get(H.DETAILS, ""), origin_topic=d.origin_topic, attempt=d.attempts,
                      job_id=d.job_id or "", failed_at=d.failed_at, version=d.failed_at_ms)
