"""procwatch_notify.http against raw HTTP/1.1 servers (asyncio), for the answers a real
receiver may give: chunked, close-delimited, 100 Continue, an idle connection closed by the
server, a refused target."""

from __future__ import annotations

import asyncio

import pytest

from procwatch_notify.http import HttpClient, HttpError
from procwatch_notify.targets import TargetRefused

pytestmark = pytest.mark.integration


async def serve(answers: list[bytes], *, close_after_each: bool = False):
    """A server answering each request with the next raw answer; records what it received."""
    got: list[bytes] = []
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while answers:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int([line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")][0])
                got.append(head + await reader.readexactly(length))
                writer.write(answers.pop(0))
                await writer.drain()
                if close_after_each:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, port, got, lambda: connections


async def test_chunked_close_delimited_and_continue_answers():
    answers = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.0 500 Oops\r\n\r\nsomething broke",
    ]
    server, port, got, connections = await serve(answers)
    client = HttpClient(allow_private=True)
    try:
        url = f"http://127.0.0.1:{port}/hook?x=1"
        first = await client.post(url, {"content-type": "application/json"}, b'{"a":1}')
        assert (first.status, first.body) == (200, b"abcde")
        second = await client.post(url, {}, b"{}")
        assert (second.status, second.body) == (201, b"ok")
        third = await client.post(url, {}, b"{}")
        assert third.status == 429 and third.headers["retry-after"] == "7"
        fourth = await client.post(url, {}, b"{}")
        assert (fourth.status, fourth.body) == (500, b"something broke")
        assert connections() == 1  # kept alive across the first four
        assert got[0].startswith(b"POST /hook?x=1 HTTP/1.1\r\n")
        assert f"Host: 127.0.0.1:{port}".encode() in got[0] and got[0].endswith(b'{"a":1}')
    finally:
        await client.aclose()
        server.close()


async def test_an_idle_connection_closed_by_the_server_is_replaced():
    server, port, got, connections = await serve(
        [b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"] * 2, close_after_each=True)
    client = HttpClient(allow_private=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        assert (await client.post(url, {}, b"1")).status == 200
        await asyncio.sleep(0.1)  # the server closed the connection the client keeps
        assert (await client.post(url, {}, b"2")).status == 200
        assert connections() == 2 and len(got) == 2
    finally:
        await client.aclose()
        server.close()


async def test_refused_and_unreachable_targets():
    client = HttpClient(allow_private=False)
    with pytest.raises(TargetRefused):
        await client.post("http://127.0.0.1:9/", {}, b"")
    with pytest.raises(HttpError):
        await HttpClient(allow_private=True).post("http://127.0.0.1:9/", {}, b"")


async def serve_tls(certificate, answer: bytes):
    """An https server (certificate issued by a test CA) answering each connection's request with `answer`."""
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(context)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int([line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")][0])
            await reader.readexactly(length)
            writer.write(answer)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    return server, server.sockets[0].getsockname()[1]


async def test_https_verifies_the_certificate_and_the_host_name():
    import ssl

    import trustme

    ca = trustme.CA()
    answer = b"HTTP/1.1 204 No Content\r\n\r\n"
    server, port = await serve_tls(ca.issue_cert("localhost"), answer)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    try:
        # Trusted CA, matching name: delivered over TLS.
        client = HttpClient(allow_private=True, ssl_context=trusting)
        ok = await client.post(f"https://localhost:{port}/hook", {}, b"{}")
        assert ok.status == 204
        await client.aclose()
        # Same server reached by an address the certificate does not name: refused.
        client = HttpClient(allow_private=True, ssl_context=trusting)
        with pytest.raises(HttpError, match="cannot connect"):
            await client.post(f"https://127.0.0.1:{port}/hook", {}, b"{}")
        await client.aclose()
        # The system's CA store does not know the test CA: refused.
        client = HttpClient(allow_private=True)
        with pytest.raises(HttpError, match="cannot connect"):
            await client.post(f"https://localhost:{port}/hook", {}, b"{}")
        await client.aclose()
    finally:
        server.close()
        await server.wait_closed()
