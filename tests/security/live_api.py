"""A real API for the security tests: uvicorn on a free loopback port, in a thread, configured the way
procwatch_api.app.main configures it (the header-deadline protocol, keep-alive timeout)."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

import uvicorn

from procwatch_api.app import create_app
from procwatch_api.settings import ApiSettings
from procwatch_api.slow_clients import header_deadline_protocol


@dataclass
class LiveApi:
    host: str
    port: int

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


class ThreadedApi:
    def __init__(self, database_url: str, redis_url: str, nats_url: str, **overrides) -> None:
        settings = ApiSettings(database_url=database_url, redis_url=redis_url, nats_url=nats_url,
                               **{"rate_limit_per_minute": 1_000_000, "failed_auth_per_minute": 1_000_000,
                                  **overrides})
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port, log_config=None,
                                lifespan="on", access_log=False, loop="asyncio",
                                http=header_deadline_protocol(settings.header_timeout_s),
                                timeout_keep_alive=settings.keep_alive_timeout_s)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="security-api", daemon=True)

    def __enter__(self) -> LiveApi:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return LiveApi("127.0.0.1", self.port)

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
