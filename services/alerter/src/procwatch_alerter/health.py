"""The alerter's health endpoint (procwatch_runtime.health): PostgreSQL, NATS and the outbox relay."""

from __future__ import annotations

from typing import TYPE_CHECKING

from procwatch_runtime.health import HealthServer, nats_check, postgres_check

if TYPE_CHECKING:
    from procwatch_alerter.app import AlerterApp


def health_server(app: AlerterApp) -> HealthServer | None:
    """None unless PROCWATCH_ALERTER_HEALTH_PORT is set (0 picks a free port)."""
    s = app.settings
    if s.health_port is None:
        return None

    async def outbox_relay() -> None:
        task = app._relay_task
        if task is None or task.done():
            raise RuntimeError("outbox relay not running")

    checks = {
        "postgres": postgres_check(app.pool, s.health_timeout_s),
        "nats": nats_check(lambda: app.broker.config.connection_state.connection, s.health_timeout_s),
        "outbox_relay": outbox_relay,
    }
    return HealthServer(checks, host=s.health_host, port=s.health_port, timeout_s=s.health_timeout_s)
