"""What bounds the time a client may take to send a request, so slow or stalled clients cannot hold
the server's resources:

- `HeaderDeadlineProtocol`: uvicorn's httptools protocol, closing a connection whose request
  line and headers have not all arrived within `header_timeout_s` of the connection (or of the
  request's first byte, on a kept-alive connection). uvicorn itself arms no timer until a first
  response has been sent: a connection that never finishes its headers stays open forever.
- `BodyDeadline`: an ASGI middleware answering 408 `request_timeout` (the error body) when the
  body has not fully arrived within `body_timeout_s` of the request.

Routes read the body before they take a connection of the write pool (deps.py), so a slow body
holds no pooled connection while it lasts.

HeaderDeadlineProtocol subclasses uvicorn internals (its parser callbacks `on_message_begin`,
`on_headers_complete`, and the `loop` / `transport` attributes), so uvicorn's version range is
pinned in services/api/pyproject.toml; tests/security/test_slow_clients.py fails if an upgrade
breaks it (then compare with uvicorn/protocols/http/httptools_impl.py and adjust the overrides).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from procwatch_api.errors import RequestTimeout

log = logging.getLogger("procwatch.api.slow_clients")


def _header_timeout_response(timeout_s: float) -> bytes:
    body = orjson.dumps({"error": "request_timeout",
                         "message": f"the request headers did not arrive within {timeout_s:g} s"})
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)


class HeaderDeadlineProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout_s = header_timeout_s
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self._header_timeout_s, self._headers_timed_out)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            log.info("request headers timed out; connection closed", extra={"timeout_s": self._header_timeout_s})
            self.transport.write(_header_timeout_response(self._header_timeout_s))
            self.transport.close()


def header_deadline_protocol(header_timeout_s: float) -> Any:
    """uvicorn's `http=` argument: a picklable protocol factory (API workers are spawned processes)."""
    return functools.partial(HeaderDeadlineProtocol, header_timeout_s=header_timeout_s)


class BodyDeadline:
    """Raises errors.RequestTimeout (408, rendered by the error handlers) from `receive` when the
    request body is still incomplete `timeout_s` after the request began."""

    def __init__(self, app: Any, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = time.monotonic() + self.timeout_s
        body_complete = False

        async def receive_by_deadline():
            nonlocal body_complete
            if body_complete:  # afterwards only a disconnect is awaited, for as long as the response lasts
                return await receive()
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeout(self.timeout_s) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_complete = True
            return message

        await self.app(scope, receive_by_deadline, send)
