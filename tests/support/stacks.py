"""Stacks and services for end-to-end and chaos tests: an isolated local stack on ports of its
own (so leftovers of other tests never reach it), and the five services as real processes."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from shared.settings import PROJECT_ROOT, Settings
from shared.topics import Stage
from tooling.stack.component import settings_env

SLOT_OFFSET = int(os.environ.get("FISCALFLOW_TEST_SLOT", "0") or 0) * 100
FISCALFLOW = str(Path(sys.executable).parent / "fiscalflow")


def isolated_settings(name: str, offset: int, kafka_tls: bool = False, **overrides: object) -> Settings:
    """Settings of a stack named ``name`` whose ports are the test ports shifted by ``offset``;
    ``kafka_tls``: the broker behind its TLS listener, every client with the stack's certificates."""
    from tooling.stack.kafka_tls import tls_settings

    off = SLOT_OFFSET + offset
    local_dir = PROJECT_ROOT / f".local-{name}{SLOT_OFFSET or ''}"
    base: dict[str, object] = dict(
        local_dir=local_dir,
        bootstrap_servers=f"127.0.0.1:{29092 + off}",
        s3_endpoint=f"http://127.0.0.1:{28333 + off}",
        sftp_regions=f"north=127.0.0.1:{22201 + off},central=127.0.0.1:{22202 + off},south=127.0.0.1:{22203 + off}",
        pg_dsn=f"postgresql://postgres@127.0.0.1:5432/fiscalflow_{name}{SLOT_OFFSET or ''}",
        ingest_port=28080 + off,
        report_port=28081 + off,
        session_timeout_ms=4000,
        breaker_reset_s=1.0,
    )
    if kafka_tls:
        base.update(tls_settings(local_dir))
    base.update(overrides)
    return Settings(**base)  # type: ignore[arg-type]


@contextmanager
def isolated_stack(settings: Settings) -> Iterator[Settings]:
    """A fresh stack (its directory wiped, its database dropped) for the duration of the block."""
    from tooling.stack import LocalStack

    stack = LocalStack(settings)
    if settings.local_dir.exists():
        stack.down()
        shutil.rmtree(settings.local_dir)
    drop_database(settings)
    stack.up(services=())
    try:
        yield settings
    finally:
        stack.down()


def drop_database(settings: Settings) -> None:
    """Drop the stack's database (gone already, or no server to ask: nothing to do)."""
    dsn = settings.pg_dsn.get_secret_value()
    name = dsn.rsplit("/", 1)[1]
    admin = dsn.rsplit("/", 1)[0] + "/postgres"
    subprocess.run(["psql", admin, "-qc", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'], check=False,
                   capture_output=True)


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FISCALFLOW_")}
    env.update(settings_env(settings))
    env["FISCALFLOW_LOCAL_DIR"] = str(settings.local_dir)
    env.update(extra)
    return env


class Services:
    """The five stages as real processes (``fiscalflow service run STAGE``), one replica each."""

    def __init__(self, settings: Settings, env: dict[str, str]) -> None:
        self.settings = settings
        self.env = env
        self.procs: dict[Stage, subprocess.Popen[bytes]] = {}
        self.logs = settings.local_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def start(self, stages: list[Stage] | None = None) -> Services:
        for stage in stages or list(Stage):
            log = (self.logs / f"e2e-{stage.value}.log").open("ab")
            self.procs[stage] = subprocess.Popen([FISCALFLOW, "service", "run", stage.value], env=self.env,
                                                 stdout=log, stderr=subprocess.STDOUT)
        return self

    def wait_http(self, timeout: float = 90) -> None:
        for port in (self.settings.ingest_port, self.settings.report_port):
            deadline = time.monotonic() + timeout
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                dead = {s.value: p.returncode for s, p in self.procs.items() if p.poll() is not None}
                assert not dead, f"services died: {dead}; logs in {self.logs}"
                assert time.monotonic() < deadline, f"port {port} not answering; logs in {self.logs}"
                time.sleep(0.3)

    def stop(self, timeout: float = 30) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def archive_keys(settings: Settings) -> list[str]:
    """Every archived object's key in the stack's bucket (claim-check staging objects excluded)."""
    import botocore.session
    from botocore.config import Config

    s3 = botocore.session.get_session().create_client(
        "s3", endpoint_url=settings.s3_endpoint, region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key.get_secret_value(),
        aws_secret_access_key=settings.s3_secret_key.get_secret_value(),
        config=Config(s3={"addressing_style": "path"}))
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=settings.s3_bucket):
        keys += [o["Key"] for o in page.get("Contents", []) if not o["Key"].startswith("staging/")]
    return keys


def db(settings: Settings, sql: str, *args: Any) -> list[asyncpg.Record]:
    async def q() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(settings.pg_dsn.get_secret_value())
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()
    return asyncio.run(q())
