"""SAT arithmetic of a CFDI 4.0 (CFDI-VALIDATION.md §3), on Decimal only.

Concept-level values keep the precision they are written with (up to 6 decimals); comprobante
values are the *sums* rounded half-up to the currency's decimals. The global Traslado groups are
keyed by (impuesto, factor, tasa) and carry rounded sums of the concept values, never a
recomputed Base × Tasa: that is what SAT's CFDI40215–40221 compare.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

CURRENCY_DECIMALS = {"MXN": 2, "USD": 2, "EUR": 2, "XXX": 0}
ZERO = Decimal(0)


def quantum(decimals: int) -> Decimal:
    return Decimal(1).scaleb(-decimals)


def round_half_up(value: Decimal, decimals: int) -> Decimal:
    return value.quantize(quantum(decimals), rounding=ROUND_HALF_UP)


@dataclass(frozen=True, slots=True)
class TaxLine:
    """A Traslado or Retencion of a concept. Exento traslados have no tasa and no importe."""

    impuesto: str            # 001 ISR, 002 IVA, 003 IEPS
    factor: str              # Tasa | Cuota | Exento
    tasa: Decimal | None
    base: Decimal
    importe: Decimal | None

    @property
    def group(self) -> tuple[str, str, Decimal | None]:
        return (self.impuesto, self.factor, self.tasa)


def tax_line(impuesto: str, tasa: Decimal, base: Decimal, decimals: int) -> TaxLine:
    """A Tasa line whose Importe is Base × Tasa rounded to the concept's precision: always within
    CFDI40180's limits, because rounding stays between the truncated and the rounded-up bounds."""
    return TaxLine(impuesto, "Tasa", tasa, base, round_half_up(base * tasa, decimals))


def exento_line(base: Decimal) -> TaxLine:
    return TaxLine("002", "Exento", None, base, None)


@dataclass(frozen=True, slots=True)
class ConceptAmounts:
    importe: Decimal
    descuento: Decimal | None
    traslados: Sequence[TaxLine] = ()
    retenciones: Sequence[TaxLine] = ()


@dataclass(frozen=True, slots=True)
class Totals:
    subtotal: Decimal
    descuento: Decimal | None
    traslados: list[TaxLine] = field(default_factory=list)     # comprobante-level groups
    retenciones: list[tuple[str, Decimal]] = field(default_factory=list)
    total_trasladados: Decimal | None = None
    total_retenidos: Decimal | None = None
    total: Decimal = ZERO


def _sum(values: Iterable[Decimal]) -> Decimal:
    return sum(values, ZERO)


def summarize(concepts: Sequence[ConceptAmounts], decimals: int) -> Totals:
    """Comprobante-level amounts from the concepts, rounded the way SAT checks them."""
    subtotal = round_half_up(_sum(c.importe for c in concepts), decimals)
    discounts = [c.descuento for c in concepts if c.descuento is not None]
    descuento = round_half_up(_sum(discounts), decimals) if discounts else None

    groups: dict[tuple[str, str, Decimal | None], list[TaxLine]] = {}
    for concept in concepts:
        for line in concept.traslados:
            groups.setdefault(line.group, []).append(line)
    traslados = [
        TaxLine(imp, factor, tasa, round_half_up(_sum(x.base for x in lines), decimals),
                None if factor == "Exento" else round_half_up(_sum(x.importe or ZERO for x in lines), decimals))
        for (imp, factor, tasa), lines in groups.items()
    ]
    by_impuesto: dict[str, Decimal] = {}
    for concept in concepts:
        for line in concept.retenciones:
            by_impuesto[line.impuesto] = by_impuesto.get(line.impuesto, ZERO) + (line.importe or ZERO)
    retenciones = [(imp, round_half_up(total, decimals)) for imp, total in sorted(by_impuesto.items())]

    # Totals are sums of the (already rounded) summary rows; Exento rows have no Importe and stay out.
    taxed = [t.importe for t in traslados if t.importe is not None]
    total_trasladados = round_half_up(_sum(taxed), decimals) if taxed else None
    total_retenidos = round_half_up(_sum(v for _, v in retenciones), decimals) if retenciones else None
    total = round_half_up(
        subtotal - (descuento or ZERO) + (total_trasladados or ZERO) - (total_retenidos or ZERO), decimals)
    return Totals(subtotal, descuento, traslados, retenciones, total_trasladados, total_retenidos, total)


def fmt(value: Decimal) -> str:
    """Plain decimal notation exactly as quantized (never exponent form)."""
    return f"{value:f}"
