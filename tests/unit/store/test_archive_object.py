"""The archive object of a document: plain gzip, the same bytes for the same document and level."""

from __future__ import annotations

import gzip
from decimal import Decimal

from services.store.archive import build_archive_object
from shared.domain.messages import CfdiFacts

FACTS = CfdiFacts(uuid="5fb2822e-396d-4725-8521-cdc4bdd20ccf", issuer_rfc="EKU9003173C9", receiver_rfc="XAXX010101000",
                  fecha="2026-03-04T10:11:12", tipo="I", moneda="MXN", tipo_cambio=Decimal(1), subtotal=Decimal(100),
                  descuento=Decimal(0), total=Decimal(116), total_mxn=Decimal(116), conceptos=1, trust="test")
XML = b'<?xml version="1.0" encoding="UTF-8"?>' + b"".join(
    b'<cfdi:Concepto Cantidad="%d" Descripcion="Servicio %d" ValorUnitario="100.00" Importe="100.00"/>' % (i, i)
    for i in range(200))


def test_every_level_is_plain_gzip_of_the_document_and_repeats_byte_for_byte() -> None:
    sizes = []
    for level in range(4):
        obj = build_archive_object(XML, FACTS, level)
        assert gzip.decompress(obj.body) == XML
        assert build_archive_object(XML, FACTS, level).body == obj.body  # the same bytes again
        assert obj.body[4:8] == b"\0\0\0\0"  # mtime 0
        sizes.append(len(obj.body))
    assert sizes[3] < sizes[0] < len(XML)
    assert obj.key == "2026/03/04/EKU9003173C9/5FB2822E-396D-4725-8521-CDC4BDD20CCF.xml.gz"
