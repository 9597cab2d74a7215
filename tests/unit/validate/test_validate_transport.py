"""L0: hostile or broken bytes always get a verdict, never an exception or an expansion."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from services.validate.cfdi import CfdiValidator, ValidationResult, Verdict
from tooling.issuers.generator import InvoiceGenerator

Check = Callable[[bytes], ValidationResult]

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/4" Version="4.0" Serie="&xxe;"/>"""
LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/4" Version="4.0" Serie="&lol3;"/>"""


def only(result: ValidationResult) -> list[str]:
    assert result.verdict is Verdict.INVALID
    return result.rule_ids


def test_doctype_and_entities_are_refused_unexpanded(check: Check) -> None:
    assert only(check(XXE)) == ["XML_DOCTYPE_FORBIDDEN"]
    assert only(check(LAUGHS)) == ["XML_DOCTYPE_FORBIDDEN"]


def test_undeclared_entity_is_malformed(check: Check) -> None:
    doc = b'<cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/4" Version="4.0" Serie="&x;"/>'
    assert only(check(doc)) == ["XML_MALFORMED"]


def test_size_cap(pki_validator_small: CfdiValidator) -> None:
    assert only(pki_validator_small.validate(b"<a/>" + b" " * 2048)) == ["XML_TOO_LARGE"]


def test_encoding_policy(generator: InvoiceGenerator, check: Check) -> None:
    xml = generator.generate(3, defect=None).xml
    latin = xml.replace(b'encoding="UTF-8"', b'encoding="ISO-8859-1"')
    assert only(check(latin)) == ["XML_ENCODING"]
    assert only(check(xml.decode().encode("utf-16"))) == ["XML_ENCODING"]
    assert only(check(xml.replace(b"<cfdi:Conceptos", b"<!-- \xff\xfe --><cfdi:Conceptos", 1))) == ["XML_ENCODING"]


def test_bom_and_crlf_are_valid(generator: InvoiceGenerator, check: Check) -> None:
    xml = generator.generate(4, defect=None).xml
    crlf = b"\xef\xbb\xbf" + xml.replace(b">\n<", b">\r\n<").replace(b"><", b">\r\n<")
    result = check(crlf)
    assert result.verdict is Verdict.VALID, result.rules


def test_not_cfdi40(check: Check) -> None:
    assert only(check(b'<cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/3" Version="3.3"/>')) == [
        "NOT_CFDI40"]
    assert only(check(b'<cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/4" Version="3.3"/>')) == [
        "NOT_CFDI40"]
    assert only(check(b'{"error": "not found"}')) == ["XML_MALFORMED"]
    assert only(check(b"<html><body>502 Bad Gateway</body></html>")) == ["NOT_CFDI40"]
    assert only(check(b"")) == ["XML_MALFORMED"]


def test_truncated_download(generator: InvoiceGenerator, check: Check) -> None:
    xml = generator.generate(5, defect=None).xml
    assert only(check(xml[: len(xml) // 2])) == ["XML_MALFORMED"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=4096))
def test_arbitrary_bytes_get_a_verdict(data: bytes, check: Check) -> None:
    result = check(data)
    assert result.verdict in (Verdict.VALID, Verdict.INVALID)
    assert "VALIDATOR_ERROR" not in result.rule_ids


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(index=st.integers(0, 30), cut=st.integers(0, 10_000), length=st.integers(0, 40), junk=st.binary(max_size=40))
def test_mutated_invoices_get_a_verdict(index: int, cut: int, length: int, junk: bytes,
                                        generator: InvoiceGenerator, check: Check) -> None:
    xml = generator.generate(index, defect=None).xml
    at = cut % len(xml)
    mutated = xml[:at] + junk + xml[at + length:]
    result = check(mutated)
    assert "VALIDATOR_ERROR" not in result.rule_ids
    if mutated != xml:
        assert result.verdict in (Verdict.VALID, Verdict.INVALID)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(index=st.integers(0, 30), pick=st.integers(0, 10_000), value=st.text(max_size=30))
def test_mutated_attributes_get_a_verdict(index: int, pick: int, value: str, generator: InvoiceGenerator,
                                          check: Check) -> None:
    root = etree.fromstring(generator.generate(index, defect=None).xml)
    elements = [el for el in root.iter() if el.attrib]
    el = elements[pick % len(elements)]
    names = sorted(el.attrib)
    clean = "".join(ch for ch in value if ch.isprintable())
    el.set(names[pick % len(names)], clean)
    result = check(etree.tostring(root))
    assert "VALIDATOR_ERROR" not in result.rule_ids


def test_amounts_beyond_any_decimal_context_get_a_verdict(generator: InvoiceGenerator, check: Check) -> None:
    """Found by the property test above: a Base of 1E+30 (or of 40 digits) made the tolerance
    check quantize past the decimal context and the validator answer VALIDATOR_ERROR."""
    for value in ("1E+30", "9" * 40, "1E+999999", "-0.5e3"):
        root = etree.fromstring(generator.generate(6, defect=None).xml)
        traslado = next(el for el in root.iter("{http://www.sat.gob.mx/cfd/4}Traslado") if el.get("Base"))
        traslado.set("Base", value)
        result = check(etree.tostring(root))
        assert result.verdict is Verdict.INVALID and "VALIDATOR_ERROR" not in result.rule_ids, (value, result.rules)
