"""What one invoice says: random but SAT-consistent choices, before any XML exists.

Everything random comes from the ``random.Random`` passed in, so a (seed, index) pair always
yields the same draft. The SAT rules that constrain a choice are named where it is made.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal

from shared.issuers import rfc as rfcs
from shared.issuers.amounts import (
    CURRENCY_DECIMALS,
    ZERO,
    ConceptAmounts,
    TaxLine,
    Totals,
    exento_line,
    round_half_up,
    summarize,
    tax_line,
)
from shared.issuers.catalog import (
    BORDER_POSTAL_CODES,
    COMPANY_WORDS_A,
    COMPANY_WORDS_B,
    FORMAS_PAGO,
    GIVEN_NAMES,
    PAGO_PRODUCT,
    POSTAL_CODES,
    PRODUCTS,
    RECEIVER_REGIMES,
    SURNAMES,
    USOS_BY_REGIME,
    Persona,
    Product,
    TaxProfile,
)
from shared.issuers.pki import Issuer

PUBLICO_EN_GENERAL = "PUBLICO EN GENERAL"
IVA16, IVA8, IVA0 = Decimal("0.160000"), Decimal("0.080000"), Decimal("0.000000")
ISR_HONORARIOS, IVA_DOS_TERCIOS = Decimal("0.100000"), Decimal("0.106667")
ISR_RESICO, IVA_FLETE = Decimal("0.012500"), Decimal("0.040000")
IEPS_BEER, IEPS_SNACK = Decimal("0.265000"), Decimal("0.080000")
TIPOS = ("I",) * 85 + ("E",) * 8 + ("P",) * 7
MONEDAS = ("MXN",) * 85 + ("USD",) * 11 + ("EUR",) * 4
FX_RANGES = {"USD": (Decimal("16.8"), Decimal("20.8")), "EUR": (Decimal("18.2"), Decimal("22.5"))}


@dataclass(frozen=True, slots=True)
class Party:
    rfc: str
    name: str
    regimen: str
    persona: Persona
    postal_code: str


@dataclass(frozen=True, slots=True)
class ConceptDraft:
    clave: str
    no_identificacion: str | None
    cantidad: Decimal
    clave_unidad: str
    unidad: str
    descripcion: str
    valor_unitario: Decimal
    objeto_imp: str
    amounts: ConceptAmounts


@dataclass(frozen=True, slots=True)
class DoctoDraft:
    id_documento: str
    folio: str
    parcialidad: int
    saldo_anterior: Decimal
    pagado: Decimal
    base_iva: Decimal
    importe_iva: Decimal


@dataclass(frozen=True, slots=True)
class PagoDraft:
    fecha_pago: datetime
    forma: str
    doctos: tuple[DoctoDraft, ...]

    @property
    def monto(self) -> Decimal:
        return sum((d.pagado for d in self.doctos), ZERO)


@dataclass(frozen=True, slots=True)
class InvoiceDraft:
    serie: str
    folio: str
    fecha: datetime
    tipo: str
    moneda: str
    tipo_cambio: Decimal | None
    forma_pago: str | None
    metodo_pago: str | None
    lugar_expedicion: str
    issuer: Issuer
    receptor: Party
    uso_cfdi: str
    conceptos: tuple[ConceptDraft, ...]
    totals: Totals
    relacionados: tuple[str, ...] = ()
    informacion_global: tuple[str, str, str] | None = None  # Periodicidad, Meses, Año
    pago: PagoDraft | None = None
    condiciones: str | None = None


def uuid_from(rng: random.Random) -> str:
    """A version-4-shaped UUID drawn from the seeded RNG (uuid.uuid4 would break determinism)."""
    value = rng.getrandbits(128)
    value = (value & ~(0xF000 << 64)) | (0x4000 << 64)          # version 4
    value = (value & ~(0xC000 << 48)) | (0x8000 << 48)          # RFC 4122 variant
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def make_receptors(seed: int, count: int = 150) -> list[Party]:
    """The customer population: a mix of companies and individuals, each with a valid regime."""
    rng = random.Random(f"receptors:{seed}")
    parties: dict[str, Party] = {}
    while len(parties) < count:
        persona = Persona.MORAL if rng.random() < 0.55 else Persona.FISICA
        if persona is Persona.MORAL:
            name = f"{rng.choice(COMPANY_WORDS_A)} {rng.choice(COMPANY_WORDS_B)}"
            party_rfc = rfcs.rfc_moral(rng, name)
        else:
            name = f"{rng.choice(GIVEN_NAMES)} {rng.choice(SURNAMES)} {rng.choice(SURNAMES)}"
            party_rfc = rfcs.rfc_fisica(rng, name, rfcs.birth_date(rng))
        parties.setdefault(party_rfc, Party(party_rfc, name, rng.choice(RECEIVER_REGIMES[persona]), persona,
                                            rng.choice(POSTAL_CODES + BORDER_POSTAL_CODES)))
    return list(parties.values())


def _fecha(rng: random.Random, start: date, days: int) -> datetime:
    day = start + timedelta(days=rng.randrange(days))
    return datetime.combine(day, time(7)) + timedelta(seconds=rng.randrange(15 * 3600))


def _pick_decimal(rng: random.Random, low: Decimal, high: Decimal, decimals: int) -> Decimal:
    value = low + (high - low) * Decimal(rng.random())
    return round_half_up(value, decimals)


@dataclass(frozen=True, slots=True)
class _Context:
    """What the tax choice of a concept depends on besides the product."""

    issuer: Issuer
    receptor: Party
    precision: int
    border: bool


def _taxes(ctx: _Context, profile: TaxProfile, base: Decimal) -> tuple[list[TaxLine], list[TaxLine]]:
    p = ctx.precision
    iva_rate = IVA8 if ctx.border else IVA16
    traslados: list[TaxLine] = []
    retenciones: list[TaxLine] = []
    if profile is TaxProfile.EXENTO:
        traslados.append(exento_line(base))
    elif profile is TaxProfile.IVA_ZERO:
        traslados.append(tax_line("002", IVA0, base, p))
    elif profile in (TaxProfile.IEPS_BEER, TaxProfile.IEPS_SNACK):
        ieps = tax_line("003", IEPS_BEER if profile is TaxProfile.IEPS_BEER else IEPS_SNACK, base, p)
        # IVA is charged on the price including IEPS (Ley del IVA art. 18).
        traslados += [ieps, tax_line("002", iva_rate, base + (ieps.importe or ZERO), p)]
    else:
        traslados.append(tax_line("002", iva_rate, base, p))
    # Retentions only when a company pays an individual or a carrier (LISR 106/116, LIVA 1-A).
    if ctx.receptor.persona is Persona.MORAL and ctx.receptor.rfc not in rfcs.GENERIC_RFCS:
        individual = ctx.issuer.persona is Persona.FISICA
        if individual and ctx.issuer.regimen == "626":
            retenciones.append(tax_line("001", ISR_RESICO, base, p))
        elif individual and profile in (TaxProfile.PROFESSIONAL, TaxProfile.RENT):
            retenciones += [tax_line("001", ISR_HONORARIOS, base, p), tax_line("002", IVA_DOS_TERCIOS, base, p)]
        if profile is TaxProfile.FREIGHT:
            retenciones.append(tax_line("002", IVA_FLETE, base, p))
    return traslados, retenciones


def _concept(rng: random.Random, ctx: _Context, product: Product, fx: Decimal, credit_note: bool) -> ConceptDraft:
    p = ctx.precision
    if product.whole_units:
        cantidad = Decimal(rng.randint(1, 3) if product.high > 5000 else rng.randint(1, 24))
    else:
        cantidad = _pick_decimal(rng, Decimal("0.5"), Decimal("80"), rng.choice((1, 2, 3)))
    price = _pick_decimal(rng, product.low, product.high, 6) / fx
    if credit_note:  # a bonificación is a fraction of the original price
        price = price * Decimal(rng.choice(("0.05", "0.1", "0.25")))
    valor_unitario = max(round_half_up(price, max(p, 2)), Decimal(1).scaleb(-max(p, 2)))
    importe = round_half_up(cantidad * valor_unitario, p)
    descuento = None
    if not credit_note and rng.random() < 0.12:
        descuento = round_half_up(importe * Decimal(rng.choice(("0.05", "0.1", "0.15", "0.2"))), p)
    base = importe - (descuento or ZERO)
    roll = rng.random()
    # ObjetoImp 01 (no objeto) / 03 (no obligado al desglose) carry no concept Impuestos (CFDI40172).
    objeto = "01" if roll < 0.03 else "03" if roll < 0.05 else "02"
    traslados, retenciones = _taxes(ctx, product.profile, base) if objeto == "02" else ([], [])
    return ConceptDraft(
        clave=product.clave, no_identificacion=f"SKU-{product.clave[-4:]}-{rng.randrange(1000):03d}",
        cantidad=cantidad, clave_unidad=product.unidad_clave, unidad=product.unidad,
        descripcion=product.descripcion, valor_unitario=valor_unitario, objeto_imp=objeto,
        amounts=ConceptAmounts(importe, descuento, tuple(traslados), tuple(retenciones)),
    )


def _receptor_for(rng: random.Random, issuer: Issuer, receptors: list[Party]) -> Party:
    while True:
        receptor = rng.choice(receptors)
        if receptor.rfc != issuer.rfc:
            return receptor


def _uso_cfdi(rng: random.Random, tipo: str, receptor: Party) -> str:
    if tipo == "P":
        return "CP01"  # CFDI40161
    if tipo == "E" and receptor.regimen not in ("605", "616"):
        return "G02"  # devoluciones, descuentos o bonificaciones
    return rng.choice(USOS_BY_REGIME[receptor.regimen])


def _pago(rng: random.Random, fecha: datetime) -> PagoDraft:
    doctos = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        saldo = _pick_decimal(rng, Decimal("1500"), Decimal("250000"), 2)
        parcialidad = rng.choice((1, 1, 2, 3))
        pagado = saldo if rng.random() < 0.6 else round_half_up(saldo * Decimal(rng.choice(("0.3", "0.5"))), 2)
        # The payment carries IVA 16 % of the paid invoice: base = paid / 1.16, tax on that base.
        base = round_half_up(pagado / (1 + IVA16), 2)
        doctos.append(DoctoDraft(uuid_from(rng).upper(), str(rng.randrange(1000, 99999)), parcialidad, saldo,
                                 pagado, base, round_half_up(base * IVA16, 2)))
    fecha_pago = fecha - timedelta(seconds=rng.randrange(3 * 86400))
    return PagoDraft(fecha_pago, rng.choice(("02", "03", "03", "04", "28")), tuple(doctos))


def draft_invoice(rng: random.Random, issuer: Issuer, receptors: list[Party], folio: int,
                  start: date, days: int, tipo: str | None = None, conceptos: int | None = None) -> InvoiceDraft:
    """``conceptos``: that many concept lines (an ingreso unless ``tipo`` says otherwise), e.g. for
    a document of a given size; by default a few, drawn."""
    if conceptos is not None and conceptos < 1:
        raise ValueError("an invoice has at least one concepto")
    tipo = tipo or ("I" if conceptos else rng.choice(TIPOS))
    fecha = _fecha(rng, start, days)
    lugar = issuer.lugar_expedicion
    receptor = _receptor_for(rng, issuer, receptors)
    informacion_global = None
    if tipo == "I" and rng.random() < 0.05:
        # A global invoice to the public: generic RFC, regime 616, S01, domicile = LugarExpedicion
        # (CFDI40130/40149), and InformacionGlobal for the day.
        receptor = Party("XAXX010101000", PUBLICO_EN_GENERAL, "616", Persona.FISICA, lugar)
        informacion_global = ("01", f"{fecha.month:02d}", str(fecha.year))
    uso = "S01" if informacion_global else _uso_cfdi(rng, tipo, receptor)
    serie = {"I": "F", "E": "NC", "P": "CP"}[tipo]

    if tipo == "P":
        concept = ConceptDraft(PAGO_PRODUCT[0], None, Decimal(1), PAGO_PRODUCT[1], "", PAGO_PRODUCT[2],
                               ZERO, "01", ConceptAmounts(ZERO, None))
        # SubTotal/Total 0, Moneda XXX, no TipoCambio/FormaPago/MetodoPago (CFDI40109/40116/40103/40125).
        return InvoiceDraft(serie, str(folio), fecha, tipo, "XXX", None, None, None, lugar, issuer, receptor, uso,
                            (concept,), summarize([concept.amounts], 0), pago=_pago(rng, fecha))

    moneda = "MXN" if informacion_global else rng.choice(MONEDAS)
    fx = ZERO
    tipo_cambio: Decimal | None = None
    if moneda in FX_RANGES:
        tipo_cambio = _pick_decimal(rng, *FX_RANGES[moneda], rng.choice((4, 6)))
        fx = tipo_cambio
    elif rng.random() < 0.3:
        tipo_cambio = Decimal(1)  # MXN may state TipoCambio="1" (CFDI40114)
    precision = rng.choice((2, 2, 2, 2, 2, 2, 2, 4, 6, 6))
    ctx = _Context(issuer, receptor, precision, lugar in BORDER_POSTAL_CODES and rng.random() < 0.8)
    count = conceptos or (1 + min(14, int(rng.expovariate(0.3))) if tipo == "I" else rng.randint(1, 3))
    lines = tuple(_concept(rng, ctx, rng.choice(PRODUCTS), fx or Decimal(1), tipo == "E") for _ in range(count))
    totals = summarize([c.amounts for c in lines], CURRENCY_DECIMALS[moneda])
    # PPD (paid later) requires FormaPago 99 (CFDI40105); global and credit notes are paid at once.
    metodo = "PPD" if tipo == "I" and not informacion_global and rng.random() < 0.25 else "PUE"
    forma = "99" if metodo == "PPD" else rng.choice(FORMAS_PAGO)
    relacionados = (uuid_from(rng).upper(),) if tipo == "E" else ()
    condiciones = "CREDITO 30 DIAS" if metodo == "PPD" else None
    return InvoiceDraft(serie, str(folio), fecha, tipo, moneda, tipo_cambio, forma, metodo, lugar, issuer,
                        receptor, uso, lines, totals, relacionados, informacion_global,
                        condiciones=condiciones)
