"""The web console in headless Chromium (Debian's, driven by Playwright) against a real report
service on the real broker, PostgreSQL and chDB: every view renders, its numbers equal the API's,
the charts are drawn, a dead letter is replayed from the UI, the token in the URL fragment logs in
and leaves the address bar.  A screenshot of every view is written as a test artifact."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from shared.db.jobs import create_job
from shared.db.records import Registration, Transition, apply_transitions, register
from shared.domain.records import Priority, RecordStatus
from shared.runtime import headers as H
from shared.runtime.admin import ensure_topics
from shared.settings import Settings
from shared.topics import DLQ, STORED, Stage, TopicSpec, input_topic
from tests.integration.browser.conftest import SHOTS
from tests.integration.report.conftest import ReportProc, running_report
from tests.integration.store.harness import stored
from tooling.issuers.generator import InvoiceGenerator

pytestmark = [pytest.mark.integration, pytest.mark.browser]

ARCHIVED = 4
RULES = {"verdict": "invalid", "rules": ["CFDI40108", "CFDI40111"], "sat_codes": ["CFDI40108", "CFDI40111"],
         "uuid": None}


@dataclass
class World:
    report: ReportProc
    job_id: str
    ids: list[str]
    rejected: str  # its dead letter is replayed from the UI
    day: str
    rfc: str
    tfd_uuid: str


@pytest.fixture(scope="module")
def world(stack_settings: Settings, generator: InvoiceGenerator,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_report(stack_settings, Path(tmp_path_factory.mktemp("console-report"))) as report:
        yield _fill(report, stack_settings, generator)


def _fill(report: ReportProc, settings: Settings, generator: InvoiceGenerator) -> World:
    """A job of six records: four archived (their stored events to the report), one rejected by the
    validate stage (its dead letter, with the failed rules), one still pending (another letter)."""
    run = uuid.uuid4().hex[:8]
    ids = [f"con-{run}-{i}" for i in range(6)]
    invs = [generator.generate(i, defect=None) for i in range(ARCHIVED)]
    job_id = str(uuid.uuid4())
    rejected, pending = ids[ARCHIVED], ids[ARCHIVED + 1]
    topics = report.topics
    ensure_topics(settings, [TopicSpec(topics.name(input_topic(s)), 2) for s in (Stage.VALIDATE, Stage.DOWNLOAD)])

    async def registry() -> None:
        conn = await asyncpg.connect(settings.pg_dsn.get_secret_value())
        try:
            await register(conn, [Registration(rid, "north", f"t/{rid}.xml") for rid in ids])
            await create_job(conn, job_id, ids, Priority.NORMAL)
            await apply_transitions(conn, [
                Transition(rid, RecordStatus.ARCHIVED, (RecordStatus.PENDING,), "store", "store/test", f"{rid}:t",
                           job_id=job_id, fields={"tfd_uuid": inv.uuid.upper(), "issuer_rfc": inv.issuer_rfc,
                                                  "issued_on": inv.fecha[:10]})
                for rid, inv in zip(ids, invs, strict=False)] + [
                Transition(rejected, RecordStatus.REJECTED, (RecordStatus.PENDING,), "validate", "validate/test",
                           f"{rejected}:t", reason="CFDI40108", job_id=job_id)])
        finally:
            await conn.close()

    # In a thread of its own: Playwright's sync API keeps an event loop running on this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, registry()).result()
    now = dt.datetime.now(dt.UTC)
    topics.produce(STORED, [(rid, stored(rid, inv, now.isoformat(), job_id=job_id, region="north").encode())
                            for rid, inv in zip(ids, invs, strict=False)])
    now_ms = int(now.timestamp() * 1000)

    def letter(rid: str, stage: Stage, reason: str, offset: int, details: dict[str, Any] | None) -> None:
        headers = {H.ORIGIN_TOPIC: topics.name(input_topic(stage)), H.ORIGIN_PARTITION: "0",
                   H.ORIGIN_OFFSET: str(offset), H.ORIGIN_TIMESTAMP_MS: str(now_ms - 5_000), H.STAGE: stage.value,
                   H.REASON: reason, H.ERROR_MESSAGE: f"{reason} (test)", H.ATTEMPT: "1",
                   H.FIRST_FAILURE_MS: str(now_ms - 1_000), H.LAST_FAILURE_MS: str(now_ms), H.JOB_ID: job_id}
        if details is not None:
            headers[H.DETAILS] = json.dumps(details)
        topics.produce(DLQ, [(rid, json.dumps({"record_id": rid, "job_id": job_id}).encode())], headers=headers)

    letter(rejected, Stage.VALIDATE, "CFDI40108", 7, RULES)
    letter(pending, Stage.DOWNLOAD, "RETRIES_EXHAUSTED", 9, None)
    # Settled: both archived counts and both letters are in the report before anything is compared.
    report.wait_until(lambda: report.get("/api/v1/reports/summary").json()["by_status"]["archived"] == ARCHIVED)
    report.wait_until(lambda: report.get("/api/v1/dead-letters").json()["total"] == 2)
    report.wait_until(lambda: report.get("/api/v1/reports/summary").json()["by_reason"].get("RETRIES_EXHAUSTED") == 1)
    return World(report, job_id, ids, rejected, invs[0].fecha[:10], invs[0].issuer_rfc, invs[0].uuid.upper())


def _num(text: str) -> int:
    return int(text.replace(",", "").strip())


class Console:
    """One logged-in tab on the console, and its screenshots."""

    def __init__(self, page: Any, world: World, shots: Path) -> None:
        self.page = page
        self.world = world
        self.shots = shots

    def go(self, fragment: str) -> None:
        self.page.evaluate("(h) => { location.hash = h; }", fragment)

    def shot(self, name: str) -> None:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        SHOTS.append(path)

    def testid(self, name: str) -> Any:
        return self.page.get_by_test_id(name)


@pytest.fixture(scope="module")
def console(browser: Any, world: World, artifacts_dir: Path) -> Iterator[Console]:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1360, "height": 900})
    context.set_default_timeout(20_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" and "401" not in msg.text else None)
    # What `fiscalflow console` opens: the read token in the fragment.
    page.goto(f"{world.report.api}/#token={world.report.read_token}")
    expect(page.get_by_test_id("summary-archived")).to_be_visible()
    yield Console(page, world, artifacts_dir)
    context.close()
    assert not [e for e in errors if "Content Security Policy" in e or "Uncaught" in e], errors


def test_the_token_in_the_fragment_logs_in_and_leaves_the_address_bar(console: Console) -> None:
    from playwright.sync_api import expect

    page, report = console.page, console.world.report
    assert report.read_token not in page.url and page.url.endswith("#/pipeline"), page.url
    assert page.evaluate("sessionStorage.getItem('fiscalflow.token')") == report.read_token
    summary = report.get("/api/v1/reports/summary").json()
    expect(console.testid("summary-archived")).to_have_text(f"{summary['by_status']['archived']:,}")
    assert summary["by_status"]["archived"] == ARCHIVED
    for stage in Stage:
        expect(console.testid(f"stage-{stage.value}")).to_be_visible()
    pipeline = report.get("/api/v1/pipeline").json()
    assert [s["stage"] for s in pipeline["stages"]] == [s.value for s in Stage] and not pipeline["kafka_error"]
    console.shot("pipeline")


def test_the_jobs_view_shows_the_jobs_progress(console: Console) -> None:
    from playwright.sync_api import expect

    w = console.world
    job = w.report.get(f"/api/v1/jobs/{w.job_id}").json()
    assert (job["finished"], job["record_count"]) == (ARCHIVED + 1, 6)
    console.go("#/jobs")
    expect(console.testid(f"job-finished-{w.job_id}")).to_have_text(f"{job['finished']} / {job['record_count']}")
    console.shot("jobs")
    console.page.get_by_role("link", name=w.job_id).first.click()
    expect(console.testid("job-finished")).to_have_text(f"{job['finished']} / {job['record_count']}")
    expect(console.testid("job-progress")).to_have_text(f"{job['progress'] * 100:.1f} %")
    expect(console.testid("job-stalled")).to_have_text(str(job["stalled"]))
    expect(console.testid("job-count-archived")).to_have_text(str(job["counts"]["archived"]))
    console.shot("job")


def test_the_reports_view_draws_charts_with_the_apis_numbers(console: Console) -> None:
    from playwright.sync_api import expect

    w = console.world
    daily = w.report.get("/api/v1/reports/daily", date=w.day).json()
    summary = w.report.get("/api/v1/reports/summary").json()
    console.go(f"#/reports?date={w.day}")
    expect(console.testid("daily-count")).to_have_text(f"{daily['record_count']:,}")
    expect(console.testid("reports-archived")).to_have_text(f"{summary['by_status']['archived']:,}")
    for g in daily["groups"]:
        expect(console.testid(f"daily-count-{g['tipo']}-{g['moneda']}")).to_have_text(f"{g['count']:,}")
    expect(console.testid("reason-RETRIES_EXHAUSTED")).to_have_text(str(summary["by_reason"]["RETRIES_EXHAUSTED"]))
    for chart in ("chart-daily", "chart-issuers", "chart-trend", "chart-reasons"):
        canvas = console.testid(f"{chart}-canvas")
        expect(canvas).to_be_visible()
        # Chart.js drew on it: sized to its box, and not blank.
        assert canvas.evaluate("c => c.width > 100 && c.height > 100"), chart
        assert canvas.evaluate("c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                               " for (let i = 3; i < d.length; i += 4) if (d[i]) return true; return false; }"), chart
    assert console.page.locator("canvas").count() >= 4
    console.shot("reports")


def test_a_dead_letter_is_replayed_from_the_ui(console: Console) -> None:
    from playwright.sync_api import expect

    w, page = console.world, console.page
    letters = w.report.get("/api/v1/dead-letters").json()
    assert letters["total"] == 2
    console.go("#/dead-letters")
    expect(console.testid("dl-total")).to_have_text(str(letters["total"]))
    for g in letters["groups"]:
        expect(console.testid(f"dl-count-{g['stage']}-{g['reason']}")).to_have_text(f"{g['count']:,}")
    console.shot("dead-letters")
    (mine,) = [d for d in letters["letters"] if d["record_id"] == w.rejected]
    console.testid(f"letter-{mine['letter_id']}").click()
    expect(console.testid("dl-rules")).to_contain_text("CFDI40108 (CFDI40108)")
    expect(console.testid("dl-headers")).to_contain_text(H.ORIGIN_TOPIC)
    console.testid("admin-token").fill(w.report.admin_token)
    expect(console.testid("replay")).to_be_disabled()  # a dry run first
    console.testid("dry-run").click()
    expect(console.testid("replay-plan")).to_have_text("Dry run, nothing sent: would be replayed 1")
    history = w.report.get(f"/api/v1/records/{w.rejected}").json()["history"]
    assert not [e for e in history if e["reason"] == "REPLAYED"]  # the dry run sent nothing
    console.shot("dead-letter-dry-run")
    console.testid("replay").click()
    expect(console.testid("replay-done")).to_have_text("Done: replayed 1")
    console.shot("dead-letter-replayed")
    # The API sees it: the audit event of the ledger, and the message back on the validate stage's input.
    history = w.report.get(f"/api/v1/records/{w.rejected}").json()["history"]
    (event,) = [e for e in history if e["reason"] == "REPLAYED"]
    target = w.report.topics.name(input_topic(Stage.VALIDATE))
    assert event["stage"] == "dlq" and event["detail"]["target_topic"] == target
    back = w.report.topics.read(input_topic(Stage.VALIDATE), {w.rejected}, timeout=30)
    assert len(back[w.rejected]) == 1
    assert dict(back[w.rejected][0].headers() or [])[H.REPLAY_COUNT] == b"1"
    # Replayed once only: the ledger turns a second attempt into a skip.
    console.testid("dry-run").click()
    expect(console.testid("replay-plan")).to_have_text("Dry run, nothing sent: would be skipped already replayed 1")
    page.get_by_role("link", name="← all dead letters").click()
    expect(console.testid("dl-total")).to_be_visible()


def test_record_search_shows_the_audit_history(console: Console) -> None:
    from playwright.sync_api import expect

    w = console.world
    record = w.report.get(f"/api/v1/records/{w.rejected}").json()
    console.go(f"#/search?q={w.rejected}")
    expect(console.testid("history").locator("tbody tr")).to_have_count(len(record["history"]))
    expect(console.testid("history")).to_contain_text("REPLAYED")  # the replay of the test before
    console.shot("record")
    for q, field in ((w.tfd_uuid.lower(), "tfd_uuid"), (w.rfc, "issuer_rfc")):
        hits = w.report.get("/api/v1/search", q=q).json()["records"]
        assert w.ids[0] in [h["record_id"] for h in hits] and {h["matched_by"] for h in hits} == {field}, hits
    console.go(f"#/search?q={w.rfc}")
    expect(console.testid("search-results")).to_contain_text(w.ids[0])
    console.shot("search")


def test_a_wrong_token_goes_back_to_the_login_form(browser: Any, world: World, artifacts_dir: Path) -> None:
    from playwright.sync_api import expect

    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(world.report.api + "/")
        page.get_by_test_id("login-token").fill("not-the-token")
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_test_id("login-message")).to_contain_text("401")
        assert page.evaluate("sessionStorage.getItem('fiscalflow.token')") is None
        shot = artifacts_dir / "login.png"
        page.screenshot(path=str(shot))
        SHOTS.append(shot)
        page.get_by_test_id("login-token").fill(world.report.read_token)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_test_id("summary-archived")).to_have_text(str(ARCHIVED))
    finally:
        context.close()
