"""Generated invoices are schema-valid, correctly sealed and stamped, and arithmetically right."""

from __future__ import annotations

import base64
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from lxml import etree

from shared.cfdi.cadena import cadena_original, tfd_cadena
from shared.issuers.generator import InvoiceGenerator
from shared.issuers.pki import DemoPKI
from shared.issuers.rfc import is_valid_rfc

NS = {"cfdi": "http://www.sat.gob.mx/cfd/4", "tfd": "http://www.sat.gob.mx/TimbreFiscalDigital",
      "pago20": "http://www.sat.gob.mx/Pagos20"}
CENT = Decimal("0.01")


def _r(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _verify(cert_der: bytes, signature_b64: str, text: str) -> None:
    key = x509.load_der_x509_certificate(cert_der).public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    key.verify(base64.b64decode(signature_b64), text.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())


def _good(generator: InvoiceGenerator, count: int) -> list[etree._Element]:
    return [etree.fromstring(generator.generate(i, defect=None).xml) for i in range(count)]


def test_same_seed_same_bytes(pki: DemoPKI) -> None:
    a = InvoiceGenerator(pki, seed=3, bad_fraction=0.5)
    b = InvoiceGenerator(pki, seed=3, bad_fraction=0.5)
    c = InvoiceGenerator(pki, seed=4, bad_fraction=0.5)
    first = [a.generate(i) for i in range(20)]
    assert first == [b.generate(i) for i in range(20)]
    assert [x.xml for x in first] != [c.generate(i).xml for i in range(20)]


def test_parallel_generation_matches_serial(pki: DemoPKI) -> None:
    generator = InvoiceGenerator(pki, seed=5, bad_fraction=0.1)
    serial = [inv.xml for inv in generator.generate_many(250)]
    assert [inv.xml for inv in generator.generate_many(250, workers=2)] == serial


def test_stock_xsd_accepts_a_sample_of_every_type(generator: InvoiceGenerator,
                                                  stock_schema: etree.XMLSchema) -> None:
    docs = _good(generator, 30) + [etree.fromstring(generator.generate(100 + i, None, t).xml)
                                   for i, t in enumerate("EEPPP")]
    for doc in docs:
        assert stock_schema.validate(doc), stock_schema.error_log.last_error
    assert {d.get("TipoDeComprobante") for d in docs} == {"I", "E", "P"}


def test_sello_and_sello_sat_verify(generator: InvoiceGenerator, pki: DemoPKI) -> None:
    stamp_cert = (pki.stamp_certs_dir / f"{pki.stamping.no_certificado}.cer").read_bytes()
    for doc in _good(generator, 40):
        _verify(base64.b64decode(doc.get("Certificado", "")), doc.get("Sello", ""), cadena_original(doc))
        tfd = doc.find("cfdi:Complemento/tfd:TimbreFiscalDigital", NS)
        assert tfd is not None and tfd.get("SelloCFD") == doc.get("Sello")
        cadena = tfd_cadena(tfd.get("UUID", ""), tfd.get("FechaTimbrado", ""), tfd.get("RfcProvCertif", ""),
                            tfd.get("SelloCFD", ""), tfd.get("NoCertificadoSAT", ""))
        _verify(stamp_cert, tfd.get("SelloSAT", ""), cadena)
        assert tfd.get("FechaTimbrado", "") > doc.get("Fecha", "")


def test_certificates_follow_the_csd_profile(pki: DemoPKI) -> None:
    ca = x509.load_der_x509_certificate(pki.ca_cert.read_bytes())
    personas = set()
    for issuer in pki.issuers:
        cert = x509.load_der_x509_certificate(issuer.cert_der)
        assert bytes.fromhex(f"{cert.serial_number:x}").decode() == issuer.no_certificado
        unique = cert.subject.get_attributes_for_oid(x509.ObjectIdentifier("2.5.4.45"))[0].value
        assert str(unique).split(" / ")[0] == issuer.rfc and is_valid_rfc(issuer.rfc)
        assert cert.subject.get_attributes_for_oid(x509.oid.NameOID.ORGANIZATIONAL_UNIT_NAME)
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.digital_signature and usage.content_commitment
        assert not usage.data_encipherment and not usage.key_agreement
        assert cert.issuer == ca.subject
        cert.verify_directly_issued_by(ca)
        assert len(issuer.rfc) == (12 if issuer.persona == "moral" else 13)
        personas.add(issuer.persona)
    assert personas == {"moral", "fisica"}


def test_arithmetic_identities(generator: InvoiceGenerator) -> None:
    for doc in _good(generator, 150):
        if doc.get("TipoDeComprobante") == "P":
            assert (doc.get("SubTotal"), doc.get("Total"), doc.get("Moneda")) == ("0", "0", "XXX")
            assert doc.get("FormaPago") is None and doc.get("MetodoPago") is None
            continue
        concepts = doc.findall("cfdi:Conceptos/cfdi:Concepto", NS)
        assert Decimal(doc.get("SubTotal", "")) == _r(sum(Decimal(c.get("Importe", "")) for c in concepts))
        discounts = [Decimal(c.get("Descuento", "")) for c in concepts if c.get("Descuento")]
        assert doc.get("Descuento") == (str(_r(sum(discounts))) if discounts else None)
        groups: dict[tuple[str, str, str], list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
        retained: dict[str, Decimal] = defaultdict(Decimal)
        for c in concepts:
            if c.get("ObjetoImp") != "02":
                assert c.find("cfdi:Impuestos", NS) is None
            for t in c.findall("cfdi:Impuestos/cfdi:Traslados/cfdi:Traslado", NS):
                key = (t.get("Impuesto", ""), t.get("TipoFactor", ""), t.get("TasaOCuota", ""))
                groups[key][0] += Decimal(t.get("Base", ""))
                groups[key][1] += Decimal(t.get("Importe", "0"))
                if t.get("Importe"):
                    assert abs(Decimal(t.get("Importe", "")) - Decimal(t.get("Base", "")) * Decimal(key[2])) \
                        <= Decimal("0.5").scaleb(-len(t.get("Importe", "").partition(".")[2]))
            for t in c.findall("cfdi:Impuestos/cfdi:Retenciones/cfdi:Retencion", NS):
                retained[t.get("Impuesto", "")] += Decimal(t.get("Importe", ""))
        summary = {(t.get("Impuesto", ""), t.get("TipoFactor", ""), t.get("TasaOCuota", "")): t
                   for t in doc.findall("cfdi:Impuestos/cfdi:Traslados/cfdi:Traslado", NS)}
        assert set(summary) == set(groups)
        for key, (base, importe) in groups.items():
            assert Decimal(summary[key].get("Base", "")) == _r(base)
            if key[1] != "Exento":
                assert Decimal(summary[key].get("Importe", "")) == _r(importe)
        for r in doc.findall("cfdi:Impuestos/cfdi:Retenciones/cfdi:Retencion", NS):
            assert Decimal(r.get("Importe", "")) == _r(retained[r.get("Impuesto", "")])
        impuestos = doc.find("cfdi:Impuestos", NS)
        tras = Decimal(impuestos.get("TotalImpuestosTrasladados", "0")) if impuestos is not None else Decimal(0)
        ret = Decimal(impuestos.get("TotalImpuestosRetenidos", "0")) if impuestos is not None else Decimal(0)
        expected = Decimal(doc.get("SubTotal", "")) - Decimal(doc.get("Descuento", "0")) + tras - ret
        assert Decimal(doc.get("Total", "")) == _r(expected)
        assert doc.get("FormaPago") == "99" or doc.get("MetodoPago") == "PUE"
        assert (doc.get("TipoCambio") is not None) == (doc.get("Moneda") != "MXN") or doc.get("TipoCambio") == "1"


def test_variety(generator: InvoiceGenerator) -> None:
    invoices = [generator.generate(i, defect=None) for i in range(300)]
    assert {i.tipo for i in invoices} == {"I", "E", "P"}
    assert {i.moneda for i in invoices} >= {"MXN", "USD", "XXX"}
    assert len({i.issuer_rfc for i in invoices}) >= 6
    assert len({i.fecha[:10] for i in invoices}) >= 5
    xml = b"".join(i.xml for i in invoices)
    for marker in (b'Impuesto="003"', b'TipoFactor="Exento"', b"<cfdi:Retencion ", b"Descuento=",
                   b'MetodoPago="PPD"', b"InformacionGlobal", b'TasaOCuota="0.080000"'):
        assert marker in xml, marker


def test_window_outside_certificate_validity_is_refused(pki: DemoPKI) -> None:
    from datetime import date

    with pytest.raises(ValueError):
        InvoiceGenerator(pki, start=date(2019, 1, 1))


def test_pki_ensure_is_idempotent(pki: DemoPKI, tmp_path: Path) -> None:
    again = DemoPKI.ensure(pki.directory)
    assert [i.cert_der for i in again.issuers] == [i.cert_der for i in pki.issuers]


@pytest.mark.parametrize("target", [200_000, 900_000])
def test_an_invoice_of_a_given_size_is_a_valid_one(generator: InvoiceGenerator, pki: DemoPKI,
                                                   stock_schema: etree.XMLSchema, target: int) -> None:
    """Large documents for the size policy's tests: N conceptos, within 2 % of the size asked for,
    and still a sealed, stamped, schema-valid ingreso the validator accepts."""
    from services.validate.cfdi import CfdiValidator, StampCertStore, TrustStore

    inv = generator.generate_sized(7, target)
    assert abs(len(inv.xml) - target) <= 0.02 * target, len(inv.xml)
    doc = etree.fromstring(inv.xml)
    assert stock_schema.validate(doc), stock_schema.error_log.last_error
    lines = len(doc.findall("cfdi:Conceptos/cfdi:Concepto", NS))
    assert doc.get("TipoDeComprobante") == "I" and lines > target // 1000
    assert inv.expected_verdict == "valid" and inv.defect is None
    validator = CfdiValidator(TrustStore.default(extra=[str(pki.ca_cert)]),
                              StampCertStore.from_directory(str(pki.stamp_certs_dir)), max_bytes=target * 2)
    result = validator.validate(inv.xml)
    assert result.is_valid, result.rules
    assert result.conceptos == lines
