"""An unsigned ``cfdi:Comprobante`` tree from a draft, attributes in SAT's order.

Built with lxml directly (not satcfdi's object model): it is the cheap part of a document and
the tree is what SAT's XSLT reads for the cadena original anyway.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from lxml import etree

from tooling.issuers.amounts import ZERO, TaxLine, fmt
from tooling.issuers.draft import ConceptDraft, InvoiceDraft, PagoDraft

CFDI_NS = "http://www.sat.gob.mx/cfd/4"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
PAGO_NS = "http://www.sat.gob.mx/Pagos20"
TFD_NS = "http://www.sat.gob.mx/TimbreFiscalDigital"
CFDI_LOCATION = "http://www.sat.gob.mx/cfd/4 http://www.sat.gob.mx/sitio_internet/cfd/4/cfdv40.xsd"
PAGO_LOCATION = "http://www.sat.gob.mx/Pagos20 http://www.sat.gob.mx/sitio_internet/cfd/Pagos/Pagos20.xsd"
TFD_LOCATION = ("http://www.sat.gob.mx/TimbreFiscalDigital "
                "http://www.sat.gob.mx/sitio_internet/cfd/TimbreFiscalDigital/TimbreFiscalDigitalv11.xsd")
SCHEMA_LOCATION = f"{{{XSI_NS}}}schemaLocation"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"

Attrs = Iterable[tuple[str, str | None]]


def cfdi(tag: str) -> str:
    return f"{{{CFDI_NS}}}{tag}"


def _pago(tag: str) -> str:
    return f"{{{PAGO_NS}}}{tag}"


def _sub(parent: etree._Element, tag: str, attrs: Attrs) -> etree._Element:
    element = etree.SubElement(parent, tag)
    for name, value in attrs:
        if value is not None:
            element.set(name, value)
    return element


def _opt(value: Decimal | None) -> str | None:
    return None if value is None else fmt(value)


def _tax_attrs(line: TaxLine, with_base: bool = True) -> Attrs:
    return [("Base", fmt(line.base) if with_base else None), ("Impuesto", line.impuesto),
            ("TipoFactor", line.factor), ("TasaOCuota", _opt(line.tasa)), ("Importe", _opt(line.importe))]


def _concepto(parent: etree._Element, c: ConceptDraft) -> None:
    a = c.amounts
    node = _sub(parent, cfdi("Concepto"), [
        ("ClaveProdServ", c.clave), ("NoIdentificacion", c.no_identificacion), ("Cantidad", fmt(c.cantidad)),
        ("ClaveUnidad", c.clave_unidad), ("Unidad", c.unidad or None), ("Descripcion", c.descripcion),
        ("ValorUnitario", fmt(c.valor_unitario)), ("Importe", fmt(a.importe)), ("Descuento", _opt(a.descuento)),
        ("ObjetoImp", c.objeto_imp),
    ])
    if not (a.traslados or a.retenciones):
        return
    impuestos = _sub(node, cfdi("Impuestos"), [])
    if a.traslados:
        group = _sub(impuestos, cfdi("Traslados"), [])
        for line in a.traslados:
            _sub(group, cfdi("Traslado"), _tax_attrs(line))
    if a.retenciones:
        group = _sub(impuestos, cfdi("Retenciones"), [])
        for line in a.retenciones:
            _sub(group, cfdi("Retencion"), _tax_attrs(line))


def _impuestos(root: etree._Element, d: InvoiceDraft) -> None:
    t = d.totals
    if not (t.traslados or t.retenciones):
        return
    impuestos = _sub(root, cfdi("Impuestos"), [("TotalImpuestosRetenidos", _opt(t.total_retenidos)),
                                               ("TotalImpuestosTrasladados", _opt(t.total_trasladados))])
    if t.retenciones:  # the XSD wants Retenciones before Traslados here (the reverse of concepts)
        group = _sub(impuestos, cfdi("Retenciones"), [])
        for impuesto, importe in t.retenciones:
            _sub(group, cfdi("Retencion"), [("Impuesto", impuesto), ("Importe", fmt(importe))])
    if t.traslados:
        group = _sub(impuestos, cfdi("Traslados"), [])
        for line in t.traslados:
            _sub(group, cfdi("Traslado"), _tax_attrs(line))


def _pagos(complemento: etree._Element, pago: PagoDraft) -> None:
    pagos = _sub(complemento, _pago("Pagos"), [("Version", "2.0")])
    base = sum((x.base_iva for x in pago.doctos), ZERO)
    importe = sum((x.importe_iva for x in pago.doctos), ZERO)
    monto = fmt(pago.monto)
    _sub(pagos, _pago("Totales"), [("TotalTrasladosBaseIVA16", fmt(base)),
                                   ("TotalTrasladosImpuestoIVA16", fmt(importe)), ("MontoTotalPagos", monto)])
    node = _sub(pagos, _pago("Pago"), [("FechaPago", pago.fecha_pago.strftime(DATE_FORMAT)),
                                       ("FormaDePagoP", pago.forma), ("MonedaP", "MXN"), ("TipoCambioP", "1"),
                                       ("Monto", monto)])
    for docto in pago.doctos:
        dr = _sub(node, _pago("DoctoRelacionado"), [
            ("IdDocumento", docto.id_documento), ("Folio", docto.folio), ("MonedaDR", "MXN"),
            ("EquivalenciaDR", "1"), ("NumParcialidad", str(docto.parcialidad)),
            ("ImpSaldoAnt", fmt(docto.saldo_anterior)), ("ImpPagado", fmt(docto.pagado)),
            ("ImpSaldoInsoluto", fmt(docto.saldo_anterior - docto.pagado)), ("ObjetoImpDR", "02"),
        ])
        traslados = _sub(_sub(dr, _pago("ImpuestosDR"), []), _pago("TrasladosDR"), [])
        _sub(traslados, _pago("TrasladoDR"), [("BaseDR", fmt(docto.base_iva)), ("ImpuestoDR", "002"),
                                              ("TipoFactorDR", "Tasa"), ("TasaOCuotaDR", "0.160000"),
                                              ("ImporteDR", fmt(docto.importe_iva))])
    traslados_p = _sub(_sub(node, _pago("ImpuestosP"), []), _pago("TrasladosP"), [])
    _sub(traslados_p, _pago("TrasladoP"), [("BaseP", fmt(base)), ("ImpuestoP", "002"), ("TipoFactorP", "Tasa"),
                                           ("TasaOCuotaP", "0.160000"), ("ImporteP", fmt(importe))])


def build_comprobante(d: InvoiceDraft) -> etree._Element:
    """The unsigned document: NoCertificado and Certificado set, no Sello, no TFD."""
    nsmap: dict[str | None, str] = {"cfdi": CFDI_NS, "xsi": XSI_NS}
    location = CFDI_LOCATION
    if d.pago is not None:
        nsmap["pago20"] = PAGO_NS
        location = f"{CFDI_LOCATION} {PAGO_LOCATION}"
    root = etree.Element(cfdi("Comprobante"), nsmap=nsmap)
    t = d.totals
    for name, value in [
        (SCHEMA_LOCATION, location), ("Version", "4.0"), ("Serie", d.serie), ("Folio", d.folio),
        ("Fecha", d.fecha.strftime(DATE_FORMAT)), ("FormaPago", d.forma_pago),
        ("NoCertificado", d.issuer.no_certificado), ("Certificado", d.issuer.cert_b64),
        ("CondicionesDePago", d.condiciones), ("SubTotal", fmt(t.subtotal)), ("Descuento", _opt(t.descuento)),
        ("Moneda", d.moneda), ("TipoCambio", _opt(d.tipo_cambio)), ("Total", fmt(t.total)),
        ("TipoDeComprobante", d.tipo), ("Exportacion", "01"), ("MetodoPago", d.metodo_pago),
        ("LugarExpedicion", d.lugar_expedicion),
    ]:
        if value is not None:
            root.set(name, value)
    if d.informacion_global:
        periodicidad, meses, anio = d.informacion_global
        _sub(root, cfdi("InformacionGlobal"), [("Periodicidad", periodicidad), ("Meses", meses), ("Año", anio)])
    if d.relacionados:
        rel = _sub(root, cfdi("CfdiRelacionados"), [("TipoRelacion", "01")])
        for uuid in d.relacionados:
            _sub(rel, cfdi("CfdiRelacionado"), [("UUID", uuid)])
    _sub(root, cfdi("Emisor"), [("Rfc", d.issuer.rfc), ("Nombre", d.issuer.name),
                                ("RegimenFiscal", d.issuer.regimen)])
    _sub(root, cfdi("Receptor"), [("Rfc", d.receptor.rfc), ("Nombre", d.receptor.name),
                                  ("DomicilioFiscalReceptor", d.receptor.postal_code),
                                  ("RegimenFiscalReceptor", d.receptor.regimen), ("UsoCFDI", d.uso_cfdi)])
    conceptos = _sub(root, cfdi("Conceptos"), [])
    for concepto in d.conceptos:
        _concepto(conceptos, concepto)
    _impuestos(root, d)
    if d.pago is not None:
        _pagos(_sub(root, cfdi("Complemento"), []), d.pago)
    return root
