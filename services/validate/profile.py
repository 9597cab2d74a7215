"""Seed 000's ``validation_rules`` per job: which failed rules a lenient job lets pass.

Strict (the default) rejects a document on any failed rule.  Lenient archives a document whose
*only* failed rules are in ``LENIENT_RULES``, and records them as warnings on the record (its
registry row, the record view and the stored event).  The set is deliberately narrow: rules about
SAT catalogue usage, presentation (decimal places, RFC shape) and the PAC's stamping window.  It
never includes what would make the document or its amounts untrustworthy: the transport and
schema layers, the seal and the certificate, the stamp's seals, or any sum (subtotal, discounts,
taxes, totals), so the reports' figures are as exact for a lenient job as for a strict one.
"""

from __future__ import annotations

from services.validate.cfdi.result import ValidationResult
from services.validate.cfdi.rules import RuleId
from shared.domain.messages import RuleWarning, ValidationProfile

LENIENT_RULES: frozenset[str] = frozenset(r.value for r in (
    # catalogue usage and combinations (SAT's Matriz de errores)
    RuleId.FORMAPAGO_NOT_ALLOWED, RuleId.FORMAPAGO_PPD_NOT_99, RuleId.METODOPAGO_NOT_ALLOWED,
    RuleId.EXPORTACION_SIN_CCE, RuleId.REGIMEN_EMISOR_PERSONA, RuleId.REGIMEN_RECEPTOR_PERSONA,
    RuleId.DOMICILIO_GENERICO_NE_LUGAR, RuleId.USOCFDI_PAGO, RuleId.USOCFDI_NOMINA,
    # presentation: more decimal places than the currency has, an RFC of the wrong shape
    RuleId.SUBTOTAL_DECIMALS, RuleId.DESCUENTO_DECIMALS, RuleId.TOTAL_DECIMALS,
    RuleId.TOTAL_TRASLADADOS_DECIMALS, RuleId.TOTAL_RETENIDOS_DECIMALS, RuleId.RFC_FORMAT,
    # the PAC stamped outside SAT's 72-hour window (the stamp's own seal is still verified)
    RuleId.TFD_FECHA_RANGE,
))


def profile_of(header: str | None) -> ValidationProfile:
    """The profile a record's ``ff-rules`` header names; anything unreadable is strict (never laxer
    than asked)."""
    return ValidationProfile.LENIENT if header == ValidationProfile.LENIENT.value else ValidationProfile.STRICT


def waivable(result: ValidationResult, profile: ValidationProfile) -> tuple[RuleWarning, ...] | None:
    """The warnings under which ``profile`` archives an invalid ``result``; None: it is rejected."""
    if profile is not ValidationProfile.LENIENT or result.is_valid or not result.violations:
        return None
    if any(rule not in LENIENT_RULES for rule, _ in result.rules):
        return None
    if not (result.uuid and result.emisor_rfc and result.fecha and result.total is not None):
        return None  # the record could not be archived or reported: never lenient about that
    return tuple(RuleWarning(rule=rule, sat_code=code) for rule, code in dict.fromkeys(result.rules))
