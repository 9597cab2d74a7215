"""One isolated stack and the five services as processes, shared by the fault, bad-input and
security tests: starting a stack costs more than most of these tests, and the security checks are
stronger on logs that went through outages (error paths are where a DSN or a key leaks).

The secrets are distinctive strings so the security tests can grep every log for them; the API
(admin) and read tokens reach the services and the CLI only through ``FISCALFLOW_API_TOKEN_FILE`` and
``FISCALFLOW_READ_TOKEN_FILE``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import botocore.session
import httpx
from botocore.config import Config

from shared.dlq.model import DeadLetter, collapse_copies
from shared.dlq.reader import read_dead_letters
from shared.settings import Settings
from shared.topics import DLQ
from tests.support.stacks import FISCALFLOW, SLOT_OFFSET, Services, isolated_settings, isolated_stack, service_env
from tooling.issuers.generator import GeneratedInvoice, InvoiceGenerator
from tooling.issuers.output import ManifestRow, batch_dir, merge_manifest, write_invoice
from tooling.issuers.pki import DemoPKI

SLOT = SLOT_OFFSET // 100 or ""
SECRETS = {
    "api_token": "tok-faults-Zq81vKx3Lr0p",
    "read_token": "rtok-faults-Gd63yNc8Vf4k",
    "s3_access_key": "akid-faults-Hw52nTy7",
    "s3_secret_key": "s3sk-faults-Pm94cVb6Ud2e",
    "pg_password": "pgpw-faults-Jx37sQe5Wn1o",
}


@dataclass
class World:
    settings: Settings
    env: dict[str, str]
    services: Services
    pki: DemoPKI
    seeds: dict[str, int] = field(default_factory=dict)

    @property
    def ingest(self) -> str:
        return f"http://127.0.0.1:{self.settings.ingest_port}"

    @property
    def report(self) -> str:
        return f"http://127.0.0.1:{self.settings.report_port}"

    @property
    def auth(self) -> dict[str, str]:
        """The admin token: submits jobs (and reads)."""
        return {"Authorization": f"Bearer {SECRETS['api_token']}"}

    @property
    def read_auth(self) -> dict[str, str]:
        """The read token: reports, records, job views."""
        return {"Authorization": f"Bearer {SECRETS['read_token']}"}

    # --- inputs -------------------------------------------------------------------------------
    def generate(self, region: str, batch: str, count: int, *, seed: int, bad_fraction: float = 0.0,
                 ) -> list[tuple[GeneratedInvoice, ManifestRow]]:
        """``count`` signed, stamped invoices under ``region/batch`` with their MANIFEST.csv rows."""
        gen = InvoiceGenerator(self.pki, seed=seed, bad_fraction=bad_fraction)
        root = self.settings.region_root(region)
        batch_dir(root, batch).mkdir(parents=True, exist_ok=True)
        out = []
        for i in range(count):
            inv = gen.generate(i)
            out.append((inv, write_invoice(root, region, batch, inv)))
        merge_manifest(batch_dir(root, batch), [row for _, row in out])
        return out

    # --- the APIs -----------------------------------------------------------------------------
    def submit(self, body: dict[str, Any]) -> str:
        resp = httpx.post(f"{self.ingest}/api/v1/jobs", headers=self.auth, json=body, timeout=120)
        assert resp.status_code == 202, resp.text
        return str(resp.json()["job_id"])

    def job(self, job_id: str) -> dict[str, Any]:
        resp = httpx.get(f"{self.ingest}/api/v1/jobs/{job_id}", headers=self.read_auth, timeout=30)
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    def wait_jobs(self, jobs: list[str], timeout: float = 240) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            states = [self.job(j) for j in jobs]
            if all(s["status"] == "completed" for s in states):
                return states
            self.assert_alive()
            assert time.monotonic() < deadline, f"jobs not completed in {timeout} s: {states}"
            time.sleep(1)

    # --- what the pipeline left -----------------------------------------------------------------
    def db(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async def q() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self.settings.pg_dsn.get_secret_value())
            try:
                return list(await conn.fetch(sql, *args))
            finally:
                await conn.close()
        return asyncio.run(q())

    def records(self, ids: list[str]) -> dict[str, asyncpg.Record]:
        rows = self.db("SELECT record_id, status, reason, s3_key FROM fiscal_records WHERE record_id = ANY($1)", ids)
        return {r["record_id"]: r for r in rows}

    def dead_letters(self, ids: list[str] | set[str]) -> dict[str, list[DeadLetter]]:
        wanted = set(ids)
        out: dict[str, list[DeadLetter]] = defaultdict(list)
        # Each dead letter once, redelivered copies folded in, as `fiscalflow dlq` shows them.
        for dl in collapse_copies(read_dead_letters(self.settings, DLQ, keep_values=False)):
            if dl.record_id in wanted:
                out[dl.record_id].append(dl)
        return dict(out)

    def s3_keys(self) -> list[str]:
        """Every archive object (a list, so a key stored twice would show twice)."""
        s = self.settings
        s3 = botocore.session.get_session().create_client(
            "s3", endpoint_url=s.s3_endpoint, region_name=s.s3_region,
            aws_access_key_id=s.s3_access_key.get_secret_value(),
            aws_secret_access_key=s.s3_secret_key.get_secret_value(), config=Config(s3={"addressing_style": "path"}))
        keys: list[str] = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=s.s3_bucket):
            keys += [o["Key"] for o in page.get("Contents", []) if not o["Key"].startswith("staging/")]
        return keys

    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``fiscalflow ARGS`` as an operator would run it, with the test stack's environment."""
        done = subprocess.run([FISCALFLOW, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check:
            assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-2000:])
        return done

    # --- liveness -----------------------------------------------------------------------------
    def assert_alive(self) -> None:
        dead = {s.value: p.returncode for s, p in self.services.procs.items() if p.poll() is not None}
        assert not dead, f"services died: {dead}; logs in {self.services.logs}"

    def health(self) -> dict[str, int]:
        """/healthz status of every service, by stage."""
        out = {}
        for stage in self.services.procs:
            info = json.loads((self.settings.local_dir / "run" / f"{stage.value}-0.json").read_text())
            out[stage.value] = httpx.get(info["ops"] + "/healthz", timeout=10).status_code
        return out

    def service_logs(self) -> list[Path]:
        return sorted(self.services.logs.glob("e2e-*.log"))


_WORLD: World | None = None
_USERS = 0
_EXIT = ExitStack()


@contextmanager
def shared_world(tmp: Path) -> Iterator[World]:
    """The world, started by its first user (a session fixture) and stopped after its last."""
    global _WORLD, _USERS
    if _WORLD is None:
        _WORLD = _EXIT.enter_context(_start(tmp))
    _USERS += 1
    try:
        yield _WORLD
    finally:
        _USERS -= 1
        if _USERS == 0:
            _WORLD = None
            _EXIT.close()


@contextmanager
def _start(tmp: Path) -> Iterator[World]:
    settings = isolated_settings(
        "faults", 70, api_token=SECRETS["api_token"], read_token=SECRETS["read_token"],
        s3_access_key=SECRETS["s3_access_key"], s3_secret_key=SECRETS["s3_secret_key"],
        pg_dsn=f"postgresql://postgres:{SECRETS['pg_password']}@127.0.0.1:5432/fiscalflow_faults{SLOT}")
    with isolated_stack(settings):
        pki = DemoPKI.ensure(settings.pki_dir(), issuers=8)
        token_files = {}
        for name in ("api_token", "read_token"):
            token_files[name] = tmp / name.replace("_", "-")
            token_files[name].write_text(SECRETS[name] + "\n")  # a trailing newline, as secret mounts often have
        # Callbacks only to a reserved name (.test) that nothing here submits: every other callback
        # URL, the fuzzer's random hosts included, is refused before it is resolved, so no test sends
        # a DNS query or a callback off this machine.
        env = service_env(settings, FISCALFLOW_TRUST_CA=f"demo={pki.ca_cert}",
                          FISCALFLOW_STAMP_CERTS=str(pki.stamp_certs_dir),
                          FISCALFLOW_API_TOKEN_FILE=str(token_files["api_token"]),
                          FISCALFLOW_READ_TOKEN_FILE=str(token_files["read_token"]),
                          FISCALFLOW_CALLBACK_ALLOWED_HOSTS="callbacks.fiscalflow.test")
        del env["FISCALFLOW_API_TOKEN"], env["FISCALFLOW_READ_TOKEN"]  # the services must read them from the files
        services = Services(settings, env).start()
        try:
            services.wait_http()
            yield World(settings, env, services, pki)
        finally:
            services.stop()
