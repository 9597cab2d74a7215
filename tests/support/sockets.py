"""Local sockets for tests: a free loopback port, and which local processes hold TCP connections to
which port, read from /proc (Linux), which lets a test prove that every Kafka client of a run went
through the TLS listener, not around it."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def free_port() -> int:
    """A loopback port nobody listens on now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _established_remote_ports() -> dict[int, int]:
    """socket inode -> remote port, for every established IPv4/IPv6 TCP connection."""
    out: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "01":  # ESTABLISHED
                continue
            out[int(fields[9])] = int(fields[2].rsplit(":", 1)[1], 16)
    return out


def descendants(pid: int) -> set[int]:
    """``pid`` and every process below it."""
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        if p in found:
            continue
        found.add(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return found


def connected_pids(port: int) -> dict[int, int]:
    """pid -> number of its established TCP connections to ``port`` on this machine."""
    remote = _established_remote_ports()
    wanted = {inode for inode, p in remote.items() if p == port}
    counts: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and int(target[8:-1]) in wanted:
                counts[int(proc.name)] = counts.get(int(proc.name), 0) + 1
    return counts
