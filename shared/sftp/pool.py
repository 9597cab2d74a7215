"""SFTP connection pool per region (asyncssh), modelled on fsspec/sshfs's channel pool.

* Connections open lazily, up to ``max_connections``; each carries up to ``channels_per_connection``
  SFTP channels, also opened lazily.  A server that serves one request at a time per channel
  (OpenSSH's sftp-server, a slow issuer) only gives concurrency through several channels.
* Each channel serves several requests at once (``requests_per_connection``): SFTP pipelines
  requests, so a few channels with several requests in flight beat one request per channel.
* When the server refuses a further connection while others are up, the pool lowers its own
  limit to what the server accepted instead of retrying forever; it tries one more connection
  later (another client may have let go of its own): after ``LIMIT_PROBE_MIN_S``, twice as long
  after each refusal up to ``LIMIT_PROBE_MAX_S``, and starts again from its budget once every
  connection is gone (a restarted server).
* The budget can be changed while the pool runs (:meth:`RegionPool.set_budget`: the download
  stage shares each issuer's connections among its replicas).  Surplus connections retire: no new
  request goes to them, and each closes once its last request is done.
* A connection idle for ``IDLE_CLOSE_S`` closes: a replica with nothing to fetch from a region
  does not hold the issuer's connections that other clients are waiting for.
* Host keys are always verified against ``known_hosts``: a changed key is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from shared.settings import Settings

log = logging.getLogger("fiscalflow.sftp.pool")

CONNECT_TIMEOUT_S = 10.0
PRUNE_S = 1.0  # longest an idle channel of a closed connection stays counted (see RegionPool._prune)
# After a refusal, how long before the pool tries one more connection: doubled by each refusal (an
# issuer that takes fewer than the budget is asked about once a minute), back to the least once one
# is accepted (a replica whose share another replica is still handing back gets it within seconds).
LIMIT_PROBE_MIN_S = 1.0
LIMIT_PROBE_MAX_S = 60.0
IDLE_CLOSE_S = 30.0  # a connection with no request for this long closes

# asyncssh's first choice, chacha20-poly1305, builds new cipher objects for every packet in Python;
# AES-GCM is one AEAD call per packet (AES-NI).  Every file is ~5 SFTP packets each way: with GCM
# first the client spent 750-860 instead of 1,050-1,450 µs of CPU per file (asyncssh server,
# 1,440 files of 5 KB).  The rest of the default list stays, for servers without GCM.
ENCRYPTION_ALGS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
                   "aes256-ctr", "aes192-ctr", "aes128-ctr"]


class _CoalescingTransport:
    """A connection's writes of one event-loop turn leave in one ``send``.

    Each SFTP request is one SSH packet and asyncssh writes each packet at once: three ``send``
    calls per file (OPEN, READ, CLOSE), each a loopback TCP segment the kernel delivers in the
    sender's time and a wake-up of sshd.  The stage has tens of downloads in flight on a
    connection, so the packets of one turn go out together: the buffer is flushed by the next
    turn (``call_soon``), before anything scheduled after the write (asyncssh's own
    ``call_soon(transport.abort)`` after a DISCONNECT included).  The packets and their order are
    unchanged; only the segments are fewer.  Measured (bench/download_bench.py's pool and fetch,
    4,000 files of 5 KB, 10 connections, 3 alternated runs): client CPU 444-504 -> 315-383 µs per
    file, 1,145-1,592 -> 1,618-1,928 files/s.
    """

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._pending: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> object:  # get_extra_info, is_closing, pause_reading, ...
        return getattr(self._transport, name)


def coalesce_writes(conn: asyncssh.SSHClientConnection) -> None:
    """Put :class:`_CoalescingTransport` under an open connection (asyncssh keeps its transport
    in ``_transport``; constraints.txt pins the version this is tested with)."""
    transport = getattr(conn, "_transport", None)
    if isinstance(transport, asyncio.Transport):
        conn._transport = _CoalescingTransport(transport)  # type: ignore[assignment]


def _skip_disabled_asyncssh_logs() -> None:
    """asyncssh converts a log call's arguments to text (names decoded, lists joined) before the
    logger decides whether to emit it, on every SFTP request's debug line, and every packet sent or
    received builds its name and size for a packet log that only debug level 3 writes.  With its
    logs off that was ~4 % of the download stage's CPU (py-spy, the stage alone; what a call site
    renders itself, such as an open's attributes, it still renders).  The same checks, made first:
    what is logged when a level is on does not change (constraints.txt pins the asyncssh version
    this is tested with; tests/unit/sftp/test_quiet_logs.py)."""
    from asyncssh.logging import SSHLogger
    from asyncssh.packet import SSHPacketLogger

    if getattr(SSHLogger.log, "_fiscalflow_guard", False):
        return
    log_call = SSHLogger.log
    log_packet = SSHPacketLogger._log_packet

    def guarded_log(self: SSHLogger, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            log_call(self, level, msg, *args, **kwargs)

    def guarded_log_packet(self: SSHPacketLogger, msg: str, pkttype: int, pktid: int | None, packet: Any,
                           note: str) -> None:
        logger = self.logger
        if logger._debug_level >= 3 and logger.isEnabledFor(logging.DEBUG):
            log_packet(self, msg, pkttype, pktid, packet, note)

    guarded_log._fiscalflow_guard = True  # type: ignore[attr-defined]
    SSHLogger.log = guarded_log  # type: ignore[method-assign]
    SSHPacketLogger._log_packet = guarded_log_packet  # type: ignore[method-assign]


_skip_disabled_asyncssh_logs()


class PoolUnavailable(Exception):
    """No connection to the region's server could be had (refused, unreachable, host key)."""


@dataclass(eq=False)
class _Channel:
    conn: asyncssh.SSHClientConnection
    sftp: asyncssh.SFTPClient
    busy: int = 0
    broken: bool = False
    last_used: float = 0.0


class RegionPool:
    def __init__(self, region: str, host: str, port: int, username: str, client_key: Path, known_hosts: Path,
                 max_connections: int, requests_per_connection: int, channels_per_connection: int = 1,
                 idle_close_s: float = IDLE_CLOSE_S) -> None:
        self.region = region
        self.host = host
        self.port = port
        self.username = username
        self.client_key = client_key
        self.known_hosts = known_hosts
        self.max_connections = max_connections
        self.limit = max_connections  # lowered when the server refuses more
        self._limited_at = 0.0  # when a refusal last lowered the limit
        self._probe_s = LIMIT_PROBE_MIN_S
        self.idle_close_s = idle_close_s
        self._retiring: set[asyncssh.SSHClientConnection] = set()  # over the budget: closed once idle
        self._reaper: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.per_channel = requests_per_connection
        self.channels_per_connection = max(1, channels_per_connection)
        self._channels: list[_Channel] = []
        self._per_conn: dict[asyncssh.SSHClientConnection, int] = {}  # channels, open or opening
        self._opening = 0  # channels being opened
        self._opening_conns = 0  # of which on new connections
        self._changed = asyncio.Condition()
        self._closed = False
        self._next_prune = 0.0
        # Priority first: while a priority request waits for a channel, normal ones wait behind it
        # (a priority download otherwise queued behind the backlog's in-flight downloads).
        self._priority_waiting = 0
        self._no_priority = asyncio.Event()
        self._no_priority.set()

    @property
    def size(self) -> int:
        return len(self._channels)

    @contextlib.asynccontextmanager
    async def channel(self, priority: bool = False) -> AsyncIterator[asyncssh.SFTPClient]:
        """An SFTP client with a free request slot; a connection-level failure drops the channel.
        ``priority``: served before every normal request waiting for a slot."""
        ch = await self._acquire(priority)
        try:
            yield ch.sftp
        except (TimeoutError, ConnectionError, asyncssh.DisconnectError, asyncssh.ConnectionLost,
                asyncssh.SFTPConnectionLost):
            ch.broken = True
            raise
        finally:
            await self._release(ch)

    async def _acquire(self, priority: bool = False) -> _Channel:
        if not priority:
            return await self._acquire_slot(priority)
        self._priority_waiting += 1
        self._no_priority.clear()
        try:
            return await self._acquire_slot(priority)
        finally:  # no await here: a cancelled priority request never leaves normal ones waiting
            self._priority_waiting -= 1
            if not self._priority_waiting:
                self._no_priority.set()

    async def _acquire_slot(self, priority: bool) -> _Channel:
        while True:
            if not priority and self._priority_waiting:
                await self._no_priority.wait()
                continue
            async with self._changed:
                if self._closed:
                    raise PoolUnavailable(f"pool for {self.region} is closed")
                if time.monotonic() >= self._next_prune:
                    self._prune()
                ch = self._least_busy()
                if ch is not None and ch.conn.is_closed():  # closed since the last prune: marks it broken
                    self._prune()
                    ch = self._least_busy()
                if ch is not None:
                    # Prefer opening a new channel over doubling up, while the limit allows.
                    if ch.busy == 0 or not self._room():
                        ch.busy += 1
                        return ch
                if not self._room():
                    await self._changed.wait()
                    continue
                host = self._conn_with_room()
                self._opening += 1
                if host is None:
                    self._opening_conns += 1
                else:
                    self._per_conn[host] += 1
            try:
                ch = await self._open(host)
            except PoolUnavailable:
                async with self._changed:
                    self._opening -= 1
                    if host is None:
                        self._opening_conns -= 1
                    else:
                        self._release_conn_slot(host)
                    if host is None and (self._per_conn or self._opening_conns):
                        # The server accepts fewer connections than configured (others are open or
                        # on their way): keep what it takes instead of failing the request.
                        probed = self._probe_s > LIMIT_PROBE_MIN_S or self.limit < self.max_connections
                        self.limit = max(1, len(self._per_conn) + self._opening_conns)
                        self._limited_at = time.monotonic()
                        self._probe_s = min(LIMIT_PROBE_MAX_S, self._probe_s * 2)
                        log.log(logging.INFO if probed else logging.WARNING,
                                "sftp %s refused connection %d; pool limited to %d", self.region,
                                len(self._per_conn) + 1, self.limit)
                        self._changed.notify_all()
                        continue
                    self._changed.notify_all()
                raise
            async with self._changed:
                self._opening -= 1
                if host is None:
                    self._opening_conns -= 1
                    self._per_conn[ch.conn] = self._per_conn.get(ch.conn, 0) + 1
                    self._probe_s = LIMIT_PROBE_MIN_S
                ch.busy = 1
                self._channels.append(ch)
                if host is None and self._retiring:
                    self._choose_retiring()  # opened while the budget shrank: it may be the surplus
                self._changed.notify_all()
                return ch

    def _room(self) -> bool:
        """May another channel be opened (on a connection with room, or on a new connection)?"""
        if self._conn_with_room() is not None:
            return True
        if self.limit < self.max_connections and time.monotonic() - self._limited_at >= self._probe_s:
            self.limit += 1  # refused a while ago: try one more (a refusal lowers it again)
            self._limited_at = time.monotonic()
        return len(self._per_conn) + self._opening_conns < self.limit

    def _conn_with_room(self) -> asyncssh.SSHClientConnection | None:
        for conn, n in self._per_conn.items():
            if n < self.channels_per_connection and not conn.is_closed() and conn not in self._retiring:
                return conn
        return None

    def _release_conn_slot(self, conn: asyncssh.SSHClientConnection) -> None:
        n = self._per_conn.get(conn, 0) - 1
        if n <= 0:
            self._per_conn.pop(conn, None)
            conn.abort()
        else:
            self._per_conn[conn] = n

    def _least_busy(self) -> _Channel | None:
        """The usable channel with the fewest requests, None when all are full."""
        best: _Channel | None = None
        for c in self._channels:
            if (not c.broken and c.busy < self.per_channel and (best is None or c.busy < best.busy)
                    and c.conn not in self._retiring):
                best = c
                if not c.busy:
                    break
        return best

    def _prune(self) -> None:
        """Drop idle channels whose connection is gone (the server restarted or went away).

        Not on every acquire and release: a pass over every channel each time cost the download stage
        ~8 % of its CPU with 160 channels per region (the seed scenario).  It runs when a released
        channel is broken, when the channel about to be handed out turns out closed, and at most
        ``PRUNE_S`` apart otherwise (idle channels of a server that went away)."""
        self._next_prune = time.monotonic() + PRUNE_S
        for c in list(self._channels):
            c.broken = c.broken or c.conn.is_closed()
            if c.broken and c.busy == 0:
                self._channels.remove(c)
                self._release_conn_slot(c.conn)
        if not self._channels and not self._opening:
            self.limit = self.max_connections  # a restarted server: learn its limit again
        self._retire_idle()

    async def _open(self, host: asyncssh.SSHClientConnection | None = None) -> _Channel:
        conn: asyncssh.SSHClientConnection | None = host
        try:
            if conn is None:
                conn = await asyncio.wait_for(asyncssh.connect(
                    self.host, self.port, username=self.username, client_keys=[str(self.client_key)],
                    known_hosts=str(self.known_hosts), agent_path=None, config=None,
                    encryption_algs=ENCRYPTION_ALGS,
                ), CONNECT_TIMEOUT_S)
                coalesce_writes(conn)
            sftp = await asyncio.wait_for(conn.start_sftp_client(), CONNECT_TIMEOUT_S)
        except asyncssh.HostKeyNotVerifiable as exc:
            raise PoolUnavailable(f"sftp {self.region}: host key of {self.host}:{self.port} not verified "
                                  f"against {self.known_hosts}: {exc}") from exc
        except (TimeoutError, OSError, asyncssh.Error) as exc:
            if conn is not None and host is None:
                conn.abort()
            raise PoolUnavailable(f"sftp {self.region} {self.host}:{self.port}: "
                                  f"{type(exc).__name__}: {exc}") from exc
        return _Channel(conn, sftp)

    async def _release(self, ch: _Channel) -> None:
        async with self._changed:
            ch.busy -= 1
            ch.last_used = time.monotonic()
            if ch.broken:
                self._prune()
            elif ch.conn in self._retiring and not ch.busy:
                self._retire_idle()
            if self._reaper is None and not self._closed:
                self._reaper = asyncio.get_running_loop().call_later(self.idle_close_s, self._reap)
            self._changed.notify_all()

    def set_budget(self, connections: int) -> None:
        """Change how many connections the pool may hold (at least one).  A larger budget is used at
        once; with a smaller one the surplus connections take no new request and close as soon as
        their requests are done."""
        connections = max(1, connections)
        if connections == self.max_connections:
            return
        log.info("sftp %s: budget %d -> %d connections", self.region, self.max_connections, connections)
        self.max_connections = connections
        self.limit = connections  # learnt again within the new budget: a refusal lowers it
        self._choose_retiring()
        with contextlib.suppress(RuntimeError):  # no loop: nobody waits
            task = asyncio.get_running_loop().create_task(self._notify())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _notify(self) -> None:
        """Wake the requests waiting for room: a larger budget has some."""
        async with self._changed:
            self._changed.notify_all()

    def _choose_retiring(self) -> None:
        """Which connections retire: as many as the open and opening ones exceed the budget, those
        already retiring first, then the least busy (they finish soonest); closes the idle ones."""
        surplus = len(self._per_conn) + self._opening_conns - self.max_connections
        if surplus <= 0:
            self._retiring.clear()
            return
        busy: dict[asyncssh.SSHClientConnection, int] = dict.fromkeys(self._per_conn, 0)
        for c in self._channels:
            if c.conn in busy:
                busy[c.conn] += c.busy
        order = sorted(busy, key=lambda conn: (conn not in self._retiring, busy[conn]))
        self._retiring = set(order[:surplus])
        self._retire_idle()

    def _retire_idle(self) -> None:
        """Close the retiring connections none of whose channels has a request."""
        for conn in list(self._retiring):
            if conn not in self._per_conn:
                self._retiring.discard(conn)
            elif self._idle(conn):
                self._drop_conn(conn)

    def _idle(self, conn: asyncssh.SSHClientConnection) -> bool:
        """No request on any of its channels, and no channel of it being opened."""
        channels = [c for c in self._channels if c.conn is conn]
        return len(channels) == self._per_conn.get(conn, 0) and not any(c.busy for c in channels)

    def _drop_conn(self, conn: asyncssh.SSHClientConnection) -> None:
        """Close a connection whose channels are all idle, and forget it."""
        for c in [c for c in self._channels if c.conn is conn]:
            self._channels.remove(c)
            c.sftp.exit()
        self._per_conn.pop(conn, None)
        self._retiring.discard(conn)
        conn.close()

    def _reap(self) -> None:
        """Close the connections that served no request for ``idle_close_s``; again later while any remain."""
        self._reaper = None
        if self._closed:
            return
        cutoff = time.monotonic() - self.idle_close_s
        last: dict[asyncssh.SSHClientConnection, float] = {}
        for c in self._channels:
            last[c.conn] = max(last.get(c.conn, 0.0), c.last_used)
        idle = [conn for conn, t in last.items() if t <= cutoff and self._idle(conn)]
        for conn in idle:
            self._drop_conn(conn)
        if idle:
            log.info("sftp %s: closed %d idle connection(s)", self.region, len(idle))
        if self._channels:
            self._reaper = asyncio.get_running_loop().call_later(self.idle_close_s / 2, self._reap)

    async def close(self) -> None:
        async with self._changed:
            self._closed = True
            if self._reaper is not None:
                self._reaper.cancel()
                self._reaper = None
            channels, self._channels = self._channels, []
            self._changed.notify_all()
        conns = {ch.conn for ch in channels} | set(self._per_conn)
        self._per_conn.clear()
        for ch in channels:
            ch.sftp.exit()
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(Exception):
                await conn.wait_closed()


def build_pools(settings: Settings) -> dict[str, RegionPool]:
    """One pool per configured region, sized by the settings (download fetches, ingest lists)."""
    return {
        region: RegionPool(region, host, port, settings.sftp_user, settings.sftp_key_path(),
                           settings.known_hosts_path(), settings.sftp_max_connections,
                           settings.sftp_requests_per_connection, settings.sftp_channels_per_connection)
        for region, (host, port) in settings.regions().items()
    }
