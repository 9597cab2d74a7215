"""Line items (issue 18) on the report service as a process: documents validated by the validator
and sent on as the validate stage sends them, archived by the real store stage, materialised into
ClickHouse (invoice_lines) and served by ``GET /api/v1/records/{id}/lines`` — each line equal to the
document's Conceptos read here with XPath.  Lines too many for the stored event are read from the
archived document; a redelivered event adds no line; a record archived without lines (an event from
before line items) gets them from ``report rebuild``."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from lxml import etree

from services.store.service import build_stage
from services.validate.cfdi import CfdiValidator, StampCertStore, TrustStore
from services.validate.service import facts_of, lines_of
from shared.db.records import Registration, register
from shared.domain.messages import DocumentRef, StoredEvent, ValidatedDocument
from shared.settings import Settings
from shared.topics import STORED, Stage, input_topic
from tests.integration.report.conftest import ReportProc
from tests.support.stages import stage_running
from tooling.issuers.generator import GeneratedInvoice, InvoiceGenerator
from tooling.issuers.pki import DemoPKI

pytestmark = pytest.mark.integration

DAY = dt.date(2024, 8, 5)  # every invoice of this module is dated this day; no other test uses it
NS = {"cfdi": "http://www.sat.gob.mx/cfd/4"}
BATCHES = "fiscalflow_report_batch_seconds_count"
SMALL_LIMIT = 16 * 1024  # a Kafka message limit under which even a few lines stay in the archive


@dataclass
class Flowed:
    invs: dict[str, GeneratedInvoice]  # record id -> invoice, all archived
    in_archive: str  # its stored event said lines_in_archive
    without_lines: str  # sent on as a validate stage older than line items does
    pending: str  # registered, never archived
    stored: dict[str, bytes]  # the stored events as the store stage sent them


def _conceptos(xml: bytes) -> list[dict[str, Any]]:
    """The document's Conceptos, read here with XPath (apart from shared/cfdi/facts.py)."""
    out = []
    for n, c in enumerate(etree.fromstring(xml).xpath("/cfdi:Comprobante/cfdi:Conceptos/cfdi:Concepto",
                                                      namespaces=NS), 1):
        iva = c.xpath("cfdi:Impuestos/cfdi:Traslados/cfdi:Traslado[@Impuesto='002']/@TasaOCuota", namespaces=NS)
        out.append({"line": n, "product_code": c.get("ClaveProdServ"), "description": c.get("Descripcion"),
                    "quantity": Decimal(c.get("Cantidad")), "unit_price": Decimal(c.get("ValorUnitario")),
                    "amount": Decimal(c.get("Importe")),
                    "discount": Decimal(c.get("Descuento")) if c.get("Descuento") is not None else None,
                    "tax_rate": Decimal(iva[0]) if iva else None})
    return out


def _served(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The route's lines with their decimal strings read as Decimal."""
    return [{**line, **{k: None if line[k] is None else Decimal(line[k])
                        for k in ("quantity", "unit_price", "amount", "discount", "tax_rate")}}
            for line in body["lines"]]


def _metric(report: ReportProc, sample: str) -> float:
    m = re.search(rf"^{re.escape(sample)} (\S+)$", httpx.get(report.ops + "/metrics", timeout=10).text, re.M)
    return float(m.group(1)) if m else 0.0


@pytest.fixture(scope="module")
def flowed(report: ReportProc, stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flowed]:
    pki = DemoPKI.ensure(Path(tmp_path_factory.mktemp("pki")), issuers=3)
    gen = InvoiceGenerator(pki, seed=random.randrange(1 << 30), start=DAY, days=1)
    validator = CfdiValidator(TrustStore.default([f"demo={pki.ca_cert}"]),
                              StampCertStore.from_directory(pki.stamp_certs_dir))
    run = f"lines-{random.randrange(1 << 32):08x}"
    invs = {f"{run}-{i}": gen.generate(i, defect=None, tipo=tipo)
            for i, tipo in enumerate(["I", "I", "I", "E", "P", "I"])}
    invs[f"{run}-many"] = gen.generate(6, defect=None, conceptos=25)
    in_archive, without_lines = f"{run}-archive", f"{run}-old"
    invs[in_archive] = gen.generate(7, defect=None, conceptos=12)
    invs[without_lines] = gen.generate(8, defect=None)
    pending = f"{run}-pending"

    def validated(rid: str, inv: GeneratedInvoice) -> ValidatedDocument:
        """What the validate stage sends the store stage (services/validate/service.py)."""
        result = validator.validate(inv.xml)
        assert result.is_valid, result.rules
        ref = DocumentRef(record_id=rid, region="north", path=f"t/{rid}.xml",
                          sha256=hashlib.sha256(inv.xml).hexdigest(), size=len(inv.xml), xml=inv.xml)
        if rid == without_lines:
            return ValidatedDocument(**ref.model_dump(), facts=facts_of(result))
        limit = SMALL_LIMIT if rid == in_archive else stack_settings.message_max_bytes
        return ValidatedDocument(**ref.model_dump(), facts=facts_of(result), **lines_of(result, limit))

    async def through_store() -> dict[str, bytes]:
        conn = await asyncpg.connect(stack_settings.pg_dsn.get_secret_value())
        try:
            await register(conn, [Registration(rid, "north", f"t/{rid}.xml") for rid in [*invs, pending]])
        finally:
            await conn.close()
        report.topics.produce(input_topic(Stage.STORE), [(rid, validated(rid, inv).encode())
                                                         for rid, inv in invs.items()])
        async with stage_running(stack_settings, Stage.STORE,
                                 lambda host: build_stage(host, topic_namespace=report.topics.ns)):
            found = await asyncio.to_thread(report.topics.read, STORED, set(invs), 90, 1, 0.5)
        return {rid: msgs[0].value() for rid, msgs in found.items()}

    stored = asyncio.run(through_store())
    assert set(stored) == set(invs)
    report.wait_until(lambda: all(report.get(f"/api/v1/records/{rid}/lines").status_code == 200
                                  for rid in invs if rid != without_lines))
    yield Flowed(invs, in_archive, without_lines, pending, stored)


def test_lines_land_in_clickhouse_and_are_served_equal_to_the_documents_conceptos(
        report: ReportProc, flowed: Flowed) -> None:
    events = {rid: StoredEvent.model_validate_json(v) for rid, v in flowed.stored.items()}
    assert events[flowed.in_archive].lines is None and events[flowed.in_archive].lines_in_archive
    assert events[flowed.without_lines].lines is None and not events[flowed.without_lines].lines_in_archive
    many = next(rid for rid in flowed.invs if rid.endswith("-many"))
    assert len(events[many].lines or ()) == 25
    for rid, inv in flowed.invs.items():
        if rid == flowed.without_lines:
            continue
        resp = report.get(f"/api/v1/records/{rid}/lines")
        assert resp.status_code == 200, (rid, resp.text)
        body = resp.json()
        expected = _conceptos(inv.xml)
        assert (body["record_id"], body["uuid"], body["count"]) == (rid, inv.uuid.upper(), len(expected))
        assert _served(body) == expected, rid
        # amounts are exact decimal strings: never a float, never an exponent
        raw = orjson.loads(resp.content)["lines"]
        assert all(isinstance(line[k], str) and "E" not in line[k]
                   for line in raw for k in ("quantity", "unit_price", "amount"))
    # the lines the store stage carried are the ones served (the one left in the archive was read from S3)
    for rid, ev in events.items():
        if ev.lines:
            served = report.get(f"/api/v1/records/{rid}/lines").json()["lines"]
            assert [(s["description"], Decimal(s["amount"])) for s in served] == \
                   [(line.description, line.amount) for line in ev.lines]


def test_a_redelivered_stored_event_adds_no_line(report: ReportProc, flowed: Flowed) -> None:
    rows = 'fiscalflow_report_rows_total{table="invoice_lines"}'
    read = 'fiscalflow_report_events_total{kind="stored"}'
    counts = {rid: report.get(f"/api/v1/records/{rid}/lines").json()["count"]
              for rid in flowed.invs if rid != flowed.without_lines}
    rows_before, read_before, batches_before = _metric(report, rows), _metric(report, read), _metric(report, BATCHES)
    assert rows_before >= sum(counts.values())
    again = [(rid, v) for rid, v in flowed.stored.items() if rid != flowed.without_lines]
    report.topics.produce(STORED, again + again[:2])

    def written() -> bool:
        """Every redelivered event read and the batches that read them written: a batch's events
        are counted when read, the batch when written (a batch of a few events: well under a second)."""
        batches = _metric(report, BATCHES)
        if _metric(report, read) - read_before < len(again) + 2 or batches == batches_before:
            return False
        time.sleep(1.0)
        return _metric(report, BATCHES) == batches

    report.wait_until(written)
    assert _metric(report, rows) == rows_before
    assert {rid: report.get(f"/api/v1/records/{rid}/lines").json()["count"] for rid in counts} == counts


def test_a_record_without_lines_says_why_and_a_rebuild_restores_them(report: ReportProc, flowed: Flowed) -> None:
    unknown = report.get(f"/api/v1/records/{flowed.pending}-nope/lines")
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "not_found", "detail": f"record {flowed.pending}-nope not found"}
    pending = report.get(f"/api/v1/records/{flowed.pending}/lines")
    assert pending.status_code == 404 and "is pending: only an archived record has lines" in pending.json()["detail"]
    old = flowed.without_lines
    # archived in the reports (the day's count), but no line known
    report.wait_until(lambda: report.get("/api/v1/reports/daily", date=DAY.isoformat()).json()["record_count"]
                      >= len(flowed.invs))
    none = report.get(f"/api/v1/records/{old}/lines")
    assert none.status_code == 404 and none.json()["detail"].startswith(f"no lines known for record {old}")

    admin = {"Authorization": f"Bearer {report.admin_token}"}
    totals = {"lines_from_s3": 0, "line_rows": 0}
    body: dict[str, Any] = {"from": DAY.isoformat(), "to": DAY.isoformat(), "limit": 5000, "restart": True}
    for _ in range(20):
        step = httpx.post(f"{report.api}/api/v1/reports/rebuild", json=body, headers=admin, timeout=120).json()
        body["restart"] = False
        for k in totals:
            totals[k] += step[k]
        assert old not in step["missing"] and not set(flowed.invs) & set(step["missing"]), step
        if step["finished"]:
            break
    expected = _conceptos(flowed.invs[old].xml)
    assert totals["lines_from_s3"] >= 1 and totals["line_rows"] >= len(expected), totals
    restored = report.get(f"/api/v1/records/{old}/lines")
    assert restored.status_code == 200 and _served(restored.json()) == expected
    # a second rebuild finds every line of these records written
    again = httpx.post(f"{report.api}/api/v1/reports/rebuild", json={**body, "restart": True}, headers=admin,
                       timeout=120).json()
    assert again["finished"] and again["line_rows"] == 0, again


def test_the_openapi_document_names_the_fields_the_lines_route_answers(report: ReportProc, flowed: Flowed) -> None:
    spec = report.get("/openapi.json", token=None).json()
    op = spec["paths"]["/api/v1/records/{record_id}/lines"]["get"]
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/RecordLines")
    assert "404" in op["responses"] and op["security"] == [{"bearer": []}]
    body = report.get(f"/api/v1/records/{next(iter(flowed.invs))}/lines").json()
    schemas = spec["components"]["schemas"]
    assert list(schemas["RecordLines"]["properties"]) == list(body)
    assert list(schemas["RecordLine"]["properties"]) == list(body["lines"][0])
    assert report.get(f"/api/v1/records/{next(iter(flowed.invs))}/lines", token=None).status_code == 401
