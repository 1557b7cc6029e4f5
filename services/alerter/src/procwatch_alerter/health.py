"""The alerter's health endpoint (procwatch_runtime.health): PostgreSQL, NATS and the outbox relay."""

from __future__ import annotations

from typing import TYPE_CHECKING

from procwatch_runtime.health import HealthServer

if TYPE_CHECKING:
    from procwatch_alerter.app import AlerterApp


def health_server(app: AlerterApp) -> HealthServer | None:
    """None unless PROCWATCH_ALERTER_HEALTH_PORT is set (0 picks a free port)."""
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

    async def outbox_relay() -> None:
        task = app._relay_task
        if task is None or task.done():
            raise RuntimeError("outbox relay not running")

    return HealthServer({"postgres": postgres, "nats": nats, "outbox_relay": outbox_relay},
                        host=s.health_host, port=s.health_port, timeout_s=s.health_timeout_s)
