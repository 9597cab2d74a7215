"""What every piece of the local stack has in common.

A component prepares its files (idempotent), launches its process, waits until it serves, and
runs its post-start setup (buckets, database, topics).  ``LocalStack`` owns the order, the state
file and the identity checks; a component only knows its own server.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shared.settings import Settings
from tooling.stack.process import ProcessHandle, spawn
from tooling.stack.state import ProcessRecord


def usable_cores(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """The cores this process may use: its CPU affinity, capped by its cgroup's CPU quota (a
    container limited to 2 CPUs on a 64-core host has 2, as Go and tokio themselves count)."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    return max(1, min(cores, -(-int(quota) // int(period))))


def server_threads_env(var: str, environ: dict[str, str] | None = None, cores: int | None = None) -> dict[str, str]:
    """``var`` (``GOMAXPROCS``, ``TOKIO_WORKER_THREADS``) for one of the stack's own servers: a
    quarter of the usable cores, at least one, unless the environment already sets it.

    The S3 server and the broker share the machine with the stages, PostgreSQL and sshd, all busy
    at once under load.  A pool of worker threads per core then buys no parallelism, only
    wake-ups across cores, and a cross-core wake-up costs ~20 µs of CPU on these VMs (against
    1.5 µs on the same core).  With one worker each, the throughput scenario cost ~4-12 % less CPU
    over the whole machine (decision 0029).
    """
    env = os.environ if environ is None else environ
    if var in env:
        return {}
    n = cores if cores is not None else usable_cores()
    return {var: str(max(1, n // 4))}


class ComponentError(RuntimeError):
    """A component failed to start; the message names it and its log file."""

    def __init__(self, component: str, reason: str, log: Path | None = None) -> None:
        where = f" (log: {log})" if log else ""
        super().__init__(f"{component}: {reason}{where}")
        self.component = component
        self.log = log


def settings_env(settings: Settings) -> dict[str, str]:
    """The FISCALFLOW_* variables that reproduce ``settings`` in a child process.

    Settings built in code (tests) differ from the environment; children (the supervisor,
    the replicas) must see the same stack, so every explicitly set field is exported.
    """
    env: dict[str, str] = {}
    for name in sorted(settings.model_fields_set):
        value = getattr(settings, name)
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if isinstance(value, bool):
            value = "true" if value else "false"
        env[f"FISCALFLOW_{name.upper()}"] = str(value)
    return env


@dataclass
class StackContext:
    settings: Settings

    @property
    def root(self) -> Path:
        return self.settings.local_dir

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def child_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**os.environ, **settings_env(self.settings), **(extra or {})}

    def venv_bin(self, name: str) -> Path:
        # The interpreter running us is <venv>/bin/python: its siblings are the venv's scripts.
        return Path(sys.executable).parent / name


class Component(ABC):
    """One server of the stack (or a directory, for in-process ClickHouse)."""

    name: str
    stop_signal: signal.Signals = signal.SIGTERM
    stop_grace_s: float = 10.0
    # Stop the whole process tree (sshd: live sessions must drop when a region goes down).
    stop_tree: bool = False

    def __init__(self, ctx: StackContext) -> None:
        self.ctx = ctx

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    @property
    def log_path(self) -> Path:
        return self.ctx.logs / f"{self.name}.log"

    @property
    @abstractmethod
    def address(self) -> str: ...

    @property
    def listen_address(self) -> str:
        """Where the server itself listens (checked free before a launch): its address by default."""
        return self.address

    def requires(self) -> list[str]:
        """Components that must run first."""
        return []

    def prepare(self) -> None:
        """Create directories, keys, configuration; called before every launch, so idempotent."""
        return None

    @abstractmethod
    def launch(self) -> ProcessRecord:
        """Start the server; return its record (``external`` when an existing server is used)."""

    def wait_ready(self, record: ProcessRecord, timeout_s: float) -> None:
        """Block until the server serves; raise ComponentError otherwise."""
        return None

    def after_ready(self) -> None:
        """Post-start setup (buckets, database, topics); idempotent."""
        return None

    def is_serving(self, record: ProcessRecord) -> bool:
        """For an external server: whether it still answers."""
        return record.is_alive()

    # --- helpers -------------------------------------------------------------------------
    def spawn_record(self, argv: list[str], env: dict[str, str] | None = None) -> ProcessRecord:
        handle = spawn(argv, self.log_path, env=env if env is not None else self.ctx.child_env())
        return record_of(handle, self.address, self.log_path)

    def fail(self, reason: str) -> ComponentError:
        return ComponentError(self.name, reason, self.log_path)

    def wait_until(self, record: ProcessRecord, check: Callable[[], bool], timeout_s: float,
                   what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if record.handle() is not None and not record.is_alive():
                raise self.fail(f"exited during start-up ({what} never came up)")
            try:
                if check():
                    return
            except Exception:  # not ready yet: any error is retried until the deadline
                pass
            if time.monotonic() > deadline:
                raise self.fail(f"not ready after {timeout_s:.0f} s: {what}")
            time.sleep(0.05)


def record_of(handle: ProcessHandle, address: str, log: Path) -> ProcessRecord:
    return ProcessRecord(address=address, log=str(log), pid=handle.pid, start_ticks=handle.start_ticks,
                         started_at=time.time())


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def split_hostport(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)


def ensure_debian_package(executable: str, package: str) -> str:
    """Path of ``executable``; installs the Debian ``package`` when missing (fresh machines)."""
    found = shutil.which(executable) or (executable if os.path.exists(executable) else None)
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError(f"{executable} is missing: run `apt-get install -y {package}` as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", package], check=True, env=env, stdout=subprocess.DEVNULL)
    found = shutil.which(executable) or (executable if os.path.exists(executable) else None)
    if not found:
        raise RuntimeError(f"{executable} still missing after installing {package}")
    return found
