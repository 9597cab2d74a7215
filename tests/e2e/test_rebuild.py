"""Reports verified against, and rebuilt from, the system of record (PostgreSQL + S3), on an
isolated local stack with the five services running.

A stack processes invoices (valid ones, planted defects, duplicates); its ClickHouse data is then
deleted.  The report service says so at start (``/readyz``, the log), ``report verify`` fails,
``report rebuild`` re-materialises the tables — from PostgreSQL's columns, and from the archived
documents in S3 for records whose columns are empty (records archived before migration 0070) —
after which ``verify`` passes and every report equals what it was before; a second rebuild
writes nothing.  Then a rebuild, killed half-way and resumed, runs while a job flows and every
stored event is delivered to the report service again: no record is counted twice.

Scale: ``FISCALFLOW_REBUILD_RECORDS`` invoices (default 1,200; the issue's 10,000 once, for the
throughput in docs/deploy.md).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from shared.cli.api_client import bearer
from shared.settings import Settings
from shared.topics import STORED, Stage
from tests.support.e2e import db, demo_trust, wait_jobs
from tests.support.stacks import FISCALFLOW, Services, isolated_settings, isolated_stack, service_env
from tooling.issuers.generator import GeneratedInvoice, InvoiceGenerator
from tooling.issuers.output import batch_dir, merge_manifest, write_invoice
from tooling.issuers.pki import DemoPKI

START = dt.date(2023, 4, 3)  # the window of these invoices; no other test uses it
DAYS = 4
RECORDS = int(os.environ.get("FISCALFLOW_REBUILD_RECORDS", "1200"))
FLOWING = 300  # the job that flows during the second test's rebuild
DUPLICATES = 10
FINAL = ("archived", "rejected", "duplicate")

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600 + RECORDS // 2)]


@dataclass
class Stack:
    settings: Settings
    env: dict[str, str]
    services: Services
    gen: InvoiceGenerator


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = isolated_settings("rebuild", 30, log_level="WARNING")
    with isolated_stack(settings):
        pki = DemoPKI.ensure(settings.pki_dir(), issuers=8)
        # A check every 3 s instead of 5 min, leaving out records of the last 2 s instead of the last
        # minute (all of these are minutes old at most), so /readyz follows the test's steps.
        env = service_env(settings, FISCALFLOW_REPORT_VERIFY_INTERVAL_S="3", FISCALFLOW_REPORT_VERIFY_SETTLE_S="2",
                          **demo_trust(pki, tmp_path_factory.mktemp("stamp-certs")))
        services = Services(settings, env).start()
        try:
            services.wait_http()
            yield Stack(settings, env, services, InvoiceGenerator(pki, seed=4003, start=START, days=DAYS,
                                                                  bad_fraction=0.04))
        finally:
            services.stop()


# ------------------------------------------------------------------ helpers


def _place(settings: Settings, batch: str, invs: list[GeneratedInvoice]) -> None:
    regions = list(settings.regions())
    rows: dict[str, list[Any]] = defaultdict(list)
    for i, inv in enumerate(invs):
        region = regions[i % len(regions)]
        batch_dir(settings.region_root(region), batch).mkdir(parents=True, exist_ok=True)
        rows[region].append(write_invoice(settings.region_root(region), region, batch, inv))
    for region, rs in rows.items():
        merge_manifest(batch_dir(settings.region_root(region), batch), rs)


def _submit(settings: Settings, batch: str) -> list[str]:
    jobs = []
    for region in settings.regions():
        resp = httpx.post(f"http://127.0.0.1:{settings.ingest_port}/api/v1/jobs", timeout=120,
                          headers=bearer(settings, admin=True),
                          json={"source": {"region": region, "pattern": f"{batch}/*.xml"}})
        assert resp.status_code == 202, resp.text
        jobs.append(resp.json()["job_id"])
    return jobs


def _report(settings: Settings, path: str, **params: Any) -> Any:
    resp = httpx.get(f"http://127.0.0.1:{settings.report_port}/api/v1/reports/{path}", params=params,
                     headers=bearer(settings), timeout=60)
    if path == "daily" and resp.status_code == 404:  # a day without archived documents, said the same way
        return {"not_found": resp.json()}
    assert resp.status_code == 200, resp.text
    return resp.json()


def _snapshot(settings: Settings) -> dict[str, Any]:
    """Every report, as a user reads it."""
    days = [(START + dt.timedelta(days=d)).isoformat() for d in range(DAYS)]
    return {"summary": _report(settings, "summary"),
            "daily": {d: _report(settings, "daily", date=d) for d in days},
            "issuers": _report(settings, "issuers", **{"from": days[0], "to": days[-1]}),
            # the hours that hold documents (the window itself moves with the clock)
            "trend": {p["hour"]: p for p in _report(settings, "trend", hours=48)["points"] if p["count"]}}


def _pg_finals(settings: Settings) -> dict[str, int]:
    return {r["status"]: r["n"] for r in db(settings, "SELECT status, count(*) AS n FROM fiscal_records"
                                                      " WHERE status = ANY($1) GROUP BY 1", list(FINAL))}


def _settled(settings: Settings, timeout: float = 900) -> None:
    """Until no record is between stages and the summary counts what PostgreSQL holds, steadily."""
    deadline = time.monotonic() + timeout
    last, same = None, 0
    while time.monotonic() < deadline:
        moving = db(settings, "SELECT count(*) AS n FROM fiscal_records WHERE status <> ALL($1)", list(FINAL))[0]["n"]
        pg = _pg_finals(settings)
        by_status = _report(settings, "summary")["by_status"]
        now = (moving, pg, {k: by_status.get(k, 0) for k in FINAL})
        same = same + 1 if moving == 0 and now[2] == {k: pg.get(k, 0) for k in FINAL} and now == last else 0
        if same >= 2:
            return
        last = now
        time.sleep(1)
    raise AssertionError(f"pipeline did not settle: {last}")


def _cli(stack: Stack, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FISCALFLOW, "report", *args], env=stack.env, capture_output=True, text=True,
                          timeout=timeout)


def _json(out: str) -> Any:
    return json.loads(out[out.index("{"):])


def _rebuild(stack: Stack, *args: str) -> dict[str, Any]:
    done = _cli(stack, "rebuild", *args, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    out: dict[str, Any] = _json(done.stdout)
    print(f"rebuild: {out['scanned']} records in {out['seconds']} s = {out['records_per_s']} records/s"
          f" ({out['from_postgres']} archived from PostgreSQL, {out['from_s3']} from S3, {out['present']} present)")
    return out


def _readyz(settings: Settings) -> dict[str, Any]:
    run = json.loads((settings.local_dir / "run" / "report-0.json").read_text())
    resp = httpx.get(f"{run['ops']}/readyz", timeout=5)
    body: dict[str, Any] = resp.json()
    return body


def _consistency(settings: Settings, since: dt.datetime, timeout: float = 60) -> dict[str, Any]:
    """The report's /readyz ``consistency`` once a check started after ``since`` has run."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            c: dict[str, Any] = _readyz(settings)["consistency"]
            if c.get("checked_at") and dt.datetime.fromisoformat(c["checked_at"]) > since:
                return c
        except (httpx.HTTPError, OSError, ValueError, KeyError):
            pass
        assert time.monotonic() < deadline, "the report service did not check its tables"
        time.sleep(0.5)


def _metric(settings: Settings, name: str) -> float:
    run = json.loads((settings.local_dir / "run" / "report-0.json").read_text())
    for line in httpx.get(f"{run['ops']}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def _wipe_clickhouse(stack: Stack) -> None:
    """Stop the report service, delete its ClickHouse data, start it again."""
    proc = stack.services.procs[Stage.REPORT]
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    (stack.settings.local_dir / "run" / "report-0.json").unlink(missing_ok=True)
    directory = stack.settings.local_dir / "clickhouse"
    shutil.rmtree(directory)
    directory.mkdir()
    stack.services.start([Stage.REPORT])
    stack.services.wait_http()


def _redeliver_stored(settings: Settings) -> int:
    """Every event of fiscal.stored published onto it again (a redelivery storm)."""
    c = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": uuid.uuid4().hex,
                  "enable.auto.commit": False})
    meta = c.list_topics(STORED, timeout=10).topics[STORED].partitions
    ends = {p: c.get_watermark_offsets(TopicPartition(STORED, p), timeout=10)[1] for p in meta}
    c.assign([TopicPartition(STORED, p, 0) for p in meta])
    p = Producer({"bootstrap.servers": settings.bootstrap_servers})
    copied = 0
    done: set[int] = {part for part, end in ends.items() if end == 0}
    deadline = time.monotonic() + 120
    while len(done) < len(ends) and time.monotonic() < deadline:
        for m in c.consume(500, 1.0):
            if m.error() is not None or m.offset() >= ends[m.partition()]:
                continue
            p.produce(STORED, m.value(), key=m.key(), headers=m.headers() or [])
            copied += 1
            if m.offset() == ends[m.partition()] - 1:
                done.add(m.partition())
    c.close()
    assert p.flush(60) == 0
    return copied


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# ------------------------------------------------------------------ the tests


def test_reports_rebuilt_from_the_record_equal_the_reports_before_the_loss(stack: Stack) -> None:
    settings = stack.settings
    invs = [stack.gen.generate(i) for i in range(RECORDS)]
    valid = [inv for inv in invs if not inv.defect]
    # The same invoices again under other record ids: each of them ends a duplicate.
    dups = [replace(inv, record_id=f"{inv.record_id}-again") for inv in valid[:DUPLICATES]]
    _place(settings, "rebuild", invs)
    t0 = time.monotonic()
    wait_jobs(settings, _submit(settings, "rebuild"), timeout=3600)
    _place(settings, "rebuild-dups", dups)
    wait_jobs(settings, _submit(settings, "rebuild-dups"), timeout=600)
    _settled(settings)
    print(f"\n{RECORDS + DUPLICATES} records through the pipeline in {time.monotonic() - t0:.0f} s")
    finals = _pg_finals(settings)
    assert finals["duplicate"] == DUPLICATES and finals["rejected"] > 0, finals
    assert finals["archived"] == len(valid)

    ok = _cli(stack, "verify", "--settle", "0")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert _consistency(settings, _now())["state"] == "consistent"
    before = _snapshot(settings)
    assert sum(g["count"] for d in before["daily"].values() for g in d.get("groups", [])) == len(valid)
    lines_url = f"http://127.0.0.1:{settings.report_port}/api/v1/records/{valid[0].record_id}/lines"
    before_lines = httpx.get(lines_url, headers=bearer(settings), timeout=30)
    assert before_lines.status_code == 200, before_lines.text

    # Every record from PostgreSQL's columns.
    wiped = _now()
    _wipe_clickhouse(stack)
    lost = _consistency(settings, wiped)
    assert lost["state"] == "inconsistent" and lost["records_off"] > 0, lost
    assert _metric(settings, "fiscalflow_report_verify_differences") > 0  # what an alert watches
    # The totals first, from PostgreSQL alone (--no-lines: no archived document read) ...
    from_pg = _rebuild(stack, "--rate", "0", "--no-lines")
    assert from_pg["scanned"] == from_pg["repaired"] == from_pg["from_postgres"] + finals["rejected"] + DUPLICATES
    assert from_pg["lines_from_s3"] == from_pg["from_s3"] == 0
    assert _snapshot(settings) == before
    assert httpx.get(lines_url, headers=bearer(settings), timeout=30).status_code == 404
    # ... then the lines, which only the archived documents hold (the totals stay as they are).
    with_lines = _rebuild(stack, "--rate", "0", "--restart")
    assert with_lines["lines_from_s3"] == finals["archived"] and with_lines["repaired"] == finals["archived"]
    assert httpx.get(lines_url, headers=bearer(settings), timeout=30).json() == before_lines.json()
    assert _snapshot(settings) == before

    # Records archived before the registry kept the report's facts (migration 0070): a third of
    # them, whose rebuild must read the archived document from S3.
    old = db(settings, "UPDATE fiscal_records SET receiver_rfc = NULL, fecha = NULL, tipo = NULL, moneda = NULL,"
                       " tipo_cambio = NULL, total = NULL, total_mxn = NULL, archived_at = NULL"
                       " WHERE status = 'archived' AND record_id IN (SELECT record_id FROM fiscal_records"
                       " WHERE status = 'archived' ORDER BY md5(record_id) LIMIT $1) RETURNING record_id",
             len(valid) // 3)

    wiped = _now()
    _wipe_clickhouse(stack)
    assert _consistency(settings, wiped)["state"] == "inconsistent"
    assert "differ from PostgreSQL at start" in (settings.local_dir / "logs" / "e2e-report.log").read_text()
    failed = _cli(stack, "verify", "--settle", "0", "--json")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert _json(failed.stdout)["records_off"] >= len(valid)
    assert _report(settings, "summary")["by_status"]["archived"] == 0

    dry = _cli(stack, "rebuild", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert (_json(dry.stdout)["repaired"], _json(dry.stdout)["from_s3"]) == (sum(finals.values()), len(old))
    assert _report(settings, "summary")["by_status"]["archived"] == 0  # a dry run writes nothing

    rebuilt = _rebuild(stack, "--rate", "0")
    assert rebuilt["scanned"] == rebuilt["repaired"] == sum(finals.values())
    assert rebuilt["from_s3"] == len(old) and rebuilt["missing"] == []

    ok = _cli(stack, "verify", "--settle", "0", "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    print(f"verify: {_json(ok.stdout)['days']} days, every status, in {_json(ok.stdout)['seconds']} s")
    assert _snapshot(settings) == before
    assert _consistency(settings, _now())["state"] == "consistent"
    assert _metric(settings, "fiscalflow_report_verify_differences") == 0
    # The documents' facts are kept in the registry now: the next rebuild needs no S3.
    assert db(settings, "SELECT count(*) AS n FROM fiscal_records WHERE status = 'archived'"
                        " AND total_mxn IS NULL")[0]["n"] == 0

    again = _rebuild(stack, "--rate", "0")
    assert (again["scanned"], again["present"], again["repaired"], again["archived_rows"], again["outcome_rows"],
            again["from_s3"]) == (sum(finals.values()), sum(finals.values()), 0, 0, 0, 0)
    assert _snapshot(settings) == before


def _rebuild_plan(settings: Settings) -> dict[str, Any]:
    resp = httpx.get(f"http://127.0.0.1:{settings.report_port}/api/v1/reports/rebuild", timeout=30,
                     headers={"Authorization": f"Bearer {settings.api_token.get_secret_value()}"})
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_a_rebuild_while_a_job_flows_and_events_are_redelivered_counts_each_record_once(stack: Stack) -> None:
    settings = stack.settings
    _wipe_clickhouse(stack)  # so the rebuild has every record to write
    flowing = [stack.gen.generate(i, defect=None) for i in range(RECORDS + 100, RECORDS + 100 + FLOWING)]
    _place(settings, "flowing", flowing)

    # A rebuild at a low rate, killed half-way (the CLI process dies: the checkpoint stays) ...
    started = time.monotonic()
    killed = subprocess.Popen([FISCALFLOW, "report", "rebuild", "--rate", "60", "--batch", "20", "--json"],
                              env=stack.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    jobs = _submit(settings, "flowing")  # ... while a job flows through every stage ...
    time.sleep(max(0.0, 8 - (time.monotonic() - started)))
    killed.send_signal(signal.SIGKILL)
    killed.wait(10)
    # The step the CLI had asked for when it died still finishes in the report service: the
    # checkpoint is where the rebuild resumes once it stops moving.
    plan, previous = _rebuild_plan(settings), None
    deadline = time.monotonic() + 60
    while plan["checkpoint"] != previous and time.monotonic() < deadline:
        time.sleep(1.5)
        previous, plan = plan["checkpoint"], _rebuild_plan(settings)
    assert plan["resumes"] and 0 < plan["checkpoint"]["scanned"] < plan["total"], plan

    # ... resumed while every stored event reaches the report service again (a redelivery storm).
    with ThreadPoolExecutor(1) as pool:
        storm = pool.submit(_redeliver_stored, settings)
        resumed = _cli(stack, "rebuild", "--rate", "150", "--batch", "25", "--json")
        copied = storm.result()
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    out = _json(resumed.stdout)
    assert out["resumed_after"] == plan["checkpoint"]["scanned"]
    wait_jobs(settings, jobs, timeout=900)
    _settled(settings)
    print(f"\nrebuild resumed at {out['resumed_after']} of {plan['total']}: {out['repaired']} written by it,"
          f" {out['present']} found written by the stream; {copied} stored events redelivered meanwhile,"
          f" {FLOWING} records flowing")

    # Every report counts each record once: verify compares every day and status with PostgreSQL.
    ok = _cli(stack, "verify", "--settle", "0", "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    finals = _pg_finals(settings)
    assert {k: v for k, v in _report(settings, "summary")["by_status"].items() if k in FINAL} == {
        k: finals.get(k, 0) for k in FINAL}
    per_day = {r["day"].isoformat(): r["n"] for r in db(
        settings, "SELECT issued_on AS day, count(*) AS n FROM fiscal_records WHERE status = 'archived' GROUP BY 1")}
    assert {d: sum(g["count"] for g in _report(settings, "daily", date=d)["groups"]) for d in per_day} == per_day
    assert sum(p["count"] for p in _report(settings, "trend", hours=48)["points"]) == finals["archived"]
