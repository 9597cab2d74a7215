"""Line items (issue 18): the validate stage extracts each ``cfdi:Concepto`` in the parse it validates
with, a rebuild reads the very same lines back from the archived document, and the messages carry
them only while they are few and small (shared/domain/messages.py ``MAX_EVENT_LINES``)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest
from lxml import etree

from services.validate.cfdi import CfdiValidator
from services.validate.cfdi.result import ValidationResult, Verdict
from services.validate.service import lines_of
from shared.cfdi.facts import ConceptLine, UnreadableDocument, concept_lines, read_document, read_lines
from shared.domain.messages import (
    MAX_EVENT_LINES,
    MAX_EVENT_LINES_BYTES,
    CfdiFacts,
    InvoiceLine,
    StoredEvent,
    lines_travel,
)
from tooling.issuers.generator import InvoiceGenerator

NS = {"cfdi": "http://www.sat.gob.mx/cfd/4"}
LIMIT = 1_000_000  # the default Kafka message limit (Settings.message_max_bytes)


def _conceptos(xml: bytes) -> list[dict[str, Any]]:
    """The document's Conceptos read here with XPath, apart from the code under test."""
    out = []
    for c in etree.fromstring(xml).xpath("/cfdi:Comprobante/cfdi:Conceptos/cfdi:Concepto", namespaces=NS):
        iva = c.xpath("cfdi:Impuestos/cfdi:Traslados/cfdi:Traslado[@Impuesto='002']", namespaces=NS)
        rate = iva[0].get("TasaOCuota") if iva else None
        out.append({"description": c.get("Descripcion"), "quantity": Decimal(c.get("Cantidad")),
                    "unit_price": Decimal(c.get("ValorUnitario")), "amount": Decimal(c.get("Importe")),
                    "discount": Decimal(c.get("Descuento")) if c.get("Descuento") is not None else None,
                    "tax_rate": Decimal(rate) if rate is not None else None, "product_code": c.get("ClaveProdServ")})
    return out


def _result(lines: list[ConceptLine]) -> ValidationResult:
    return ValidationResult(Verdict.VALID, uuid="A" * 36, conceptos=len(lines), lines=tuple(lines))


def test_the_validate_stage_and_a_rebuild_read_the_documents_conceptos(
        validator: CfdiValidator, generator: InvoiceGenerator) -> None:
    seen = {"discount": 0, "no_iva": 0, "iva": 0, "several": 0}
    for tipo in ("I", "E", "P"):
        for index in range(12):  # products with IEPS, Exento IVA, IVA withheld, discounts, currencies
            xml = generator.generate(index, defect=None, tipo=tipo).xml
            result = validator.validate(xml)
            assert result.is_valid, result.rules
            sent = lines_of(result, LIMIT)
            assert set(sent) == {"lines"}
            lines = sent["lines"]
            assert [line.model_dump() for line in lines] == _conceptos(xml)
            assert result.conceptos == len(lines)
            # what `report rebuild` reads from the archived document is what the stream carried
            assert read_lines(xml) == lines
            assert read_document(xml)[1] == lines
            seen["discount"] += sum(1 for line in lines if line.discount is not None)
            seen["no_iva"] += sum(1 for line in lines if line.tax_rate is None)
            seen["iva"] += sum(1 for line in lines if line.tax_rate is not None)
            seen["several"] += len(lines) > 1
    assert all(seen.values()), seen  # every case above was met at least once


def test_the_iva_rate_is_the_first_iva_traslado_never_a_retention_nor_another_tax() -> None:
    xml = b"""<cfdi:Conceptos xmlns:cfdi="http://www.sat.gob.mx/cfd/4">
      <cfdi:Concepto ClaveProdServ="50202201" Descripcion="Cerveza" Cantidad="2" ValorUnitario="10.5" Importe="21.00">
        <cfdi:Impuestos><cfdi:Traslados>
          <cfdi:Traslado Impuesto="003" TipoFactor="Tasa" TasaOCuota="0.265000"/>
          <cfdi:Traslado Impuesto="002" TipoFactor="Tasa" TasaOCuota="0.160000"/>
        </cfdi:Traslados></cfdi:Impuestos>
      </cfdi:Concepto>
      <cfdi:Concepto ClaveProdServ="80111600" Descripcion="Honorarios" Cantidad="1" ValorUnitario="100" Importe="100"
                     Descuento="5.50">
        <cfdi:Impuestos><cfdi:Retenciones>
          <cfdi:Retencion Impuesto="002" TipoFactor="Tasa" TasaOCuota="0.106667"/>
        </cfdi:Retenciones></cfdi:Impuestos>
      </cfdi:Concepto>
      <cfdi:Concepto ClaveProdServ="50112000" Descripcion="Libro" Cantidad="1" ValorUnitario="250" Importe="250">
        <cfdi:Impuestos><cfdi:Traslados><cfdi:Traslado Impuesto="002" TipoFactor="Exento"/></cfdi:Traslados>
        </cfdi:Impuestos>
      </cfdi:Concepto>
      <cfdi:Concepto ClaveProdServ="84111506" Descripcion="Pago" Cantidad="1" ValorUnitario="0" Importe="0"/>
    </cfdi:Conceptos>"""
    lines = concept_lines([etree.fromstring(xml)])
    assert [(c.description, c.tax_rate, c.discount) for c in lines] == [
        ("Cerveza", "0.160000", None), ("Honorarios", None, "5.50"), ("Libro", None, None), ("Pago", None, None)]
    assert lines[0] == ConceptLine("50202201", "Cerveza", "2", "10.5", "21.00", None, "0.160000")


def test_lines_beyond_the_cap_stay_in_the_archive(validator: CfdiValidator, generator: InvoiceGenerator) -> None:
    line = ConceptLine("01010101", "x" * 40, "1", "1.00", "1.00", None, "0.160000")
    assert set(lines_of(_result([line] * MAX_EVENT_LINES), LIMIT)) == {"lines"}
    assert lines_of(_result([line] * (MAX_EVENT_LINES + 1)), LIMIT) == {"lines_in_archive": True}
    # the byte budget: long descriptions, or a small Kafka message limit (1/16 of it)
    long = line._replace(description="d" * 1000)
    assert lines_of(_result([long] * 80), LIMIT) == {"lines_in_archive": True}
    assert lines_of(_result([line] * 40), 64 * 1024) == {"lines_in_archive": True}
    assert set(lines_of(_result([line] * 10), 64 * 1024)) == {"lines"}
    # a real document with a line more than the cap: validated whole, its lines not carried
    big = generator.generate(7, defect=None, conceptos=MAX_EVENT_LINES + 1).xml
    result = validator.validate(big)
    assert result.is_valid and result.conceptos == MAX_EVENT_LINES + 1
    assert lines_of(result, LIMIT) == {"lines_in_archive": True}
    assert len(read_lines(big)) == MAX_EVENT_LINES + 1  # where the report stage reads them


def test_the_budget_estimate_covers_generated_lines(validator: CfdiValidator, generator: InvoiceGenerator) -> None:
    """The estimate is cheap (no encoding); on real lines it is at least what they encode to."""
    for index in range(20):
        result = validator.validate(generator.generate(index, defect=None).xml)
        lines = lines_of(result, LIMIT)["lines"]
        encoded = sum(len(line.model_dump_json(exclude_none=True)) + 1 for line in lines)
        assert encoded <= len(lines) * 160 + sum(len(c.description or "") for c in result.lines)
    assert lines_travel(MAX_EVENT_LINES, 0, LIMIT) and not lines_travel(1, MAX_EVENT_LINES_BYTES, LIMIT)


def test_unreadable_numbers_are_refused_when_read_and_not_carried() -> None:
    bad = ConceptLine("01010101", "x", "uno", "1", "1", None, None)
    with pytest.raises(UnreadableDocument, match="Concepto 1 Cantidad"):
        read_lines(b'<cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/4"><cfdi:Conceptos>'
                   b'<cfdi:Concepto Descripcion="x" Cantidad="uno" ValorUnitario="1" Importe="1"/>'
                   b'</cfdi:Conceptos></cfdi:Comprobante>')
    assert lines_of(_result([bad]), LIMIT) == {}  # never raised: the stage sends the document on


def test_the_stored_event_carries_lines_as_decimal_strings_and_old_events_have_none() -> None:
    facts = CfdiFacts(uuid="A" * 36, issuer_rfc="AAA010101AAA", receiver_rfc="XAXX010101000",
                      fecha="2025-03-03T10:00:00", tipo="I", moneda="MXN", tipo_cambio=Decimal(1),
                      subtotal=Decimal("21.00"), descuento=Decimal(0), total=Decimal("24.36"),
                      total_mxn=Decimal("24.36"), conceptos=1, trust="demo")
    line = InvoiceLine(description="Cerveza", quantity=Decimal("2"), unit_price=Decimal("10.50"),
                       amount=Decimal("21.00"), tax_rate=Decimal("0.160000"), product_code="50202201")
    event = StoredEvent(record_id="r1", s3_key="k", sha256="0" * 64, size=1, gz_size=1,
                        archived_at="2025-03-03T10:00:00.000Z", facts=facts, lines=(line,))
    wire = orjson.loads(event.encode())
    assert wire["lines"] == [{"description": "Cerveza", "quantity": "2", "unit_price": "10.50", "amount": "21.00",
                              "tax_rate": "0.160000", "product_code": "50202201"}]
    assert StoredEvent.model_validate_json(event.encode()) == event
    old = {k: v for k, v in wire.items() if k not in ("lines", "lines_in_archive")}
    parsed = StoredEvent.model_validate_json(orjson.dumps(old))
    assert parsed.lines is None and parsed.lines_in_archive is False
