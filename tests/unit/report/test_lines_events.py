"""Stored events with line items as the report stage reads them (services/report/events.py): the
lines become invoice_lines rows numbered in document order; an event that left them in the archive
says so; an event from before line items has none."""

from __future__ import annotations

from decimal import Decimal

import orjson

from services.report.events import parse_stored
from shared.domain.messages import CfdiFacts, InvoiceLine, StoredEvent

FACTS = CfdiFacts(uuid="9f0e6c1a-1111-4222-8333-944455556666", issuer_rfc="aaa010101aaa", receiver_rfc="XAXX010101000",
                  fecha="2025-03-03T10:00:00", tipo="I", moneda="MXN", tipo_cambio=Decimal(1), subtotal=Decimal("271"),
                  descuento=Decimal("5.5"), total=Decimal("300.00"), total_mxn=Decimal("300.00"), conceptos=2,
                  trust="demo")
LINES = (InvoiceLine(description="Cerveza", quantity=Decimal("2"), unit_price=Decimal("10.5"),
                     amount=Decimal("21.00"), tax_rate=Decimal("0.160000"), product_code="50202201"),
         InvoiceLine(description="Honorarios", quantity=Decimal("1"), unit_price=Decimal("250"),
                     amount=Decimal("250"), discount=Decimal("5.50")))


def _event(**kw: object) -> StoredEvent:
    return StoredEvent(record_id="r-1", s3_key="2025/03/03/AAA010101AAA/X.xml.gz", sha256="0" * 64, size=1,
                       gz_size=1, archived_at="2025-03-03T18:00:00.000Z", facts=FACTS, **kw)


def test_lines_become_rows_numbered_in_document_order() -> None:
    a = parse_stored(_event(lines=LINES).encode())
    assert a is not None and a.lines == LINES and not a.lines_in_archive
    assert a.line_rows() == [
        ["r-1", FACTS.uuid.upper(), 1, "50202201", "Cerveza", Decimal("2"), Decimal("10.5"), Decimal("21.00"), None,
         Decimal("0.160000"), a.version],
        ["r-1", FACTS.uuid.upper(), 2, "", "Honorarios", Decimal("1"), Decimal("250"), Decimal("250"), Decimal("5.50"),
         None, a.version]]


def test_lines_left_in_the_archive_and_events_from_before_line_items() -> None:
    archived = parse_stored(_event(lines_in_archive=True).encode())
    assert archived is not None and archived.lines is None and archived.lines_in_archive
    old = orjson.loads(_event().encode())
    assert "lines" not in old
    before = parse_stored(orjson.dumps(old))
    assert before is not None and before.lines is None and not before.lines_in_archive and before.line_rows() == []
