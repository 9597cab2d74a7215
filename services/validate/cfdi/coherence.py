"""L3: arithmetic and coherence rules of CFDI 4.0 that need only the document (spec §3).

Runs on a schema-valid document, so every amount parses as a decimal and every catalog code is
known; values are compared as ``Decimal`` (never float).  "Redondeo" is half-up to the currency's
decimals, applied to sums; concept-level values keep the decimals they were written with.
"""

from __future__ import annotations

import pickle
import re
import sqlite3
from collections.abc import Iterable
from datetime import date
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_HALF_UP, Context, Decimal, InvalidOperation, localcontext
from functools import cache

from lxml import etree

from services.validate.cfdi.rules import RuleId, Violation
from shared.cfdi.sat_files import satcfdi_root

CFDI = "{http://www.sat.gob.mx/cfd/4}"
IMPLOCAL = "{http://www.sat.gob.mx/implocal}"
CCE_NAMESPACES = ("{http://www.sat.gob.mx/ComercioExterior20}", "{http://www.sat.gob.mx/ComercioExterior11}")

RFC_PUBLICO = "XAXX010101000"
RFC_EXTRANJERO = "XEXX010101000"
GENERIC_RFCS = frozenset({RFC_PUBLICO, RFC_EXTRANJERO})
PUBLICO_EN_GENERAL = "PUBLICO EN GENERAL"

# c_RegimenFiscal: who may use each regime (spec §3; 610/626 both).  609/628/629/630 are left
# unconstrained, as the reference validator does: their columns changed across catalogue versions.
REGIMEN_SOLO_MORAL = frozenset({"601", "603", "620", "622", "623", "624"})
REGIMEN_SOLO_FISICA = frozenset({"605", "606", "607", "608", "611", "612", "614", "615", "616", "621", "625"})

# c_TasaOCuota (phpcfdi resources-sat-catalogs, cfdi_40_reglas_tasa_cuota)
IVA_TRASLADO_TASAS = frozenset(Decimal(v) for v in ("0", "0.08", "0.16"))
IEPS_TASAS = frozenset(Decimal(v) for v in ("0.265", "0.30", "0.53", "0.50", "1.60", "0.304", "0.25", "0.09",
                                            "0.08", "0.07", "0.06", "0.03", "0"))
IEPS_CUOTA_MAX = Decimal("66.5062")
IVA_RETENCION_MAX = Decimal("0.16")
ISR_RETENCION_MAX = Decimal("0.35")
ISR, IVA, IEPS = "001", "002", "003"
TAX_CONCEPT_OBJETOS_SIN_IMPUESTOS = frozenset({"01", "03", "04", "05"})
_EPS = Decimal("1e-12")
_XS_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
# Products of two 64-character amounts, quantized to a unit, fit exactly.
_CONTEXT = Context(prec=160)
_ZERO = Decimal(0)


@cache
def currency_decimals() -> dict[str, int]:
    """c_Moneda → decimals, from satcfdi's bundled catalogue (pickled values; the bundled file only)."""
    db = sqlite3.connect(f"file:{satcfdi_root() / 'catalogs' / 'catalogs.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT key, value FROM C756_c_Moneda").fetchall()
    finally:
        db.close()
    return {pickle.loads(k): int(pickle.loads(v)[1]) for k, v in rows}


def dec(value: str | None) -> Decimal | None:
    """An xs:decimal (no exponent, no NaN/Infinity, at most 64 characters), else None.

    An amount such as ``1E+30`` is not a CFDI amount, and quantizing it to cents would need more
    digits than any context holds: found by the property test of mutated attributes, which made
    the validator answer VALIDATOR_ERROR instead of a verdict."""
    if value is None:
        return None
    text = value.strip()
    if len(text) > 64:
        return None
    # The usual amount ("1234.56"): ASCII digits with at most one point, no sign.  Checked by str
    # methods, ~4x cheaper than the expression, which still decides everything else.
    digits = text.replace(".", "", 1)
    if not (digits and digits.isascii() and digits.isdigit()) and not _XS_DECIMAL.fullmatch(text):
        return None
    try:
        return Decimal(text)
    except (InvalidOperation, ValueError):
        return None


def decimals_of(value: str | None) -> int:
    if value is None:
        return 0
    text = value.strip()
    return len(text) - text.index(".") - 1 if "." in text else 0


def round_half_up(value: Decimal, places: int) -> Decimal:
    return value.quantize(_unit(places), rounding=ROUND_HALF_UP)


@cache
def _unit(places: int) -> Decimal:
    return Decimal(1).scaleb(-places)


@cache
def _half_unit(places: int) -> Decimal:
    return Decimal(5).scaleb(-places - 1)


def _places(text: str) -> int:
    """Decimals of an already stripped amount."""
    dot = text.find(".")
    return len(text) - dot - 1 if dot >= 0 else 0


def within_limits(a: str, b: Decimal, result: str) -> bool:
    """SAT's tolerance for a product (Cantidad × ValorUnitario, Base × Tasa): each factor written with
    d decimals may be off by half a unit; the result is truncated / rounded up to its own decimals."""
    return _within(a.strip(), dec(a), b, result.strip(), dec(result))


def _within(a_text: str, x: Decimal | None, b: Decimal, result_text: str, r: Decimal | None) -> bool:
    if x is None or r is None:
        return False
    unit = _unit(_places(result_text))
    half = _half_unit(_places(a_text))
    lower = ((x - half) * b).quantize(unit, rounding=ROUND_DOWN)
    upper = ((x + half - _EPS) * b).quantize(unit, rounding=ROUND_CEILING)
    return lower <= r <= upper


def importe_within_limits(cantidad: str, valor: str, importe: str) -> bool:
    return _importe_within(cantidad.strip(), valor.strip(), importe.strip(), dec(valor), dec(importe))


def _importe_within(cantidad_text: str, valor_text: str, importe_text: str, v: Decimal | None,
                    i: Decimal | None) -> bool:
    c = dec(cantidad_text)
    if c is None or v is None or i is None:
        return False
    unit = _unit(_places(importe_text))
    hc, hv = _half_unit(_places(cantidad_text)), _half_unit(_places(valor_text))
    lower = ((c - hc) * (v - hv)).quantize(unit, rounding=ROUND_DOWN)
    upper = ((c + hc - _EPS) * (v + hv - _EPS)).quantize(unit, rounding=ROUND_CEILING)
    return lower <= i <= upper


def rfc_format_ok(rfc: str) -> bool:
    """t_RFC's shape plus a real date (the XSD lets Feb 30 through). No check digit: SAT doesn't enforce it."""
    n = len(rfc)
    if n not in (12, 13):
        return False
    letters, ymd, tail = rfc[: n - 9], rfc[n - 9 : n - 3], rfc[n - 3 :]
    if not all(ch.isalpha() or ch in "&Ñ" for ch in letters) or not ymd.isdigit() or not tail.isalnum():
        return False
    yy, mm, dd = int(ymd[:2]), int(ymd[2:4]), int(ymd[4:])
    try:
        # the century is unknown; 2000+yy has the leap years of 19yy too (1900 aside, and 2000 is leap)
        date(2000 + yy, mm, dd)
    except ValueError:
        return False
    return True


def _persona(rfc: str) -> str | None:
    return "moral" if len(rfc) == 12 else "fisica" if len(rfc) == 13 else None


def _regimen_fits(rfc: str, regimen: str) -> bool:
    persona = _persona(rfc)
    if persona == "moral":
        return regimen not in REGIMEN_SOLO_FISICA
    if persona == "fisica":
        return regimen not in REGIMEN_SOLO_MORAL
    return True


def _a(el: etree._Element | None, name: str) -> str | None:
    if el is None:
        return None
    v = el.get(name)
    return v.strip() if v is not None else None


def _attrs(el: etree._Element, names: tuple[str, ...]) -> list[str | None]:
    """Several ``_a`` at once (one call instead of one per attribute: this is the hot loop)."""
    get = el.get
    return [None if (v := get(name)) is None else v.strip() for name in names]


Children = dict[str, list[etree._Element]]


def children_by_tag(el: etree._Element | None) -> Children:
    """Element children by tag, in one pass (each lxml ``find`` parses its path: ~2 µs)."""
    kids: Children = {}
    if el is not None:
        for child in el:
            kids.setdefault(child.tag, []).append(child)  # comments' "tag" is a function: never looked up
    return kids


def _grandchildren(kids: Children, tag: str, child_tag: str) -> list[etree._Element]:
    """ElementPath's ``tag/child_tag`` from an element whose children are ``kids``."""
    return [g for k in kids.get(tag, ()) for g in k.iterchildren(child_tag)]


def first_child(kids: Children, tag: str) -> etree._Element | None:
    found = kids.get(tag)
    return found[0] if found else None


def _sum(values: Iterable[Decimal | None]) -> Decimal:
    total = _ZERO
    for d in values:
        if d is not None:
            total += d
    return total


class _Found:
    def __init__(self) -> None:
        self.items: list[Violation] = []

    def add(self, rule: RuleId) -> None:
        v = Violation.of(rule)
        if v not in self.items:
            self.items.append(v)


class _Tax:
    """One Traslado/Retención line, each attribute read and parsed once."""

    __slots__ = ("base", "base_s", "factor", "importe", "importe_s", "impuesto", "tasa", "tasa_s")

    def __init__(self, el: etree._Element) -> None:
        self.base_s, self.impuesto, self.factor, self.tasa_s, self.importe_s = _attrs(el, _TAX_ATTRIBUTES)
        self.base, self.tasa, self.importe = dec(self.base_s), dec(self.tasa_s), dec(self.importe_s)

    @property
    def key(self) -> tuple[str, str, Decimal | None]:
        return self.impuesto or "", self.factor or "", self.tasa


_TAX_ATTRIBUTES = ("Base", "Impuesto", "TipoFactor", "TasaOCuota", "Importe")
_COMPROBANTE_ATTRIBUTES = ("TipoDeComprobante", "Moneda", "FormaPago", "MetodoPago", "SubTotal", "Descuento",
                           "Total", "TipoCambio", "LugarExpedicion", "Exportacion")
_CONCEPTO_ATTRIBUTES = ("Importe", "ValorUnitario", "Cantidad", "Descuento", "ObjetoImp")
_RECEPTOR_ATTRIBUTES = ("Rfc", "Nombre", "RegimenFiscalReceptor", "DomicilioFiscalReceptor", "UsoCFDI")


def coherence_violations(root: etree._Element) -> list[Violation]:
    with localcontext(_CONTEXT):
        return _coherence_violations(root)


def _coherence_violations(root: etree._Element) -> list[Violation]:
    f = _Found()
    (tipo_a, moneda_a, forma, metodo, subtotal_s, descuento_s, total_s, tipo_cambio_s, lugar,
     exportacion) = _attrs(root, _COMPROBANTE_ATTRIBUTES)
    tipo, moneda = tipo_a or "", moneda_a or ""
    places = currency_decimals().get(moneda, 2)
    subtotal, descuento, total = dec(subtotal_s) or _ZERO, dec(descuento_s), dec(total_s) or _ZERO
    ingreso_like = tipo in ("I", "E", "N")
    sin_montos = tipo in ("T", "P")
    kids = children_by_tag(root)

    # --- FormaPago / MetodoPago -------------------------------------------------------------
    if (sin_montos or tipo == "N") and forma is not None:
        f.add(RuleId.FORMAPAGO_NOT_ALLOWED)
    if metodo == "PPD" and forma is not None and forma != "99":
        f.add(RuleId.FORMAPAGO_PPD_NOT_99)
    if sin_montos and metodo is not None:
        f.add(RuleId.METODOPAGO_NOT_ALLOWED)

    # --- emisor / receptor ------------------------------------------------------------------
    emisor, receptor = first_child(kids, f"{CFDI}Emisor"), first_child(kids, f"{CFDI}Receptor")
    emisor_rfc = _a(emisor, "Rfc") or ""
    receptor_rfc_a, receptor_nombre_a, receptor_regimen, domicilio, uso = (
        _attrs(receptor, _RECEPTOR_ATTRIBUTES) if receptor is not None else [None] * 5)
    receptor_rfc = receptor_rfc_a or ""
    receptor_nombre = " ".join((receptor_nombre_a or "").split())
    for rfc in (emisor_rfc, receptor_rfc):
        if not rfc_format_ok(rfc):
            f.add(RuleId.RFC_FORMAT)
    if not _regimen_fits(emisor_rfc, _a(emisor, "RegimenFiscal") or ""):
        f.add(RuleId.REGIMEN_EMISOR_PERSONA)
    generic = receptor_rfc in GENERIC_RFCS
    # generic RFCs stand for people SAT doesn't know: their regime is not a persona test
    if not generic and not _regimen_fits(receptor_rfc, receptor_regimen or ""):
        f.add(RuleId.REGIMEN_RECEPTOR_PERSONA)
    if generic and domicilio != lugar:
        f.add(RuleId.DOMICILIO_GENERICO_NE_LUGAR)
    global_info = first_child(kids, f"{CFDI}InformacionGlobal")
    publico = receptor_rfc == RFC_PUBLICO and receptor_nombre == PUBLICO_EN_GENERAL
    if global_info is not None and not publico:
        f.add(RuleId.GLOBAL_RECEPTOR)
    if global_info is None and publico:
        f.add(RuleId.GLOBAL_SIN_INFORMACIONGLOBAL)
    if tipo == "P" and uso != "CP01":
        f.add(RuleId.USOCFDI_PAGO)
    if tipo == "N" and uso != "CN01":
        f.add(RuleId.USOCFDI_NOMINA)

    # --- Moneda / TipoCambio ----------------------------------------------------------------
    tipo_cambio = dec(tipo_cambio_s)
    if moneda == "MXN" and tipo_cambio is not None and tipo_cambio != 1:
        f.add(RuleId.TIPOCAMBIO_MXN_NOT_1)
    if moneda not in ("MXN", "XXX") and tipo_cambio_s is None:
        f.add(RuleId.TIPOCAMBIO_REQUIRED)
    if moneda == "XXX" and tipo_cambio_s is not None:
        f.add(RuleId.TIPOCAMBIO_NOT_ALLOWED)
    if moneda != "XXX":
        # XXX ("no currency") has 0 decimals in c_Moneda, yet T/P documents write "0.00"; SAT checks
        # these three against real currencies only.
        if decimals_of(subtotal_s) > places:
            f.add(RuleId.SUBTOTAL_DECIMALS)
        if descuento_s is not None and decimals_of(descuento_s) > places:
            f.add(RuleId.DESCUENTO_DECIMALS)
        if decimals_of(total_s) > places:
            f.add(RuleId.TOTAL_DECIMALS)
    complementos = kids.get(f"{CFDI}Complemento", [])
    if exportacion == "02":
        cce = [ns + "ComercioExterior" for ns in CCE_NAMESPACES]
        if not any(True for c in complementos for _ in c.iterchildren(*cce)):
            f.add(RuleId.EXPORTACION_SIN_CCE)

    # --- conceptos --------------------------------------------------------------------------
    sum_importe = _ZERO
    sum_descuento = _ZERO
    any_concept_descuento = False
    traslado_groups: dict[tuple[str, str, Decimal | None], list[Decimal]] = {}
    retencion_groups: dict[str, Decimal] = {}
    for c in _grandchildren(kids, f"{CFDI}Conceptos", f"{CFDI}Concepto"):
        importe_s, valor_s, cantidad_s, c_desc_s, objeto = _attrs(c, _CONCEPTO_ATTRIBUTES)
        importe_d = dec(importe_s)
        importe = importe_d or _ZERO
        sum_importe += importe
        if c_desc_s is not None:
            any_concept_descuento = True
            c_desc = dec(c_desc_s) or _ZERO
            sum_descuento += c_desc
            if c_desc > importe:
                f.add(RuleId.CONCEPTO_DESCUENTO_GT_IMPORTE)
        valor = dec(valor_s)
        if ingreso_like and (valor is None or valor <= 0):
            f.add(RuleId.VALORUNITARIO_NOT_POSITIVE)
        if cantidad_s is not None and valor_s is not None and importe_s is not None:
            if not _importe_within(cantidad_s, valor_s, importe_s, valor, importe_d):
                f.add(RuleId.IMPORTE_OUT_OF_LIMITS)
        concept_kids = children_by_tag(c)
        impuestos = first_child(concept_kids, f"{CFDI}Impuestos")
        if objeto == "02" and impuestos is None:
            f.add(RuleId.OBJETOIMP_02_SIN_IMPUESTOS)
        if objeto in TAX_CONCEPT_OBJETOS_SIN_IMPUESTOS and impuestos is not None:
            f.add(RuleId.OBJETOIMP_CON_IMPUESTOS)
        if impuestos is None:
            continue
        impuestos_kids = children_by_tag(impuestos)
        for t in map(_Tax, _grandchildren(impuestos_kids, f"{CFDI}Traslados", f"{CFDI}Traslado")):
            _check_concept_traslado(t, f)
            sums = traslado_groups.setdefault(t.key, [_ZERO, _ZERO])
            sums[0] += t.base or _ZERO
            sums[1] += t.importe or _ZERO
        for r in map(_Tax, _grandchildren(impuestos_kids, f"{CFDI}Retenciones", f"{CFDI}Retencion")):
            _check_concept_retencion(r, f)
            impuesto = r.impuesto or ""
            retencion_groups[impuesto] = retencion_groups.get(impuesto, _ZERO) + (r.importe or _ZERO)

    # --- SubTotal / Descuento / Total -------------------------------------------------------
    if ingreso_like and subtotal != round_half_up(sum_importe, places):
        f.add(RuleId.SUBTOTAL_NE_SUM)
    if sin_montos:
        if subtotal != 0:
            f.add(RuleId.SUBTOTAL_NOT_ZERO)
        if total != 0:
            f.add(RuleId.TOTAL_NOT_ZERO)
        if descuento_s is not None or any_concept_descuento:
            f.add(RuleId.DESCUENTO_NOT_ALLOWED)
    if descuento is not None and descuento > subtotal:
        f.add(RuleId.DESCUENTO_GT_SUBTOTAL)
    if ingreso_like:
        expected = round_half_up(sum_descuento, places)
        if (descuento is None and any_concept_descuento and expected != 0) or (
                descuento is not None and descuento != expected):
            f.add(RuleId.DESCUENTO_NE_SUM)

    # --- comprobante-level Impuestos --------------------------------------------------------
    imp = first_child(kids, f"{CFDI}Impuestos")
    tot_tras_s, tot_ret_s = _a(imp, "TotalImpuestosTrasladados"), _a(imp, "TotalImpuestosRetenidos")
    if imp is not None:
        if sin_montos:
            f.add(RuleId.IMPUESTOS_NOT_ALLOWED)
        _check_global_taxes(imp, tot_tras_s, tot_ret_s, places, traslado_groups, retencion_groups, f)
    elif traslado_groups or retencion_groups:
        # concept taxes but no summary: every group is missing from it
        f.add(RuleId.TRASLADO_NE_CONCEPTOS if traslado_groups else RuleId.RETENCION_NE_CONCEPTOS)
        if retencion_groups and traslado_groups:
            f.add(RuleId.RETENCION_NE_CONCEPTOS)

    if ingreso_like:
        implocal = next((i for c in complementos for i in c.iterchildren(f"{IMPLOCAL}ImpuestosLocales")), None)
        local = _ZERO
        if implocal is not None:
            local = (dec(_a(implocal, "TotaldeTraslados")) or _ZERO) - (dec(_a(implocal, "TotaldeRetenciones"))
                                                                      or _ZERO)
        expected_total = round_half_up(subtotal - (descuento or _ZERO) + (dec(tot_tras_s) or _ZERO)
                                       - (dec(tot_ret_s) or _ZERO) + local, places)
        if total != expected_total:
            f.add(RuleId.TOTAL_MISMATCH)
    return f.items


def _check_concept_traslado(t: _Tax, f: _Found) -> None:
    if t.factor == "Exento":
        if t.tasa_s is not None or t.importe_s is not None:
            f.add(RuleId.EXENTO_CON_TASA)
        return
    if t.tasa_s is None or t.importe_s is None:
        f.add(RuleId.TRASLADO_SIN_TASA_O_IMPORTE)
    tasa = t.tasa
    if tasa is None:
        return
    if not _traslado_tasa_ok(t.impuesto, t.factor, tasa):
        f.add(RuleId.TASA_TRASLADO_NOT_IN_CATALOG)
    if t.importe_s is not None and t.base_s is not None and not _within(t.base_s, t.base, tasa, t.importe_s,
                                                                         t.importe):
        f.add(RuleId.TRASLADO_IMPORTE_OUT_OF_LIMITS)


def _traslado_tasa_ok(impuesto: str | None, factor: str | None, tasa: Decimal) -> bool:
    if impuesto == IVA and factor == "Tasa":
        return tasa in IVA_TRASLADO_TASAS
    if impuesto == IEPS and factor == "Tasa":
        return tasa in IEPS_TASAS
    if impuesto == IEPS and factor == "Cuota":
        return _ZERO <= tasa <= IEPS_CUOTA_MAX
    return False  # ISR is never transferred; IVA has no cuota


def _check_concept_retencion(r: _Tax, f: _Found) -> None:
    factor, impuesto, tasa = r.factor, r.impuesto, r.tasa
    if factor == "Exento":
        f.add(RuleId.RETENCION_EXENTA)
        return
    if tasa is None:
        return
    ok = (
        (impuesto == ISR and factor == "Tasa" and _ZERO <= tasa <= ISR_RETENCION_MAX)
        or (impuesto == IVA and factor == "Tasa" and _ZERO <= tasa <= IVA_RETENCION_MAX)
        or (impuesto == IEPS and factor == "Tasa" and tasa in IEPS_TASAS)
        or (impuesto == IEPS and factor == "Cuota" and _ZERO <= tasa <= IEPS_CUOTA_MAX)
    )
    if not ok:
        f.add(RuleId.TASA_RETENCION_NOT_IN_CATALOG)
    if r.base_s is not None and r.importe_s is not None and not _within(r.base_s, r.base, tasa, r.importe_s,
                                                                         r.importe):
        f.add(RuleId.RETENCION_IMPORTE_OUT_OF_LIMITS)


def _check_global_taxes(imp: etree._Element, tot_tras_s: str | None, tot_ret_s: str | None, places: int,
                        traslado_groups: dict[tuple[str, str, Decimal | None], list[Decimal]],
                        retencion_groups: dict[str, Decimal], f: _Found) -> None:
    kids = children_by_tag(imp)
    retenciones = [_Tax(r) for r in _grandchildren(kids, f"{CFDI}Retenciones", f"{CFDI}Retencion")]
    traslados = [_Tax(t) for t in _grandchildren(kids, f"{CFDI}Traslados", f"{CFDI}Traslado")]

    # Retenciones: one per Impuesto, each the rounded sum of the concepts' of that Impuesto.
    if retenciones and tot_ret_s is None:
        f.add(RuleId.TOTAL_RETENIDOS_REQUIRED)
    if tot_ret_s is not None:
        if decimals_of(tot_ret_s) > places:
            f.add(RuleId.TOTAL_RETENIDOS_DECIMALS)
        if dec(tot_ret_s) != round_half_up(_sum(r.importe for r in retenciones), places):
            f.add(RuleId.TOTAL_RETENIDOS_NE_SUM)
    seen_ret: set[str] = set()
    for r in retenciones:
        impuesto = r.impuesto or ""
        if impuesto in seen_ret:
            f.add(RuleId.RETENCION_DUPLICADA)
        seen_ret.add(impuesto)
        if impuesto not in retencion_groups or r.importe != round_half_up(retencion_groups[impuesto], places):
            f.add(RuleId.RETENCION_NE_CONCEPTOS)
    if set(retencion_groups) - seen_ret:
        f.add(RuleId.RETENCION_NE_CONCEPTOS)

    # Traslados: one per (Impuesto, TipoFactor, TasaOCuota); Base and Importe = rounded group sums.
    con_tasa = [t for t in traslados if t.factor != "Exento"]
    if con_tasa and tot_tras_s is None:
        f.add(RuleId.TOTAL_TRASLADADOS_REQUIRED)
    if tot_tras_s is not None:
        if decimals_of(tot_tras_s) > places:
            f.add(RuleId.TOTAL_TRASLADADOS_DECIMALS)
        # only complete lines (with TasaOCuota) count: the reference validator and the PAC templates agree
        complete = (t.importe for t in con_tasa if t.tasa_s is not None)
        if dec(tot_tras_s) != round_half_up(_sum(complete), places):
            f.add(RuleId.TOTAL_TRASLADADOS_NE_SUM)
    seen: set[tuple[str, str, Decimal | None]] = set()
    for t in traslados:
        key = t.key
        if key in seen:
            f.add(RuleId.TRASLADO_DUPLICADO)
        seen.add(key)
        incomplete = t.factor != "Exento" and (t.tasa_s is None or t.importe_s is None)
        if incomplete:
            f.add(RuleId.GLOBAL_TRASLADO_SIN_TASA_O_IMPORTE)
        group = traslado_groups.get(key)
        if group is None or incomplete:
            # a summary line that no concept group backs, or one that cannot be compared
            f.add(RuleId.TRASLADO_NE_CONCEPTOS)
            continue
        if t.base != round_half_up(group[0], places):
            f.add(RuleId.TRASLADO_BASE_NE_CONCEPTOS)
        if t.factor != "Exento" and t.importe != round_half_up(group[1], places):
            f.add(RuleId.TRASLADO_IMPORTE_NE_CONCEPTOS)
    if set(traslado_groups) - seen:
        f.add(RuleId.TRASLADO_NE_CONCEPTOS)
