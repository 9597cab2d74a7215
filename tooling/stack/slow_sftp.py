"""A slow regional issuer: an asyncssh SFTP server that takes a fixed time to serve each file and
accepts a limited number of connections, modelled on the server side so the delay is per file, not
per packet.  The pool-limit test starts it on its own; the local stack's slow issuers (the seed
scenario's) are sshd with ``slow_open.c`` instead, the same model at OpenSSH's CPU cost.

    python -m tooling.stack.slow_sftp --port P --root DIR --host-key KEY --authorized-keys FILE \\
        --user NAME --latency-ms 500 --max-connections 10

Key-only auth for one user; the root is a chroot (paths cannot leave it); read-only.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

import asyncssh

log = logging.getLogger("fiscalflow.slow_sftp")


class _Limits:
    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self.open = 0
        self.refused = 0


def make_server_class(user: str, authorized_keys: asyncssh.SSHAuthorizedKeys, limits: _Limits) -> type:
    class Server(asyncssh.SSHServer):
        def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
            self._conn = conn
            if limits.open >= limits.max_connections:
                # Like a busy issuer: the connection is dropped (clients must shrink their pools).
                limits.refused += 1
                conn.close()
                self._counted = False
                return
            limits.open += 1
            self._counted = True

        def connection_lost(self, exc: Exception | None) -> None:
            if getattr(self, "_counted", False):
                limits.open -= 1

        def begin_auth(self, username: str) -> bool:
            if username == user:
                self._conn.set_authorized_keys(authorized_keys)
            return True

        def password_auth_supported(self) -> bool:
            return False

    return Server


def make_sftp_class(root: Path, latency_s: float) -> type:
    class SlowSFTPServer(asyncssh.SFTPServer):
        def __init__(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
            super().__init__(chan, chroot=str(root).encode())

        async def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
            if pflags & (asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_APPEND):
                raise asyncssh.SFTPPermissionDenied("read-only issuer")
            await asyncio.sleep(latency_s)  # the issuer's time to produce the file
            return super().open(path, pflags, attrs)

    return SlowSFTPServer


async def serve(port: int, root: Path, host_key: Path, authorized_keys: Path, user: str, latency_ms: int,
                max_connections: int, host: str = "127.0.0.1") -> None:
    limits = _Limits(max_connections)
    keys = asyncssh.read_authorized_keys(str(authorized_keys))
    server: Any = await asyncssh.create_server(
        make_server_class(user, keys, limits), host, port, server_host_keys=[str(host_key)],
        sftp_factory=make_sftp_class(root, latency_ms / 1000), allow_scp=False,
    )
    log.info("slow sftp on %s:%s root=%s latency=%sms max_connections=%s", host, port, root, latency_ms,
             max_connections)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--host-key", type=Path, required=True)
    ap.add_argument("--authorized-keys", type=Path, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--latency-ms", type=int, default=500)
    ap.add_argument("--max-connections", type=int, default=10)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(serve(args.port, args.root, args.host_key, args.authorized_keys, args.user, args.latency_ms,
                      args.max_connections, args.host))


if __name__ == "__main__":
    main()
