"""A real API (uvicorn on a free loopback port, in a thread) over the session's real servers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import uvicorn
from procwatch_api.app import create_app
from procwatch_api.settings import ApiSettings
from procwatch_api.slow_clients import header_deadline_protocol


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveApi:
    base_url: str
    app: object
    host: str = "127.0.0.1"
    port: int = 0


class _ThreadedServer:
    def __init__(self, settings: ApiSettings):
        self.app = create_app(settings)
        self.port = free_port()
        # As procwatch_api.app.main configures uvicorn (slow-client timeouts), on the test's own loop.
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_config=None, lifespan="on",
                                loop="asyncio", access_log=False,
                                http=header_deadline_protocol(settings.header_timeout_s),
                                timeout_keep_alive=settings.keep_alive_timeout_s)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="live-api", daemon=True)

    def __enter__(self) -> LiveApi:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return LiveApi(f"http://127.0.0.1:{self.port}", self.app, port=self.port)

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def live_api(database_url: str, redis_url: str, nats_url: str, **overrides) -> _ThreadedServer:
    settings = ApiSettings(database_url=database_url, redis_url=redis_url, nats_url=nats_url,
                           **{"rate_limit_per_minute": 1_000_000, "failed_auth_per_minute": 1_000_000,
                              "outbox_poll_interval_s": 0.2, **overrides})
    return _ThreadedServer(settings)


@pytest.fixture(scope="module")
def api(database_url, redis_url, nats_url) -> Iterator[LiveApi]:
    with live_api(database_url, redis_url, nats_url) as running:
        yield running
