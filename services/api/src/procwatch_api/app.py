"""Wiring: settings -> engine, Redis, NATS + outbox relay -> FastAPI app; `main()` runs uvicorn."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager, suppress

import nats
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.ext.asyncio import create_async_engine

from procwatch_api import alerts_routes, channels_routes, health, live_routes, maintenance_routes, routes
from procwatch_api.web import routes as web_routes
from procwatch_api.channels_schemas import CHANNEL_REQUEST_MODELS
from procwatch_api.maintenance_schemas import MAINTENANCE_REQUEST_MODELS
from procwatch_api.error_handlers import install_error_handlers
from procwatch_api.live import LiveHub
from procwatch_api.ratelimit import RateLimiter, redis_client
from procwatch_api.request_metrics import RequestMetrics
from procwatch_api.repository import Reads
from procwatch_api.restart_window import RestartWindows
from procwatch_api.schemas import REQUEST_MODELS, Error
from procwatch_api.service import ALERTS_DEFAULT_LIMIT, ALERTS_MAX_LIMIT
from procwatch_api.settings import ApiSettings
from procwatch_api.slow_clients import BodyDeadline, header_deadline_protocol
from procwatch_db.urls import libpq_url, sqlalchemy_url
from procwatch_domain import crypto
from procwatch_messaging.outbox import OutboxRelay
from procwatch_messaging.streams import ensure_streams, limits_for
from procwatch_runtime.gc_tuning import tune_gc

log = logging.getLogger("procwatch.api")
MAX_BACKOFF_S = 30.0
# A request never waits long for a pooled connection: past this it is a 503 (PostgreSQL down or swamped).
READ_POOL_TIMEOUT_S = 1.0
READ_CONNECT_TIMEOUT_S = 2


async def _nats_and_relay(app: FastAPI, settings: ApiSettings) -> None:
    """Connect to NATS (retrying while it is down), declare streams, then run the outbox relay."""
    state = app.state
    backoff = 0.5

    async def on_error(exc: Exception) -> None:
        log.debug("nats client error", extra={"error": type(exc).__name__})

    async def on_reconnected() -> None:
        state.live.reset_all()  # live updates published while disconnected are lost

    while state.nats is None:
        try:
            state.nats = await nats.connect(
                settings.nats_servers, connect_timeout=settings.nats_connect_timeout_s,
                max_reconnect_attempts=-1, reconnect_time_wait=1, error_cb=on_error, name="procwatch-api",
                reconnected_cb=on_reconnected,
            )
        except Exception as exc:
            log.warning("nats unavailable; events wait in the outbox",
                        extra={"error": type(exc).__name__, "retry_in_s": backoff})
            await asyncio.sleep(backoff)
            backoff = min(MAX_BACKOFF_S, backoff * 2)
    await state.live.start(state.nats)
    js = state.nats.jetstream()
    backoff = 0.5
    while True:
        try:
            await ensure_streams(js, limits_for(settings))
            break
        except Exception as exc:
            log.warning("could not declare streams", extra={"error": type(exc).__name__, "retry_in_s": backoff})
            await asyncio.sleep(backoff)
            backoff = min(MAX_BACKOFF_S, backoff * 2)
    relay = OutboxRelay(settings.database_url, js, poll_interval=settings.outbox_poll_interval_s)
    state.relay = relay
    relay.wake()  # whatever waited in the outbox while NATS was away
    await relay.run()


async def _configure_read_connection(conn) -> None:
    conn.prepare_threshold = 0


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state = app.state
        state.settings = settings
        state.engine = create_async_engine(
            sqlalchemy_url(settings.database_url),
            pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow, pool_pre_ping=True,
        )
        # The hot read routes' pool (repository.Reads): autocommit, session time zone UTC, every
        # statement prepared on first use and planned once (a custom plan of the get route's
        # statement re-plans over every sample partition on every request).
        state.reads = Reads(AsyncConnectionPool(
            libpq_url(settings.database_url), min_size=1, max_size=settings.read_pool_size_per_worker,
            open=False, timeout=READ_POOL_TIMEOUT_S, name="procwatch-api-reads", configure=_configure_read_connection,
            kwargs={"autocommit": True, "connect_timeout": READ_CONNECT_TIMEOUT_S,
                    "options": "-c TimeZone=UTC -c plan_cache_mode=force_generic_plan"},
        ))
        await state.reads.pool.open()  # connects in the background: a database that is down is a 503 per request
        state.restart_windows = RestartWindows()
        state.redis = redis_client(settings.redis_url, settings.redis_timeout_s)
        state.rate_limiter = RateLimiter(
            state.redis, settings.rate_limit_per_minute, retry_after_s=settings.redis_retry_after_s
        )
        state.failed_auth_limiter = RateLimiter(
            state.redis, settings.failed_auth_per_minute, retry_after_s=settings.redis_retry_after_s
        )
        # Live updates: this worker process's own hub and subscription (subscribed once NATS is up).
        state.live = LiveHub(
            ring_size=settings.live_ring_size, client_queue=settings.live_client_queue,
            max_clients_per_user=settings.live_max_clients_per_user, resume_window_s=settings.live_resume_window_s,
            heartbeat_s=settings.live_heartbeat_s,
        )
        state.live.open()
        state.nats = None
        state.relay = None
        state.wake_relay = lambda: state.relay.wake() if state.relay is not None else None
        task = asyncio.create_task(_nats_and_relay(app, settings), name="outbox-relay")
        # Everything built so far lives as long as the process: keep it out of the collector's
        # generations, so a full collection under load walks only per-request garbage (p99).
        tune_gc(settings.gc_gen0_threshold)
        try:
            crypto.check_key()
        except crypto.SecretsKeyError as exc:
            # Everything else works; /channels answers 503 secrets_unavailable until it is set.
            log.warning("channel secrets cannot be stored", extra={"reason": str(exc)})
        log.info("api started", extra={"rate_limit_per_minute": settings.rate_limit_per_minute})
        try:
            yield
        finally:
            task.cancel()
            await asyncio.wait({task}, timeout=5)
            await state.live.stop()
            if state.nats is not None:
                with suppress(Exception):
                    await state.nats.close()
            with suppress(Exception):
                await state.redis.aclose()
            await state.engine.dispose()
            await state.reads.pool.close()

    app = routes.ProcwatchApi(
        title="procwatch API",
        version="1.0.0",
        description="Watched processes per server. Every route except /healthz, /readyz and this "
        "document (/openapi.json, /docs) needs `Authorization: Bearer <token>`. HEAD is answered wherever "
        "GET is. Errors are `{\"error\": code, \"message\": text, ...}`.",
        lifespan=lifespan,
        # A trailing slash is another path: 404, not a redirect that echoes the Host header.
        redirect_slashes=False,
    )
    if settings.metrics_enabled:
        app.request_metrics = RequestMetrics(app.serve)
    install_error_handlers(app)
    app.add_middleware(BodyDeadline, timeout_s=settings.body_timeout_s)
    app.include_router(health.router)
    app.include_router(routes.router)
    app.include_router(channels_routes.router)
    app.include_router(maintenance_routes.router)
    app.include_router(alerts_routes.router)
    app.include_router(live_routes.router)
    web_routes.install(app)

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (*REQUEST_MODELS, *CHANNEL_REQUEST_MODELS, *MAINTENANCE_REQUEST_MODELS, Error):
                model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(model_schema.pop("$defs", {}))
                components[model.__name__] = model_schema
            schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            schema["security"] = [{"bearer": []}]
            # Invalid input is answered 400 validation_failed, never FastAPI's 422.
            for operations in schema["paths"].values():
                for op in operations.values():
                    op.get("responses", {}).pop("422", None)
            components.pop("HTTPValidationError", None)
            components.pop("ValidationError", None)
            # Query parameters are parsed by hand (service.parse_limit): say what that accepts.
            for operations in schema["paths"].values():
                for op in operations.values():
                    for param in op.get("parameters", ()):
                        if param["in"] == "query" and param["name"] == "limit":
                            param["schema"] = {"type": "integer", "minimum": 1, "maximum": ALERTS_MAX_LIMIT,
                                               "default": ALERTS_DEFAULT_LIMIT}
            for path in ("/healthz", "/readyz"):
                for op in schema["paths"].get(path, {}).values():
                    op["security"] = []
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def main() -> None:
    import signal
    import sys

    import uvicorn

    from procwatch_api.workers import exit_cleanly_on_signals, serve_workers
    from procwatch_runtime.logs import configure_logging

    settings = ApiSettings()
    configure_logging(settings.log_level)
    common = dict(loop="uvloop", http=header_deadline_protocol(settings.header_timeout_s), log_config=None,
                  lifespan="on", access_log=False, timeout_keep_alive=settings.keep_alive_timeout_s,
                  timeout_graceful_shutdown=settings.shutdown_grace_s)
    if settings.workers > 1:
        # One SO_REUSEPORT socket per worker process (procwatch_api.workers: why); each builds its app itself.
        sys.exit(serve_workers(settings, common))
    # Containers are stopped with SIGTERM: exit 0, not by uvicorn's re-raised signal (-15).
    exit_cleanly_on_signals(signal.SIGTERM)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, **common)


if __name__ == "__main__":
    main()
