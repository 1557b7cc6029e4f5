"""A tiny HTTP health endpoint for the workers (ingest, alerter), with no framework.

    GET /healthz  200 {"status": "ok"} while the process's event loop runs (liveness)
    GET /readyz   200 {"status": "ready", "checks": {...}} when every check passes, else 503
                  {"status": "not_ready", "checks": {"postgres": "error: OperationalError", ...}}
    GET /metrics  the process's Prometheus metrics (procwatch_runtime.metrics); the `on_scrape`
                  hooks run first (bounded by `timeout_s`), e.g. to read JetStream consumer info

Each check is an async callable that raises when its dependency is unusable; each has
`timeout_s` so a hung dependency answers 503 in bounded time, never hangs the probe.
Bound to `host:port` only when the service's `health_port` setting is set.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping

from procwatch_runtime import metrics

log = logging.getLogger("procwatch.health")

Check = Callable[[], Awaitable[object]]


class HealthServer:
    def __init__(self, checks: Mapping[str, Check], *, host: str = "127.0.0.1", port: int = 0,
                 timeout_s: float = 2.0):
        self.checks = dict(checks)
        # Refreshers of gauges that are read rather than observed; a failing one is logged and
        # the scrape answers with the values it has.
        self.on_scrape: list[Callable[[], Awaitable[object]]] = []
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self._server: asyncio.base_events.Server | None = None

    @property
    def listening(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("health endpoint listening", extra={"host": self.host, "port": self.port})

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _run_check(self, check: Check) -> str:
        try:
            async with asyncio.timeout(self.timeout_s):
                await check()
            return "ok"
        except Exception as exc:  # the probe reports, it never raises
            return f"error: {type(exc).__name__}"

    async def report(self) -> tuple[int, dict]:
        names = list(self.checks)
        results = await asyncio.gather(*(self._run_check(self.checks[n]) for n in names))
        checks = dict(zip(names, results, strict=True))
        ready = all(v == "ok" for v in checks.values())
        return (200 if ready else 503), {"status": "ready" if ready else "not_ready", "checks": checks}

    async def scrape(self) -> tuple[bytes, str]:
        """The metrics exposition text, after the `on_scrape` hooks (each bounded by timeout_s)."""
        for hook in self.on_scrape:
            try:
                async with asyncio.timeout(self.timeout_s):
                    await hook()
            except Exception as exc:
                log.debug("metrics refresh failed", extra={"error": type(exc).__name__})
        return metrics.render()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self.timeout_s + 3):
                request_line = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # headers are ignored
                parts = request_line.decode("latin-1").split()
                path = parts[1].split("?", 1)[0] if len(parts) >= 2 else ""
                content_type = "application/json"
                if path == "/healthz":
                    status, body = 200, {"status": "ok"}
                elif path == "/readyz":
                    status, body = await self.report()
                elif path == "/metrics":
                    status, (body, content_type) = 200, await self.scrape()
                else:
                    status, body = 404, {"error": "not_found", "message": "GET /healthz, /readyz or /metrics"}
                payload = body if isinstance(body, bytes) else json.dumps(body).encode()
                reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
                writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
                             f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode() + payload)
                await writer.drain()
        except Exception:
            log.debug("health request failed", exc_info=True)
        finally:
            writer.close()


# Checks every worker needs; duck-typed so this library imports neither psycopg nor nats.


def postgres_check(pool, timeout_s: float) -> Check:
    """`select 1` through the worker's own psycopg pool."""

    async def postgres() -> None:
        async with pool.connection(timeout=timeout_s) as conn:
            await conn.execute("select 1")

    return postgres


def nats_check(connection: Callable[[], object], timeout_s: float) -> Check:
    """The worker's NATS connection is up and answers a round trip (flush)."""

    async def nats() -> None:
        nc = connection()
        if nc is None or not nc.is_connected:
            raise ConnectionError("not connected")
        await nc.flush(timeout=timeout_s)

    return nats
