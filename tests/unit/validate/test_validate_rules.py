"""One test per rule: a generated invoice, mutated, re-sealed and re-stamped, so that exactly the
target rule fails (where SAT's arithmetic couples rules, the companions are listed explicitly)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from lxml import etree

from services.validate.cfdi import CfdiValidator, RunDuplicates, StampCertStore, TrustStore, ValidationResult, Verdict
from shared.cfdi.cadena import cadena_original, tfd_cadena
from tooling.issuers.generator import InvoiceGenerator
from tooling.issuers.pki import DemoPKI
from tooling.issuers.sealing import sign

C = "{http://www.sat.gob.mx/cfd/4}"
TFD = "{http://www.sat.gob.mx/TimbreFiscalDigital}TimbreFiscalDigital"
Find = Callable[..., etree._Element]
Check = Callable[[bytes], ValidationResult]


def bump(el: etree._Element, attr: str, delta: str) -> None:
    value = el.get(attr)
    assert value is not None, attr
    places = len(value.split(".")[1]) if "." in value else 0
    el.set(attr, f"{Decimal(value) + Decimal(delta):.{places}f}")


def has_traslados(root: etree._Element) -> bool:
    return root.find(f"{C}Impuestos/{C}Traslados/{C}Traslado[@Importe]") is not None


def mxn(root: etree._Element) -> bool:
    return root.get("Moneda") == "MXN" and root.get("TipoCambio") is None


def rules(result: ValidationResult) -> set[str]:
    return set(result.rule_ids)


# --- the baseline -------------------------------------------------------------------------------
def test_generated_invoices_are_valid(generator: InvoiceGenerator, check: Check) -> None:
    for index in range(60):
        result = check(generator.generate(index, defect=None).xml)
        assert result.rules == [], (index, result.rules)
        assert result.verdict is Verdict.VALID
        assert result.trust == "demo"
        assert result.sello_sat_verified


def test_report_fields_match_the_generator(generator: InvoiceGenerator, check: Check) -> None:
    for index in range(20):
        inv = generator.generate(index, defect=None)
        r = check(inv.xml)
        assert (r.uuid, r.emisor_rfc, r.fecha, r.tipo_de_comprobante, r.moneda) == (
            inv.uuid, inv.issuer_rfc, inv.fecha, inv.tipo, inv.moneda)
        assert (r.subtotal, r.descuento, r.total, r.tipo_cambio) == (
            inv.subtotal, inv.descuento, inv.total, inv.tipo_cambio)
        assert r.total_mxn == inv.total_mxn
        assert r.conceptos == len(etree.fromstring(inv.xml).findall(f"{C}Conceptos/{C}Concepto"))


# --- L3: one mutation per rule ------------------------------------------------------------------
def _global_invoice(root: etree._Element) -> bool:
    return root.find(f"{C}InformacionGlobal") is not None


def _with_descuento(root: etree._Element) -> bool:
    return root.get("Descuento") is not None and mxn(root)


Mutation = Callable[[etree._Element], None]


def _set(attr: str, value: str, path: str | None = None, **more: str) -> Mutation:
    """Set attributes on the root (or on the first element at ``path``)."""
    def mutate(root: etree._Element) -> None:
        el = root if path is None else root.find(path)
        assert el is not None, path
        for name, v in ((attr, value), *more.items()):
            el.set(name, v)
    return mutate


def _trailing_zero(attr: str, path: str | None = None) -> Mutation:
    """Same amount, one decimal more than the currency allows."""
    def mutate(root: etree._Element) -> None:
        el = root if path is None else root.find(path)
        assert el is not None, path
        el.set(attr, el.get(attr, "") + "0")
    return mutate


def _receptor_moral(root: etree._Element) -> bool:
    r = root.find(f"{C}Receptor")
    return r is not None and len(r.get("Rfc", "")) == 12


def _emisor_moral(root: etree._Element) -> bool:
    e = root.find(f"{C}Emisor")
    return e is not None and len(e.get("Rfc", "")) == 12


def _mut_tc_required(r: etree._Element) -> None:
    del r.attrib["TipoCambio"]


def _mut_subtotal_sum(r: etree._Element) -> None:
    bump(r, "SubTotal", "1")
    bump(r, "Total", "1")


def _mut_total(r: etree._Element) -> None:
    bump(r, "Total", "0.01")


def _mut_descuento_sum(r: etree._Element) -> None:
    bump(r, "Descuento", "0.01")
    bump(r, "Total", "-0.01")


def _mut_add_global(r: etree._Element) -> None:
    info = etree.Element(f"{C}InformacionGlobal", Periodicidad="01", Meses="03")
    info.set("Año", "2025")
    r.insert(0, info)


def _mut_remove_global(r: etree._Element) -> None:
    r.remove(r.find(f"{C}InformacionGlobal"))


def _mut_domicilio(r: etree._Element) -> None:
    rec = r.find(f"{C}Receptor")
    assert rec is not None
    rec.set("DomicilioFiscalReceptor", "01000" if r.get("LugarExpedicion") != "01000" else "06600")


def _mut_rfc_date(r: etree._Element) -> None:
    rec = r.find(f"{C}Receptor")
    assert rec is not None
    rfc = rec.get("Rfc", "")
    n = len(rfc)
    rec.set("Rfc", rfc[: n - 9] + rfc[n - 9 : n - 7] + "0230" + rfc[n - 3 :])  # 30 February


def _mut_cantidad(r: etree._Element) -> None:
    bump(r.find(f"{C}Conceptos/{C}Concepto"), "Cantidad", "1")


def _mut_objeto_03(r: etree._Element) -> None:
    c = r.find(f"{C}Conceptos/{C}Concepto[{C}Impuestos]")
    assert c is not None
    c.set("ObjetoImp", "03")


def _mut_impuestos_pago(r: etree._Element) -> None:
    r.find(f"{C}Conceptos").addnext(etree.Element(f"{C}Impuestos"))


def _mut_total_trasladados(r: etree._Element) -> None:
    bump(r.find(f"{C}Impuestos"), "TotalImpuestosTrasladados", "1")
    bump(r, "Total", "1")


def _mut_total_trasladados_missing(r: etree._Element) -> None:
    imp = r.find(f"{C}Impuestos")
    assert imp is not None
    bump(r, "Total", "-" + imp.attrib.pop("TotalImpuestosTrasladados"))


def _first_global_traslado(r: etree._Element) -> etree._Element:
    t = r.find(f"{C}Impuestos/{C}Traslados/{C}Traslado[@Importe]")
    assert t is not None
    return t


def _mut_global_base(r: etree._Element) -> None:
    bump(_first_global_traslado(r), "Base", "1")


def _mut_global_importe(r: etree._Element) -> None:
    bump(_first_global_traslado(r), "Importe", "1")
    bump(r.find(f"{C}Impuestos"), "TotalImpuestosTrasladados", "1")
    bump(r, "Total", "1")


def _mut_extra_group(r: etree._Element) -> None:
    traslados = r.find(f"{C}Impuestos/{C}Traslados")
    assert traslados is not None
    etree.SubElement(traslados, f"{C}Traslado", Base="1.00", Impuesto="003", TipoFactor="Tasa",
                     TasaOCuota="0.080000", Importe="0.08")
    bump(r.find(f"{C}Impuestos"), "TotalImpuestosTrasladados", "0.08")
    bump(r, "Total", "0.08")


def _mut_duplicate_group(r: etree._Element) -> None:
    t = _first_global_traslado(r)
    t.addnext(etree.fromstring(etree.tostring(t)))


def _mut_concept_traslado_importe(r: etree._Element) -> None:
    t = r.find(f"{C}Conceptos/{C}Concepto/{C}Impuestos/{C}Traslados/{C}Traslado[@TasaOCuota='0.160000']")
    assert t is not None
    bump(t, "Importe", "1")
    g = r.find(f"{C}Impuestos/{C}Traslados/{C}Traslado[@TasaOCuota='0.160000']")
    assert g is not None
    bump(g, "Importe", "1")
    bump(r.find(f"{C}Impuestos"), "TotalImpuestosTrasladados", "1")
    bump(r, "Total", "1")


def _mut_tasa(r: etree._Element) -> None:
    for t in r.iter(f"{C}Traslado"):
        if t.get("TasaOCuota") == "0.160000":
            t.set("TasaOCuota", "0.150000")


def _iva16(r: etree._Element) -> bool:
    return mxn(r) and r.find(f".//{C}Traslado[@TasaOCuota='0.160000']") is not None


def _retenciones(r: etree._Element) -> bool:
    return mxn(r) and r.find(f"{C}Impuestos/{C}Retenciones/{C}Retencion") is not None


def _shift_total_retenidos(r: etree._Element, delta: str) -> None:
    bump(r.find(f"{C}Impuestos"), "TotalImpuestosRetenidos", delta)
    bump(r, "Total", "-" + delta)


def _mut_total_retenidos(r: etree._Element) -> None:
    _shift_total_retenidos(r, "1")


def _mut_total_retenidos_missing(r: etree._Element) -> None:
    imp = r.find(f"{C}Impuestos")
    assert imp is not None
    bump(r, "Total", imp.attrib.pop("TotalImpuestosRetenidos"))


def _mut_global_retencion(r: etree._Element) -> None:
    bump(r.find(f"{C}Impuestos/{C}Retenciones/{C}Retencion"), "Importe", "1")
    _shift_total_retenidos(r, "1")


def _mut_duplicate_retencion(r: etree._Element) -> None:
    ret = r.find(f"{C}Impuestos/{C}Retenciones/{C}Retencion")
    assert ret is not None
    ret.addnext(etree.fromstring(etree.tostring(ret)))


def _concept_retencion(r: etree._Element) -> tuple[etree._Element, etree._Element]:
    line = r.find(f"{C}Conceptos/{C}Concepto/{C}Impuestos/{C}Retenciones/{C}Retencion")
    assert line is not None
    summary = r.find(f"{C}Impuestos/{C}Retenciones/{C}Retencion[@Impuesto='{line.get('Impuesto')}']")
    assert summary is not None
    return line, summary


def _mut_concept_retencion_importe(r: etree._Element) -> None:
    line, summary = _concept_retencion(r)
    bump(line, "Importe", "1")
    bump(summary, "Importe", "1")
    _shift_total_retenidos(r, "1")


def _mut_retencion_tasa(r: etree._Element) -> None:
    line, _ = _concept_retencion(r)
    line.set("TasaOCuota", "0.400000")  # above ISR's 35 % and IVA's 16 %


CASES: list[tuple[str, str | None, Callable[[etree._Element], bool], Callable[[etree._Element], None], set[str]]] = [
    ("FORMAPAGO_NOT_ALLOWED", "P", lambda r: True, _set("FormaPago", "03"), {"FORMAPAGO_NOT_ALLOWED"}),
    ("METODOPAGO_NOT_ALLOWED", "P", lambda r: True, _set("MetodoPago", "PUE"), {"METODOPAGO_NOT_ALLOWED"}),
    ("FORMAPAGO_PPD_NOT_99", "I", lambda r: r.get("MetodoPago") == "PUE", _set("MetodoPago", "PPD", FormaPago="03"),
     {"FORMAPAGO_PPD_NOT_99"}),
    ("USOCFDI_PAGO", "P", lambda r: True, _set("UsoCFDI", "G03", path=f"{C}Receptor"), {"USOCFDI_PAGO"}),
    ("SUBTOTAL_NOT_ZERO", "P", lambda r: True, _set("SubTotal", "1.00"), {"SUBTOTAL_NOT_ZERO"}),
    ("TOTAL_NOT_ZERO", "P", lambda r: True, _set("Total", "1.00"), {"TOTAL_NOT_ZERO"}),
    ("TIPOCAMBIO_MXN_NOT_1", "I", mxn, _set("TipoCambio", "17.5"), {"TIPOCAMBIO_MXN_NOT_1"}),
    ("TIPOCAMBIO_REQUIRED", "I", lambda r: r.get("Moneda") == "USD", _mut_tc_required, {"TIPOCAMBIO_REQUIRED"}),
    ("TIPOCAMBIO_NOT_ALLOWED", "P", lambda r: True, _set("TipoCambio", "1"), {"TIPOCAMBIO_NOT_ALLOWED"}),
    ("SUBTOTAL_DECIMALS", "I", mxn, _trailing_zero("SubTotal"), {"SUBTOTAL_DECIMALS"}),
    ("TOTAL_DECIMALS", "I", mxn, _trailing_zero("Total"), {"TOTAL_DECIMALS"}),
    ("DESCUENTO_DECIMALS", "I", _with_descuento, _trailing_zero("Descuento"), {"DESCUENTO_DECIMALS"}),
    ("SUBTOTAL_NE_SUM", "I", mxn, _mut_subtotal_sum, {"SUBTOTAL_NE_SUM"}),
    ("TOTAL_MISMATCH", "I", mxn, _mut_total, {"TOTAL_MISMATCH"}),
    ("DESCUENTO_NE_SUM", "I", _with_descuento, _mut_descuento_sum, {"DESCUENTO_NE_SUM"}),
    ("GLOBAL_RECEPTOR", "I", lambda r: mxn(r) and not _global_invoice(r), _mut_add_global, {"GLOBAL_RECEPTOR"}),
    ("GLOBAL_SIN_INFORMACIONGLOBAL", "I", _global_invoice, _mut_remove_global, {"GLOBAL_SIN_INFORMACIONGLOBAL"}),
    ("DOMICILIO_GENERICO_NE_LUGAR", "I", _global_invoice, _mut_domicilio, {"DOMICILIO_GENERICO_NE_LUGAR"}),
    ("REGIMEN_EMISOR_PERSONA", "I", _emisor_moral, _set("RegimenFiscal", "612", path=f"{C}Emisor"),
     {"REGIMEN_EMISOR_PERSONA"}),
    ("REGIMEN_RECEPTOR_PERSONA", "I", _receptor_moral, _set("RegimenFiscalReceptor", "612", path=f"{C}Receptor"),
     {"REGIMEN_RECEPTOR_PERSONA"}),
    ("RFC_FORMAT", "I", lambda r: not _global_invoice(r), _mut_rfc_date, {"RFC_FORMAT"}),
    ("IMPORTE_OUT_OF_LIMITS", "I", lambda r: True, _mut_cantidad, {"IMPORTE_OUT_OF_LIMITS"}),
    ("OBJETOIMP_02_SIN_IMPUESTOS", "P", lambda r: True, _set("ObjetoImp", "02", path=f"{C}Conceptos/{C}Concepto"),
     {"OBJETOIMP_02_SIN_IMPUESTOS"}),
    ("OBJETOIMP_CON_IMPUESTOS", "I", has_traslados, _mut_objeto_03, {"OBJETOIMP_CON_IMPUESTOS"}),
    ("EXPORTACION_SIN_CCE", "I", lambda r: True, _set("Exportacion", "02"), {"EXPORTACION_SIN_CCE"}),
    ("IMPUESTOS_NOT_ALLOWED", "P", lambda r: True, _mut_impuestos_pago, {"IMPUESTOS_NOT_ALLOWED"}),
    ("TOTAL_TRASLADADOS_NE_SUM", "I", lambda r: mxn(r) and has_traslados(r), _mut_total_trasladados,
     {"TOTAL_TRASLADADOS_NE_SUM"}),
    ("TOTAL_TRASLADADOS_DECIMALS", "I", lambda r: mxn(r) and has_traslados(r),
     _trailing_zero("TotalImpuestosTrasladados", f"{C}Impuestos"),
     {"TOTAL_TRASLADADOS_DECIMALS"}),
    ("TOTAL_TRASLADADOS_REQUIRED", "I", lambda r: mxn(r) and has_traslados(r), _mut_total_trasladados_missing,
     {"TOTAL_TRASLADADOS_REQUIRED"}),
    ("TRASLADO_BASE_NE_CONCEPTOS", "I", lambda r: mxn(r) and has_traslados(r), _mut_global_base,
     {"TRASLADO_BASE_NE_CONCEPTOS"}),
    ("TRASLADO_IMPORTE_NE_CONCEPTOS", "I", lambda r: mxn(r) and has_traslados(r), _mut_global_importe,
     {"TRASLADO_IMPORTE_NE_CONCEPTOS"}),
    ("TRASLADO_NE_CONCEPTOS", "I", lambda r: mxn(r) and has_traslados(r), _mut_extra_group,
     {"TRASLADO_NE_CONCEPTOS"}),
    # a repeated summary line also doubles the sum the total is checked against
    ("TRASLADO_DUPLICADO", "I", lambda r: mxn(r) and has_traslados(r), _mut_duplicate_group,
     {"TRASLADO_DUPLICADO", "TOTAL_TRASLADADOS_NE_SUM"}),
    ("TRASLADO_IMPORTE_OUT_OF_LIMITS", "I", _iva16, _mut_concept_traslado_importe,
     {"TRASLADO_IMPORTE_OUT_OF_LIMITS"}),
    # the rate is what the tax amount is checked against: a wrong rate also puts it out of limits
    ("TOTAL_RETENIDOS_NE_SUM", "I", _retenciones, _mut_total_retenidos, {"TOTAL_RETENIDOS_NE_SUM"}),
    ("TOTAL_RETENIDOS_DECIMALS", "I", _retenciones, _trailing_zero("TotalImpuestosRetenidos", f"{C}Impuestos"),
     {"TOTAL_RETENIDOS_DECIMALS"}),
    ("TOTAL_RETENIDOS_REQUIRED", "I", _retenciones, _mut_total_retenidos_missing, {"TOTAL_RETENIDOS_REQUIRED"}),
    ("RETENCION_NE_CONCEPTOS", "I", _retenciones, _mut_global_retencion, {"RETENCION_NE_CONCEPTOS"}),
    ("RETENCION_DUPLICADA", "I", _retenciones, _mut_duplicate_retencion,
     {"RETENCION_DUPLICADA", "TOTAL_RETENIDOS_NE_SUM"}),
    ("RETENCION_IMPORTE_OUT_OF_LIMITS", "I", _retenciones, _mut_concept_retencion_importe,
     {"RETENCION_IMPORTE_OUT_OF_LIMITS"}),
    ("TASA_RETENCION_NOT_IN_CATALOG", "I", _retenciones, _mut_retencion_tasa,
     {"TASA_RETENCION_NOT_IN_CATALOG", "RETENCION_IMPORTE_OUT_OF_LIMITS"}),
    ("TASA_TRASLADO_NOT_IN_CATALOG", "I", _iva16, _mut_tasa,
     {"TASA_TRASLADO_NOT_IN_CATALOG", "TRASLADO_IMPORTE_OUT_OF_LIMITS"}),
]


@pytest.mark.parametrize(("tipo", "predicate", "mutate", "expected"),
                         [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_rule(tipo: str | None, predicate: Callable[[etree._Element], bool],
              mutate: Callable[[etree._Element], None], expected: set[str], find_tree: Find,
              generator: InvoiceGenerator, check: Check, request: pytest.FixtureRequest) -> None:
    root = find_tree(tipo, predicate, key=request.node.callspec.id)
    mutate(root)
    result = check(generator.seal_and_stamp(root))
    assert rules(result) == expected
    assert result.verdict is Verdict.INVALID


# --- L1: schema, with SAT codes --------------------------------------------------------------
@pytest.mark.parametrize(("element", "attr", "value", "sat_code"), [
    (None, "LugarExpedicion", "0000X", "CFDI40126"),
    (f"{C}Conceptos/{C}Concepto", "ClaveProdServ", "99999999", "CFDI40162"),
    (f"{C}Conceptos/{C}Concepto", "ClaveUnidad", "ZZZ", "CFDI40165"),
    (None, "Moneda", "ZZZ", "CFDI40113"),
    (None, "Fecha", "2025-03-03 10:00:00", "CFDI40101"),
    (None, "FormaPago", "42", "CFDI40104"),
])
def test_schema_rule(element: str | None, attr: str, value: str, sat_code: str, find_tree: Find,
                     generator: InvoiceGenerator, check: Check) -> None:
    root = find_tree("I", lambda r: r.get("FormaPago") is not None, key="forma")
    if attr == "Fecha":  # the stamper reads Fecha: stamp first, then break it and seal again
        root = etree.fromstring(generator.seal_and_stamp(root))
    target = root if element is None else root.find(element)
    assert target is not None
    target.set(attr, value)
    if attr == "Fecha":
        generator.sealer.seal(root)
        xml = etree.tostring(root)
    else:
        xml = generator.seal_and_stamp(root)
    result = check(xml)
    assert result.rule_ids == ["XSD"]
    assert result.sat_codes == [sat_code]


def test_unknown_complement_is_refused(find_tree: Find, generator: InvoiceGenerator, check: Check) -> None:
    root = find_tree("I", key="plain")
    generator.seal_and_stamp(root)
    complemento = root.find(f"{C}Complemento")
    assert complemento is not None
    etree.SubElement(complemento, "{urn:example:unknown}Extra").text = "leaks into the cadena"
    assert check(etree.tostring(root)).rule_ids == ["XSD"]


def test_addenda_is_ignored(find_tree: Find, generator: InvoiceGenerator, check: Check) -> None:
    root = find_tree("I", key="plain")
    generator.seal_and_stamp(root)
    addenda = etree.SubElement(root, f"{C}Addenda")
    etree.SubElement(addenda, "{urn:example:erp}Pedido", Numero="42").text = "anything"
    result = check(etree.tostring(root))
    assert result.verdict is Verdict.VALID, result.rules


# --- L2: seal and certificate ---------------------------------------------------------------------
def _sealed(find_tree: Find, generator: InvoiceGenerator) -> etree._Element:
    root = find_tree("I", key="plain")
    return etree.fromstring(generator.seal_and_stamp(root))


def _reseal_with(root: etree._Element, key: rsa.RSAPrivateKey, generator: InvoiceGenerator) -> bytes:
    """Seal with ``key`` keeping NoCertificado/Certificado as they are, then stamp."""
    root.attrib.pop("Sello", None)
    root.set("Sello", sign(key, cadena_original(root)))
    generator.sealer.stamp(root)
    return bytes(etree.tostring(root))


def test_sello_invalid(find_tree: Find, generator: InvoiceGenerator, check: Check) -> None:
    root = _sealed(find_tree, generator)
    root.set("Folio", root.get("Folio", "") + "9")  # edited after sealing; the stamp still matches the Sello
    assert rules(check(etree.tostring(root))) == {"SELLO_INVALID"}


def test_cert_number_mismatch(find_tree: Find, generator: InvoiceGenerator, pki: DemoPKI, check: Check) -> None:
    root = _sealed(find_tree, generator)
    issuer = generator.sealer.issuer_for(root)
    root.set("NoCertificado", "00001000000999999999")
    assert rules(check(_reseal_with(root, issuer.key, generator))) == {"CERT_NUMBER_MISMATCH"}


def test_cert_rfc_mismatch(find_tree: Find, generator: InvoiceGenerator, pki: DemoPKI, check: Check) -> None:
    root = _sealed(find_tree, generator)
    issuer = generator.sealer.issuer_for(root)
    emisor = root.find(f"{C}Emisor")
    assert emisor is not None
    rfc = emisor.get("Rfc", "")
    emisor.set("Rfc", rfc[:-3] + ("ZZ9" if rfc[-3:] != "ZZ9" else "ZZ8"))
    assert rules(check(_reseal_with(root, issuer.key, generator))) == {"CERT_RFC_MISMATCH"}


def test_cert_invalid(find_tree: Find, generator: InvoiceGenerator, check: Check) -> None:
    root = _sealed(find_tree, generator)
    issuer = generator.sealer.issuer_for(root)
    root.set("Certificado", base64.b64encode(b"not a certificate").decode())
    assert rules(check(_reseal_with(root, issuer.key, generator))) == {"CERT_INVALID"}


def test_cert_untrusted(find_tree: Find, generator: InvoiceGenerator, pki: DemoPKI) -> None:
    production_only = CfdiValidator(TrustStore.default(), StampCertStore.from_directory(pki.stamp_certs_dir))
    result = production_only.validate(etree.tostring(_sealed(find_tree, generator)))
    assert rules(result) == {"CERT_UNTRUSTED"}
    assert result.trust == "untrusted"


def test_cert_not_valid_at_fecha(find_tree: Find, generator: InvoiceGenerator, check: Check) -> None:
    root = find_tree("I", key="plain")
    root.set("Fecha", "2019-01-15T10:00:00")  # before the demo certificates exist
    result = check(generator.seal_and_stamp(root))
    assert rules(result) == {"CERT_NOT_VALID_AT_FECHA"}
    assert result.trust == "untrusted"  # trust is judged at Fecha


def _fiel_like(pki: DemoPKI, rfc: str, number: str) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A demo-CA certificate with FIEL key usage (encipherment, key agreement) and no OU."""
    ca_key = serialization.load_pem_private_key((pki.directory / "private" / "demo-ca.key.pem").read_bytes(), None)
    assert isinstance(ca_key, rsa.RSAPrivateKey)
    ca = x509.load_der_x509_certificate(pki.ca_cert.read_bytes())
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "FIEL DEMO"),
                                     x509.NameAttribute(x509.ObjectIdentifier("2.5.4.45"), rfc)]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(int(number.encode().hex(), 16))
            .not_valid_before(now - timedelta(days=3650)).not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.KeyUsage(True, True, False, True, True, False, False, False, False), critical=True)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


def test_cert_not_csd(find_tree: Find, generator: InvoiceGenerator, pki: DemoPKI, check: Check) -> None:
    root = _sealed(find_tree, generator)
    emisor = root.find(f"{C}Emisor")
    assert emisor is not None
    number = "20001000000300000099"
    cert, key = _fiel_like(pki, emisor.get("Rfc", ""), number)
    root.set("NoCertificado", number)
    root.set("Certificado", base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode())
    assert rules(check(_reseal_with(root, key, generator))) == {"CERT_NOT_CSD"}


# --- L4: stamp ------------------------------------------------------------------------------------
def test_tfd_missing(find_tree: Find, generator: InvoiceGenerator, check: Check) -> None:
    root = find_tree("I", key="plain")
    generator.sealer.seal(root)
    assert rules(check(etree.tostring(root))) == {"TFD_MISSING"}


def test_tfd_multiple(find_tree: Find, generator: InvoiceGenerator, check: Check) -> None:
    root = _sealed(find_tree, generator)
    tfd = root.find(f"{C}Complemento/{TFD}")
    assert tfd is not None
    tfd.addnext(etree.fromstring(etree.tostring(tfd)))
    assert rules(check(etree.tostring(root))) == {"TFD_MULTIPLE"}


def test_tfd_fecha_range(find_tree: Find, generator: InvoiceGenerator, check: Check) -> None:
    root = find_tree("I", key="plain")
    late = (datetime.strptime(root.get("Fecha", ""), "%Y-%m-%dT%H:%M:%S") + timedelta(days=4))
    result = check(generator.seal_and_stamp(root, fecha_timbrado=late.strftime("%Y-%m-%dT%H:%M:%S")))
    assert rules(result) == {"TFD_FECHA_RANGE"}
    assert result.sat_codes == ["PAC401"]


def test_tfd_sellocfd_mismatch(find_tree: Find, generator: InvoiceGenerator, pki: DemoPKI, check: Check) -> None:
    root = _sealed(find_tree, generator)
    tfd = root.find(f"{C}Complemento/{TFD}")
    assert tfd is not None
    other = _sealed(find_tree, generator).get("Sello", "")[::-1]
    tfd.set("SelloCFD", other)
    pac = pki.stamping
    tfd.set("SelloSAT", sign(pac.key, tfd_cadena(tfd.get("UUID", ""), tfd.get("FechaTimbrado", ""), pac.rfc, other,
                                                  pac.no_certificado)))
    assert rules(check(etree.tostring(root))) == {"TFD_SELLOCFD_MISMATCH"}


def test_tfd_sellosat_invalid(find_tree: Find, generator: InvoiceGenerator, check: Check) -> None:
    root = _sealed(find_tree, generator)
    tfd = root.find(f"{C}Complemento/{TFD}")
    assert tfd is not None
    tfd.set("FechaTimbrado", tfd.get("FechaTimbrado", "")[:-1] + ("1" if tfd.get("FechaTimbrado", "")[-1] != "1"
                                                                   else "2"))
    result = check(etree.tostring(root))
    assert rules(result) == {"TFD_SELLOSAT_INVALID"}
    assert not result.sello_sat_verified


def test_unknown_stamping_certificate_is_not_a_failure(find_tree: Find, generator: InvoiceGenerator,
                                                       demo_trust: TrustStore) -> None:
    result = CfdiValidator(demo_trust).validate(etree.tostring(_sealed(find_tree, generator)))
    assert result.verdict is Verdict.VALID
    assert not result.sello_sat_verified


# --- every failed rule is reported ------------------------------------------------------------------
def test_all_failed_rules_are_reported(find_tree: Find, generator: InvoiceGenerator, check: Check) -> None:
    root = find_tree("P", key="plain")
    _set("FormaPago", "03")(root)
    _set("MetodoPago", "PUE")(root)
    _set("UsoCFDI", "G03", path=f"{C}Receptor")(root)
    result = check(generator.seal_and_stamp(root))
    assert rules(result) == {"FORMAPAGO_NOT_ALLOWED", "METODOPAGO_NOT_ALLOWED", "USOCFDI_PAGO"}
    assert result.sat_codes == ["CFDI40103", "CFDI40125", "CFDI40161"]


# --- in-run duplicates ---------------------------------------------------------------------------------
def test_run_duplicates_first_valid_wins(generator: InvoiceGenerator, check: Check) -> None:
    first = generator.generate(1, defect=None)
    again = generator.seal_and_stamp(generator.build_tree(2), uuid=first.uuid.lower())
    run = RunDuplicates()
    assert run.judge(check(first.xml)).verdict is Verdict.VALID
    second = run.judge(check(again))
    assert second.verdict is Verdict.DUPLICATE
    assert second.rule_ids == ["DUPLICATE_UUID"]
    assert run.judge(check(b"<broken")).verdict is Verdict.INVALID
