"""A small HTTP/1.1 client for posting notifications (asyncio streams, no framework).

Why not httpx/httpcore: on this workload (a small POST, a small answer, hundreds per second)
their pure-Python stack (anyio, h11) was most of the notifier's CPU per delivery (measured with
`python -m bench notify` and a profile); this client does the same exchange for a fraction. It does
only what a notification needs: POST with a body, keep-alive connections reused per origin,
TLS with the system's CA store and the URL's host name checked, responses with
Content-Length, chunked or read-to-close bodies (kept up to MAX_BODY bytes), no redirects
(a redirect is an answer like any other non-2xx), no proxies, no compression.

SSRF: every connection first resolves the host and checks every address
(targets.resolve_checked), then connects to the address it checked, so a DNS answer that
changes after the check (DNS rebinding) cannot redirect the request.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import defaultdict
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from procwatch_notify.targets import resolve_checked

MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024
# Idle keep-alive connections kept per origin (many channels may share one, e.g. hooks.slack.com).
IDLE_PER_ORIGIN = 128


class HttpError(Exception):
    """The exchange failed (connection refused or reset, malformed answer)."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-cased names; the last value of a repeated header
    body: bytes


@dataclass
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    reused: bool = field(default=False)

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


Origin = tuple[str, str, int]


class HttpClient:
    def __init__(self, allow_private: bool, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.allow_private = allow_private
        self._ssl = ssl_context
        self._idle: dict[Origin, list[_Conn]] = defaultdict(list)

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> Response:
        parts = urlsplit(url)
        host = parts.hostname or ""
        https = parts.scheme == "https"
        port = parts.port or (443 if https else 80)
        origin = (parts.scheme, host, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        bracketed = f"[{host}]" if ":" in host else host
        host_header = bracketed if parts.port is None else f"{bracketed}:{port}"
        head = [f"POST {target} HTTP/1.1", f"Host: {host_header}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("host", "content-length")]
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        conn = self._take(origin)
        if conn is not None:
            try:
                return await self._exchange(origin, conn, request)
            except HttpError:
                pass  # the receiver closed the idle connection: once more on a new one
        conn = await self._connect(host, port, https)
        return await self._exchange(origin, conn, request)

    def _take(self, origin: Origin) -> _Conn | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if conn.usable():
                conn.reused = True
                return conn
            conn.close()
        return None

    async def _connect(self, host: str, port: int, https: bool) -> _Conn:
        addresses = await resolve_checked(host, port, self.allow_private)
        error: Exception | None = None
        for address in addresses:
            try:
                reader, writer = await asyncio.open_connection(
                    address, port, ssl=self._tls() if https else None,
                    server_hostname=host if https else None, limit=MAX_HEAD)
                return _Conn(reader, writer)
            except (OSError, ssl.SSLError) as exc:
                error = exc
        raise HttpError(f"cannot connect to {host}:{port}: {error}")

    async def _exchange(self, origin: Origin, conn: _Conn, request: bytes) -> Response:
        try:
            conn.writer.write(request)
            await conn.writer.drain()
            response, keep = await _read_response(conn.reader)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)):
                raise HttpError(f"{type(exc).__name__}: {exc}") from None
            raise
        if keep and len(self._idle[origin]) < IDLE_PER_ORIGIN:
            self._idle[origin].append(conn)
        else:
            conn.close()
        return response

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


async def _read_response(reader: asyncio.StreamReader) -> tuple[Response, bool]:
    while True:
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        if not version.startswith("HTTP/1."):
            raise ValueError(f"not an HTTP/1.x answer: {lines[0][:40]!r}")
        status = int(rest[:3])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if status >= 200 or status == 101:
            break  # 1xx (100 Continue, 103 Early Hints): the real answer follows
    keep = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
    if status in (204, 304) or 100 <= status < 200:
        return Response(status, headers, b""), keep
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                break
            chunk = await reader.readexactly(size + 2)
            if len(body) < MAX_BODY:
                body += chunk[:size][: MAX_BODY - len(body)]
        return Response(status, headers, bytes(body)), keep
    if "content-length" in headers:
        length = int(headers["content-length"])
        if length > MAX_BODY:
            body = await reader.readexactly(MAX_BODY)
            return Response(status, headers, body), False  # the rest is not read: close
        return Response(status, headers, await reader.readexactly(length)), keep
    body = bytearray()  # no length: the body ends when the connection closes
    while len(body) < MAX_BODY:
        chunk = await reader.read(MAX_BODY - len(body))
        if not chunk:
            break
        body += chunk
    return Response(status, headers, bytes(body)), False

