"""What the reports need of a CFDI 4.0 document, read back from its XML (an archived document).

The validate stage computes the same facts while it validates (services/validate/service.py
``facts_of``); this reads them from a document already judged valid, so it checks nothing but
refuses what it cannot read.  Amounts are exact decimals; ``total_mxn`` is Total x TipoCambio,
with TipoCambio 1 for MXN and XXX, as the validate stage computes it.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from lxml import etree

from shared.domain.messages import CfdiFacts

CFDI = "{http://www.sat.gob.mx/cfd/4}"
TFD = "{http://www.sat.gob.mx/TimbreFiscalDigital}TimbreFiscalDigital"


class UnreadableDocument(ValueError):
    """The bytes are not a CFDI 4.0 document with the facts the reports need."""


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                           collect_ids=False)


def _dec(value: str | None, name: str) -> Decimal | None:
    if value is None:
        return None
    try:
        d = Decimal(value.strip())
    except (InvalidOperation, ValueError):
        raise UnreadableDocument(f"{name} {value!r} is not a number") from None
    if not d.is_finite():
        raise UnreadableDocument(f"{name} {value!r} is not a number")
    return d


def read_facts(xml: bytes) -> CfdiFacts:
    """The facts of ``xml``; ``UnreadableDocument`` when a fact the reports need is missing."""
    if b"<!DOCTYPE" in xml or b"<!ENTITY" in xml:
        raise UnreadableDocument("a document with a DOCTYPE is never archived")
    try:
        root = etree.fromstring(xml, _parser())
    except etree.XMLSyntaxError as exc:
        raise UnreadableDocument(f"not XML: {exc}") from None
    if root.tag != f"{CFDI}Comprobante":
        raise UnreadableDocument(f"root element {root.tag!r} is not a CFDI 4.0 Comprobante")
    tfd = root.find(f"{CFDI}Complemento/{TFD}")
    emisor, receptor = root.find(f"{CFDI}Emisor"), root.find(f"{CFDI}Receptor")
    uuid = (tfd.get("UUID") or "").strip().upper() if tfd is not None else ""
    issuer = (emisor.get("Rfc") or "").strip() if emisor is not None else ""
    fecha = root.get("Fecha") or ""
    total = _dec(root.get("Total"), "Total")
    if not uuid or not issuer or not fecha or total is None:
        raise UnreadableDocument("no TFD UUID, Emisor Rfc, Fecha or Total")
    moneda = root.get("Moneda") or ""
    tipo_cambio = _dec(root.get("TipoCambio"), "TipoCambio")
    rate = Decimal(1) if moneda in ("MXN", "XXX") or tipo_cambio is None else tipo_cambio
    return CfdiFacts(
        uuid=uuid, issuer_rfc=issuer, receiver_rfc=(receptor.get("Rfc") or "").strip() if receptor is not None else "",
        fecha=fecha, tipo=root.get("TipoDeComprobante") or "", moneda=moneda,
        tipo_cambio=tipo_cambio if tipo_cambio is not None else Decimal(1),
        subtotal=_dec(root.get("SubTotal"), "SubTotal") or Decimal(0),
        descuento=_dec(root.get("Descuento"), "Descuento") or Decimal(0), total=total, total_mxn=total * rate,
        conceptos=len(root.findall(f"{CFDI}Conceptos/{CFDI}Concepto")), trust="",
    )
