"""Processes the stack started: spawn them detached, recognise them later, stop them safely.

A pid alone is not an identity: after a crash the kernel may hand it to an unrelated process,
and ``down`` must never kill that.  A process is identified by its pid *and* its start time
(field 22 of ``/proc/<pid>/stat``, clock ticks since boot), which together never repeat.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# Children spawned by this Python process: polling them reaps their zombies, so a test process
# that restarts the broker many times does not accumulate <defunct> entries.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces: split after it.
    return raw[raw.rindex(")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    # fields[0] is field 3 (state), so field 22 (starttime) is fields[19].
    return int(fields[19]) if fields else None


@dataclass(frozen=True)
class ProcessHandle:
    pid: int
    start_ticks: int

    @classmethod
    def of(cls, pid: int) -> ProcessHandle | None:
        ticks = start_ticks(pid)
        return cls(pid, ticks) if ticks is not None else None

    def is_alive(self) -> bool:
        child = _CHILDREN.get(self.pid)
        if child is not None and child.poll() is not None:
            _CHILDREN.pop(self.pid, None)
            return False
        fields = _stat_fields(self.pid)
        if fields is None or int(fields[19]) != self.start_ticks:
            return False  # gone, or the pid now belongs to another process
        # A zombie has released its ports and files: for us it is dead (PID 1 here may never reap it).
        return fields[0] not in ("Z", "X")

    def descendants(self) -> list[int]:
        """Pids of the whole tree below this process (sshd's per-connection children use setsid,
        so a process group kill would miss them)."""
        parents: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                fields = _stat_fields(int(entry))
                if fields:
                    parents.setdefault(int(fields[1]), []).append(int(entry))
        out: list[int] = []
        todo = [self.pid]
        while todo:
            for child in parents.get(todo.pop(), []):
                out.append(child)
                todo.append(child)
        return out

    def stop(self, sig: signal.Signals = signal.SIGTERM, grace_s: float = 10.0, tree: bool = False) -> None:
        """Signal the process (and with ``tree`` its descendants), SIGKILL whatever outlives the grace."""
        family = [h for h in (ProcessHandle.of(p) for p in self.descendants()) if h] if tree else []
        stop_all([self], sig, grace_s, extra=family)

    def _signal(self, sig: signal.Signals) -> None:
        if not self.is_alive():
            return
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass


def spawn(argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None,
          cwd: Path | None = None) -> ProcessHandle:
    """Start ``argv`` detached (own session: a Ctrl-C in the terminal of ``stack up`` must not
    reach the servers), output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True)
    _CHILDREN[proc.pid] = proc
    ticks = start_ticks(proc.pid)
    if ticks is None:  # died before we could look: report it as a dead handle
        return ProcessHandle(proc.pid, -1)
    return ProcessHandle(proc.pid, ticks)


def stop_all(handles: Sequence[ProcessHandle], sig: signal.Signals = signal.SIGTERM, grace_s: float = 10.0,
             extra: Sequence[ProcessHandle] = ()) -> None:
    """Signal every handle at once, wait up to ``grace_s`` for them to exit, then SIGKILL the rest
    (``extra``: processes signalled with them but not waited for, e.g. a server's session children)."""
    live = [h for h in handles if h.is_alive()]
    for handle in [*live, *extra]:
        handle._signal(sig)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(h.is_alive() for h in live):
        time.sleep(0.05)
    for handle in [*live, *extra]:
        if handle.is_alive():
            handle._signal(signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(h.is_alive() for h in live):
        time.sleep(0.02)
    for handle in live:
        child = _CHILDREN.pop(handle.pid, None)
        if child is not None:
            try:
                child.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                pass
