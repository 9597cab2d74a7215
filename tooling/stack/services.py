"""The pipeline's services: a supervisor process that keeps N replicas of each stage running.

``stack up`` writes the desired replicas per stage into the state file and starts the detached
supervisor (``fiscalflow stack supervise``).  The supervisor reconciles every 0.2 s: it starts
missing replicas, restarts dead ones (the chaos suite SIGKILLs them) after a backoff that grows
while a replica keeps crashing, stops replicas no longer wanted, and records every replica's pid
in the state file.  On SIGTERM it stops its replicas (SIGTERM, SIGKILL after the grace) and exits.
A supervisor started after a crash adopts replicas still alive instead of starting twins.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from shared.settings import Settings
from shared.topics import Stage
from tooling.stack.component import Component, ComponentError, StackContext, record_of
from tooling.stack.process import ProcessHandle, spawn, stop_all
from tooling.stack.state import ProcessRecord, StackState, StateFile

RECONCILE_S = 0.2
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 8.0
# A replica that lived this long was healthy: its next crash restarts it without delay growth.
HEALTHY_AFTER_S = 10.0


# Test seam: the command a replica runs, before its stage name (default `fiscalflow service run`).
# Lets the stack tests prove restart-on-death with a stand-in process.
REPLICA_COMMAND_ENV = "FISCALFLOW_STACK_REPLICA_COMMAND"


def replica_command(ctx: StackContext) -> list[str]:
    override = os.environ.get(REPLICA_COMMAND_ENV)
    if override:
        return shlex.split(override)
    return [str(ctx.venv_bin("fiscalflow")), "service", "run"]


def demo_callback_env(settings: Settings) -> dict[str, str]:
    """The local stack is the demo: unless an egress policy is configured, job callbacks may go to
    a receiver on this machine (loopback, http).  Nowhere else are they allowed by default."""
    if settings.callback_allowed_networks or settings.callback_allowed_hosts:
        return {}
    return {"FISCALFLOW_CALLBACK_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128", "FISCALFLOW_CALLBACK_ALLOW_HTTP": "true"}


def demo_trust_env(settings: Settings) -> dict[str, str]:
    """The local stack is the demo: unless trust is configured, its services trust the demo CA and
    stamping certificate the demo issuers sign with (created here once, shared by every replica)."""
    env: dict[str, str] = {}
    if settings.trust_ca and settings.stamp_certs:
        return env
    from tooling.issuers.pki import DemoPKI

    pki = DemoPKI.ensure(settings.pki_dir())
    if not settings.trust_ca:
        env["FISCALFLOW_TRUST_CA"] = f"demo={pki.ca_cert}"
    if not settings.stamp_certs:
        env["FISCALFLOW_STAMP_CERTS"] = str(pki.stamp_certs_dir)
    return env


def replica_key(stage: Stage | str, n: int) -> str:
    return f"{Stage(stage).value}-{n}"


def desired_replicas(services: dict[str, int]) -> list[tuple[Stage, int]]:
    return [(Stage(stage), n) for stage in Stage if stage.value in services
            for n in range(services[stage.value])]


def replica_ops_url(settings: Settings, key: str, pid: int | None) -> str:
    """The ops URL a replica reported (``<local_dir>/run/<stage>-<n>.json``), if it is this pid's."""
    try:
        data = json.loads((settings.local_dir / "run" / f"{key}.json").read_text())
    except (OSError, ValueError):
        return ""
    return str(data.get("ops", "")) if pid is not None and data.get("pid") == pid else ""


def state_file(settings: Settings) -> StateFile:
    return StateFile(settings.local_dir / "stack.json")


@dataclass
class _Slot:
    """What the supervisor knows of one replica."""

    handle: ProcessHandle | None = None
    started: float = 0.0
    backoff: float = BACKOFF_MIN_S
    next_start: float = 0.0
    restarts: int = 0
    record: ProcessRecord | None = field(default=None)


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.ctx = StackContext(settings)
        self.state = state_file(settings)
        self.slots: dict[str, _Slot] = {}
        self.stopping = False

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for key, record in self.state.load().replicas.items():
            handle = record.handle()
            if handle is not None and handle.is_alive():
                self.slots[key] = _Slot(handle=handle, started=record.started_at, restarts=record.restarts,
                                        record=record)
        while not self.stopping:
            self.reconcile(self.state.load())
            time.sleep(RECONCILE_S)
        self.shutdown()

    def reconcile(self, state: StackState) -> None:
        wanted = {replica_key(stage, n): (stage, n) for stage, n in desired_replicas(state.services)}
        changed = False
        extras = [key for key in self.slots if key not in wanted]
        if extras:
            self._stop([self.slots.pop(key) for key in extras])
            changed = True
        now = time.monotonic()
        for key, (stage, n) in wanted.items():
            slot = self.slots.setdefault(key, _Slot())
            if slot.handle is not None and slot.handle.is_alive():
                continue
            if slot.handle is not None:  # it died: schedule its restart
                lived = time.time() - (slot.record.started_at if slot.record else 0.0)
                slot.backoff = BACKOFF_MIN_S if lived > HEALTHY_AFTER_S else min(slot.backoff * 2, BACKOFF_MAX_S)
                slot.next_start = now + slot.backoff
                slot.handle = None
                slot.restarts += 1
                changed = True
            if now >= slot.next_start:
                self._start(slot, stage, n)
                changed = True
        if changed:
            self._record()

    def _start(self, slot: _Slot, stage: Stage, n: int) -> None:
        log = self.ctx.logs / f"{stage.value}-{n}.log"
        argv = [*replica_command(self.ctx), stage.value]
        env = {"FISCALFLOW_REPLICA_ID": str(n), **demo_trust_env(self.ctx.settings),
               **demo_callback_env(self.ctx.settings)}
        slot.handle = spawn(argv, log, env=self.ctx.child_env(env))
        slot.record = record_of(slot.handle, "", log)
        slot.record.restarts = slot.restarts

    def _stop(self, slots: list[_Slot]) -> None:
        handles = [s.handle for s in slots if s.handle is not None]
        stop_all(handles, signal.SIGTERM, self.ctx.settings.shutdown_grace_s + 5.0)

    def _record(self) -> None:
        with self.state.transaction() as state:
            state.replicas = {key: slot.record for key, slot in self.slots.items() if slot.record is not None}

    def shutdown(self) -> None:
        self._stop(list(self.slots.values()))
        self.slots.clear()
        self._record()


class Services(Component):
    """The supervisor, as a component of the stack: its replicas live and die with it."""

    name = "services"

    def __init__(self, ctx: StackContext) -> None:
        super().__init__(ctx)
        # The supervisor gives its replicas the drain grace, then needs a moment to record.
        self.stop_grace_s = ctx.settings.shutdown_grace_s + 10.0

    @property
    def address(self) -> str:
        return "supervisor"

    @property
    def log_path(self) -> Path:
        return self.ctx.logs / "supervisor.log"

    def requires(self) -> list[str]:
        return ["postgres", "s3", "broker", *(f"sftp-{r}" for r in self.settings.regions()), "clickhouse"]

    def launch(self) -> ProcessRecord:
        return self.spawn_record([str(self.ctx.venv_bin("fiscalflow")), "stack", "supervise"])

    def wait_ready(self, record: ProcessRecord, timeout_s: float) -> None:
        """Every wanted replica alive and serving its ops port (the runtime then writes
        ``<local_dir>/run/<stage>-<n>.json`` with its pid); a replica that dies meanwhile fails ``up``."""
        state = state_file(self.settings)
        wanted = [replica_key(stage, n) for stage, n in desired_replicas(state.load().services)]
        deadline = time.monotonic() + timeout_s
        while True:
            if not record.is_alive():
                raise self.fail("supervisor exited")
            replicas = state.load().replicas
            ready = 0
            for key in wanted:
                rec = replicas.get(key)
                if rec is None or rec.pid is None:
                    continue
                if not rec.is_alive():
                    raise ComponentError(self.name, f"replica {key} exited during start-up", Path(rec.log))
                if replica_ops_url(self.settings, key, rec.pid):
                    ready += 1
            if ready == len(wanted):
                return
            if time.monotonic() > deadline:
                raise self.fail(f"{len(wanted) - ready} of {len(wanted)} replicas not serving after {timeout_s:.0f} s")
            time.sleep(0.1)

    def stop_leftover_replicas(self) -> None:
        """Replicas whose supervisor was SIGKILLed: stop them by their recorded identity."""
        with state_file(self.settings).transaction() as state:
            handles = [h for h in (r.handle() for r in state.replicas.values()) if h is not None]
            state.replicas = {}
        stop_all(handles, signal.SIGTERM, self.settings.shutdown_grace_s + 5.0)

