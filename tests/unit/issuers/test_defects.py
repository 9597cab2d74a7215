"""Each deliberate defect breaks exactly what it claims; mutated trees re-seal cleanly."""

from __future__ import annotations

import base64
from decimal import Decimal

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from lxml import etree

from shared.cfdi.cadena import cadena_original
from tooling.issuers.defects import Defect
from tooling.issuers.generator import InvoiceGenerator


def _sello_ok(doc: etree._Element) -> bool:
    key = x509.load_der_x509_certificate(base64.b64decode(doc.get("Certificado", ""))).public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    try:
        key.verify(base64.b64decode(doc.get("Sello", "")), cadena_original(doc).encode(), padding.PKCS1v15(),
                   hashes.SHA256())
    except Exception:
        return False
    return True


def _total_ok(doc: etree._Element) -> bool:
    imp = doc.find("{http://www.sat.gob.mx/cfd/4}Impuestos")
    tras = Decimal(imp.get("TotalImpuestosTrasladados", "0")) if imp is not None else Decimal(0)
    ret = Decimal(imp.get("TotalImpuestosRetenidos", "0")) if imp is not None else Decimal(0)
    expected = Decimal(doc.get("SubTotal", "")) - Decimal(doc.get("Descuento", "0")) + tras - ret
    return Decimal(doc.get("Total", "")) == expected


@pytest.mark.parametrize("defect", [Defect.XML_TRUNCATED, Defect.XML_UNESCAPED_AMP])
def test_broken_xml_does_not_parse(generator: InvoiceGenerator, defect: Defect) -> None:
    for i in range(10):
        invoice = generator.generate(i, defect=defect, tipo="I")
        assert (invoice.expected_verdict, invoice.expected_reason) == ("invalid", "XML_MALFORMED")
        with pytest.raises(etree.XMLSyntaxError):
            etree.fromstring(invoice.xml)


def test_total_mismatch_is_sealed_so_only_the_total_fails(generator: InvoiceGenerator) -> None:
    for i in range(10):
        invoice = generator.generate(i, defect=Defect.TOTAL_MISMATCH)
        doc = etree.fromstring(invoice.xml)
        # A payment's Total must be 0, so for P the shifted total breaks that rule instead.
        assert invoice.expected_reason == ("TOTAL_NOT_ZERO" if invoice.tipo == "P" else "TOTAL_MISMATCH")
        assert _sello_ok(doc) and not _total_ok(doc)


def test_tampered_seal_only_breaks_the_seal(generator: InvoiceGenerator) -> None:
    for i in range(10):
        invoice = generator.generate(i, defect=Defect.SELLO_TAMPERED)
        doc = etree.fromstring(invoice.xml)
        assert invoice.expected_reason == "SELLO_INVALID"
        assert not _sello_ok(doc) and _total_ok(doc)
        tfd = doc.find(".//{http://www.sat.gob.mx/TimbreFiscalDigital}TimbreFiscalDigital")
        assert tfd is not None and tfd.get("SelloCFD") == doc.get("Sello")


@pytest.mark.parametrize("defect", [Defect.CHECKSUM_MISMATCH, Defect.FILE_NOT_FOUND])
def test_transport_defects_keep_a_good_document(generator: InvoiceGenerator, defect: Defect) -> None:
    invoice = generator.generate(3, defect=defect)
    assert invoice.expected_verdict == "rejected" and invoice.expected_reason == defect.name
    assert _sello_ok(etree.fromstring(invoice.xml))


def test_bad_fraction_is_roughly_respected(pki: object) -> None:
    from tooling.issuers.pki import DemoPKI

    assert isinstance(pki, DemoPKI)
    generator = InvoiceGenerator(pki, seed=2, bad_fraction=0.2)
    bad = sum(1 for i in range(400) if generator.generate(i).defect)
    assert 50 <= bad <= 110


def test_mutated_tree_reseals_with_the_issuer_key(generator: InvoiceGenerator) -> None:
    root = generator.build_tree(1, tipo="I")
    assert root.get("Sello") is None
    root.set("LugarExpedicion", "99999")  # the kind of change a validator mutation test makes
    doc = etree.fromstring(generator.seal_and_stamp(root, uuid="0F0F0F0F-0000-4000-8000-000000000001"))
    assert _sello_ok(doc) and doc.get("LugarExpedicion") == "99999"
    again = etree.fromstring(generator.seal_and_stamp(doc))  # re-stamping keeps the UUID
    tfds = again.findall(".//{http://www.sat.gob.mx/TimbreFiscalDigital}TimbreFiscalDigital")
    assert len(tfds) == 1 and tfds[0].get("UUID") == "0F0F0F0F-0000-4000-8000-000000000001"


def test_a_shifted_payment_total_is_never_rounded_back_to_zero() -> None:
    """Payments (Moneda XXX) carry whole units: every drawn shift, 0.01 to 50.00, must leave a
    non-zero Total, or the document labelled TOTAL_NOT_ZERO is in fact valid (it was, for shifts
    under 0.50: about one payment in a hundred, and the chaos run counted it lost)."""
    import random

    from tooling.issuers.defects import shift_total

    for seed in range(3000):
        root = etree.Element("Comprobante", Moneda="XXX", Total="0", TipoDeComprobante="P")
        shift_total(root, random.Random(seed))
        assert Decimal(root.get("Total", "0")) >= 1 and root.get("Total", "").isdigit(), (seed, root.get("Total"))
