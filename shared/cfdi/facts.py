"""What the reports need of a CFDI 4.0 document, read back from its XML (an archived document).

The validate stage computes the same facts while it validates (services/validate/service.py
``facts_of``); this reads them from a document already judged valid, so it checks nothing but
refuses what it cannot read.  Amounts are exact decimals; ``total_mxn`` is Total x TipoCambio,
with TipoCambio 1 for MXN and XXX, as the validate stage computes it.

The document's lines (its ``cfdi:Concepto`` elements) are read here too, by the same code the
validator uses while it walks the document (:func:`concept_lines`, :func:`invoice_lines`), so the
lines a rebuild reads back from the archive equal the ones the stream carried.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import NamedTuple

from lxml import etree

from shared.domain.messages import CfdiFacts, InvoiceLine

CFDI = "{http://www.sat.gob.mx/cfd/4}"
TFD = "{http://www.sat.gob.mx/TimbreFiscalDigital}TimbreFiscalDigital"


_CONCEPTOS, _CONCEPTO = f"{CFDI}Conceptos", f"{CFDI}Concepto"
_TRASLADO = f"{CFDI}Traslado"
IVA = "002"


class ConceptLine(NamedTuple):
    """A ``cfdi:Concepto``'s attributes as written (None: absent): what the validator keeps while it
    walks the document, cheaply; :func:`invoice_lines` reads the numbers."""

    product_code: str | None  # ClaveProdServ
    description: str | None  # Descripcion
    quantity: str | None  # Cantidad
    unit_price: str | None  # ValorUnitario
    amount: str | None  # Importe
    discount: str | None  # Descuento
    tax_rate: str | None  # TasaOCuota of the first IVA (002) Traslado of the concept


_Head = tuple[str | None, str | None, str | None, str | None, str | None, str | None]  # ConceptLine but its rate


def concept_lines(conceptos: Iterable[etree._Element]) -> tuple[ConceptLine, ...]:
    """The lines under ``conceptos`` (the ``cfdi:Conceptos`` elements), in document order: one pass,
    attribute reads only (no number is parsed, so it never fails).

    One C-level walk yields each Concepto followed by its Traslados (the only ``cfdi:Traslado``
    inside a Concepto is Impuestos/Traslados/Traslado): half the cost of descending Impuestos and
    Traslados per concept (a Python proxy per element), which the validator would pay per document."""
    out: list[ConceptLine] = []
    for parent in conceptos:
        head: _Head | None = None
        rate: str | None = None
        for el in parent.iter(_CONCEPTO, _TRASLADO):
            if el.tag == _CONCEPTO:
                if head is not None:
                    out.append(ConceptLine(*head, rate))
                get = el.get
                head = (get("ClaveProdServ"), get("Descripcion"), get("Cantidad"), get("ValorUnitario"),
                        get("Importe"), get("Descuento"))
                rate = None
            elif head is not None and rate is None and (el.get("Impuesto") or "").strip() == IVA:
                rate = el.get("TasaOCuota") or None  # absent for TipoFactor Exento
        if head is not None:
            out.append(ConceptLine(*head, rate))
    return tuple(out)


def invoice_lines(lines: Iterable[ConceptLine]) -> tuple[InvoiceLine, ...]:
    """``lines`` with their numbers read; ``UnreadableDocument`` when a required one is missing or
    not a number (a schema-valid document has them all)."""
    out = []
    for n, line in enumerate(lines, 1):
        quantity = _dec(line.quantity, f"Concepto {n} Cantidad")
        unit_price = _dec(line.unit_price, f"Concepto {n} ValorUnitario")
        amount = _dec(line.amount, f"Concepto {n} Importe")
        if line.description is None or quantity is None or unit_price is None or amount is None:
            raise UnreadableDocument(f"Concepto {n} has no Descripcion, Cantidad, ValorUnitario or Importe")
        out.append(InvoiceLine(description=line.description, quantity=quantity, unit_price=unit_price, amount=amount,
                               discount=_dec(line.discount, f"Concepto {n} Descuento"),
                               tax_rate=_dec(line.tax_rate, f"Concepto {n} TasaOCuota"),
                               product_code=(line.product_code or "").strip() or None))
    return tuple(out)


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


def _root(xml: bytes) -> etree._Element:
    if b"<!DOCTYPE" in xml or b"<!ENTITY" in xml:
        raise UnreadableDocument("a document with a DOCTYPE is never archived")
    try:
        root = etree.fromstring(xml, _parser())
    except etree.XMLSyntaxError as exc:
        raise UnreadableDocument(f"not XML: {exc}") from None
    if root.tag != f"{CFDI}Comprobante":
        raise UnreadableDocument(f"root element {root.tag!r} is not a CFDI 4.0 Comprobante")
    return root


def read_facts(xml: bytes) -> CfdiFacts:
    """The facts of ``xml``; ``UnreadableDocument`` when a fact the reports need is missing."""
    return _facts(_root(xml))


def read_lines(xml: bytes) -> tuple[InvoiceLine, ...]:
    """The lines of ``xml`` (every ``cfdi:Concepto``, in order); ``UnreadableDocument`` as ``read_facts``."""
    return invoice_lines(concept_lines(_root(xml).iterchildren(_CONCEPTOS)))


def read_document(xml: bytes) -> tuple[CfdiFacts, tuple[InvoiceLine, ...]]:
    """``read_facts`` and ``read_lines`` of one parse."""
    root = _root(xml)
    return _facts(root), invoice_lines(concept_lines(root.iterchildren(_CONCEPTOS)))


def _facts(root: etree._Element) -> CfdiFacts:
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
        invoice_id=((root.get("Serie") or "").strip() + (root.get("Folio") or "").strip()) or None,
    )
