"""Halted and paused stages are visible to the operator and to whoever waits on a job, on the
local stack with every service under its supervisor.

Halted: every service runs with a trust store that trusts none of the invoices (a
misconfiguration), so validate dead-letters its first documents and halts; `fiscalflow stack
status` shows validate halted and why, the job API lists it, and `fiscalflow job submit --wait`
exits 3 with the reason instead of waiting forever.  Paused: S3 is down, so store pauses; `job
submit --wait` prints it and goes on waiting, and completes once S3 is back."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from services.ingest.cli import EXIT_HALTED
from shared.cli.api_client import bearer
from shared.topics import Stage
from tests.support.stacks import FISCALFLOW, isolated_settings, isolated_stack, service_env
from tooling.issuers.pki import DemoPKI
from tooling.stack import LocalStack
from tooling.stack.probe import PROBE_TIMEOUT_S

pytestmark = pytest.mark.e2e

DOCUMENTS = 200
WINDOW = 20
IN_FLIGHT = 8  # a halt stops the polling; what is in flight still finishes: keep that well under DOCUMENTS


@contextmanager
def _stack_with_invoices(batch: str, **overrides: object) -> Iterator[tuple[LocalStack, dict[str, str]]]:
    """An isolated stack running every service, with DOCUMENTS invoices in region north under ``batch``."""
    settings = isolated_settings("halts", 50, max_in_flight=IN_FLIGHT, log_level="WARNING", **overrides)
    with isolated_stack(settings):
        env = {**service_env(settings), "COLUMNS": "200"}
        gen = _cli(env, "issuer", "generate", "--count", str(DOCUMENTS), "--region", "north", "--batch", batch,
                   "--bad-fraction", "0", timeout=180)
        assert gen.returncode == 0, gen.stderr
        stack = LocalStack(settings)
        stack.up(services=list(Stage), timeout_s=120)
        try:
            yield stack, env
        finally:
            stack.stop("services")


def _cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FISCALFLOW, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_a_halted_stage_is_shown_by_stack_status_the_job_api_and_job_submit_wait(tmp_path: Path) -> None:
    # The CA of another PKI: it signed none of the stack's demo invoices.
    stranger = DemoPKI.ensure(tmp_path / "other-pki", issuers=1, seed=99)
    with _stack_with_invoices("halts", reject_ratio_window=WINDOW, reject_ratio_threshold=0.5,
                              trust_ca=f"demo={stranger.ca_cert}") as (stack, env):
        t0 = time.monotonic()
        submit = _cli(env, "job", "submit", "--region", "north", "--pattern", "halts/*.xml", "--wait",
                      timeout=120)
        waited = time.monotonic() - t0
        assert submit.returncode == EXIT_HALTED, (submit.returncode, submit.stdout, submit.stderr)
        assert re.search(r"stage validate HALTED \(replica 0 on .+, since .+\): halted: \d+% of the last "
                         rf"{WINDOW} messages became dead letters", submit.stderr), submit.stderr
        assert "restart" in submit.stderr
        job_id = re.search(r"job ([0-9a-f-]{36}): " + str(DOCUMENTS) + r" record", submit.stdout)
        assert job_id, submit.stdout

        show = _cli(env, "job", "show", job_id[1], "--json")
        view = json.loads(show.stdout)
        assert view["status"] == "running" and view["finished"] < DOCUMENTS
        assert [(b["stage"], b["replica"], b["state"]) for b in view["blocked_stages"]] == [
            ("validate", "0", "halted")]
        assert "dead letters" in view["blocked_stages"][0]["reason"]
        text = _cli(env, "job", "show", job_id[1]).stdout
        assert "! stage validate HALTED" in text

        t1 = time.monotonic()
        status = _cli(env, "stack", "status", "--json")
        status_s = time.monotonic() - t1
        replicas = json.loads(status.stdout)["replicas"]
        assert replicas["validate-0"]["state"] == "running"
        assert replicas["validate-0"]["condition"] == "halted"
        assert f"of the last {WINDOW} messages became dead letters" in replicas["validate-0"]["reason"]
        others = {name: r["condition"] for name, r in replicas.items() if name != "validate-0"}
        assert others == {f"{s.value}-0": "ready" for s in Stage if s is not Stage.VALIDATE}, replicas
        table = _cli(env, "stack", "status").stdout
        assert re.search(r"validate-0 +│ running, halted", table) and "validate-0 halted: halted: " in table

        # A replica that hangs (SIGSTOP) costs `stack status` its probe timeout, not a hang.
        store = stack.replica_pids(Stage.STORE)[0]
        os.kill(store, signal.SIGSTOP)
        try:
            t2 = time.monotonic()
            hung = json.loads(_cli(env, "stack", "status", "--json", timeout=30).stdout)["replicas"]["store-0"]
            hung_s = time.monotonic() - t2
        finally:
            os.kill(store, signal.SIGCONT)
        assert (hung["state"], hung["condition"]) == ("running", "no answer"), hung
        assert hung_s < PROBE_TIMEOUT_S + 10
        print(f"job submit --wait exited {submit.returncode} after {waited:.1f} s; stack status --json took "
              f"{status_s:.2f} s, {hung_s:.2f} s with a replica stopped")


def test_a_paused_stage_is_printed_and_the_wait_goes_on_until_the_job_completes() -> None:
    with _stack_with_invoices("paused") as (stack, env):
        stack.stop("s3")
        wait = subprocess.Popen([FISCALFLOW, "job", "submit", "--region", "north", "--pattern", "paused/*.xml",
                                 "--wait"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert wait.stdout is not None
            job_id = re.match(r"job ([0-9a-f-]{36}): ", wait.stdout.readline())
            assert job_id
            api = f"http://127.0.0.1:{env['FISCALFLOW_INGEST_PORT']}/api/v1/jobs/{job_id[1]}"
            deadline = time.monotonic() + 90
            blocked: list[dict[str, str]] = []
            while not blocked and time.monotonic() < deadline:
                blocked = httpx.get(api, headers=bearer(stack.settings), timeout=10).json()["blocked_stages"]
                time.sleep(0.3)
            assert [(b["stage"], b["state"]) for b in blocked] == [("store", "paused")], blocked
            assert blocked[0]["reason"].startswith("paused: s3 down")
            assert wait.poll() is None, "a pause is not a reason to stop waiting"
        finally:
            stack.start("s3")
        out, err = wait.communicate(timeout=240)
        assert wait.returncode == 0, (out, err)
        assert re.search(r"stage store PAUSED \(replica 0 on .+\): paused: s3 down .*resumes by itself.*still waiting",
                         out, re.S), out
        final = json.loads(out.strip().splitlines()[-1])
        assert final["status"] == "completed" and final["counts"] == {"archived": DOCUMENTS}
        assert httpx.get(api, headers=bearer(stack.settings), timeout=10).json()["blocked_stages"] == []
