"""The ingest's health endpoint (procwatch_runtime.health): PostgreSQL, NATS and the pull loop."""

from __future__ import annotations

from typing import TYPE_CHECKING

from procwatch_runtime.health import HealthServer

if TYPE_CHECKING:
    from procwatch_ingest.app import IngestApp


def health_server(app: IngestApp) -> HealthServer | None:
    """None unless PROCWATCH_INGEST_HEALTH_PORT is set (0 picks a free port)."""
    s = app.settings
    if s.health_port is None:
        return None

    async def postgres() -> None:
        async with app.pool.connection(timeout=s.health_timeout_s) as conn:
            await conn.execute("select 1")

    async def nats() -> None:
        nc = app.broker.config.connection_state.connection
        if nc is None or not nc.is_connected:
            raise ConnectionError("not connected")
        await nc.flush(timeout=s.health_timeout_s)

    async def consumer() -> None:
        if not app.pull_loop.running:
            raise RuntimeError("pull loop not running")

    return HealthServer({"postgres": postgres, "nats": nats, "consumer": consumer},
                        host=s.health_host, port=s.health_port, timeout_s=s.health_timeout_s)
