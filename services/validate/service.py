"""The validate stage: CFDI 4.0 verdicts on the stage runtime.

Valid documents go on to the store stage with the facts reports need; invalid ones become dead
letters whose reason is the first failed rule (layer order: transport, schema, seal and
certificate, coherence, stamp) and whose details carry every failed rule with its SAT code.
CPU-bound: one replica uses one core; scale with replicas (partitions bound them).
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter

from services.validate.cfdi import CfdiValidator, StampCertStore, TrustStore, ValidationResult
from services.validate.profile import profile_of, waivable
from shared.cfdi.facts import UnreadableDocument, invoice_lines
from shared.db.batcher import MicroBatcher
from shared.db.conditions import condition_hook
from shared.db.health import db_ready
from shared.db.rejections import RejectionRecorder
from shared.documents import encode_document, receive_document
from shared.domain.messages import MAX_EVENT_LINES, CfdiFacts, DocumentRef, ValidatedDocument, lines_travel
from shared.domain.reasons import ReasonCode
from shared.runtime import Emit, Message, PermanentError, StageSpec
from shared.runtime import headers as H
from shared.runtime.host import ServiceHost
from shared.s3 import S3Store
from shared.settings import Settings
from shared.topics import Stage

log = logging.getLogger("fiscalflow.validate")

WAIVED = Counter("fiscalflow_validate_waived_total", "Invalid documents a lenient job archived with warnings, by "
                 "their first waived rule.", ["rule"])

def build_validator(settings: Settings) -> CfdiValidator:
    trust = TrustStore.default(extra=[p for p in settings.trust_ca.split(":") if p])
    stamps = StampCertStore.from_directory(settings.stamp_certs or None)
    return CfdiValidator(trust, stamps, max_bytes=settings.max_document_bytes)


def facts_of(result: ValidationResult) -> CfdiFacts:
    assert result.uuid and result.emisor_rfc and result.fecha and result.total is not None
    return CfdiFacts(
        uuid=result.uuid.upper(), issuer_rfc=result.emisor_rfc, receiver_rfc=result.receptor_rfc or "",
        fecha=result.fecha, tipo=result.tipo_de_comprobante or "", moneda=result.moneda or "",
        tipo_cambio=result.tipo_cambio if result.tipo_cambio is not None else 1,
        subtotal=result.subtotal or 0, descuento=result.descuento or 0, total=result.total,
        total_mxn=result.total_mxn if result.total_mxn is not None else result.total,
        conceptos=result.conceptos, trust=result.trust or "untrusted", invoice_id=result.invoice_id,
    )


def lines_of(result: ValidationResult, message_max_bytes: int) -> dict[str, Any]:
    """The ``lines`` fields of the messages: the document's lines while they are few and small enough
    to travel (shared/domain/messages.py ``lines_travel``), else ``lines_in_archive`` (the report
    stage reads them from the archived document).  Numbers are read only for lines that travel."""
    raw = result.lines
    if len(raw) > MAX_EVENT_LINES or not lines_travel(len(raw), sum(len(c.description or "") for c in raw),
                                                      message_max_bytes):
        return {"lines_in_archive": True}
    try:
        return {"lines": invoice_lines(raw)}
    except UnreadableDocument:  # not in a schema-valid document; the report then knows no lines
        log.warning("document %s: concept lines unreadable, not carried", result.uuid)
        return {}


# Most documents a replica validates at once (~0.4 ms each: a batch holds the loop for ~15 ms at most).
MAX_BATCH = 32


class BackToBack:
    """Validates the documents of the handlers in flight one after another, in one go.

    Between two validations a handler decodes, builds and encodes its message and hands it to the
    producer, and the runtime does its bookkeeping: code and data enough to push the validator's own
    (schema automaton, catalogues, stylesheet program) out of the CPU caches.  Run back to back, the
    documents find them there, and the handlers then go on one after another too.  Measured on the
    bench corpus (one core, 2 MiB L2): 385-400 µs per document in a loop of validations, 491 µs with
    1 MiB of other memory touched between two, 401 µs with the same memory touched but the
    documents validated 16 at a time; inside the stage the validator took 522 µs.  The stage alone
    (`fiscalflow bench stages`): 757-813 µs of CPU per document before, 574-624 after, in batches of
    mostly 17-25.  The handlers that start together (a poll's worth) submit together: the batch is
    whatever is waiting when the loop comes round, with no delay added.  Verdicts are unchanged:
    each document gets the validator's own.  Priority records are validated at once, not batched.
    """

    def __init__(self, validator: CfdiValidator, max_batch: int = MAX_BATCH) -> None:
        self.validator = validator
        self._batcher: MicroBatcher[tuple[bytes, contextvars.Context], ValidationResult | Exception] = (
            MicroBatcher(self._run, max_batch, 0.0))

    async def validate(self, xml: bytes) -> ValidationResult:
        # Each document is validated in its handler's context: what the validator logs carries
        # that record's trace, not the trace of the batch's first document.
        outcome = await self._batcher.submit((xml, contextvars.copy_context()))
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def _run(self, docs: list[tuple[bytes, contextvars.Context]]) -> list[ValidationResult | Exception]:
        out: list[ValidationResult | Exception] = []
        for xml, ctx in docs:
            try:
                out.append(ctx.run(self.validator.validate, xml))
            except Exception as exc:  # validate() never raises; should it, only its own record fails
                out.append(exc)
        return out


class ValidateStage:
    def __init__(self, host: ServiceHost, validator: CfdiValidator) -> None:
        self.settings = host.settings
        self.validator = validator
        self._validations = BackToBack(validator)
        self.actor = host.actor
        self.pool = host.postgres()
        self.s3 = S3Store(self.settings)
        self.rejections = RejectionRecorder("validate", self.pool, self.actor)

    async def handle(self, msg: Message) -> Sequence[Emit]:
        doc, xml = await receive_document(msg.value, DocumentRef, self.s3)
        # A priority record does not wait for the batch being gathered (decision 0001).
        result = self.validator.validate(xml) if msg.priority else await self._validations.validate(xml)
        profile = profile_of(msg.headers.get(H.RULES))
        warnings = waivable(result, profile)
        if warnings:
            WAIVED.labels(warnings[0].rule).inc()
        elif not result.is_valid:
            rules = result.rules
            raise PermanentError(
                rules[0][0] if rules else ReasonCode.INVALID_CFDI,
                "; ".join(f"{r}{f' ({c})' if c else ''}" for r, c in rules)[:1000],
                {"verdict": result.verdict.value, "rules": [r for r, _ in rules], "sat_codes": result.sat_codes,
                 "uuid": result.uuid},
            )
        # The facts make the message larger than the one received: the size policy decides again.
        validated = ValidatedDocument(**doc.model_dump(), facts=facts_of(result), validation_rules=profile,
                                      warnings=warnings or (), **lines_of(result, self.settings.message_max_bytes))
        _, value = await encode_document(validated, xml, self.s3, self.settings.message_max_bytes)
        return [Emit(value=value)]

    async def ready(self) -> bool:
        return await db_ready(self.pool)


async def build_stage(host: ServiceHost) -> StageSpec:
    settings = host.settings
    stage = ValidateStage(host, build_validator(settings))
    host.hooks("s3 client", stop=stage.s3.close)
    return StageSpec(stage=Stage.VALIDATE, handler=stage.handle, on_dead_letter=stage.rejections,
                     ready_check=stage.ready, on_condition=condition_hook(lambda: stage.pool),
                     max_in_flight=min(settings.max_in_flight, 64))
