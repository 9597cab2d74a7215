"""Document sizes through the whole pipeline on an isolated local stack (the five services as
processes): valid invoices of 0.5, 0.9, 1.1 and 4.9 MiB are archived, one of 5.1 MiB (over
``max_document_bytes``) is a DOCUMENT_TOO_LARGE dead letter carrying its size, and every job
completes.  A document whose message would not fit the Kafka limit travels as a claim check, so
no produce is ever refused for its size (before: a 0.9 MB invoice travelled inline as a 1.2 MB
message, was refused, and wedged its partition)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from shared.cli.api_client import bearer
from shared.dlq.reader import read_dead_letters
from shared.settings import Settings
from shared.topics import DLQ, Stage
from tests.e2e.test_pipeline import _db, _s3_keys, _wait_jobs
from tests.support.stacks import Services, isolated_settings, isolated_stack, service_env
from tooling.issuers.generator import GeneratedInvoice, InvoiceGenerator
from tooling.issuers.output import batch_dir, merge_manifest, write_invoice
from tooling.issuers.pki import DemoPKI

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
START = dt.date(2023, 5, 8)  # a window no other test uses
SIZE_ERRORS = ("MSG_SIZE_TOO_LARGE", "Message size too large", "MESSAGE_TOO_LARGE", "not delivered")


@pytest.fixture(scope="module")
def stack() -> Iterator[dict[str, Any]]:
    settings = isolated_settings("sizes", 50)
    with isolated_stack(settings):
        pki = DemoPKI.ensure(settings.pki_dir(), issuers=4)
        env = service_env(settings, FISCALFLOW_TRUST_CA=f"demo={pki.ca_cert}",
                          FISCALFLOW_STAMP_CERTS=str(pki.stamp_certs_dir), FISCALFLOW_LOG_LEVEL="WARNING")
        services = Services(settings, env).start()
        try:
            services.wait_http()
            yield {"settings": settings, "services": services, "pki": pki,
                   "gen": InvoiceGenerator(pki, seed=5150, start=START, days=3)}
        finally:
            services.stop()


def _write(settings: Settings, batch: str, invoices: list[GeneratedInvoice]) -> None:
    root = settings.region_root("north")
    batch_dir(root, batch).mkdir(parents=True, exist_ok=True)
    merge_manifest(batch_dir(root, batch), [write_invoice(root, "north", batch, inv) for inv in invoices])


def _submit(settings: Settings, batch: str) -> str:
    resp = httpx.post(f"http://127.0.0.1:{settings.ingest_port}/api/v1/jobs", timeout=120,
                      headers=bearer(settings, admin=True),
                      json={"source": {"region": "north", "pattern": f"{batch}/*.xml"}})
    assert resp.status_code == 202, resp.text
    job_id: str = resp.json()["job_id"]
    return job_id


def _wait_report(settings: Settings, archived: int, rejected: int, timeout: float = 60) -> dict[str, Any]:
    """The report service's summary (ClickHouse) once it counts what PostgreSQL says."""
    deadline = time.monotonic() + timeout
    while True:
        summary: dict[str, Any] = httpx.get(f"http://127.0.0.1:{settings.report_port}/api/v1/reports/summary",
                                            headers=bearer(settings), timeout=30).json()
        got = (summary["by_status"].get("archived", 0), summary["by_status"].get("rejected", 0))
        if got == (archived, rejected) or time.monotonic() > deadline:
            return summary
        time.sleep(0.5)


def _timings(settings: Settings, record_ids: list[str]) -> dict[str, dict[str, float]]:
    """Seconds per record from the audit trail: downloading → downloaded (fetch, claim check),
    downloaded → archived (validate and store, claim fetches included), and the whole handling."""
    rows = _db(settings, "SELECT record_id, to_status, min(created_at) AS at FROM audit_events "
                         "WHERE record_id = ANY($1) GROUP BY 1, 2", record_ids)
    at: dict[str, dict[str, dt.datetime]] = {}
    for r in rows:
        at.setdefault(r["record_id"], {})[r["to_status"]] = r["at"]
    return {rid: {"download_s": (t["downloaded"] - t["downloading"]).total_seconds(),
                  "validate_store_s": (t["archived"] - t["downloaded"]).total_seconds(),
                  "total_s": (t["archived"] - t["downloading"]).total_seconds()}
            for rid, t in at.items() if {"downloading", "downloaded", "archived"} <= t.keys()}


def _validate_s(settings: Settings, pki: DemoPKI, xml: bytes) -> float:
    """The validator alone on one document, in this process: what the validate stage spends on it."""
    from services.validate.cfdi import CfdiValidator, StampCertStore, TrustStore

    validator = CfdiValidator(TrustStore.default(extra=[str(pki.ca_cert)]),
                              StampCertStore.from_directory(str(pki.stamp_certs_dir)),
                              max_bytes=settings.max_document_bytes)
    began = time.perf_counter()
    assert validator.validate(xml).is_valid
    return time.perf_counter() - began


def _no_size_errors(services: Services) -> None:
    for stage in Stage:
        text = (services.logs / f"e2e-{stage.value}.log").read_text(errors="replace")
        found = [e for e in SIZE_ERRORS if e in text]
        assert not found, f"{stage.value} logged {found}"


def test_documents_up_to_the_cap_are_archived_and_one_over_it_is_refused_with_its_size(
        stack: dict[str, Any]) -> None:
    settings: Settings = stack["settings"]
    gen: InvoiceGenerator = stack["gen"]
    began = time.perf_counter()
    sized = {mib: gen.generate_sized(int(mib * 10), int(mib * MIB), tolerance=0.005)
             for mib in (0.5, 0.9, 1.1, 4.9, 5.1)}
    generated_s = time.perf_counter() - began
    assert len(sized[4.9].xml) < settings.max_document_bytes < len(sized[5.1].xml)
    _write(settings, "sizes", list(sized.values()))
    began = time.perf_counter()
    job = _submit(settings, "sizes")
    _wait_jobs(settings, [job], timeout=300)
    job_s = time.perf_counter() - began

    ids = {mib: inv.record_id for mib, inv in sized.items()}
    rows = {r["record_id"]: r for r in _db(settings, "SELECT record_id, status, reason, s3_key, size FROM "
                                                     "fiscal_records WHERE record_id = ANY($1)", list(ids.values()))}
    keys = _s3_keys(settings)
    for mib in (0.5, 0.9, 1.1, 4.9):
        row = rows[ids[mib]]
        assert (row["status"], row["size"]) == ("archived", len(sized[mib].xml)), (mib, dict(row))
        assert row["s3_key"] in keys, mib
    big = rows[ids[5.1]]
    assert (big["status"], big["reason"]) == ("rejected", "DOCUMENT_TOO_LARGE")
    (letter,) = [dl for dl in read_dead_letters(settings, DLQ) if dl.record_id == ids[5.1]]
    assert letter.reason == "DOCUMENT_TOO_LARGE" and letter.stage == "download"
    assert letter.details == {"size": len(sized[5.1].xml), "limit": settings.max_document_bytes}
    assert str(len(sized[5.1].xml)) in letter.error

    # Only the 0.5 MiB document's message fits 90 % of the 1,000,000-byte limit: it alone travelled inline.
    claims = {r["record_id"]: r["claim"] for r in _db(
        settings, "SELECT record_id, detail->>'claim_key' AS claim FROM audit_events "
                  "WHERE to_status = 'downloaded' AND record_id = ANY($1)", list(ids.values()))}
    assert claims[ids[0.5]] is None
    assert all(claims[ids[mib]] == f"staging/{ids[mib]}" for mib in (0.9, 1.1, 4.9))

    summary = _wait_report(settings, archived=4, rejected=1)
    assert summary["by_status"]["archived"] == 4 and summary["by_reason"] == {"DOCUMENT_TOO_LARGE": 1}
    _no_size_errors(stack["services"])
    timings = _timings(settings, list(ids.values()))
    print(f"\nsizes: generated in {generated_s:.1f} s, job completed in {job_s:.1f} s")
    for mib in (0.5, 0.9, 1.1, 4.9):
        t = timings[ids[mib]]
        alone = _validate_s(settings, stack["pki"], sized[mib].xml)
        print(f"  {mib} MiB ({len(sized[mib].xml)} B): validator alone {alone:.2f} s; in the pipeline "
              f"download {t['download_s']:.2f} s, validate+store {t['validate_store_s']:.2f} s, "
              f"downloading->archived {t['total_s']:.2f} s")


def test_a_big_invoice_and_a_bigger_one_among_twenty_ordinary_ones_all_archived(stack: dict[str, Any]) -> None:
    """The issue's must-show: 0.9 MB and 1.1 MB valid invoices plus 20 ordinary ones in one job —
    22 archived, the job completed, no size error in any service's log."""
    settings: Settings = stack["settings"]
    gen: InvoiceGenerator = stack["gen"]
    invoices = [gen.generate_sized(900, 900_000), gen.generate_sized(1100, 1_100_000)]
    invoices += [gen.generate(2000 + i, defect=None) for i in range(20)]
    assert [len(inv.xml) > 880_000 for inv in invoices] == [True, True] + [False] * 20
    before = httpx.get(f"http://127.0.0.1:{settings.report_port}/api/v1/reports/summary", headers=bearer(settings),
                       timeout=30).json()
    archived, rejected = before["by_status"].get("archived", 0), before["by_status"].get("rejected", 0)
    _write(settings, "mixed", invoices)
    job = _submit(settings, "mixed")
    _wait_jobs(settings, [job], timeout=300)
    ids = [inv.record_id for inv in invoices]
    statuses = {r["record_id"]: r["status"] for r in _db(
        settings, "SELECT record_id, status FROM fiscal_records WHERE record_id = ANY($1)", ids)}
    assert statuses == dict.fromkeys(ids, "archived")
    view = httpx.get(f"http://127.0.0.1:{settings.ingest_port}/api/v1/jobs/{job}", headers=bearer(settings),
                     timeout=30).json()
    assert view["status"] == "completed" and view["counts"].get("archived") == view["finished"] == 22, view
    summary = _wait_report(settings, archived=archived + 22, rejected=rejected)
    assert summary["by_status"]["archived"] == archived + 22
    _no_size_errors(stack["services"])
