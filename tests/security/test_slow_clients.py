"""Issue 14, finding 5: slow request bodies and unfinished headers must not take the API down.

As an attacker would: raw sockets that send headers and half a body, or half the headers, then
stall; one that sends half a body and disconnects. Other routes (which need the write pool) and
/readyz keep answering at once, stalled bodies get 408 with the error body, unfinished headers
are closed, and a disconnect is an info log line, not an error with a traceback.

If these fail after a uvicorn upgrade, compare procwatch_api.slow_clients.HeaderDeadlineProtocol
with uvicorn/protocols/http/httptools_impl.py (it overrides that protocol's parser callbacks).
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.fuzz.conftest import LiveApi, live_api
from tests.support.factories import make_user

pytestmark = pytest.mark.integration

TIMEOUT_S = 1.5
STALLED = 12  # more than the write pool below (2 connections, no overflow)


@pytest.fixture(scope="module")
def api(database_url, redis_url, nats_url) -> Iterator[LiveApi]:
    with live_api(database_url, redis_url, nats_url, db_pool_size=2, db_max_overflow=0,
                  header_timeout_s=TIMEOUT_S, body_timeout_s=TIMEOUT_S) as running:
        deadline = time.monotonic() + 20
        while httpx.get(f"{running.base_url}/readyz").status_code != 200:  # NATS connects in the background
            assert time.monotonic() < deadline, "the API never became ready"
            time.sleep(0.1)
        yield running


def connect(api: LiveApi) -> socket.socket:
    sock = socket.create_connection((api.host, api.port), timeout=10)
    return sock


def half_a_body(api: LiveApi, token: str) -> socket.socket:
    sock = connect(api)
    body = b'{"hostname": "slow-body-host-name"}'
    sock.sendall(b"POST /servers HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer " + token.encode()
                 + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
                 + b"\r\n\r\n" + body[: len(body) // 2])
    return sock


def read_until_closed(sock: socket.socket, within_s: float) -> bytes:
    sock.settimeout(within_s)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        raise AssertionError(f"the server kept the connection open for over {within_s} s: {data!r}") from None
    except ConnectionResetError:
        pass
    return data


def test_stalled_bodies_hold_no_pool_connection_and_time_out_with_408(api, database_url):
    user = make_user(database_url)
    stalled = [half_a_body(api, user.token) for _ in range(STALLED)]
    try:
        started = time.monotonic()
        with httpx.Client(base_url=api.base_url, timeout=10) as client:
            # Routes on the write pool and the readiness check answer while every body is stalled.
            assert client.get("/servers", headers=user.headers).status_code == 200
            assert client.get("/readyz").status_code == 200
        assert time.monotonic() - started < TIMEOUT_S
        for sock in stalled:
            answer = read_until_closed(sock, within_s=TIMEOUT_S + 5)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408 "), answer
            assert json.loads(body)["error"] == "request_timeout"
    finally:
        for sock in stalled:
            sock.close()


def test_unfinished_headers_are_closed(api):
    socks = [connect(api) for _ in range(STALLED)]
    try:
        for i, sock in enumerate(socks):
            sock.sendall(b"GET /servers HTTP/1.1\r\nHost: api\r\n" if i % 2 else b"")
        for sock in socks:
            answer = read_until_closed(sock, within_s=TIMEOUT_S + 5)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer
    finally:
        for sock in socks:
            sock.close()


def test_a_client_that_disconnects_mid_body_is_logged_at_info_without_traceback(api, database_url, caplog):
    user = make_user(database_url)
    caplog.set_level(logging.INFO)
    sock = half_a_body(api, user.token)
    sock.close()
    deadline = time.monotonic() + 10
    while not any("disconnected" in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
        time.sleep(0.05)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], \
        [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
