"""The seed contract (docs/seed-api.md): the read routes of the Go system fiscalflow replaces, on
the report service as a process.  Known records — archived by the real store stage, rejected and
retried the way the stages write it, one still pending — are read back field by field; the daily
report's seed totals equal sums made here; a day without documents is a 404 the CLI says in words."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import hashlib
import random
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import botocore.session
import orjson
import pytest
from botocore.config import Config

from services.store.service import build_stage
from shared.db.records import Registration, Transition, apply_transitions, register
from shared.domain.records import RecordStatus
from shared.settings import Settings
from shared.topics import STORED, Stage, input_topic
from tests.integration.report.conftest import ReportProc
from tests.integration.store.harness import validated
from tests.support.stages import stage_running
from tooling.issuers.generator import GeneratedInvoice, InvoiceGenerator
from tooling.issuers.pki import DemoPKI

pytestmark = pytest.mark.integration

DAY = dt.date(2025, 6, 2)  # every invoice of this module is dated this day
EMPTY_DAY = dt.date(2025, 6, 3)
RECORDS = "/api/v1/fiscal/records"
FIELDS = ["uuid", "invoice_id", "issuer_rfc", "receiver_rfc", "amount", "currency", "issuance_date", "status",
          "file_url", "checksum", "compressed_size", "processed_at", "error_message", "retry_count",
          "last_retry_at"]  # the Go system's, in its order; fiscalflow adds record_id, reason and region
MISMATCH = "sha256 " + "c" * 64 + " != expected " + "a" * 64


@dataclass
class Known:
    invs: dict[str, GeneratedInvoice]  # archived by the store stage
    rejected: str  # rejected twice (CHECKSUM_MISMATCH), the second time after a retry
    retried_between: tuple[dt.datetime, dt.datetime]  # the retry started within this window
    pending: str
    pg: dict[str, asyncpg.Record]  # the registry's rows of all of them, read after the fact


def _s3_object(settings: Settings, key: str) -> bytes:
    s3 = botocore.session.get_session().create_client(
        "s3", endpoint_url=settings.s3_endpoint, region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key.get_secret_value(),
        aws_secret_access_key=settings.s3_secret_key.get_secret_value(),
        config=Config(s3={"addressing_style": "path"}))
    body: bytes = s3.get_object(Bucket=settings.s3_bucket, Key=key)["Body"].read()
    return body


@pytest.fixture(scope="module")
def known(report: ReportProc, stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Known]:
    pki = DemoPKI.ensure(Path(tmp_path_factory.mktemp("pki")), issuers=3)
    gen = InvoiceGenerator(pki, seed=random.randrange(1 << 30), start=DAY, days=1)
    run = f"seed-{random.randrange(1 << 32):08x}"
    invs = {f"{run}-a{i}": gen.generate(i, defect=None) for i in range(6)}
    rejected, pending = f"{run}-rejected", f"{run}-pending"
    topics = report.topics

    def moves(rid: str, to: RecordStatus, frm: RecordStatus, key: str, stage: str, **kw: Any) -> Transition:
        return Transition(rid, to, (frm,), stage, "test", f"{rid}:{key}", **kw)

    async def setup() -> Known:
        conn = await asyncpg.connect(stack_settings.pg_dsn.get_secret_value())
        try:
            await register(conn, [Registration(rid, "north", f"t/{rid}.xml") for rid in invs]
                           + [Registration(rejected, "north", f"t/{rejected}.xml", "a" * 64, 1234),
                              Registration(pending, "south", f"t/{pending}.xml")])
            # The rejected record's life: started, its checksum refused, started again (a retry), refused again.
            first = [moves(rejected, RecordStatus.DOWNLOADING, RecordStatus.PENDING, "start1", "ingest"),
                     moves(rejected, RecordStatus.REJECTED, RecordStatus.DOWNLOADING, "reject1", "download",
                           reason="CHECKSUM_MISMATCH", last_error=MISMATCH)]
            for t in first:
                assert await apply_transitions(conn, [t]) == [True]
            before = await conn.fetchval("SELECT now()")
            retry = [moves(rejected, RecordStatus.DOWNLOADING, RecordStatus.REJECTED, "start2", "ingest"),
                     moves(rejected, RecordStatus.REJECTED, RecordStatus.DOWNLOADING, "reject2", "download",
                           reason="CHECKSUM_MISMATCH", last_error=MISMATCH)]
            assert await apply_transitions(conn, [retry[0]]) == [True]
            after = await conn.fetchval("SELECT now()")
            assert await apply_transitions(conn, [retry[1]]) == [True]
            # The archived ones, through the real store stage (it writes the registry and fiscal.stored).
            docs = [(rid, validated(rid, inv).encode()) for rid, inv in invs.items()]
            topics.produce(input_topic(Stage.STORE), docs)
            async with stage_running(stack_settings, Stage.STORE,
                                     lambda host: build_stage(host, topic_namespace=topics.ns)):
                await asyncio.to_thread(topics.read, STORED, set(invs), 90, 1, 0.5)
            rows = await conn.fetch("SELECT * FROM fiscal_records WHERE record_id = ANY($1::text[])",
                                    [*invs, rejected, pending])
            return Known(invs, rejected, (before, after), pending, {r["record_id"]: r for r in rows})
        finally:
            await conn.close()

    out = asyncio.run(setup())
    assert {r["status"] for rid, r in out.pg.items() if rid in invs} == {"archived"}
    report.wait_until(lambda: report.get("/api/v1/reports/daily", date=DAY.isoformat()).json()["record_count"]
                      == len(invs))
    yield out


def _listed(report: ReportProc, record_id: str, **params: Any) -> dict[str, Any]:
    body = report.get(RECORDS, limit=1000, **params).json()
    found: list[dict[str, Any]] = [r for r in body["records"] if r["record_id"] == record_id]
    assert len(found) == 1, f"{record_id} not among the {body['count']} newest records {params}"
    return found[0]


def test_an_archived_record_in_the_seed_fields(report: ReportProc, known: Known, stack_settings: Settings) -> None:
    rid, inv = next(iter(known.invs.items()))
    pg = known.pg[rid]
    key = f"{inv.fecha[:4]}/{inv.fecha[5:7]}/{inv.fecha[8:10]}/{inv.issuer_rfc.upper()}/{inv.uuid.upper()}.xml.gz"
    got = _listed(report, rid, status="archived")
    archived = _s3_object(stack_settings, key)
    assert gzip.decompress(archived) == inv.xml
    assert list(got)[:len(FIELDS)] == FIELDS
    assert got == {
        "uuid": inv.uuid.upper(),
        "invoice_id": None,  # Serie + Folio: not kept by any stage
        "issuer_rfc": inv.issuer_rfc.upper(),
        "receiver_rfc": "XAXX010101000",  # what the harness's validated document names
        "amount": got["amount"],  # checked as a number below (the API's decimal string)
        "currency": inv.moneda,
        "issuance_date": inv.fecha,
        "status": "archived",
        "file_url": f"s3://{stack_settings.s3_bucket}/{key}",
        "checksum": hashlib.sha256(inv.xml).hexdigest(),
        "compressed_size": len(archived),
        "processed_at": pg["updated_at"].isoformat(),
        "error_message": None,
        "retry_count": 0,
        "last_retry_at": None,
        "record_id": rid,
        "reason": None,
        "region": "north",
    }
    assert Decimal(got["amount"]) == inv.total and "." in got["amount"] and "E" not in got["amount"].upper()
    assert dt.datetime.fromisoformat(got["processed_at"]) >= pg["archived_at"]


def test_a_rejected_and_retried_record_in_the_seed_fields(report: ReportProc, known: Known) -> None:
    pg = known.pg[known.rejected]
    got = _listed(report, known.rejected, status="rejected")
    retried = dt.datetime.fromisoformat(got["last_retry_at"])
    assert known.retried_between[0] <= retried <= known.retried_between[1]
    assert got == {
        "uuid": None, "invoice_id": None, "issuer_rfc": None, "receiver_rfc": None, "amount": None,
        "currency": None, "issuance_date": None,  # never read: its download was refused
        "status": "rejected", "file_url": None,
        "checksum": None,  # the document's own hash is kept only once it matched
        "compressed_size": None,
        "processed_at": pg["updated_at"].isoformat(),
        "error_message": MISMATCH,
        "retry_count": 1,  # two passes: the first and one retry
        "last_retry_at": got["last_retry_at"],
        "record_id": known.rejected,
        "reason": "CHECKSUM_MISMATCH",
        "region": "north",
    }


def test_the_status_filter_and_the_limit(report: ReportProc, known: Known) -> None:
    for status in RecordStatus:
        body = report.get(RECORDS, status=status.value, limit=1000).json()
        assert body["count"] == len(body["records"]) <= 1000
        assert {r["status"] for r in body["records"]} <= {status.value}, status
        if status.is_final:  # newest first
            stamps = [dt.datetime.fromisoformat(r["processed_at"]) for r in body["records"]]
            assert stamps == sorted(stamps, reverse=True), status
    pending = _listed(report, known.pending, status="pending")
    assert pending["processed_at"] is None and pending["uuid"] is None and pending["retry_count"] == 0
    # Without a filter: every status, the newest first; ours are the newest of their statuses.
    everything = report.get(RECORDS, limit=1000).json()
    ids = [r["record_id"] for r in everything["records"]]
    assert {known.rejected, known.pending, *known.invs} <= set(ids)
    assert report.get(RECORDS).json()["count"] == min(100, len(ids))  # the default limit
    one = report.get(RECORDS, status="archived", limit=1).json()
    assert one["count"] == 1 and len(one["records"]) == 1 and one["records"][0]["status"] == "archived"
    bad: list[tuple[dict[str, Any], str]] = [
        ({"status": "bogus"}, "status"), ({"status": "validated"}, "status"), ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"), ({"limit": "x"}, "limit")]
    for params, says in bad:
        resp = report.get(RECORDS, **params)
        assert resp.status_code == 400, (params, resp.text)
        assert resp.json()["error"] == "bad_request" and says in resp.json()["detail"], resp.json()


def test_the_daily_report_has_the_seed_totals_and_a_day_without_documents_is_a_404(
        report: ReportProc, known: Known) -> None:
    body = report.get("/api/v1/reports/daily", date=DAY.isoformat()).json()
    per_issuer: dict[str, list[Any]] = defaultdict(lambda: [0, Decimal(0)])
    for inv in known.invs.values():
        per_issuer[inv.issuer_rfc][0] += 1
        per_issuer[inv.issuer_rfc][1] += inv.total_mxn
    assert body["date"] == DAY.isoformat() and body["record_count"] == len(known.invs)
    assert Decimal(body["total_amount"]) == sum(v[1] for v in per_issuer.values())
    assert {rfc: (v["record_count"], Decimal(v["total_amount"])) for rfc, v in body["by_issuer"].items()} == {
        rfc: (n, mxn) for rfc, (n, mxn) in per_issuer.items()}
    # When the registry archived the day's last document: the newest processed_at among them.
    assert body["last_update"] == max(known.pg[rid]["updated_at"] for rid in known.invs).isoformat()
    # Today's fields stay, and agree with the seed's.
    assert sum(g["count"] for g in body["groups"]) == body["record_count"]
    assert {i["rfc"]: (i["count"], i["total_mxn"]) for i in body["issuers"]} == {
        rfc: (v["record_count"], v["total_amount"]) for rfc, v in body["by_issuer"].items()}
    missing = report.get("/api/v1/reports/daily", date=EMPTY_DAY.isoformat())
    assert missing.status_code == 404
    assert missing.json() == {"error": "not_found", "detail": f"no archived documents dated {EMPTY_DAY.isoformat()}"}


def test_the_seed_routes_need_the_read_token(report: ReportProc, known: Known) -> None:
    routes: list[tuple[str, dict[str, Any], int]] = [
        (RECORDS, {}, 200), (RECORDS, {"status": "archived", "limit": 5}, 200),
        ("/api/v1/reports/daily", {"date": DAY.isoformat()}, 200),
        ("/api/v1/reports/daily", {"date": EMPTY_DAY.isoformat()}, 404)]
    for path, params, status in routes:
        for token in (None, "wrong-token"):
            resp = report.get(path, token=token, **params)
            assert resp.status_code == 401 and resp.json()["error"] == "unauthorized", (path, token, resp.text)
        for token in ("read", "admin"):
            assert report.get(path, token=token, **params).status_code == status, (path, token)


def test_the_openapi_document_names_the_fields_the_routes_answer(report: ReportProc, known: Known) -> None:
    spec = report.get("/openapi.json", token=None).json()
    schemas = spec["components"]["schemas"]
    op = spec["paths"][RECORDS]["get"]
    assert {p["name"] for p in op["parameters"]} == {"status", "limit", "region"}
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/FiscalRecords")
    record = _listed(report, known.rejected, status="rejected")
    assert list(schemas["FiscalRecord"]["properties"]) == list(record)
    assert set(schemas["FiscalRecords"]["properties"]) == {"count", "records"}
    daily = report.get("/api/v1/reports/daily", date=DAY.isoformat()).json()
    assert list(schemas["DailyReport"]["properties"]) == list(daily)
    assert "404" in spec["paths"]["/api/v1/reports/daily"]["get"]["responses"]


def test_the_cli_says_a_day_has_no_documents_instead_of_failing(report: ReportProc, known: Known) -> None:
    table = report.cli("daily", DAY.isoformat())
    assert table.returncode == 0 and f"{len(known.invs)} documents" in table.stdout and "issuers" in table.stdout
    empty = report.cli("daily", EMPTY_DAY.isoformat())
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.strip() == f"No archived documents dated {EMPTY_DAY.isoformat()}: nothing to report for " \
                                   "that day." and "Traceback" not in empty.stderr
    as_json = report.cli("daily", EMPTY_DAY.isoformat(), "--json")
    assert as_json.returncode == 0 and orjson.loads(as_json.stdout)["error"] == "not_found"
