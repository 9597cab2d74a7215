"""Message bodies between stages: versioned pydantic models, JSON on the wire.

Every body carries ``v`` (its schema version).  Documents travel inside the message as base64
while the message fits the size policy (``shared.documents``: under 90 % of the Kafka message
limit); a larger one travels as a claim check (``claim_key``: an S3 staging key) instead.  Keys
are always the record id.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.records import RECORD_ID_PATTERN, RECORD_ID_RULE, Priority


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", ser_json_bytes="base64", val_json_bytes="base64", frozen=True)

    def encode(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class IngestRequest(_Body):
    """What producers publish on ``fiscal.ingest`` (key = record id).  A bare record id as the
    value (UTF-8 text) is accepted too."""

    v: Literal[1] = 1
    record_id: str = Field(pattern=RECORD_ID_PATTERN, description=f"Record id: {RECORD_ID_RULE}.")
    job_id: str | None = None
    priority: Priority = Priority.NORMAL


class DownloadTask(_Body):
    v: Literal[1] = 1
    record_id: str
    job_id: str | None = None
    region: str
    path: str
    expected_sha256: str | None = None
    size: int | None = None


class DocumentRef(_Body):
    """A downloaded document, verified against its checksum."""

    v: Literal[1] = 1
    record_id: str
    job_id: str | None = None
    region: str
    path: str
    sha256: str
    size: int
    xml: bytes | None = None  # inline document
    claim_key: str | None = None  # S3 staging key of a document whose message would be too large


class CfdiFacts(_Body):
    """What reports need from a valid document (amounts as decimal strings)."""

    uuid: str
    issuer_rfc: str
    receiver_rfc: str
    fecha: str  # as written in the document (local time of LugarExpedicion)
    tipo: str
    moneda: str
    tipo_cambio: Decimal
    subtotal: Decimal
    descuento: Decimal
    total: Decimal
    total_mxn: Decimal
    conceptos: int
    trust: str


class ValidatedDocument(DocumentRef):
    facts: CfdiFacts


class StoredEvent(_Body):
    """Published on ``fiscal.stored`` once a document is archived."""

    v: Literal[1] = 1
    record_id: str
    job_id: str | None = None
    s3_key: str
    sha256: str
    size: int
    gz_size: int
    archived_at: str  # ISO-8601 UTC
    facts: CfdiFacts
