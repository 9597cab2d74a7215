"""shared/http1.py against a scripted server on 127.0.0.1: what the archive PUT relies on (kept-alive
connections, the ways a response ends, a server that closes or hangs) fails loudly or recovers."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared.http1 import Http1Pool, HttpProtocolError

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    return head + await reader.readexactly(length)


class Server:
    """Accepts connections; ``handler(reader, writer, connection_number)`` answers each."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0

    async def __aenter__(self) -> Http1Pool:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer, self.connections)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        self._server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.pool = Http1Pool("http", "127.0.0.1", port, timeout_s=2)
        return self.pool

    async def __aexit__(self, *exc: object) -> None:
        await self.pool.close()
        self._server.close()


async def _answer_once_then_drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
    await _read_request(reader)
    writer.write(OK)  # kept alive as far as the client knows...
    await writer.drain()
    await reader.read(1)  # ...and closed on the next request, unanswered


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
    await _read_request(reader)
    await asyncio.sleep(5)  # a server that hangs


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 10))


def test_requests_share_one_kept_alive_connection_and_carry_their_body() -> None:
    requests: list[bytes] = []

    async def answer_all(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while True:
            requests.append(await _read_request(reader))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    async def go() -> None:
        async with (server := Server(answer_all)) as pool:
            for n in range(3):
                resp = await pool.request("PUT", f"/b/k{n}", {"X-Amz-Meta-Sha256": "ab"}, b"body-%d" % n)
                assert (resp.status, resp.body) == (200, b"ok")
        assert server.connections == 1
        assert requests[2].startswith(b"PUT /b/k2 HTTP/1.1\r\n")
        assert b"\r\nContent-Length: 6\r\n" in requests[2] and requests[2].endswith(b"\r\n\r\nbody-2")
        assert b"\r\nHost: 127.0.0.1:" in requests[0]

    run(go())


def test_a_chunked_error_body_is_read_whole_and_the_connection_kept() -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 412 Precondition Failed\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\n<Erro\r\n3;ext=1\r\nr/>\r\n0\r\n\r\n")
        await _read_request(reader)
        writer.write(OK)

    async def go() -> None:
        async with (server := Server(chunked)) as pool:
            resp = await pool.request("PUT", "/b/k", {}, b"x")
            assert (resp.status, resp.body) == (412, b"<Error/>")
            assert (await pool.request("PUT", "/b/k", {}, b"x")).status == 200
        assert server.connections == 1

    run(go())


def test_connection_close_is_honoured_and_a_body_may_end_with_the_connection() -> None:
    async def close_each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 403 Forbidden\r\nConnection: keep-alive, close\r\n\r\n<Access")  # no length: to EOF
        await writer.drain()
        await asyncio.sleep(0.05)  # the rest of the body later: read whole all the same
        writer.write(b"Denied/>")
        await writer.drain()

    async def go() -> None:
        async with (server := Server(close_each)) as pool:
            for _ in range(2):
                resp = await pool.request("PUT", "/b/k", {}, b"x")
                assert (resp.status, resp.body) == (403, b"<AccessDenied/>")
        assert server.connections == 2

    run(go())


def test_a_kept_alive_connection_the_server_dropped_is_replaced_once_for_a_put() -> None:
    async def go() -> None:
        async with (server := Server(_answer_once_then_drop)) as pool:
            assert (await pool.request("PUT", "/b/k", {}, b"x")).status == 200
            assert (await pool.request("PUT", "/b/k", {}, b"x")).status == 200
        assert server.connections == 2

    run(go())


def test_a_post_on_a_dropped_connection_is_not_sent_again() -> None:
    async def go() -> None:
        async with (server := Server(_answer_once_then_drop)) as pool:
            await pool.request("POST", "/b", {}, b"x")
            with pytest.raises(ConnectionError):
                await pool.request("POST", "/b", {}, b"x")
        assert server.connections == 1

    run(go())


def test_a_response_cut_short_on_a_new_connection_is_an_error_not_a_retry() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()

    async def go() -> None:
        async with (server := Server(cut)) as pool:
            with pytest.raises(ConnectionError, match="mid-response"):
                await pool.request("PUT", "/b/k", {}, b"x")
        assert server.connections == 1

    run(go())


def test_a_server_that_never_answers_times_out() -> None:
    async def go() -> None:
        async with Server(_silent) as pool:
            with pytest.raises(TimeoutError):
                await pool.request("PUT", "/b/k", {}, b"x")

    run(go())


@pytest.mark.parametrize(("answer", "match"), [
    (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x status line"),
    (b"HTTP/1.1 500 Oops\r\nContent-Length: 5000000\r\n\r\n", "Content-Length 5000000"),  # over the 1 MiB read
    ("HTTP/1.1 \u00b200 OK\r\n\r\n".encode(), "not an HTTP/1.x status line"),  # a digit to isdigit(), not to int()
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nabc\r\n", "chunk size"),
])
def test_an_answer_this_client_will_not_read_is_a_protocol_error_and_an_oserror(answer: bytes, match: str) -> None:
    async def odd(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await _read_request(reader)
        writer.write(answer)

    async def go() -> None:
        async with Server(odd) as pool:
            with pytest.raises(HttpProtocolError, match=match) as err:
                await pool.request("PUT", "/b/k", {}, b"x")
            assert isinstance(err.value, OSError)  # what the store stage takes for S3 being unreachable

    run(go())


def test_a_header_value_with_a_line_break_is_refused_before_anything_is_sent() -> None:
    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        raise AssertionError("nothing may be sent")

    async def go() -> None:
        async with (server := Server(never)) as pool:
            with pytest.raises(ValueError, match="CR or LF"):
                await pool.request("PUT", "/b/k", {"X-Amz-Meta-Record-Id": "r1\r\nX-Evil: 1"}, b"x")
        assert server.connections == 0

    run(go())


def _tls_pair(tmp_path: Path, san: x509.GeneralName) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context whose self-signed certificate names ``san``, and a client context trusting it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fiscalflow test s3")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_pem, key_pem = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_pem, key_pem)
    return server, ssl.create_default_context(cafile=str(cert_pem))


def _https_put(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> int:
    async def go() -> int:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                await _read_request(reader)
                writer.write(OK)
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_ctx)
        pool = Http1Pool("https", "127.0.0.1", server.sockets[0].getsockname()[1], ssl_context=client_ctx, timeout_s=5)
        try:
            return (await pool.request("PUT", "/b/k", {}, b"x")).status
        finally:
            await pool.close()
            server.close()

    return asyncio.run(go())


def test_https_checks_the_servers_certificate_and_name(tmp_path: Path) -> None:
    ip = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    assert _https_put(*_tls_pair(tmp_path, ip)) == 200
    # The same trusted CA, but a certificate for another host: refused, as an OSError (S3 unreachable).
    with pytest.raises(ssl.SSLCertVerificationError):
        _https_put(*_tls_pair(tmp_path, x509.DNSName("s3.elsewhere.example")))


def test_bytes_past_the_content_length_never_answer_the_next_request() -> None:
    async def too_long(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                         b"HTTP/1.1 500 Stale\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()

    async def go() -> None:
        async with (server := Server(too_long)) as pool:
            assert (await pool.request("PUT", "/b/k", {}, b"x")).status == 200
            await asyncio.sleep(0.05)
            assert (await pool.request("PUT", "/b/k", {}, b"x")).status == 200  # not the stray 500
        assert server.connections == 2

    run(go())


def test_what_a_server_writes_to_an_idle_connection_never_answers_the_next_request() -> None:
    async def late_408(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.02)  # the client has put the connection back by now
        writer.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(5)  # kept open: only the stray bytes tell

    async def go() -> None:
        async with (server := Server(late_408)) as pool:
            assert (await pool.request("PUT", "/b/k", {}, b"x")).status == 200
            await asyncio.sleep(0.2)
            assert (await pool.request("PUT", "/b/k", {}, b"x")).status == 200  # not the stray 408
        assert server.connections == 2

    run(go())


def test_the_timeout_counts_the_wait_for_a_busy_connection() -> None:
    async def go() -> None:
        async with Server(_silent) as pool:
            narrow = Http1Pool("http", "127.0.0.1", pool.port, max_connections=1, timeout_s=0.5)
            t0 = asyncio.get_running_loop().time()
            results = await asyncio.gather(*(narrow.request("PUT", "/b/k", {}, b"x") for _ in range(2)),
                                           return_exceptions=True)
            # Both at their own deadline: the second did not wait out the first's 0.5 s and then its own.
            assert all(isinstance(r, TimeoutError) for r in results), results
            assert asyncio.get_running_loop().time() - t0 < 0.9
            await narrow.close()

    run(go())
