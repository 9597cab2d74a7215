"""A small HTTP/1.1 client for one origin: keep-alive connections, one request at a time on each.

The store stage's archive PUT is its one request per document.  Through aiohttp it cost 233-237 µs
of the stage's CPU per PUT on this machine, through this client 123-129 µs, signing included
(``bench/s3_put_bench.py``, decision 0032).  It does what that PUT needs and no more: a request
whose body is in memory, a response with Content-Length, chunked or read to the end, over http or
https (the system's CA store, the host name checked).
Not a general client: no redirects, proxies, cookies, compression, request streaming or
``Expect: 100-continue``.

Errors are ``OSError`` (``ConnectionError`` for a connection lost mid-response,
:class:`HttpProtocolError` for a response that is not HTTP/1.x) or ``TimeoutError``: what a caller
treats as the server being unreachable.  A request on a kept-alive connection that the server
closed meanwhile (it fails before any byte of the answer) is sent once more on a new connection,
for idempotent methods only, as browsers and urllib3 do.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_NO_BODY_STATUS = frozenset({204, 304})
_STATUS_LINE = re.compile(r"HTTP/1\.([01]) ([0-9]{3})(?: .*)?")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


class HttpProtocolError(OSError):
    """The server's answer is not an HTTP/1.x response this client can read."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]  # names in lower case; a repeated header keeps its last value
    body: bytes


@dataclass(slots=True)
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = 0.0

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        """Drop the connection now, whatever is still queued (a server that stopped reading)."""
        self.writer.transport.abort()


class _Stale(Exception):
    """A kept-alive connection failed before any byte of the answer: the server had closed it."""


class Http1Pool:
    """Requests to ``scheme://host:port``; at most ``max_connections`` at once, idle ones kept for
    ``keepalive_s`` (below the servers' idle timeouts, as aiohttp's 15 s is)."""

    def __init__(self, scheme: str, host: str, port: int, *, max_connections: int = 64, connect_timeout_s: float = 5,
                 timeout_s: float = 30, keepalive_s: float = 15, max_response_bytes: int = 1 << 20,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        if scheme not in ("http", "https"):
            raise ValueError(f"unsupported scheme {scheme!r}")
        self.host, self.port = host, port
        self._ssl = (ssl_context or ssl.create_default_context()) if scheme == "https" else None
        self._host_header = host if ":" not in host else f"[{host}]"
        if port != (443 if scheme == "https" else 80):
            self._host_header += f":{port}"
        self._idle: list[_Conn] = []
        self._slots = asyncio.Semaphore(max_connections)
        self._connect_timeout_s, self._timeout_s, self._keepalive_s = connect_timeout_s, timeout_s, keepalive_s
        self._max_body = max_response_bytes
        self._closed = False

    async def request(self, method: str, target: str, headers: Mapping[str, str], body: bytes = b"") -> Response:
        """One request; ``target`` is the request line's (an already encoded path)."""
        head = self._head(method, target, headers, len(body))
        # The timeout covers the wait for a connection too: with S3 hanging, a request queued
        # behind the busy connections fails at its own deadline, not after theirs.
        async with asyncio.timeout(self._timeout_s), self._slots:
            conn, reused = await self._acquire()
            try:
                return await self._exchange(conn, reused, method, head, body)
            except _Stale:
                pass
            if method not in IDEMPOTENT:
                raise ConnectionError(f"{self.host}:{self.port} closed the connection before answering")
            return await self._exchange(await self._connect(), False, method, head, body)

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        for conn in idle:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await conn.writer.wait_closed()

    # ------------------------------------------------------------------ internals
    def _head(self, method: str, target: str, headers: Mapping[str, str], length: int) -> bytes:
        lines = [f"{method} {target} HTTP/1.1"]
        if not any(k.lower() == "host" for k in headers):
            lines.append(f"Host: {self._host_header}")
        for k, v in headers.items():
            if k.lower() == "content-length":
                continue
            lines.append(f"{k}: {v}")
        lines.append(f"Content-Length: {length}")
        text = "\r\n".join(lines)
        # A CR or LF inside a name, value or target would start a header or request of its own.
        if any(c in part for part in (method, target, *headers, *headers.values()) for c in "\r\n"):
            raise ValueError("CR or LF in the request line or a header")
        return (text + "\r\n\r\n").encode("latin-1")

    async def _acquire(self) -> tuple[_Conn, bool]:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            # Not one the server wrote to while it sat idle (a 408 before closing, say): those bytes
            # would be read as the next request's answer.
            if now - conn.idle_since < self._keepalive_s and not conn.reader.at_eof() \
                    and not getattr(conn.reader, "_buffer", b""):
                return conn, True
            conn.close()
        return await self._connect(), False

    async def _connect(self) -> _Conn:
        if self._closed:
            raise ConnectionError("client closed")
        async with asyncio.timeout(self._connect_timeout_s):
            reader, writer = await asyncio.open_connection(self.host, self.port, ssl=self._ssl)
        return _Conn(reader, writer)

    async def _exchange(self, conn: _Conn, reused: bool, method: str, head: bytes, body: bytes) -> Response:
        received = False  # any byte of the answer: from then on, never sent again
        try:
            if len(body) <= 64 * 1024:
                conn.writer.write(head + body)  # one send for a small request
            else:
                conn.writer.writelines((head, body))
            await conn.writer.drain()
            while True:
                first = await conn.reader.readexactly(1)
                received = True
                status, headers, keep = _parse_head(first + await conn.reader.readuntil(b"\r\n\r\n"))
                if not 100 <= status < 200:
                    break
            if method == "HEAD" or status in _NO_BODY_STATUS:
                data = b""
            elif "chunked" in _tokens(headers.get("transfer-encoding", "")):
                # Transfer-Encoding wins over a Content-Length sent with it (RFC 9112 6.3); a
                # server that sends both is not trusted with the connection afterwards.
                data = await self._read_chunked(conn.reader)
                keep = keep and "content-length" not in headers
            elif "content-length" in headers:
                data = await self._read_length(conn.reader, headers["content-length"])
            else:  # delimited by the end of the connection
                data = await self._read_to_end(conn.reader)
                keep = False
        except asyncio.IncompleteReadError as exc:
            conn.abort()
            if reused and not received and not exc.partial:
                raise _Stale from exc
            raise ConnectionError(f"{self.host}:{self.port} closed the connection mid-response") from exc
        except (ConnectionResetError, BrokenPipeError) as exc:
            conn.abort()
            if reused and not received:
                raise _Stale from exc
            raise
        except asyncio.LimitOverrunError as exc:
            conn.abort()
            raise HttpProtocolError("response headers too long") from exc
        except BaseException:
            conn.abort()
            raise
        # Bytes past the response (more than its Content-Length) would be read as the next answer.
        if keep and not self._closed and not getattr(conn.reader, "_buffer", b""):
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()
        return Response(status, headers, data)

    async def _read_length(self, reader: asyncio.StreamReader, value: str) -> bytes:
        if not value.isascii() or not value.isdigit():
            raise HttpProtocolError(f"Content-Length {value[:40]!r}")
        n = int(value)
        if n > self._max_body:
            raise HttpProtocolError(f"Content-Length {n} (at most {self._max_body} read)")
        return await reader.readexactly(n)

    async def _read_to_end(self, reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        total = 0
        while chunk := await reader.read(64 * 1024):
            total += len(chunk)
            if total > self._max_body:
                raise HttpProtocolError(f"response body over {self._max_body} bytes")
            parts.append(chunk)
        return b"".join(parts)

    async def _read_chunked(self, reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = await reader.readuntil(b"\r\n")
            digits = line[:-2].split(b";", 1)[0].strip()
            if not _CHUNK_SIZE.fullmatch(digits):
                raise HttpProtocolError(f"chunk size {line[:40]!r}")
            size = int(digits, 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, if any
                    pass
                return b"".join(parts)
            total += size
            if total > self._max_body:
                raise HttpProtocolError(f"response body over {self._max_body} bytes")
            parts.append(await reader.readexactly(size))
            if await reader.readexactly(2) != b"\r\n":
                raise HttpProtocolError("chunk not followed by CRLF")


def _tokens(value: str) -> set[str]:
    return {t.strip().lower() for t in value.split(",")}


def _parse_head(raw: bytes) -> tuple[int, dict[str, str], bool]:
    """Status, headers (lower-case names) and whether the connection may be kept."""
    lines = raw.decode("latin-1").split("\r\n")
    m = _STATUS_LINE.fullmatch(lines[0])
    if m is None:
        raise HttpProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(":")
            if not sep:
                raise HttpProtocolError(f"header line without a colon: {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
    connection = _tokens(headers.get("connection", ""))
    keep = "close" not in connection if m.group(1) == "1" else "keep-alive" in connection
    return int(m.group(2)), headers, keep
