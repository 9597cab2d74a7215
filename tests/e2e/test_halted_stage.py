"""A stage halted by its reject ratio is visible to the operator and to whoever waits on a job:
the local stack runs every service with a trust store that trusts none of the invoices (a
misconfiguration), so validate dead-letters its first documents and halts.  Then
`fiscalflow stack status` shows validate halted and why, the job API lists it, and
`fiscalflow job submit --wait` exits 3 with the reason instead of waiting forever."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from services.ingest.cli import EXIT_HALTED
from shared.issuers.pki import DemoPKI
from shared.stack import LocalStack
from shared.stack.probe import PROBE_TIMEOUT_S
from shared.topics import Stage
from tests.stacks import FISCALFLOW, isolated_settings, isolated_stack, service_env

pytestmark = pytest.mark.e2e

DOCUMENTS = 200
WINDOW = 20
IN_FLIGHT = 8  # a halt stops the polling; what is in flight still finishes: keep that well under DOCUMENTS


def _cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FISCALFLOW, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_a_halted_stage_is_shown_by_stack_status_the_job_api_and_job_submit_wait(tmp_path: Path) -> None:
    # The CA of another PKI: it signed none of the stack's demo invoices.
    stranger = DemoPKI.ensure(tmp_path / "other-pki", issuers=1, seed=99)
    settings = isolated_settings("halts", 50, reject_ratio_window=WINDOW, reject_ratio_threshold=0.5,
                                 max_in_flight=IN_FLIGHT, trust_ca=f"demo={stranger.ca_cert}", log_level="WARNING")
    with isolated_stack(settings):
        env = {**service_env(settings), "COLUMNS": "200"}
        gen = _cli(env, "issuer", "generate", "--count", str(DOCUMENTS), "--region", "north", "--batch", "halts",
                   "--bad-fraction", "0", timeout=180)
        assert gen.returncode == 0, gen.stderr
        stack = LocalStack(settings)
        stack.up(services=list(Stage), timeout_s=120)
        try:
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
        finally:
            stack.stop("services")
