"""PostgreSQL: the server at ``Settings.pg_dsn`` when one answers (recorded as external, never
stopped by us), else a private cluster under ``<local_dir>/pg`` on the DSN's port.

Either way the DSN's database is created when missing.  The private cluster runs as the
``postgres`` account of Debian's ``postgresql`` package (initdb refuses root) with trust auth on
the DSN's host only.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from tooling.stack.component import Component, ensure_debian_package, port_open, record_of
from tooling.stack.process import ProcessHandle
from tooling.stack.state import ProcessRecord

T = TypeVar("T")


def run_coro(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even when called inside a running loop
    (async tests call the stack API): then it runs on a thread with its own loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


def _pg_bin(name: str) -> str:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True)
    for bin_dir in versions:
        if (bin_dir / name).exists():
            return str(bin_dir / name)
    ensure_debian_package("/usr/lib/postgresql", "postgresql")
    return _pg_bin(name)


class Postgres(Component):
    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: roll back sessions, checkpoint, exit

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        parts = urlsplit(self.settings.pg_dsn.get_secret_value())
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 5432
        self.user = parts.username or "postgres"
        self.database = parts.path.lstrip("/") or self.user
        # The maintenance database of the same server, to create ours from.
        self.admin_dsn = urlunsplit(parts._replace(path="/postgres"))

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}/{self.database}"

    @property
    def data_dir(self) -> Path:
        return self.ctx.root / "pg" / "data"

    def is_serving(self, record: ProcessRecord) -> bool:
        if record.external:
            return port_open(self.host, self.port)
        return record.is_alive()

    def launch(self) -> ProcessRecord:
        if port_open(self.host, self.port):
            return ProcessRecord(address=self.address, external=True)
        return self._start_private_cluster()

    def _start_private_cluster(self) -> ProcessRecord:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        run_dir = self.ctx.root / "pg" / "run"
        for d in (self.data_dir.parent, run_dir):
            d.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "postgres:postgres", str(self.data_dir.parent)], check=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.touch()
        if as_postgres:
            subprocess.run(["chown", "postgres:postgres", str(self.log_path)], check=True)
        if not (self.data_dir / "PG_VERSION").exists():
            init = subprocess.run([*as_postgres, _pg_bin("initdb"), "-D", str(self.data_dir), "-U", self.user,
                                   "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"],
                                  capture_output=True, text=True)
            if init.returncode != 0:
                raise self.fail(f"initdb failed: {init.stderr.strip()}")
        opts = f"-c listen_addresses={self.host} -p {self.port} -c unix_socket_directories={run_dir}"
        start = subprocess.run([*as_postgres, _pg_bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_path),
                                "-o", opts, "-w", "-t", "30", "start"], capture_output=True, text=True)
        if start.returncode != 0:
            raise self.fail(f"pg_ctl start failed: {start.stderr.strip() or start.stdout.strip()}")
        # pg_ctl daemonises the postmaster: its pid is the first line of postmaster.pid.
        pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        handle = ProcessHandle.of(pid)
        if handle is None:
            raise self.fail("postmaster exited right after start")
        return record_of(handle, self.address, self.log_path)

    def wait_ready(self, record: ProcessRecord, timeout_s: float) -> None:
        import asyncpg

        async def ping() -> bool:
            conn = await asyncpg.connect(self.admin_dsn, timeout=2)
            await conn.close()
            return True

        self.wait_until(record, lambda: run_coro(ping()), timeout_s, f"PostgreSQL on {self.host}:{self.port}")

    def after_ready(self) -> None:
        import asyncpg

        async def create() -> None:
            conn = await asyncpg.connect(self.admin_dsn, timeout=5)
            try:
                if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", self.database):
                    try:
                        await conn.execute(f'CREATE DATABASE "{self.database}"')
                    except asyncpg.DuplicateDatabaseError:
                        pass  # another `up` created it meanwhile
            finally:
                await conn.close()

        run_coro(create())
