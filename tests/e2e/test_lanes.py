"""Every lane of every stage, end to end, on an isolated local stack with the five services running.

Records enter the pipeline at each stage (ingest, download, validate, store) through each of its
lanes — normal, priority, retry, and retry of a priority record — as a well-formed message of that
stage's input format published straight onto the lane's topic.  Each good one must end archived
(one S3 object, one archived audit event) and counted once by every report; each bad one must end
as one dead letter counted once among the report's rejections.  Then the issue's must-show: a job of
300 invoices submitted with priority high grows the daily report of their day by exactly 300.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest
from confluent_kafka import Producer

from shared.cli.api_client import bearer
from shared.db.records import Registration, register
from shared.dlq.reader import read_dead_letters
from shared.domain.messages import DocumentRef, DownloadTask, IngestRequest, ValidatedDocument
from shared.domain.reasons import ReasonCode
from shared.runtime import headers as H
from shared.settings import Settings
from shared.topics import DLQ, STORED, Stage, input_topic, priority_topic, retry_topic
from tests.integration.store.harness import facts_of
from tests.support.callbacks import CallbackReceiver, callback_receiver
from tests.support.e2e import db, demo_trust, s3_keys, wait_jobs
from tests.support.stacks import Services, isolated_settings, isolated_stack, service_env
from tests.support.topics import read_to_end
from tests.support.wait import wait_steady
from tooling.issuers.defects import Defect
from tooling.issuers.generator import GeneratedInvoice, InvoiceGenerator
from tooling.issuers.output import batch_dir, merge_manifest, write_invoice
from tooling.issuers.pki import DemoPKI

pytestmark = pytest.mark.e2e

START = dt.date(2023, 3, 6)  # the lane records' window; no other test uses it
DAYS = 3
PRIORITY_DAY = dt.date(2023, 3, 20)  # the must-show job's day
PRIORITY_JOB = 300
PER_CELL = 2  # good records per (stage, lane)
STAGES = [Stage.INGEST, Stage.DOWNLOAD, Stage.VALIDATE, Stage.STORE]
REGION = "north"


@dataclass(frozen=True)
class Lane:
    name: str
    topic: Callable[[Stage], str]
    retry: bool = False  # carries the runtime's retry headers (an attempt made, a due time)
    priority: bool = False  # the record is a priority one: the report must read it off fiscal.stored.priority

    def headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.retry:
            out = {H.ATTEMPT: "1", H.DUE_AT_MS: str(int(time.time() * 1000) + 500)}
        if self.priority and self.retry:
            out[H.PRIORITY] = "1"  # how the runtime keeps a retried priority record on its lane
        return out


LANES = [
    Lane("normal", input_topic),
    Lane("priority", priority_topic, priority=True),
    Lane("retry", retry_topic, retry=True),
    Lane("retry-priority", retry_topic, retry=True, priority=True),
]


@dataclass
class Doc:
    """One document on the SFTP server, registered as a record, and the message it enters with."""

    record_id: str
    inv: GeneratedInvoice
    path: str
    sha256: str  # what the registry / the download task expects
    stage: Stage
    lane: Lane
    reason: str = ""  # the dead letter's reason when the document is bad; "" when it must be archived
    facts_uuid: str | None = None  # store-lane duplicates: the UUID already archived by another record

    def message(self) -> bytes:
        actual = hashlib.sha256(self.inv.xml).hexdigest()
        size = len(self.inv.xml)
        if self.stage is Stage.INGEST:
            return IngestRequest(record_id=self.record_id).encode()
        if self.stage is Stage.DOWNLOAD:
            return DownloadTask(record_id=self.record_id, region=REGION, path=self.path,
                                expected_sha256=self.sha256, size=size).encode()
        ref = DocumentRef(record_id=self.record_id, region=REGION, path=self.path, sha256=actual, size=size,
                          xml=self.inv.xml)
        if self.stage is Stage.VALIDATE:
            return ref.encode()
        return ValidatedDocument(**ref.model_dump(), facts=facts_of(self.inv, self.facts_uuid)).encode()


@dataclass
class Lanes:
    settings: Settings
    pki: DemoPKI
    services: Services
    docs: list[Doc] = field(default_factory=list)


@pytest.fixture(scope="module")
def lanes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lanes]:
    settings = isolated_settings("lanes", 50)
    with isolated_stack(settings):
        pki = DemoPKI.ensure(settings.pki_dir(), issuers=6)
        # The test's callback receiver listens on loopback over http: allowed here, refused by default.
        env = service_env(settings, FISCALFLOW_LOG_LEVEL="WARNING", FISCALFLOW_CALLBACK_ALLOW_HTTP="true",
                          FISCALFLOW_CALLBACK_ALLOWED_NETWORKS="127.0.0.0/8",
                          **demo_trust(pki, tmp_path_factory.mktemp("stamp-certs")))
        services = Services(settings, env).start()
        try:
            services.wait_http()
            yield Lanes(settings, pki, services)
        finally:
            services.stop()


# ------------------------------------------------------------------ inputs


def _place(settings: Settings, batch: str, invs: list[GeneratedInvoice]) -> list[tuple[GeneratedInvoice, str, str]]:
    """Write the documents onto the region's SFTP server (with a manifest); (invoice, path, sha256)."""
    root = settings.region_root(REGION)
    batch_dir(root, batch).mkdir(parents=True, exist_ok=True)
    rows = [write_invoice(root, REGION, batch, inv) for inv in invs]
    merge_manifest(batch_dir(root, batch), rows)
    return [(inv, row.path, row.sha256) for inv, row in zip(invs, rows, strict=True)]


def _register(settings: Settings, docs: list[Doc]) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(settings.pg_dsn.get_secret_value())
        try:
            await register(conn, [Registration(d.record_id, REGION, d.path, d.sha256, len(d.inv.xml)) for d in docs])
        finally:
            await conn.close()
    asyncio.run(go())


def _publish(settings: Settings, docs: list[Doc]) -> None:
    p = Producer({"bootstrap.servers": settings.bootstrap_servers, "partitioner": "murmur2_random"})
    for d in docs:
        p.produce(d.lane.topic(d.stage), d.message(), key=d.record_id.encode(),
                  headers=list(d.lane.headers().items()))
    assert p.flush(30) == 0


# Each stage's bad document (dead-lettered with the generator's expected reason).  The store's bad
# documents are duplicates of an archived invoice, published once it is archived.
BAD: dict[Stage, Defect] = {Stage.INGEST: Defect.SELLO_TAMPERED, Stage.DOWNLOAD: Defect.CHECKSUM_MISMATCH,
                            Stage.VALIDATE: Defect.TOTAL_MISMATCH}


def _matrix(settings: Settings, gen: InvoiceGenerator) -> list[Doc]:
    """PER_CELL good documents per (stage, lane), and one bad one per cell but the store's."""
    docs: list[Doc] = []
    index = 0
    run = uuid.uuid4().hex[:6]
    for stage in STAGES:
        for lane in LANES:
            defects: list[Defect | None] = [None] * PER_CELL + ([BAD[stage]] if stage in BAD else [])
            invs = [gen.generate(index + i, defect=d) for i, d in enumerate(defects)]
            index += len(invs)
            for inv, path, sha in _place(settings, f"lanes-{run}", invs):
                # The expected reason: e.g. TOTAL_MISMATCH, or TOTAL_NOT_ZERO for a payment.
                reason = inv.expected_reason if inv.defect else ""
                docs.append(Doc(f"{stage.value}-{lane.name}-{inv.record_id}", inv, path, sha, stage, lane, reason))
    return docs


# ------------------------------------------------------------------ observations


def _report(settings: Settings, path: str, **params: str | int) -> Any:
    resp = httpx.get(f"http://127.0.0.1:{settings.report_port}/api/v1/reports/{path}", params=params,
                     headers=bearer(settings), timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _daily_count(settings: Settings, day: dt.date) -> int:
    resp = httpx.get(f"http://127.0.0.1:{settings.report_port}/api/v1/reports/daily",
                     params={"date": day.isoformat()}, headers=bearer(settings), timeout=30)
    if resp.status_code == 404:  # a day without archived documents
        return 0
    assert resp.status_code == 200, resp.text
    return sum(g["count"] for g in resp.json()["groups"])


def _snapshot(settings: Settings) -> dict[str, Any]:
    """What a user reads: the summary, the daily and issuer counts over the lanes' window, the trend."""
    days = [START + dt.timedelta(days=d) for d in range(DAYS)]
    issuers = _report(settings, "issuers", **{"from": days[0].isoformat(), "to": days[-1].isoformat()})
    summary = _report(settings, "summary")
    return {
        "archived": summary["by_status"].get("archived", 0),
        "rejected": summary["by_status"].get("rejected", 0),
        "duplicate": summary["by_status"].get("duplicate", 0),
        "by_reason": Counter(summary["by_reason"]),
        "daily": Counter({d.isoformat(): _daily_count(settings, d) for d in days}),
        "issuers": Counter({i["rfc"]: sum(g["count"] for g in i["groups"]) for i in issuers["issuers"]}),
        "trend": sum(p["count"] for p in _report(settings, "trend", hours=24)["points"]),
    }


def _delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in after.items():
        if isinstance(v, Counter):
            out[k] = +(v - before[k])
            assert not +(before[k] - v), f"{k} went down: {before[k]} -> {v}"
        else:
            out[k] = v - before[k]
    return out


def _expected_delta(docs: list[Doc]) -> dict[str, Any]:
    good = [d for d in docs if not d.reason]
    bad = [d for d in docs if d.reason]
    return {
        "archived": len(good),
        "rejected": sum(1 for d in bad if d.reason != ReasonCode.DUPLICATE_UUID),
        "duplicate": sum(1 for d in bad if d.reason == ReasonCode.DUPLICATE_UUID),
        "by_reason": Counter(d.reason for d in bad),
        "daily": Counter(d.inv.fecha[:10] for d in good),
        "issuers": Counter(d.inv.issuer_rfc for d in good),
        "trend": len(good),
    }


def _statuses(settings: Settings, ids: list[str]) -> dict[str, str]:
    return {r["record_id"]: r["status"] for r in db(settings, "SELECT record_id, status FROM fiscal_records "
                                                               "WHERE record_id = ANY($1)", ids)}


def _settle(settings: Settings, docs: list[Doc], before: dict[str, Any], timeout: float = 240) -> None:
    """Until every document is final in the registry and the reports grew by what they should."""
    want = {d.record_id: ("archived" if not d.reason else
                          "duplicate" if d.reason == ReasonCode.DUPLICATE_UUID else "rejected") for d in docs}
    expected = _expected_delta(docs)
    wait_steady(lambda: (_statuses(settings, list(want)), _delta(_snapshot(settings), before)),
              lambda v: v == (want, expected), f"registry {want} and report growth {expected}", timeout)


def _read_keys(settings: Settings, topic: str, keys: set[str]) -> set[str]:
    """The keys among ``keys`` that ``topic`` holds, read to its end (the records have settled)."""
    return {(m.key() or b"").decode() for m in read_to_end(settings, topic, keys)}


# ------------------------------------------------------------------ the tests


def test_every_lane_of_every_stage_reaches_the_archive_and_every_report_once(lanes: Lanes) -> None:
    settings = lanes.settings
    gen = InvoiceGenerator(lanes.pki, seed=31, start=START, days=DAYS)
    docs = _matrix(settings, gen)
    _register(settings, docs)
    keys_before = s3_keys(settings)
    before = _snapshot(settings)
    t0 = time.monotonic()
    _publish(settings, docs)
    _settle(settings, docs, before)
    print(f"\n{len(docs)} lane records settled in {time.monotonic() - t0:.1f} s")

    # The store's own rejection: a second record carrying an archived invoice (same TFD UUID), on
    # each of the store's lanes — published once its owner is archived, so which record owns the
    # UUID is not a race.
    owners = [d for d in docs if d.stage is Stage.INGEST and not d.reason]
    dups = [Doc(f"store-{lane.name}-dup-{owner.record_id}", owner.inv, owner.path, owner.sha256, Stage.STORE, lane,
                ReasonCode.DUPLICATE_UUID) for lane, owner in zip(LANES, owners, strict=False)]
    _register(settings, dups)
    _publish(settings, dups)
    docs += dups
    _settle(settings, docs, before)
    print(f"{len(docs)} lane records settled in {time.monotonic() - t0:.1f} s")

    good = [d for d in docs if not d.reason]
    bad = [d for d in docs if d.reason]
    assert {(d.stage, d.lane.name) for d in good} == {(s, lane.name) for s in STAGES for lane in LANES}
    assert {(d.stage, d.lane.name) for d in bad} == {(s, lane.name) for s in STAGES for lane in LANES}

    # The archive: one object per good record, at the key its record names, and nothing else new.
    rows = {r["record_id"]: r for r in db(settings, "SELECT record_id, status, reason, s3_key FROM fiscal_records "
                                                    "WHERE record_id = ANY($1)", [d.record_id for d in docs])}
    new_keys = s3_keys(settings) - keys_before
    assert new_keys == {rows[d.record_id]["s3_key"] for d in good}
    assert len(new_keys) == len(good)
    audit = {r["record_id"]: r["n"] for r in db(
        settings, "SELECT record_id, count(*) AS n FROM audit_events WHERE to_status = 'archived'"
                  " AND record_id = ANY($1) GROUP BY 1", [d.record_id for d in docs])}
    assert audit == {d.record_id: 1 for d in good}
    for d in bad:
        assert rows[d.record_id]["reason"] == d.reason, (d.stage, d.lane.name, rows[d.record_id])

    # The dead-letter topic: exactly one per bad record, none for a good one.
    letters = Counter(dl.record_id for dl in read_dead_letters(settings, DLQ, keep_values=False)
                      if dl.record_id in rows)
    assert letters == Counter({d.record_id: 1 for d in bad})

    # Each record reached the report on its own lane: priority records (retried ones too) on
    # fiscal.stored.priority, the others on fiscal.stored.
    prio = {d.record_id for d in good if d.lane.priority}
    normal = {d.record_id for d in good if not d.lane.priority}
    assert _read_keys(settings, priority_topic(Stage.REPORT), prio | normal) == prio
    assert _read_keys(settings, STORED, prio | normal) == normal


@pytest.fixture
def callbacks() -> Iterator[CallbackReceiver]:
    with callback_receiver() as r:
        yield r


def test_a_priority_job_of_300_grows_its_daily_report_by_exactly_300(lanes: Lanes, callbacks: CallbackReceiver) -> None:
    settings = lanes.settings
    gen = InvoiceGenerator(lanes.pki, seed=47, start=PRIORITY_DAY, days=1)
    invs = [gen.generate(i, defect=None) for i in range(PRIORITY_JOB)]
    assert {inv.fecha[:10] for inv in invs} == {PRIORITY_DAY.isoformat()}
    _place(settings, "priority-job", invs)
    before = _daily_count(settings, PRIORITY_DAY)

    t0 = time.monotonic()
    resp = httpx.post(f"http://127.0.0.1:{settings.ingest_port}/api/v1/jobs", timeout=120,
                      headers=bearer(settings, admin=True),
                      json={"source": {"region": REGION, "pattern": "priority-job/*.xml"}, "priority": "high",
                            "callback_url": callbacks.url})
    assert resp.status_code == 202, resp.text
    assert resp.json()["record_count"] == PRIORITY_JOB
    job_id = resp.json()["job_id"]
    wait_jobs(settings, [job_id], timeout=300)
    completed = time.monotonic() - t0
    grown = wait_steady(lambda: _daily_count(settings, PRIORITY_DAY) - before, lambda n: n == PRIORITY_JOB,
                      f"the daily report of the priority job's day grew by {PRIORITY_JOB}", timeout=120)
    in_report = time.monotonic() - t0
    assert grown == PRIORITY_JOB
    # The job's callback: once, completed, every record archived (the report sends it when its
    # batches touch the job; a job whose events it never read waited for the 10 s sweep).
    deadline = time.monotonic() + 60
    while not callbacks.calls and time.monotonic() < deadline:
        time.sleep(0.1)
    assert callbacks.calls, "no job callback"
    arrived, body = callbacks.calls[0].at, json.loads(callbacks.calls[0].body)
    assert (body["job_id"], body["status"], body["counts"]) == (job_id, "completed", {"archived": PRIORITY_JOB})
    # Neither the callback nor the job view shows the callback's URL (it may carry a token).
    view = httpx.get(f"http://127.0.0.1:{settings.ingest_port}/api/v1/jobs/{job_id}", headers=bearer(settings),
                     timeout=30).json()
    assert body["callback"] is True and view["callback"] is True
    assert callbacks.url not in json.dumps(body) + json.dumps(view)
    print(f"\npriority job of {PRIORITY_JOB}: completed {completed:.1f} s, in the daily report {in_report:.1f} s "
          "(incl. 2 s of steady polls), "
          f"callback {arrived - t0:.1f} s after submission")
    assert len(callbacks.calls) == 1
