"""API settings: the shared connection URLs plus `PROCWATCH_API_*` variables."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from procwatch_runtime.settings import ConnectionSettings


class ApiSettings(ConnectionSettings):
    model_config = SettingsConfigDict(env_prefix="PROCWATCH_API_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    # uvicorn worker processes (each with its own pool of db_pool_size connections).
    workers: int = 1
    log_level: str = "INFO"

    # Requests per token per minute (fixed one-minute window in Redis).
    rate_limit_per_minute: int = 600
    # Redis is only an optimisation: a dead Redis must not slow requests much.
    redis_timeout_s: float = 0.25
    # After a Redis failure, skip it for this long instead of timing out on every request.
    redis_retry_after_s: float = 2.0

    # Request bodies larger than this are refused with 413 before parsing.
    max_body_bytes: int = 64 * 1024

    db_pool_size: int = 10
    db_max_overflow: int = 10

    outbox_poll_interval_s: float = 1.0
    nats_connect_timeout_s: float = 2.0
