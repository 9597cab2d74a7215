"""Records whose messages were lost finish all the same: the local broker on memory storage is
restarted in the middle of a job (every topic, every message and every committed offset gone, as
when a topic is recreated or retention drops unconsumed messages).  Some records then wait at
``pending``/``downloading``/``downloaded`` with nothing left to carry them.  Submitting the same
job again re-drives them (phase 1); with nobody resubmitting, the ingest stage's reconciler does
(phase 2).  Either way every record ends final, and none is archived twice.

The lease is a few seconds here (production: FISCALFLOW_REDRIVE_LEASE_S, 10 minutes).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from shared.cli.api_client import bearer
from shared.settings import Settings
from shared.topics import Stage
from tests.support.e2e import db
from tests.support.stacks import archive_keys, isolated_settings, isolated_stack
from tests.support.wait import wait_for, wait_until
from tooling.issuers.generator import InvoiceGenerator
from tooling.issuers.output import batch_dir, merge_manifest, write_invoice
from tooling.issuers.pki import DemoPKI
from tooling.stack import LocalStack

pytestmark = pytest.mark.e2e

START = dt.date(2023, 5, 8)  # a window no other test uses
FINAL = ("archived", "rejected", "duplicate")
LEASE_S = 4.0


def _generate(settings: Settings, count: int, batch: str) -> None:
    gen = InvoiceGenerator(DemoPKI.ensure(settings.pki_dir()), seed=count, start=START, days=3, bad_fraction=0)
    root = settings.region_root("north")
    batch_dir(root, batch).mkdir(parents=True, exist_ok=True)
    rows = [write_invoice(root, "north", batch, inv) for inv in gen.generate_many(count, workers=os.cpu_count() or 2)]
    merge_manifest(batch_dir(root, batch), rows)


def _api(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.ingest_port}/api/v1/jobs"


def _submit(settings: Settings, batch: str) -> str:
    resp = httpx.post(_api(settings), timeout=120, json={"source": {"region": "north", "pattern": f"{batch}/*.xml"}},
                      headers=bearer(settings, admin=True))
    assert resp.status_code == 202, resp.text
    return str(resp.json()["job_id"])


def _job(settings: Settings, job_id: str) -> dict[str, Any]:
    resp = httpx.get(f"{_api(settings)}/{job_id}", headers=bearer(settings), timeout=30)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def _restart_broker_mid_job(stack: LocalStack, settings: Settings, job_id: str, total: int) -> int:
    """Restart the broker once a fifth of the job is final, with documents waiting in
    fiscal.validate; then wait until the job stops moving.  Returns how many of its records are
    left stuck (not final).

    validate is held (SIGSTOP) until the restart: what its consumer had already fetched survives
    a broker restart in the client, and a fast pipeline can have fetched everything, leaving
    nothing to lose.  Held, it fetches nothing more, so the documents downloaded meanwhile are in
    the topic when the broker loses them."""
    wait_until(lambda: _job(settings, job_id)["finished"] >= total // 5, "a fifth of the job", 300)
    [validate] = stack.replica_pids(Stage.VALIDATE)
    os.kill(validate, signal.SIGSTOP)  # a replica this test's stack started
    try:
        wait_until(lambda: _job(settings, job_id)["counts"].get("downloaded", 0) >= 300, "a backlog for validate",
                   120)
        stack.restart("broker")
    finally:
        os.kill(validate, signal.SIGCONT)
    last, still_since = -1, time.monotonic()
    while time.monotonic() - still_since < 3 * LEASE_S:  # no transition for longer than the lease
        finished = _job(settings, job_id)["finished"]
        if finished != last:
            last, still_since = finished, time.monotonic()
        time.sleep(0.5)
    return total - last


def _assert_all_final_once(settings: Settings, total: int) -> Counter[str]:
    statuses = Counter(str(r["status"]) for r in db(settings, "SELECT status FROM fiscal_records"))
    assert statuses == {"archived": total}, statuses
    keys = archive_keys(settings)
    assert len(keys) == len(set(keys)) == total  # one object per record: none archived twice
    archived_events = Counter(str(r["record_id"]) for r in db(
        settings, "SELECT record_id FROM audit_events WHERE to_status = 'archived'"))
    assert len(archived_events) == total and set(archived_events.values()) == {1}
    # Who sent records through again: re-drives of records past ingest (REDRIVEN), and pending
    # records whose first request was lost, started by a re-sent request.
    return Counter(str(r["by"]) for r in db(
        settings, "SELECT detail->>'by' AS by FROM audit_events WHERE stage = 'ingest' AND"
                  " (reason = 'REDRIVEN' OR detail->>'by' IS NOT NULL)"))


def test_a_job_stuck_by_a_broker_restart_completes_when_submitted_again() -> None:
    total = 4000
    settings = isolated_settings("redrive", 80, redrive_lease_s=LEASE_S, redrive_interval_s=0, log_level="WARNING")
    with isolated_stack(settings):
        _generate(settings, total, "redrive")
        stack = LocalStack(settings)
        stack.up(services=list(Stage), timeout_s=120)
        first = _submit(settings, "redrive")
        stuck = _restart_broker_mid_job(stack, settings, first, total)
        assert stuck > 0, "the broker restart left nothing stuck: the scenario did not happen"
        view = _job(settings, first)
        assert view["status"] == "running" and view["stalled"] == stuck, view

        again = _submit(settings, "redrive")
        wait_for(lambda: _job(settings, again), lambda v: v["status"] == "completed", "the resubmitted job", 300)
        assert _job(settings, first)["status"] == "completed"  # the same records: it completes too
        assert _job(settings, again)["counts"] == {"archived": total}
        redriven = _assert_all_final_once(settings, total)
        print(f"resubmission: {stuck} of {total} stuck after the broker restart, {sum(redriven.values())} re-driven")
        # Records past ingest were re-driven (audited); pending ones simply started.
        assert set(redriven) <= {"job"} and 0 < sum(redriven.values()) <= stuck


def test_the_reconciler_finishes_a_stuck_job_without_anyone_resubmitting() -> None:
    total = 1000
    settings = isolated_settings("reconcile", 90, redrive_lease_s=LEASE_S, redrive_interval_s=1.0,
                                 log_level="WARNING")
    with isolated_stack(settings):
        _generate(settings, total, "reconcile")
        stack = LocalStack(settings)
        stack.up(services=list(Stage), timeout_s=120)
        # Hold validate from the start, so that documents wait in fiscal.validate (not in its
        # consumer's prefetch, which a broker restart does not touch) when the broker loses them.
        # Held only once the job is running, a 1,000-record job may be done before the signal.
        [validate] = stack.replica_pids(Stage.VALIDATE)
        os.kill(validate, signal.SIGSTOP)  # a replica this test's stack started
        try:
            job = _submit(settings, "reconcile")
            wait_until(lambda: _job(settings, job)["counts"].get("downloaded", 0) >= 300, "a backlog for validate", 120)
            stack.restart("broker")
        finally:
            os.kill(validate, signal.SIGCONT)
        wait_for(lambda: _job(settings, job), lambda v: v["status"] == "completed", "the job", 300)
        redriven = _assert_all_final_once(settings, total)
        print(f"reconciler: {sum(redriven.values())} of {total} re-driven")
        assert set(redriven) <= {"reconciler"} and sum(redriven.values()) > 0
