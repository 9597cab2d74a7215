"""What the validator says about one document: verdict, failed rules, and the fields reports need."""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from enum import StrEnum
from typing import Any

from services.validate.cfdi.rules import RuleId, Violation
from shared.cfdi.facts import ConceptLine


class Verdict(StrEnum):
    VALID = "valid"
    INVALID = "invalid"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """Verdict of one document. Amounts are ``Decimal`` as written; ``None`` when absent or unreadable."""

    verdict: Verdict
    violations: tuple[Violation, ...] = ()
    uuid: str | None = None
    emisor_rfc: str | None = None
    receptor_rfc: str | None = None
    fecha: str | None = None
    tipo_de_comprobante: str | None = None
    moneda: str | None = None
    tipo_cambio: Decimal | None = None
    subtotal: Decimal | None = None
    descuento: Decimal | None = None
    total: Decimal | None = None
    total_mxn: Decimal | None = None
    conceptos: int = 0
    trust: str | None = None  # label of the CA the issuer certificate chains to, "untrusted", or None
    sello_sat_verified: bool = False  # False also when the stamping certificate is unknown
    invoice_id: str | None = None  # Serie + Folio as written, joined without separator (seed 000's invoice id)
    lines: tuple[ConceptLine, ...] = ()  # each cfdi:Concepto's attributes as written, in order

    @property
    def rules(self) -> list[tuple[str, str | None]]:
        return [(v.rule.value, v.sat_code.value if v.sat_code else None) for v in self.violations]

    @property
    def rule_ids(self) -> list[str]:
        """Distinct rule ids in the order found (XSD appears once even when several fields failed)."""
        return list(dict.fromkeys(v.rule.value for v in self.violations))

    @property
    def sat_codes(self) -> list[str]:
        """Distinct SAT codes, in the order their rules were found."""
        return list(dict.fromkeys(v.sat_code.value for v in self.violations if v.sat_code))

    @property
    def is_valid(self) -> bool:
        return self.verdict is Verdict.VALID

    def as_duplicate(self) -> ValidationResult:
        return replace(self, verdict=Verdict.DUPLICATE, violations=(Violation.of(RuleId.DUPLICATE_UUID),))

    def to_json_dict(self) -> dict[str, Any]:
        def s(d: Decimal | None) -> str | None:
            return None if d is None else str(d)

        return {
            "verdict": self.verdict.value,
            "rules": self.rule_ids,
            "sat_codes": self.sat_codes,
            "uuid": self.uuid,
            "emisor_rfc": self.emisor_rfc,
            "receptor_rfc": self.receptor_rfc,
            "fecha": self.fecha,
            "tipo": self.tipo_de_comprobante,
            "moneda": self.moneda,
            "tipo_cambio": s(self.tipo_cambio),
            "subtotal": s(self.subtotal),
            "descuento": s(self.descuento),
            "total": s(self.total),
            "total_mxn": s(self.total_mxn),
            "conceptos": self.conceptos,
            "trust": self.trust,
        }
