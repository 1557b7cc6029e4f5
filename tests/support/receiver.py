"""A real HTTP receiver on 127.0.0.1 for notification tests (uvicorn, in the test's loop).

    receiver = Receiver(); await receiver.start()
    receiver.script("/hook", 500, 200)          # first answer 500, then 200 (then 200 forever)
    receiver.hang("/slow")                       # never answers (until stop)
    url = receiver.url("/hook")
    await receiver.wait(lambda r: len(r.at("/hook")) >= 2)
    await receiver.stop(); await receiver.start()   # same port: a receiver down for a while
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import defaultdict, deque
from dataclasses import dataclass

import uvicorn


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic()
    status: int  # what the receiver answered (0: hung)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.received: list[Received] = []
        self._scripts: dict[str, deque[tuple[int, dict[str, str]]]] = defaultdict(deque)
        self._hanging: set[str] = set()
        self._release = asyncio.Event()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task | None = None
        self.delay_s = 0.0  # answer this late (a slow receiver)
        self.in_flight = 0  # requests received and not answered yet

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, *statuses: int, headers: dict[str, str] | None = None) -> None:
        """The next answers on `path` (after them: 200)."""
        for status in statuses:
            self._scripts[path].append((status, headers or {}))

    def hang(self, path: str) -> None:
        self._hanging.add(path)

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def app(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        path = scope["path"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if path in self._hanging:
            self.received.append(Received(path, headers, b"".join(chunks), time.monotonic(), 0))
            await self._release.wait()
            return
        status, extra = self._scripts[path].popleft() if self._scripts[path] else (200, {})
        if self.delay_s:
            self.in_flight += 1
            try:
                await asyncio.sleep(self.delay_s)
            finally:
                self.in_flight -= 1
        self.received.append(Received(path, headers, b"".join(chunks), time.monotonic(), status))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in extra.items()]})
        await send({"type": "http.response.body", "body": b"ok"})

    async def start(self) -> None:
        self._release = asyncio.Event()
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="off", access_log=False, timeout_graceful_shutdown=1,
                                interface="asgi3")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        deadline = time.monotonic() + 10
        while not self._server.started:
            if self._task.done():
                self._task.result()
            if time.monotonic() > deadline:
                raise TimeoutError("receiver did not start")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self._release.set()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            self._server.force_exit = True
            await asyncio.wait_for(self._task, 10)
        self._server = self._task = None

    async def wait(self, predicate, timeout: float = 15.0, what: str = "receiver condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; received {len(self.received)}")
            await asyncio.sleep(0.02)
