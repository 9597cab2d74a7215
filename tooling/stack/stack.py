"""``LocalStack``: the whole local system on real servers, started in dependency order.

Idempotent by construction: a component whose recorded process is still the one we started
(pid and start time) is left alone; a record whose process is gone (crash, SIGKILL) is stale
and the component is started again.  Only recorded, identity-checked processes are ever stopped.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from shared.settings import Settings
from shared.topics import Stage
from tooling.stack.broker import Broker
from tooling.stack.clickhouse import ClickHouseDir
from tooling.stack.component import Component, ComponentError, StackContext, port_open, split_hostport
from tooling.stack.kafka_tls import KafkaTls, uses_tls
from tooling.stack.postgres import Postgres
from tooling.stack.probe import probe_all
from tooling.stack.s3 import S3Identities, S3Server
from tooling.stack.services import Services, desired_replicas, replica_key, replica_ops_url, state_file
from tooling.stack.sftp import SftpRegion

State = Literal["running", "stopped", "dead"]
READY_TIMEOUT_S = 60.0


@dataclass
class ComponentStatus:
    name: str
    state: State
    address: str
    pid: int | None = None
    log: str = ""
    external: bool = False
    started_at: float | None = None


@dataclass
class ReplicaStatus:
    name: str
    stage: str
    replica: int
    state: State
    pid: int | None = None
    address: str = ""  # the replica's ops URL (/metrics, /healthz, /readyz) once it reported one
    log: str = ""
    restarts: int = 0
    # What a running replica's /readyz says: ready, halted, paused, not ready, or no answer.
    condition: str = ""
    reason: str = ""


@dataclass
class StackStatus:
    local_dir: str
    components: list[ComponentStatus] = field(default_factory=list)
    replicas: list[ReplicaStatus] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "local_dir": self.local_dir,
            "components": {c.name: asdict(c) for c in self.components},
            "replicas": {r.name: asdict(r) for r in self.replicas},
        }


class LocalStack:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.ctx = StackContext(self.settings)
        self.state = state_file(self.settings)
        comps: list[Component] = [Postgres(self.ctx), S3Server(self.ctx)]
        comps += [KafkaTls(self.ctx)] if uses_tls(self.settings) else []
        comps += [Broker(self.ctx)]
        comps += [SftpRegion(self.ctx, region) for region in self.settings.regions()]
        comps += [ClickHouseDir(self.ctx), Services(self.ctx)]
        self.components: dict[str, Component] = {c.name: c for c in comps}

    # --- the API ---------------------------------------------------------------------------
    def component_names(self) -> list[str]:
        return list(self.components)

    def up(self, services: Iterable[Stage | str] = (), replicas: Mapping[str, int] | None = None,
           timeout_s: float = READY_TIMEOUT_S) -> dict[str, float]:
        """Start whatever is not running; returns seconds spent per component (0 when it already ran).

        ``services``: the stages to run (none by default); ``replicas``: stage -> count (default 1).
        """
        wanted = {Stage(s).value: int((replicas or {}).get(Stage(s).value, 1)) for s in services}
        with self.state.transaction() as state:
            state.services = wanted
        timings: dict[str, float] = {}
        for name in self.components:
            if name == "services" and not wanted and not self._running("services"):
                continue
            self._ensure(name, timeout_s, timings)
        return timings

    def down(self) -> None:
        """Stop, in reverse order, everything ``up`` started (by recorded pid and start time)."""
        for name in reversed(self.component_names()):
            self.stop(name)

    def start(self, component: str, timeout_s: float = READY_TIMEOUT_S) -> float:
        timings: dict[str, float] = {}
        self._ensure(self._component(component).name, timeout_s, timings)
        return timings[component]

    def stop(self, component: str) -> None:
        comp = self._component(component)
        with self.state.transaction() as state:
            record = state.components.pop(comp.name, None)
        handle = record.handle() if record and not record.external else None
        if handle is not None:
            handle.stop(comp.stop_signal, comp.stop_grace_s, tree=comp.stop_tree)
        if isinstance(comp, Services):
            comp.stop_leftover_replicas()

    def restart(self, component: str, timeout_s: float = READY_TIMEOUT_S) -> float:
        self.stop(component)
        return self.start(component, timeout_s)

    def replica_pids(self, stage: Stage | str) -> list[int]:
        """Pids of the live replicas of ``stage``, by replica number."""
        replicas = self.state.load().replicas
        out = []
        for key in sorted(k for k in replicas if k.rsplit("-", 1)[0] == Stage(stage).value):
            record = replicas[key]
            if record.pid is not None and record.is_alive():
                out.append(record.pid)
        return out

    def s3_identities(self) -> S3Identities:
        """The S3 credentials of the local stack (admin, broker, services)."""
        return S3Identities.load(self.ctx)

    def status(self) -> StackStatus:
        state = self.state.load()
        out = StackStatus(local_dir=str(self.settings.local_dir))
        for name, comp in self.components.items():
            record = state.components.get(name)
            st: State = "stopped"
            if record is not None:
                st = "running" if comp.is_serving(record) else "dead"
            out.components.append(ComponentStatus(
                name=name, state=st, address=comp.address, pid=record.pid if record else None,
                log=(record.log if record else str(comp.log_path)) if comp.log_path.exists() else "",
                external=bool(record and record.external), started_at=record.started_at if record else None))
        for stage, n in desired_replicas(state.services):
            key = replica_key(stage, n)
            rec = state.replicas.get(key)
            rst: State = "stopped" if rec is None else ("running" if rec.is_alive() else "dead")
            out.replicas.append(ReplicaStatus(
                name=key, stage=stage.value, replica=n, state=rst, pid=rec.pid if rec else None,
                address=replica_ops_url(self.settings, key, rec.pid if rec else None), log=rec.log if rec else "",
                restarts=rec.restarts if rec else 0))
        asked = [r for r in out.replicas if r.state == "running" and r.address]
        for r, (condition, reason) in zip(asked, probe_all([r.address for r in asked]), strict=True):
            r.condition, r.reason = condition, reason
        return out

    # --- internals -------------------------------------------------------------------------
    def _component(self, name: str) -> Component:
        try:
            return self.components[name]
        except KeyError:
            raise ValueError(f"unknown component {name!r}; one of: {', '.join(self.components)}") from None

    def _running(self, name: str) -> bool:
        record = self.state.load().components.get(name)
        return record is not None and self.components[name].is_serving(record)

    def _ensure(self, name: str, timeout_s: float, timings: dict[str, float]) -> None:
        if name in timings:
            return
        comp = self.components[name]
        for dep in comp.requires():
            if dep in self.components:
                self._ensure(dep, timeout_s, timings)
        t0 = time.monotonic()
        record = self.state.load().components.get(name)
        if record is not None and comp.is_serving(record):
            if isinstance(comp, Services):
                comp.wait_ready(record, timeout_s)  # the wanted replicas may have changed
            else:
                comp.after_ready()  # cheap and idempotent: buckets, database, missing topics
            timings[name] = 0.0
            return
        # No record, or a stale one (its process died): start afresh.
        self._check_port_free(comp)
        comp.prepare()
        record = comp.launch()
        with self.state.transaction() as state:
            state.components[name] = record
        try:
            comp.wait_ready(record, timeout_s)
            comp.after_ready()
        except Exception as exc:
            # Leave nothing half-started behind: the next `up` starts clean.
            self.stop(name)
            if isinstance(exc, ComponentError):
                raise
            raise ComponentError(name, f"{type(exc).__name__}: {exc}", comp.log_path) from exc
        timings[name] = time.monotonic() - t0

    def _check_port_free(self, comp: Component) -> None:
        """A port already taken by a process we did not record: say so instead of failing obscurely."""
        if isinstance(comp, (Postgres, ClickHouseDir, Services)):
            return  # postgres uses a server it finds; the others have no port
        if isinstance(comp, S3Server):
            parts = urlsplit(comp.address)
            host, port = parts.hostname or "127.0.0.1", parts.port or 80
        else:
            host, port = split_hostport(comp.listen_address)
        if port_open(host, port, 0.3):
            raise ComponentError(comp.name, f"{host}:{port} is already in use by a process this stack did "
                                 f"not start (state: {self.state.path})", comp.log_path)


def log_tail(path: Path | str, lines: int = 20) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
