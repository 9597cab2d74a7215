"""The whole pipeline on an isolated local stack: generated invoices plus the public samples go
through ingest, download, validate, store and report as real processes; the reports must equal
sums computed independently from the documents, every archived record has one S3 object, every
rejected one one dead letter with its reason, and a second run of the same jobs changes no count.

Every Kafka client of the run (the five services, the test's own dead-letter reader) speaks
mutual TLS: the broker is reached only through the stack's TLS listener."""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import json
import shutil
import time
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree

from shared.cli.api_client import bearer
from shared.dlq.reader import read_dead_letters
from shared.runtime import metrics as runtime_metrics
from shared.settings import PROJECT_ROOT, Settings
from shared.topics import DLQ
from tests.e2e.otlp_sink import OtlpSink, Span
from tests.support.e2e import db as _db
from tests.support.e2e import s3_keys as _s3_keys
from tests.support.e2e import wait_jobs as _wait_jobs
from tests.support.sockets import connected_pids, descendants
from tests.support.stacks import Services, isolated_settings, isolated_stack, service_env
from tests.support.wait import wait_for
from tooling.issuers.generator import InvoiceGenerator
from tooling.issuers.output import batch_dir, load_files, merge_manifest, write_invoice
from tooling.issuers.pki import DemoPKI
from tooling.stack import LocalStack
from tooling.stack.kafka_tls import backend_address

pytestmark = pytest.mark.e2e

SHARED_CFDI = PROJECT_ROOT.parent / "shared" / "cfdi"
CFDI = "{http://www.sat.gob.mx/cfd/4}"
GENERATED = 900
START = dt.date(2023, 2, 6)  # a window no other test uses
DAYS = 5


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    settings = isolated_settings("e2e", 40, kafka_tls=True)
    with isolated_stack(settings):
        pki = DemoPKI.ensure(settings.pki_dir(), issuers=12)
        trust = [f"demo={pki.ca_cert}"]
        stamps = tmp_path_factory.mktemp("stamp-certs")
        for cert in pki.stamp_certs_dir.iterdir():
            shutil.copy(cert, stamps / cert.name)
        if SHARED_CFDI.is_dir():  # the public samples are signed by SAT's test CA and test PACs
            trust.append(f"sat-test={SHARED_CFDI / 'test-certs' / 'ca' / 'SATCertsPruebas.zip'}")
            for cert in (SHARED_CFDI / "test-certs" / "tfd").glob("*.cer"):
                shutil.copy(cert, stamps / cert.name)
        expected = _write_inputs(settings, pki)
        sink = OtlpSink()  # every service exports its spans over OTLP/HTTP to this in-memory receiver
        # The public samples are mostly invalid on purpose and are validated last: over the last 200
        # messages they make validate's reject ratio brush the default halt threshold (50 %), which
        # would halt it before the later tests' documents.  The halt has its own tests
        # (tests/e2e/test_halted_stage.py).
        env = service_env(settings, FISCALFLOW_TRUST_CA=":".join(trust), FISCALFLOW_STAMP_CERTS=str(stamps),
                          FISCALFLOW_REJECT_RATIO_THRESHOLD="0.9",
                          FISCALFLOW_LOG_LEVEL="WARNING", FISCALFLOW_OTLP_ENDPOINT=sink.endpoint,
                          OTEL_BSP_SCHEDULE_DELAY="200")
        services = Services(settings, env).start()
        try:
            services.wait_http()
            yield {"settings": settings, "expected": expected, "services": services, "spans": sink,
                   "stack": LocalStack(settings)}
        finally:
            services.stop()
            sink.close()


def _write_inputs(settings: Settings, pki: DemoPKI) -> dict[str, dict[str, Any]]:
    """Invoices on the three regions and the samples on north; returns record id -> expectation."""
    expected: dict[str, dict[str, Any]] = {}
    gen = InvoiceGenerator(pki, seed=20231, start=START, days=DAYS, bad_fraction=0.06)
    regions = list(settings.regions())
    for region in regions:
        batch_dir(settings.region_root(region), "gen").mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[Any]] = defaultdict(list)
    for i in range(GENERATED):
        inv = gen.generate(i)
        region = regions[i % len(regions)]
        row = write_invoice(settings.region_root(region), region, "gen", inv)
        rows[region].append(row)
        if inv.defect == "file_not_found":
            continue  # never listed, so never part of a job
        expected[inv.record_id] = {"verdict": inv.expected_verdict, "reason": inv.expected_reason,
                                   "xml": inv.xml, "region": region}
    for region, rs in rows.items():
        merge_manifest(batch_dir(settings.region_root(region), "gen"), rs)
    if SHARED_CFDI.is_dir():
        manifest = {r["file"]: r for r in csv.DictReader((SHARED_CFDI / "samples" / "MANIFEST.tsv").open(),
                                                         delimiter="\t")}
        for name, row in manifest.items():
            path = SHARED_CFDI / "samples" / name
            loaded = load_files(settings.region_root("north"), "north", "samples", [path])
            verdict = "valid" if row["expected_verdict"] == "valid" else "invalid"
            expected[loaded[0].record_id] = {"verdict": verdict, "rule": row["rule_id"], "xml": path.read_bytes(),
                                             "region": "north", "sample": name}
    return expected


def _submit(settings: Settings) -> list[str]:
    api = f"http://127.0.0.1:{settings.ingest_port}"
    headers = bearer(settings, admin=True)
    sources = [(r, "gen/*.xml") for r in settings.regions()]
    if SHARED_CFDI.is_dir():
        sources.append(("north", "samples/*.xml"))
    jobs = []
    for region, pattern in sources:
        resp = httpx.post(f"{api}/api/v1/jobs", headers=headers, timeout=120,
                          json={"source": {"region": region, "pattern": pattern}})
        assert resp.status_code == 202, resp.text
        jobs.append(resp.json()["job_id"])
    return jobs


def _wait_settled(settings: Settings, timeout: float = 300) -> None:
    """Until no record is between stages and the report service has caught up with PostgreSQL."""
    deadline = time.monotonic() + timeout
    report = f"http://127.0.0.1:{settings.report_port}/api/v1/reports/summary"
    stable = 0
    last: Any = None
    while time.monotonic() < deadline:
        moving = _db(settings, "SELECT count(*) AS n FROM fiscal_records WHERE status NOT IN "
                               "('archived', 'rejected', 'duplicate')")[0]["n"]
        summary = httpx.get(report, headers=bearer(settings), timeout=30).json()
        pg = {r["status"]: r["n"] for r in _db(settings, "SELECT status, count(*) AS n FROM fiscal_records "
                                                         "GROUP BY 1")}
        snapshot = (moving, summary, pg)
        caught_up = summary["by_status"].get("archived", 0) == pg.get("archived", 0) and summary["by_status"].get(
            "rejected", 0) == pg.get("rejected", 0)
        stable = stable + 1 if (moving == 0 and caught_up and snapshot == last) else 0
        if stable >= 3:
            return
        last = snapshot
        time.sleep(1)
    raise AssertionError(f"pipeline did not settle: {last}")


def _expected_groups(docs: list[bytes]) -> dict[str, dict[tuple[str, str], list[Any]]]:
    """Per day (date part of Fecha as written): (tipo, moneda) -> [count, total, total_mxn], by parsing XML."""
    out: dict[str, dict[tuple[str, str], list[Any]]] = defaultdict(dict)
    for xml in docs:
        root = etree.fromstring(xml)
        day = root.get("Fecha", "")[:10]
        key = (root.get("TipoDeComprobante", ""), root.get("Moneda", ""))
        total = Decimal(root.get("Total", "0"))
        rate = Decimal(root.get("TipoCambio") or "1") if key[1] not in ("MXN", "XXX") else Decimal(1)
        g = out[day].setdefault(key, [0, Decimal(0), Decimal(0)])
        g[0] += 1
        g[1] += total
        g[2] += total * rate
    return out


def _api_groups(groups: list[dict[str, Any]]) -> dict[tuple[str, str], list[Any]]:
    return {(g["tipo"], g["moneda"]): [g["count"], Decimal(g["total"]), Decimal(g["total_mxn"])] for g in groups}


def _counts(settings: Settings) -> dict[str, Any]:
    report = f"http://127.0.0.1:{settings.report_port}"
    days = [(START + dt.timedelta(days=d)).isoformat() for d in range(DAYS + 1)]
    read = bearer(settings)
    return {
        "summary": httpx.get(f"{report}/api/v1/reports/summary", headers=read, timeout=30).json(),
        "daily": {d: httpx.get(f"{report}/api/v1/reports/daily", params={"date": d}, headers=read, timeout=30).json()
                  for d in days},
        "issuers": httpx.get(f"{report}/api/v1/reports/issuers", params={"from": days[0], "to": days[-1]},
                             headers=read, timeout=30).json(),
        "regions": httpx.get(f"{report}/api/v1/reports/regions", headers=read, timeout=30).json(),
        "s3": len(_s3_keys(settings)),
        "pg": {r["status"]: r["n"] for r in _db(settings, "SELECT status, count(*) AS n FROM fiscal_records "
                                                          "GROUP BY 1")},
    }


def test_the_whole_pipeline_gets_every_document_right_and_reports_exact_sums(e2e: dict[str, Any]) -> None:
    settings: Settings = e2e["settings"]
    expected: dict[str, dict[str, Any]] = e2e["expected"]
    _wait_jobs(settings, _submit(settings))
    _wait_settled(settings)

    rows = {r["record_id"]: r for r in _db(settings, "SELECT record_id, status, reason, s3_key FROM fiscal_records")}
    valid = {rid for rid, e in expected.items() if e["verdict"] == "valid"}
    assert {rid for rid, r in rows.items() if r["status"] == "archived"} == valid
    for rid, e in expected.items():
        if e["verdict"] != "valid":
            assert rows[rid]["status"] == "rejected", (rid, e.get("sample"), rows[rid]["status"])
            if "reason" in e:
                assert rows[rid]["reason"] == e["reason"], (rid, e["reason"], rows[rid]["reason"])

    # One S3 object per archived record, at the key the record names.
    keys = _s3_keys(settings)
    assert len(keys) == len(valid)
    assert {rows[rid]["s3_key"] for rid in valid} == keys

    # One dead letter per rejected record, with its reason (samples: the intended rule is among those reported).
    letters = list(read_dead_letters(settings, DLQ))
    by_record: dict[str, list[Any]] = defaultdict(list)
    for dl in letters:
        by_record[dl.record_id].append(dl)
    rejected = {rid for rid, e in expected.items() if e["verdict"] != "valid"}
    assert set(by_record) == rejected
    assert all(len(v) == 1 for v in by_record.values()), {k: len(v) for k, v in by_record.items() if len(v) > 1}
    for rid in rejected:
        dl = by_record[rid][0]
        if "reason" in expected[rid]:
            assert dl.reason == expected[rid]["reason"]
        else:
            reported = (dl.details or {}).get("rules", [dl.reason]) if isinstance(dl.details, dict) else [dl.reason]
            assert expected[rid]["rule"] in reported, (expected[rid]["sample"], reported)

    # Reports equal sums computed independently from the archived documents.
    want = _expected_groups([expected[rid]["xml"] for rid in valid])
    counts = _counts(settings)
    for day, groups in want.items():
        body = httpx.get(f"http://127.0.0.1:{settings.report_port}/api/v1/reports/daily", params={"date": day},
                         headers=bearer(settings), timeout=30).json()
        assert _api_groups(body["groups"]) == groups, day
    # Issuers over the generated invoices' window (the report answers at most a year per request).
    window = {(START + dt.timedelta(days=d)).isoformat() for d in range(DAYS + 1)}
    per_issuer: dict[str, list[bytes]] = defaultdict(list)
    for rid in valid:
        root = etree.fromstring(expected[rid]["xml"])
        if root.get("Fecha", "")[:10] in window:
            per_issuer[root.find(f"{CFDI}Emisor").get("Rfc")].append(expected[rid]["xml"])
    got = {i["rfc"]: _api_groups(i["groups"]) for i in counts["issuers"]["issuers"]}
    for rfc, docs in per_issuer.items():
        merged: dict[tuple[str, str], list[Any]] = {}
        for groups in _expected_groups(docs).values():
            for k, (n, t, m) in groups.items():
                g = merged.setdefault(k, [0, Decimal(0), Decimal(0)])
                g[0] += n
                g[1] += t
                g[2] += m
        assert got[rfc] == merged, rfc
    assert set(got) == set(per_issuer)
    assert counts["summary"]["by_status"]["archived"] == len(valid)
    assert counts["summary"]["by_status"]["rejected"] == len(rejected)
    assert sum(counts["summary"]["by_reason"].values()) == len(rejected)
    # Per issuer region (docs/regions.md): the region each document was listed on, through every stage.
    assert {r["region"]: (r["record_count"], r["rejected"]) for r in counts["regions"]["regions"]} == {
        region: (sum(1 for rid in valid if expected[rid]["region"] == region),
                 sum(1 for rid in rejected if expected[rid]["region"] == region))
        for region in {e["region"] for e in expected.values()}}
    assert counts["regions"]["record_count"] == len(valid)

    # A second run of the same jobs changes no count.
    _wait_jobs(settings, _submit(settings))
    _wait_settled(settings)
    assert _counts(settings) == counts


STAGES = ["ingest", "download", "validate", "store", "report"]


def test_every_kafka_client_went_through_the_tls_listener(e2e: dict[str, Any]) -> None:
    """After the run: each service holds connections to the TLS listener, and the only process
    connected to the broker's own (plaintext) port is the TLS terminator."""
    settings: Settings = e2e["settings"]
    components = e2e["stack"].state.load().components
    stunnel, broker = components["broker-tls"].pid, components["broker"].pid
    tls_port = int(settings.bootstrap_servers.rsplit(":", 1)[1])
    behind = int(backend_address(settings).rsplit(":", 1)[1])
    on_tls = connected_pids(tls_port)
    for stage, proc in e2e["services"].procs.items():
        assert descendants(proc.pid) & set(on_tls), f"{stage.value} holds no connection to the TLS listener"
    on_plain = set(connected_pids(behind)) - {broker}
    assert on_plain == {stunnel}, f"processes connected to the broker around TLS: {on_plain - {stunnel}}"


def test_one_trace_per_record_across_the_five_services(e2e: dict[str, Any]) -> None:
    """Runs after the pipeline test (same module): a record it archived left one trace whose spans
    chain ingest -> download -> validate -> store -> report through the Kafka headers."""
    sink: OtlpSink = e2e["spans"]
    valid = [rid for rid, e in e2e["expected"].items() if e["verdict"] == "valid"][:20]
    deadline = time.monotonic() + 30
    chains: list[list[Span]] = []
    while time.monotonic() < deadline and not chains:
        for rid in valid:
            by_trace: dict[str, list[Span]] = defaultdict(list)
            for span in sink.for_record(rid):
                by_trace[span.trace_id].append(span)
            chains += [spans for spans in by_trace.values() if len(spans) == len(STAGES)]
        time.sleep(0.5)
    assert chains, "no record left a trace across the five services"
    for spans in chains:
        by_service = {s.service: s for s in spans}
        assert sorted(by_service) == sorted(f"fiscalflow-{st}" for st in STAGES)
        for parent, child in itertools.pairwise(STAGES):
            assert by_service[f"fiscalflow-{child}"].parent_id == by_service[f"fiscalflow-{parent}"].span_id
        assert len({s.trace_id for s in spans}) == 1


def test_every_service_exports_the_documented_metrics(e2e: dict[str, Any]) -> None:
    settings: Settings = e2e["settings"]
    readme = (PROJECT_ROOT / "README.md").read_text()
    runtime_names = {m._name for m in vars(runtime_metrics).values() if hasattr(m, "_name")}
    for stage in STAGES:
        info = json.loads((settings.local_dir / "run" / f"{stage}-0.json").read_text())
        body = httpx.get(info["ops"] + "/metrics", timeout=10).text
        # Declared metrics show in "# TYPE" lines even before their first labelled sample.
        names = {line.split()[2] for line in body.splitlines() if line.startswith("# TYPE ")}
        expected = runtime_names if stage != "report" else {
            "fiscalflow_report_events_total", "fiscalflow_report_rows_total", "fiscalflow_report_batch_seconds"}
        for name in expected:
            assert any(n.startswith(name) for n in names), (stage, name)
            assert f"`{name.removesuffix('_total')}" in readme, f"{name} is not documented in the README"
        assert httpx.get(info["ops"] + "/healthz", timeout=10).status_code == 200


def test_a_lenient_job_archives_what_a_strict_one_rejects_with_its_warnings_in_the_record_view(
        e2e: dict[str, Any], tmp_path: Path) -> None:
    """Seed 000's validation_rules through every stage: one document whose only fault is a
    catalogue slip (a PPD invoice paid by transfer, CFDI40105).  A strict job rejects it with that
    reason; the same record in a lenient job is archived, reported, and its record view names the
    profile and the warning.  Runs last: it adds one archived document to the stack's totals."""
    settings: Settings = e2e["settings"]
    gen = InvoiceGenerator(DemoPKI.ensure(settings.pki_dir()), seed=777, start=START, days=DAYS, bad_fraction=0)
    index = next(i for i in range(200) if gen.build_tree(i, "I").get("MetodoPago") == "PUE")
    root = gen.build_tree(index, "I")
    root.set("MetodoPago", "PPD")
    root.set("FormaPago", "03")
    source = tmp_path / "ppd-paid-by-transfer.xml"
    source.write_bytes(gen.seal_and_stamp(root))
    region = "south"
    (record,) = load_files(settings.region_root(region), region, "lenient", [source])
    api = f"http://127.0.0.1:{settings.ingest_port}/api/v1/fiscal/process"
    admin, read = bearer(settings, admin=True), bearer(settings)
    report = f"http://127.0.0.1:{settings.report_port}"

    def run(rules: str, **job: Any) -> dict[str, Any]:
        resp = httpx.post(api, headers=admin, timeout=60, json={"validation_rules": rules, **job})
        assert resp.status_code == 202, resp.text
        _wait_jobs(settings, [resp.json()["job_id"]], timeout=120)
        job = httpx.get(f"{report}/api/v1/jobs/{resp.json()['job_id']}", headers=read, timeout=30).json()
        assert job["validation_rules"] == rules
        view = httpx.get(f"{report}/api/v1/records/{record.record_id}", headers=read, timeout=30)
        assert view.status_code == 200, view.text
        return dict(view.json())

    strict = run("strict", source="sftp", file_pattern=f"{region}:lenient/*.xml")
    assert strict["status"] == "rejected" and strict["reason"] == "FORMAPAGO_PPD_NOT_99", strict
    assert strict["warnings"] == []
    lenient = run("lenient", source="api", record_ids=[record.record_id])  # the same record again
    assert lenient["status"] == "archived", lenient
    assert lenient["validation_rules"] == "lenient"
    assert lenient["warnings"] == [{"rule": "FORMAPAGO_PPD_NOT_99", "sat_code": "CFDI40105"}]
    started = [e for e in lenient["history"] if e["to_status"] == "downloading"]
    assert started[-1]["detail"]["profile"] == {"rules": "lenient"}  # the job's profile, in its history
    archived = [e for e in lenient["history"] if e["to_status"] == "archived"]
    assert archived and archived[-1]["detail"]["warnings"] == ["FORMAPAGO_PPD_NOT_99"]
    assert archived[-1]["detail"]["region"] == region
    # The seed's record list shows it archived, with its invoice id (Serie + Folio).
    listed = httpx.get(f"{report}/api/v1/fiscal/records", params={"status": "archived", "limit": 1000},
                       headers=read, timeout=30).json()["records"]
    mine = [r for r in listed if r["record_id"] == record.record_id]
    assert mine and mine[0]["invoice_id"] == (root.get("Serie") or "") + (root.get("Folio") or "")
    # Its line items, extracted by validate, carried by store, written by the report service.
    # (the report service writes them a moment after the registry's archived status: wait for them)
    lines = wait_for(lambda: httpx.get(f"{report}/api/v1/records/{record.record_id}/lines", headers=read,
                                       timeout=30), lambda r: r.status_code == 200, "the record's lines", 60)
    assert lines.status_code == 200, lines.text
    conceptos = root.findall(f"{CFDI}Conceptos/{CFDI}Concepto")
    assert [ln["description"] for ln in lines.json()["lines"]] == [c.get("Descripcion") for c in conceptos]

