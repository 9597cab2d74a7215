"""The report service as a process on the real broker and PostgreSQL, ClickHouse embedded (chDB):
aggregates equal independent sums of the input, redeliveries count once, dead letters count by
reason, bad parameters are 400s, job callbacks are signed and retried."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import re
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from confluent_kafka import Producer

from services.store.service import build_stage
from shared.db.jobs import create_job
from shared.db.records import Registration, Transition, apply_transitions, register
from shared.domain.records import Priority, RecordStatus
from shared.runtime import headers as H
from shared.settings import PROJECT_ROOT, Settings
from shared.topics import DLQ, STORED, Stage, input_topic, priority_topic
from tests.integration.report.conftest import CALLBACK_SECRET, ReportProc
from tests.integration.store.harness import stored, validated
from tests.support.callbacks import CallbackReceiver, callback_receiver
from tests.support.stages import stage_running
from tooling.issuers.generator import GeneratedInvoice, InvoiceGenerator

pytestmark = pytest.mark.integration

NO_DOCUMENTS = "1999-01-01"  # a day no generated invoice is dated (the certificates start in 2022)


def _ids(n: int, prefix: str = "rep") -> list[str]:
    run = uuid.uuid4().hex[:8]
    return [f"{prefix}-{run}-{i}" for i in range(n)]


async def _pg(settings: Settings) -> asyncpg.Connection:
    return await asyncpg.connect(settings.pg_dsn.get_secret_value())


def _expected(invs: list[GeneratedInvoice]) -> dict[str, Any]:
    """Per day: groups by (tipo, moneda) and issuers, summed here with Decimal, apart from the service."""
    days: dict[str, Any] = defaultdict(lambda: {"groups": defaultdict(lambda: [0, Decimal(0), Decimal(0)]),
                                                "issuers": defaultdict(lambda: [0, Decimal(0)])})
    for inv in invs:
        d = days[inv.fecha[:10]]
        g = d["groups"][(inv.tipo, inv.moneda)]
        g[0] += 1
        g[1] += inv.total
        g[2] += inv.total_mxn
        i = d["issuers"][inv.issuer_rfc]
        i[0] += 1
        i[1] += inv.total_mxn
    return days


def _as_decimals(groups: list[dict[str, Any]]) -> dict[tuple[str, str], list[Any]]:
    return {(g["tipo"], g["moneda"]): [g["count"], Decimal(g["total"]), Decimal(g["total_mxn"])] for g in groups}


def test_aggregates_equal_independent_sums_and_redeliveries_count_once(
        report: ReportProc, stack_settings: Settings, generator: InvoiceGenerator) -> None:
    invs = [generator.generate(i, defect=None) for i in range(40)]
    ids = _ids(len(invs))
    topics = report.topics
    before = report.get("/api/v1/reports/summary").json()["by_status"]["archived"]

    async def through_store() -> None:
        conn = await _pg(stack_settings)
        try:
            await register(conn, [Registration(rid, "north", f"t/{rid}.xml") for rid in ids])
        finally:
            await conn.close()
        docs = [(rid, validated(rid, inv).encode()) for rid, inv in zip(ids, invs, strict=True)]
        topics.produce(input_topic(Stage.STORE), docs + docs[:10])  # 10 redelivered to the store stage
        async with stage_running(stack_settings, Stage.STORE,
                                 lambda host: build_stage(host, topic_namespace=topics.ns)):
            await asyncio.to_thread(topics.read, STORED, set(ids), 90, 1, 1.0)

    asyncio.run(through_store())
    # And stored events redelivered to the report stage itself (same archived_at: a plain re-read).
    topics.produce(STORED, [(rid, stored(rid, inv, "2026-01-01T00:00:00.000Z").encode())
                            for rid, inv in list(zip(ids, invs, strict=True))[:5]])
    report.wait_until(lambda: report.get("/api/v1/reports/summary").json()["by_status"]["archived"]
                      == before + len(invs))

    expected = _expected(invs)
    for day, exp in expected.items():
        body = report.get("/api/v1/reports/daily", date=day).json()
        assert body["date"] == day
        assert _as_decimals(body["groups"]) == {k: list(v) for k, v in exp["groups"].items()}
        got_issuers = {i["rfc"]: [i["count"], Decimal(i["total_mxn"])] for i in body["issuers"]}
        assert got_issuers == {k: list(v) for k, v in exp["issuers"].items()}
        # The seed contract's view of the same day (docs/seed-api.md; its records: test_seed_contract.py).
        assert body["record_count"] == sum(v[0] for v in exp["issuers"].values())
        assert Decimal(body["total_amount"]) == sum(v[1] for v in exp["issuers"].values())
        assert {k: [v["record_count"], Decimal(v["total_amount"])] for k, v in body["by_issuer"].items()} == got_issuers
    first, last = min(expected), max(expected)
    by_issuer: dict[str, dict[tuple[str, str], list[Any]]] = defaultdict(lambda: defaultdict(
        lambda: [0, Decimal(0), Decimal(0)]))
    for inv in invs:
        g = by_issuer[inv.issuer_rfc][(inv.tipo, inv.moneda)]
        g[0] += 1
        g[1] += inv.total
        g[2] += inv.total_mxn
    body = report.get("/api/v1/reports/issuers", **{"from": first, "to": last}).json()
    assert {i["rfc"]: _as_decimals(i["groups"]) for i in body["issuers"]} == {
        rfc: {k: list(v) for k, v in groups.items()} for rfc, groups in by_issuer.items()}
    # Trend: processing time is now, so the last two hours hold at least these documents.
    points = report.get("/api/v1/reports/trend", hours=2).json()["points"]
    assert len(points) == 2 and sum(p["count"] for p in points) >= len(invs)
    # The registry's view of one of them, with its audit history.
    rec = report.get(f"/api/v1/records/{ids[0]}").json()
    assert rec["status"] == "archived" and [e["to_status"] for e in rec["history"]] == ["archived"]
    page = report.get("/api/v1/records", status="archived", issuer=invs[0].issuer_rfc, limit=1).json()
    assert len(page["records"]) == 1 and page["next_cursor"]
    nxt = report.get("/api/v1/records", status="archived", issuer=invs[0].issuer_rfc, limit=1,
                     cursor=page["next_cursor"]).json()
    assert nxt["records"][0]["record_id"] > page["records"][0]["record_id"]
    # Rows were inserted and read back: the service never loaded pandas (~50 MB resident) for it.
    maps = Path(f"/proc/{report.proc.pid}/maps").read_text()
    assert "/site-packages/chdb/" in maps and "/site-packages/pandas/" not in maps


def test_the_service_leaves_nothing_in_its_working_directory(report: ReportProc) -> None:
    # It runs from the checkout's root here; faust's data directory (empty) goes under its local dir.
    assert not (PROJECT_ROOT / f"{report.topics.ns}-report-data").exists()
    assert (report.log.parent / "faust" / f"{report.topics.ns}-report").is_dir()


def test_dead_letters_count_by_reason_once_and_a_replayed_record_moves_to_archived(
        report: ReportProc, generator: InvoiceGenerator) -> None:
    rejected, duplicate, replayed = _ids(3, "dl")
    inv = generator.generate(500, defect=None)
    before = report.get("/api/v1/reports/summary").json()
    rows = 'fiscalflow_report_rows_total{table="dead_letters"}'
    rows_before = _metric(report, rows)

    def dead(rid: str, reason: str, at_ms: int) -> None:
        report.topics.produce(DLQ, [(rid, b'{"v":1}')], headers={
            H.REASON: reason, H.STAGE: "store", H.ERROR_MESSAGE: "test", H.LAST_FAILURE_MS: str(at_ms)})

    now_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    dead(rejected, "CHECKSUM_MISMATCH", now_ms)
    dead(rejected, "CHECKSUM_MISMATCH", now_ms)  # redelivered dead letter
    dead(duplicate, "DUPLICATE_UUID", now_ms)
    dead(replayed, "RETRIES_EXHAUSTED", now_ms - 60_000)
    report.topics.produce(STORED, [(replayed, stored(replayed, inv, dt.datetime.now(dt.UTC).isoformat()).encode())])

    def delta() -> tuple[dict[str, int], dict[str, int]]:
        now = report.get("/api/v1/reports/summary").json()
        return ({k: now["by_status"].get(k, 0) - before["by_status"].get(k, 0) for k in now["by_status"]},
                {k: now["by_reason"].get(k, 0) - before["by_reason"].get(k, 0) for k in now["by_reason"]})

    def counted() -> bool:
        # The dead-letter topic has two partitions: the duplicate's letter may reach a later write
        # of the report than the rejection's, so wait for every count asserted below.
        by_status = delta()[0]
        return all(by_status.get(s, 0) >= 1 for s in ("archived", "rejected", "duplicate"))

    report.wait_until(counted)
    by_status, by_reason = delta()
    assert (by_status["archived"], by_status["rejected"], by_status["duplicate"]) == (1, 1, 1)
    assert {k: v for k, v in by_reason.items() if v} == {"CHECKSUM_MISMATCH": 1, "DUPLICATE_UUID": 1}
    # Four dead-letter rows: these letters carry no origin headers, so the two copies are two
    # letters (the record still counts once above).  Waited for here, not only counted: the
    # replayed record's letter may be written after its archived event (another topic), and the
    # next test measures this metric from where this one leaves it.
    report.wait_until(lambda: _metric(report, rows) - rows_before >= 4)
    assert _metric(report, rows) - rows_before == 4


def _metric(report: ReportProc, sample: str) -> float:
    m = re.search(rf"^{re.escape(sample)} (\S+)$", httpx.get(report.ops + "/metrics", timeout=10).text, re.M)
    return float(m.group(1)) if m else 0.0


def test_a_redelivered_dead_letter_counts_once_and_moves_no_outcome(report: ReportProc) -> None:
    """The runtime writes a dead letter again when a stage is killed before committing its input:
    the same origin and pass, new failure time and trace.  The report writes it once and its
    rejection count stays one, even when the copy comes after the record's later failure."""
    copied, moved_on, sentinel = _ids(3, "dlc")
    now_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    before = report.get("/api/v1/reports/summary").json()["by_reason"]
    rows = 'fiscalflow_report_rows_total{table="dead_letters"}'
    rows_before = _metric(report, rows)

    def letter(stage: str, reason: str, origin_offset: int, failed_ms: int, replays: int = 0) -> dict[str, str]:
        return {H.ORIGIN_TOPIC: report.topics.name(input_topic(Stage(stage))), H.ORIGIN_PARTITION: "0",
                H.ORIGIN_OFFSET: str(origin_offset), H.ORIGIN_TIMESTAMP_MS: str(now_ms - 60_000),
                H.STAGE: stage, H.REASON: reason, H.ERROR_MESSAGE: "test", H.ATTEMPT: "1",
                H.FIRST_FAILURE_MS: str(failed_ms), H.LAST_FAILURE_MS: str(failed_ms),
                H.TRACE_ID: uuid.uuid4().hex, H.REPLAY_COUNT: str(replays)}

    # One partition: the sentinel, written last, is materialised after everything before it.
    p = Producer({"bootstrap.servers": report.topics.settings.bootstrap_servers})
    for key, headers in [
        (copied, letter("validate", "INVALID_CFDI", 7, now_ms)),
        (copied, letter("validate", "INVALID_CFDI", 7, now_ms + 1_000)),  # redelivered copies
        (copied, letter("validate", "INVALID_CFDI", 7, now_ms + 2_000)),
        (moved_on, letter("download", "CHECKSUM_MISMATCH", 8, now_ms)),
        (moved_on, letter("validate", "INVALID_CFDI", 9, now_ms + 1_000, replays=1)),  # replayed, failed again
        (moved_on, letter("download", "CHECKSUM_MISMATCH", 8, now_ms + 5_000)),  # a late copy of the first
        (sentinel, letter("store", "DOCUMENT_TOO_LARGE", 10, now_ms)),
    ]:
        p.produce(report.topics.name(DLQ), b"{}", key=key.encode(), partition=0,
                  headers=[(k, v.encode()) for k, v in headers.items()])
    assert p.flush(30) == 0

    def delta() -> dict[str, int]:
        now = report.get("/api/v1/reports/summary").json()["by_reason"]
        return {k: now.get(k, 0) - before.get(k, 0) for k in {*now, *before} if now.get(k, 0) != before.get(k, 0)}

    report.wait_until(lambda: delta().get("DOCUMENT_TOO_LARGE") == 1)
    assert delta() == {"INVALID_CFDI": 2, "DOCUMENT_TOO_LARGE": 1}
    # Four dead letters, each written once (rows are counted right after their batch is written).
    report.wait_until(lambda: _metric(report, rows) - rows_before >= 4)
    assert _metric(report, rows) - rows_before == 4


def test_a_priority_event_is_counted_before_a_fiscal_stored_backlog(
        report: ReportProc, generator: InvoiceGenerator) -> None:
    """The store stage keeps a priority record on fiscal.stored.priority: the report counts it at
    once, not after the backlog of fiscal.stored (and then the backlog, each event once)."""
    backlog = 20_000
    filler = generator.generate(700, defect=None)
    urgent = next(inv for inv in (generator.generate(701 + i, defect=None) for i in range(50))
                  if inv.fecha[:10] != filler.fecha[:10])  # the urgent day grows by the urgent event only
    day = urgent.fecha[:10]

    def archived() -> int:
        return int(report.get("/api/v1/reports/summary").json()["by_status"]["archived"])

    def daily() -> int:  # a day without documents is a 404
        resp = report.get("/api/v1/reports/daily", date=day)
        return 0 if resp.status_code == 404 else sum(g["count"] for g in resp.json()["groups"])

    before, day_before = archived(), daily()
    now = dt.datetime.now(dt.UTC).isoformat()
    # One invoice under many record ids: each is a record outcome to write (the summary counts them).
    body = stored("{rid}", filler, now).encode()
    report.topics.produce(STORED, [(rid, body.replace(b"{rid}", rid.encode())) for rid in _ids(backlog, "bl")])
    (urgent_id,) = _ids(1, "urgent")
    report.topics.produce(priority_topic(Stage.REPORT), [(urgent_id, stored(urgent_id, urgent, now).encode())])
    behind: list[int] = []

    def urgent_counted() -> bool:
        if daily() != day_before + 1:
            return False
        behind.append(before + backlog + 1 - archived())
        return True

    report.wait_until(urgent_counted, timeout=60)
    assert behind[0] > 0, "the priority event was counted only after the whole backlog"
    report.wait_until(lambda: archived() == before + backlog + 1, timeout=180)
    assert daily() == day_before + 1
    print(f"\npriority event counted with {behind[0]:,} of {backlog:,} backlog events still unwritten")


def test_bad_parameters_are_400s_with_a_reason_and_unknown_ids_404s(report: ReportProc) -> None:
    bad: list[tuple[str, dict[str, Any]]] = [
        ("/api/v1/reports/daily", {"date": "2025-13-01"}), ("/api/v1/reports/daily", {}),
        ("/api/v1/reports/issuers", {"from": "2025-03-05", "to": "2025-03-01"}),
        ("/api/v1/reports/issuers", {"from": "2020-01-01", "to": "2025-01-01"}),
        ("/api/v1/reports/trend", {"hours": 0}), ("/api/v1/reports/trend", {"hours": "x"}),
        ("/api/v1/reports/summary", {"job_id": "nope"}), ("/api/v1/records", {"status": "bogus"}),
        ("/api/v1/records", {"limit": 0}), ("/api/v1/records", {"cursor": "%%%"}),
        ("/api/v1/jobs/not-a-uuid", {}), ("/api/v1/fiscal/records", {"status": "bogus"}),
        ("/api/v1/fiscal/records", {"limit": 1001})]
    for path, params in bad:
        resp = report.get(path, **params)
        assert resp.status_code == 400, (path, params, resp.text)
        assert resp.json()["error"] == "bad_request" and resp.json()["detail"], (path, params)
    missing: list[tuple[str, dict[str, str]]] = [
        ("/api/v1/records/no-such-record", {}), (f"/api/v1/jobs/{uuid.uuid4()}", {}),
        ("/api/v1/reports/daily", {"date": NO_DOCUMENTS})]
    for path, params in missing:
        resp = report.get(path, **params)
        assert resp.status_code == 404 and resp.json()["error"] == "not_found" and resp.json()["detail"]
    assert report.get("/api/v1/reports/summary", job_id=str(uuid.uuid4())).status_code == 404
    assert {"/api/v1/reports/daily", "/api/v1/fiscal/records"} <= set(report.get("/openapi.json").json()["paths"])


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    with callback_receiver(fail_first=2) as r:
        yield r


def test_a_completed_job_calls_back_signed_and_retried(
        report: ReportProc, stack_settings: Settings, generator: InvoiceGenerator,
        receiver: CallbackReceiver) -> None:
    ids = _ids(3, "job")
    job_id = str(uuid.uuid4())
    invs = [generator.generate(600 + i, defect=None) for i in range(2)]

    async def setup() -> None:
        conn = await _pg(stack_settings)
        try:
            await register(conn, [Registration(rid, "north", f"t/{rid}.xml") for rid in ids])
            await create_job(conn, job_id, ids, Priority.NORMAL, callback_url=receiver.url)
            # Two archived, one rejected: what the stages would have written before their events.
            await apply_transitions(conn, [
                Transition(rid, RecordStatus.ARCHIVED if i < 2 else RecordStatus.REJECTED, (RecordStatus.PENDING,),
                           "test", "test", f"{rid}:t", reason=None if i < 2 else "CHECKSUM_MISMATCH", job_id=job_id)
                for i, rid in enumerate(ids)])
        finally:
            await conn.close()

    asyncio.run(setup())
    now = dt.datetime.now(dt.UTC).isoformat()
    report.topics.produce(STORED, [(rid, stored(rid, inv, now, job_id=job_id).encode())
                                   for rid, inv in zip(ids, invs, strict=False)])
    report.topics.produce(DLQ, [(ids[2], b"{}")], headers={H.REASON: "CHECKSUM_MISMATCH", H.JOB_ID: job_id})
    report.wait_until(lambda: len(receiver.calls) >= 3, timeout=60)
    secret = CALLBACK_SECRET.encode()  # its own secret: a receiver need not hold the admin token
    for call in receiver.calls:
        assert call.signature == "sha256=" + hmac.new(secret, call.body, hashlib.sha256).hexdigest()
    sent = orjson.loads(receiver.calls[-1].body)
    assert sent["job_id"] == job_id and sent["status"] == "completed"
    assert sent["callback"] is True and receiver.url not in receiver.calls[-1].body.decode()  # the URL never shown
    assert sent["counts"] == {"archived": 2, "rejected": 1}
    report.wait_until(lambda: report.get(f"/api/v1/jobs/{job_id}").json()["status"] == "completed")
    summary = report.get("/api/v1/reports/summary", job_id=job_id).json()
    assert summary["by_status"]["archived"] == 2 and summary["by_reason"] == {"CHECKSUM_MISMATCH": 1}
    assert len(receiver.calls) == 3  # sent once it succeeded
    # One delivery ended, sent (after two failed tries): what the chart's callbacks alert watches.
    metrics = httpx.get(report.ops + "/metrics", timeout=10).text
    assert 'fiscalflow_callbacks_total{outcome="sent"} 1.0' in metrics
    assert 'fiscalflow_callbacks_total{outcome="failed"} 0.0' in metrics


def test_every_route_needs_the_read_token_and_the_rebuild_the_admin_token(
        report: ReportProc, stack_settings: Settings) -> None:
    job_id, (member,) = str(uuid.uuid4()), _ids(1, "auth")

    async def a_job() -> None:
        # With a callback URL that carries a receiver's token, and a pending member: the job stays
        # running, so the service never tries the callback (nothing is resolved or sent).
        conn = await _pg(stack_settings)
        try:
            await register(conn, [Registration(member, "north", f"t/{member}.xml")])
            await create_job(conn, job_id, [member], Priority.NORMAL, callback_url="https://hooks.invalid/h?t=cb-Xq2")
        finally:
            await conn.close()

    asyncio.run(a_job())
    reads = [("/api/v1/records", {}), (f"/api/v1/records/{_ids(1)[0]}", {}),
             (f"/api/v1/records/{_ids(1)[0]}/lines", {}), ("/api/v1/reports/summary", {}),
             ("/api/v1/reports/daily", {"date": NO_DOCUMENTS}), ("/api/v1/fiscal/records", {"status": "archived"}),
             ("/api/v1/reports/issuers", {"from": "2025-03-01", "to": "2025-03-03"}),
             ("/api/v1/reports/trend", {}), ("/api/v1/reports/verify", {"from": "2025-03-01", "to": "2025-03-01"}),
             (f"/api/v1/jobs/{job_id}", {})]
    assert report.read_token != report.admin_token
    for path, params in reads:
        for token in (None, "wrong-token", report.read_token[:-1]):
            resp = report.get(path, token=token, **params)
            assert resp.status_code == 401, (path, token, resp.text)
            assert resp.json()["error"] == "unauthorized" and "token" in resp.json()["detail"], path
            assert resp.headers["www-authenticate"] == "Bearer", path
        for token in ("read", "admin"):
            resp = report.get(path, token=token, **params)
            # records/<unknown id> and a day without documents are 404s: past the token check, as the
            # 401s above were not.
            missing = path.startswith("/api/v1/records/") or params.get("date") == NO_DOCUMENTS
            assert resp.status_code == (404 if missing else 200), (path, token)
    view = report.get(f"/api/v1/jobs/{job_id}").text
    assert '"callback":true' in view.replace(" ", "") and "hooks.invalid" not in view and "cb-Xq2" not in view
    # The rebuild (plan and steps) is the admin token's: the read token gets a 403 that says so.
    plan = f"{report.api}/api/v1/reports/rebuild"
    calls: list[Callable[[dict[str, str]], httpx.Response]] = [
        lambda h: httpx.get(plan, headers=h, timeout=10),
        lambda h: httpx.post(plan, headers=h, json={"dry_run": True, "limit": 1}, timeout=10)]
    for call in calls:
        assert call({}).status_code == 401
        refused = call({"Authorization": f"Bearer {report.read_token}"})
        assert refused.status_code == 403, refused.text
        assert refused.json() == {"error": "forbidden",
                                  "detail": "the read token cannot rebuild the reports; use the admin token"}
    assert httpx.get(plan, headers={"Authorization": f"Bearer {report.admin_token}"}, timeout=30).status_code == 200
    # The OpenAPI document (no token: it holds no data) declares the scheme on every operation.
    spec = report.get("/openapi.json", token=None).json()
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert all(op["security"] == [{"bearer": []}] for ops in spec["paths"].values() for op in ops.values())


def test_the_cli_prints_the_api_as_tables_or_json(report: ReportProc) -> None:
    out = report.cli("summary", "--json")
    assert out.returncode == 0, out.stderr
    assert orjson.loads(out.stdout) == report.get("/api/v1/reports/summary").json()
    table = report.cli("daily", NO_DOCUMENTS)  # a day with documents: test_seed_contract.py
    assert table.returncode == 0 and "No archived documents dated" in table.stdout, (table.stdout, table.stderr)
    assert report.cli("daily", "not-a-date").returncode == 1


def test_the_cli_reads_with_the_read_token_and_says_so_in_one_line_when_it_is_wrong(
        report: ReportProc, tmp_path: Path) -> None:
    # Its read token only (the admin token wrong): every read works.
    for args in (["summary", "--json"], ["trend"], ["verify", "--from", "2025-03-01", "--to", "2025-03-01"]):
        out = report.cli(*args, FISCALFLOW_API_TOKEN="not-the-admin-token")
        assert out.returncode == 0, (args, out.stdout, out.stderr)
    # From a file, as a secret mount gives it.
    (tmp_path / "read-token").write_text(report.read_token + "\n")
    out = report.cli("summary", "--json", FISCALFLOW_READ_TOKEN_FILE=str(tmp_path / "read-token"))
    assert out.returncode == 0, out.stderr
    # A wrong read token: one line naming the variable to set, no traceback, a non-zero exit.
    for args in (["summary"], ["daily", NO_DOCUMENTS, "--json"], ["verify"]):
        out = report.cli(*args, FISCALFLOW_READ_TOKEN="not-the-read-token")
        assert out.returncode == 1, (args, out.stdout, out.stderr)
        assert out.stderr.count("\n") == 1 and "FISCALFLOW_READ_TOKEN" in out.stderr, out.stderr
        assert "Traceback" not in out.stdout + out.stderr and "not-the-read-token" not in out.stderr
    # The rebuild is the admin token's: the read token there is refused in one line too.
    out = report.cli("rebuild", "--dry-run", FISCALFLOW_API_TOKEN=report.read_token)
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert "use the admin token" in out.stderr and "FISCALFLOW_API_TOKEN" in out.stderr, out.stderr
    out = report.cli("rebuild", "--dry-run", FISCALFLOW_API_TOKEN="not-the-admin-token")
    assert out.returncode == 1 and "HTTP 401" in out.stderr and "FISCALFLOW_API_TOKEN" in out.stderr, out.stderr


def test_the_cli_reaches_a_report_service_by_url_and_token(report: ReportProc) -> None:
    """--url and --token (or FISCALFLOW_REPORT_URL and FISCALFLOW_CLI_TOKEN) win over the local port and
    the settings' tokens: the CLI reaches a deployment that is not on this machine's ports."""
    elsewhere = {"FISCALFLOW_REPORT_PORT": "1", "FISCALFLOW_READ_TOKEN": "not-the-read-token"}
    expected = report.get("/api/v1/reports/summary").json()
    out = report.cli("summary", "--json", "--url", report.api, "--token", report.read_token, **elsewhere)
    assert out.returncode == 0, out.stderr
    assert orjson.loads(out.stdout) == expected
    out = report.cli("summary", "--json", **elsewhere, FISCALFLOW_REPORT_URL=report.api + "/",
                     FISCALFLOW_CLI_TOKEN=report.read_token)
    assert out.returncode == 0 and orjson.loads(out.stdout) == expected, out.stderr
    # The wrong token by --token: one line naming it; no service at the URL: one line naming the URL.
    out = report.cli("trend", "--url", report.api, "--token", "not-a-token", **elsewhere)
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "FISCALFLOW_CLI_TOKEN" in out.stderr, out.stderr
    out = report.cli("trend", **elsewhere)
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert "report API at http://127.0.0.1:1/api/v1/reports/trend unreachable" in out.stderr, out.stderr
