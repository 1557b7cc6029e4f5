"""The ingest's health endpoint (procwatch_runtime.health): PostgreSQL, NATS and the pull loop."""

from __future__ import annotations

from typing import TYPE_CHECKING

from procwatch_runtime.health import HealthServer, nats_check, postgres_check

if TYPE_CHECKING:
    from procwatch_ingest.app import IngestApp


def health_server(app: IngestApp) -> HealthServer | None:
    """None unless PROCWATCH_INGEST_HEALTH_PORT is set (0 picks a free port)."""
    s = app.settings
    if s.health_port is None:
        return None

    async def consumer() -> None:
        if not app.pull_loop.running:
            raise RuntimeError("pull loop not running")

    checks = {
        "postgres": postgres_check(app.pool, s.health_timeout_s),
        "nats": nats_check(lambda: app.broker.config.connection_state.connection, s.health_timeout_s),
        "consumer": consumer,
    }
    return HealthServer(checks, host=s.health_host, port=s.health_port, timeout_s=s.health_timeout_s)
