"""SFTP connection pool per region (asyncssh), modelled on fsspec/sshfs's channel pool.

* Connections, each with one SFTP channel, open lazily, up to ``max_connections``.
* Each channel serves several requests at once (``requests_per_connection``): SFTP pipelines
  requests, so a few channels with several requests in flight beat one request per channel.
* When the server refuses a further connection while others are up, the pool lowers its own
  limit to what the server accepted instead of retrying forever; it grows back only once every
  connection is gone (a restarted server).
* Host keys are always verified against ``known_hosts``: a changed key is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh

log = logging.getLogger("fiscalflow.download.pool")

CONNECT_TIMEOUT_S = 10.0


class PoolUnavailable(Exception):
    """No connection to the region's server could be had (refused, unreachable, host key)."""


@dataclass(eq=False)
class _Channel:
    conn: asyncssh.SSHClientConnection
    sftp: asyncssh.SFTPClient
    busy: int = 0
    broken: bool = False


class RegionPool:
    def __init__(self, region: str, host: str, port: int, username: str, client_key: Path, known_hosts: Path,
                 max_connections: int, requests_per_connection: int) -> None:
        self.region = region
        self.host = host
        self.port = port
        self.username = username
        self.client_key = client_key
        self.known_hosts = known_hosts
        self.max_connections = max_connections
        self.limit = max_connections  # lowered when the server refuses more
        self.per_channel = requests_per_connection
        self._channels: list[_Channel] = []
        self._opening = 0
        self._changed = asyncio.Condition()
        self._closed = False

    @property
    def size(self) -> int:
        return len(self._channels)

    @contextlib.asynccontextmanager
    async def channel(self) -> AsyncIterator[asyncssh.SFTPClient]:
        """An SFTP client with a free request slot; a connection-level failure drops the channel."""
        ch = await self._acquire()
        try:
            yield ch.sftp
        except (TimeoutError, ConnectionError, asyncssh.DisconnectError, asyncssh.ConnectionLost,
                asyncssh.SFTPConnectionLost):
            ch.broken = True
            raise
        finally:
            await self._release(ch)

    async def _acquire(self) -> _Channel:
        while True:
            async with self._changed:
                if self._closed:
                    raise PoolUnavailable(f"pool for {self.region} is closed")
                self._prune()
                free = [c for c in self._channels if not c.broken and c.busy < self.per_channel]
                if free:
                    ch = min(free, key=lambda c: c.busy)
                    # Prefer opening a new channel over doubling up, while the limit allows.
                    if ch.busy == 0 or len(self._channels) + self._opening >= self.limit:
                        ch.busy += 1
                        return ch
                if len(self._channels) + self._opening >= self.limit:
                    await self._changed.wait()
                    continue
                self._opening += 1
            try:
                ch = await self._open()
            except PoolUnavailable:
                async with self._changed:
                    self._opening -= 1
                    if any(not c.broken for c in self._channels):
                        # The server accepts fewer connections than configured: keep what it took.
                        self.limit = max(1, len(self._channels))
                        log.warning("sftp %s refused connection %d; pool limited to %d", self.region,
                                    len(self._channels) + 1, self.limit)
                        self._changed.notify_all()
                        continue
                    self._changed.notify_all()
                raise
            async with self._changed:
                self._opening -= 1
                ch.busy = 1
                self._channels.append(ch)
                self._changed.notify_all()
                return ch

    def _prune(self) -> None:
        """Drop idle channels whose connection is gone (the server restarted or went away)."""
        for c in list(self._channels):
            c.broken = c.broken or c.conn.is_closed()
            if c.broken and c.busy == 0:
                self._channels.remove(c)
                c.conn.abort()
        if not self._channels:
            self.limit = self.max_connections  # a restarted server: learn its limit again

    async def _open(self) -> _Channel:
        conn: asyncssh.SSHClientConnection | None = None
        try:
            conn = await asyncio.wait_for(asyncssh.connect(
                self.host, self.port, username=self.username, client_keys=[str(self.client_key)],
                known_hosts=str(self.known_hosts), agent_path=None, config=None,
            ), CONNECT_TIMEOUT_S)
            sftp = await asyncio.wait_for(conn.start_sftp_client(), CONNECT_TIMEOUT_S)
        except asyncssh.HostKeyNotVerifiable as exc:
            raise PoolUnavailable(f"sftp {self.region}: host key of {self.host}:{self.port} not verified "
                                  f"against {self.known_hosts}: {exc}") from exc
        except (TimeoutError, OSError, asyncssh.Error) as exc:
            if conn is not None:
                conn.abort()
            raise PoolUnavailable(f"sftp {self.region} {self.host}:{self.port}: "
                                  f"{type(exc).__name__}: {exc}") from exc
        return _Channel(conn, sftp)

    async def _release(self, ch: _Channel) -> None:
        async with self._changed:
            ch.busy -= 1
            self._prune()
            self._changed.notify_all()

    async def close(self) -> None:
        async with self._changed:
            self._closed = True
            channels, self._channels = self._channels, []
            self._changed.notify_all()
        for ch in channels:
            ch.sftp.exit()
            ch.conn.close()
        for ch in channels:
            with contextlib.suppress(Exception):
                await ch.conn.wait_closed()
