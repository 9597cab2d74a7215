"""The state file (``<local_dir>/stack.json``): what ``up`` started, so ``status`` and ``down``
work from any later process.

Two writers share it: the CLI (components) and the supervisor (replicas).  Every change is a
read-modify-write under an exclusive ``flock``, and the file is replaced atomically, so a reader
never sees half a file.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tooling.stack.process import ProcessHandle


@dataclass
class ProcessRecord:
    """One started thing: a process we own, or (``external``) a server we only use."""

    address: str
    log: str = ""
    pid: int | None = None
    start_ticks: int | None = None
    started_at: float = 0.0
    external: bool = False
    restarts: int = 0

    def handle(self) -> ProcessHandle | None:
        if self.pid is None or self.start_ticks is None:
            return None
        return ProcessHandle(self.pid, self.start_ticks)

    def is_alive(self) -> bool:
        handle = self.handle()
        return handle is not None and handle.is_alive()


@dataclass
class StackState:
    components: dict[str, ProcessRecord] = field(default_factory=dict)
    # "<stage>-<n>" -> the replica process; written by the supervisor only.
    replicas: dict[str, ProcessRecord] = field(default_factory=dict)
    # Desired replicas per stage; written by ``up``, followed by the supervisor.
    services: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StackState:
        return cls(
            components={k: ProcessRecord(**v) for k, v in data.get("components", {}).items()},
            replicas={k: ProcessRecord(**v) for k, v in data.get("replicas", {}).items()},
            services={k: int(v) for k, v in data.get("services", {}).items()},
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "components": {k: asdict(v) for k, v in self.components.items()},
            "replicas": {k: asdict(v) for k, v in self.replicas.items()},
            "services": dict(self.services),
        }


class StateFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")

    def load(self) -> StackState:
        try:
            return StackState.from_json(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return StackState()
        except (ValueError, TypeError):
            # A state file from an older layout or a torn disk write: start over rather than
            # refuse to run; stale processes are then found by their ports at start.
            return StackState()

    @contextmanager
    def transaction(self) -> Iterator[StackState]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self.load()
            yield state
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(state.to_json(), indent=2, sort_keys=True))
            tmp.replace(self.path)
