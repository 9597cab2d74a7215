"""Message bodies between stages: versioned pydantic models, JSON on the wire.

Every body carries ``v`` (its schema version).  A document travels inside its message, as its
own bytes after a small JSON envelope (:data:`DOCUMENT_FRAME`), while the message fits the size
policy (``shared.documents``: under 90 % of the Kafka message limit); a larger one travels as a
claim check (``claim_key``: an S3 staging key) in a plain JSON body instead.  Keys are always the
record id.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.records import RECORD_ID_PATTERN, RECORD_ID_RULE, Priority
from shared.domain.records import ValidationProfile as ValidationProfile  # a job's profile; the field type below


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


# An inline document's message: DOCUMENT_FRAME, the envelope's length (4 bytes, big-endian), the
# envelope (the body's JSON without ``xml``), then the document's bytes as downloaded.  No base64,
# no JSON escaping of 5 KB-5 MB of XML: encoding and decoding is one copy of the bytes (base64 in
# JSON made the message a third larger and cost every stage an encode or decode of it).  A body
# that does not start with the frame is JSON, the document (if any) base64 in ``xml``: what
# stages before this framing wrote, still read so that messages in flight and dead letters
# written before an upgrade stay readable and replayable.
DOCUMENT_FRAME = b"FFD\x01"
_FRAME_HEAD = len(DOCUMENT_FRAME) + 4


class MalformedBody(ValueError):
    """A document message whose frame does not hold together."""


def envelope_of(value: bytes) -> bytes:
    """The JSON part of a message body: a framed document's envelope, else the whole body."""
    if not value.startswith(DOCUMENT_FRAME):
        return value
    n = int.from_bytes(value[len(DOCUMENT_FRAME):_FRAME_HEAD], "big")
    if len(value) < _FRAME_HEAD + n:
        raise MalformedBody(f"document frame: envelope of {n} bytes in a {len(value)}-byte message")
    return value[_FRAME_HEAD:_FRAME_HEAD + n]


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

    def encode(self) -> bytes:
        """A framed message for an inline document (see DOCUMENT_FRAME), JSON for a claim check."""
        if self.xml is None:
            return super().encode()
        envelope = self.model_dump_json(exclude_none=True, exclude={"xml"}).encode()
        return b"".join((DOCUMENT_FRAME, len(envelope).to_bytes(4, "big"), envelope, self.xml))

    @classmethod
    def decode(cls, value: bytes) -> Self:
        """The body of a message: framed (the document after the envelope) or JSON.  Raises
        :class:`MalformedBody` or pydantic's ``ValidationError`` for what is neither."""
        envelope = envelope_of(value)
        if envelope is value:
            return cls.model_validate_json(value)
        doc = cls.model_validate_json(envelope)
        return doc.model_copy(update={"xml": value[_FRAME_HEAD + len(envelope):]})


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
    invoice_id: str | None = None  # Serie + Folio, as written (null when the document has neither)


class InvoiceLine(_Body):
    """One ``cfdi:Concepto`` of a document, in document order (amounts as decimal strings on the wire)."""

    description: str  # Descripcion, as written
    quantity: Decimal  # Cantidad
    unit_price: Decimal  # ValorUnitario
    amount: Decimal  # Importe (Cantidad x ValorUnitario, before Descuento)
    discount: Decimal | None = None  # Descuento; null when the concept has none
    tax_rate: Decimal | None = None  # TasaOCuota of the concept's IVA (002) Traslado; null: none, or Exento
    product_code: str | None = None  # ClaveProdServ


# A document's lines travel in its messages (ValidatedDocument, StoredEvent) only while they are
# few and small: at most MAX_EVENT_LINES lines of at most MAX_EVENT_LINES_BYTES (estimated JSON),
# and never more than 1/16 of the Kafka message limit.  So a typical stored event stays well under
# a few KiB (an invoice has 1 to 20 lines of ~150 bytes each: they always travel), the largest one
# carrying lines about 64 KiB (200 lines of 100-character descriptions: 52 KiB), and even a
# claim-check message of a large document keeps its margin under the limit.  Beyond that the
# messages carry ``lines_in_archive: true`` instead and the report stage reads the lines from the
# archived document (S3), as a rebuild does: a few documents in a thousand, one S3 read each.
# The estimate is deliberately cheap (no encoding): the bound is a budget, not a hard limit.
MAX_EVENT_LINES = 200
MAX_EVENT_LINES_BYTES = 64 * 1024
LINE_JSON_OVERHEAD = 160  # bytes of one line's JSON besides its description: keys, amounts, codes


def lines_travel(count: int, description_chars: int, message_max_bytes: int) -> bool:
    """Whether ``count`` lines whose descriptions hold ``description_chars`` characters may travel
    in the messages (else they stay in the archive)."""
    budget = min(MAX_EVENT_LINES_BYTES, message_max_bytes // 16)
    return count <= MAX_EVENT_LINES and count * LINE_JSON_OVERHEAD + description_chars <= budget


class RuleWarning(_Body):
    """A rule a lenient profile let pass."""

    rule: str
    sat_code: str | None = None


class ValidatedDocument(DocumentRef):
    facts: CfdiFacts
    validation_rules: ValidationProfile = ValidationProfile.STRICT
    warnings: tuple[RuleWarning, ...] = ()
    # The document's lines (see MAX_EVENT_LINES); None with lines_in_archive when too many to carry,
    # None alone from a validate stage older than line items.
    lines: tuple[InvoiceLine, ...] | None = None
    lines_in_archive: bool = False


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
    region: str | None = None  # the issuer region the document was downloaded from
    # As in ValidatedDocument: the lines, or lines_in_archive (read them from s3_key); neither from
    # an older store stage (the report then knows no lines until a rebuild reads the document).
    lines: tuple[InvoiceLine, ...] | None = None
    lines_in_archive: bool = False
