"""Fixtures for report tests: the report service as a subprocess (``fiscalflow service run report``)
on an isolated topic namespace and its own chDB directory, and a generator of invoices."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.settings import PROJECT_ROOT, Settings
from tests.integration.store.harness import Topics
from tests.support.sockets import free_port
from tooling.issuers.generator import InvoiceGenerator
from tooling.issuers.pki import DemoPKI

CALLBACK_SECRET = "callbacks-own-secret-not-the-api-token"  # the report signs callbacks with it


@dataclass
class ReportProc:
    topics: Topics
    api: str
    ops: str
    proc: subprocess.Popen[bytes]
    log: Path
    read_token: str  # the service's (the stack's defaults: distinct from the admin token)
    admin_token: str

    def get(self, path: str, *, token: str | None = "read", **params: Any) -> httpx.Response:
        """GET with the read token; ``token``: "admin", another token, or None for no token."""
        token = {"read": self.read_token, "admin": self.admin_token}.get(token or "", token)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(self.api + path, params={k: v for k, v in params.items() if v is not None},
                         headers=headers, timeout=10)

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """``fiscalflow report ARGS`` against this report service, with the test stack's environment
        (its tokens: the settings' defaults) changed by ``env``."""
        return subprocess.run([sys.executable, "-m", "services.cli", "report", *args],
                              env={**os.environ, "FISCALFLOW_REPORT_PORT": self.api.rsplit(":", 1)[1], **env},
                              capture_output=True, text=True, timeout=60)

    def wait_until(self, check: object, timeout: float = 60) -> None:
        assert callable(check)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if check():
                    return
            except (httpx.HTTPError, AssertionError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met in {timeout}s; report log:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.3)


@pytest.fixture(scope="module")
def generator(tmp_path_factory: pytest.TempPathFactory) -> InvoiceGenerator:
    # A fresh seed per session: the test database outlives sessions and TFD UUIDs derive from the seed.
    pki = DemoPKI.ensure(Path(tmp_path_factory.mktemp("pki")), issuers=4)
    return InvoiceGenerator(pki, seed=random.randrange(1 << 30))


@pytest.fixture(scope="module")
def report(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReportProc]:
    with running_report(stack_settings, Path(tmp_path_factory.mktemp("report"))) as rp:
        yield rp


@contextlib.contextmanager
def running_report(stack_settings: Settings, tmp: Path) -> Iterator[ReportProc]:
    """A report service on topics of its own, its ClickHouse (chDB) in ``tmp/ch`` (as found there)."""
    topics = Topics.create(stack_settings)
    api_port, ops_port = free_port(), free_port()
    env = {**os.environ, "FISCALFLOW_TOPIC_NAMESPACE": topics.ns, "FISCALFLOW_CLICKHOUSE_URL": f"chdb://{tmp}/ch",
           "FISCALFLOW_REPORT_PORT": str(api_port), "FISCALFLOW_METRICS_PORT": str(ops_port),
           "FISCALFLOW_LOCAL_DIR": str(tmp), "FISCALFLOW_CALLBACK_BASE_S": "0.2",
           "FISCALFLOW_REPORT_FLUSH_S": "0.2", "FISCALFLOW_CALLBACK_ALLOW_HTTP": "true",
           "FISCALFLOW_CALLBACK_ALLOWED_NETWORKS": "127.0.0.0/8",
           "FISCALFLOW_CALLBACK_SECRET": CALLBACK_SECRET}
    log = tmp / "report.log"
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "service", "run", "report"], env=env,
                            cwd=PROJECT_ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    rp = ReportProc(topics, f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{ops_port}", proc, log,
                    stack_settings.read_token.get_secret_value(), stack_settings.api_token.get_secret_value())
    try:
        rp.wait_until(lambda: httpx.get(rp.ops + "/readyz", timeout=2).status_code == 200, timeout=60)
        yield rp
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
