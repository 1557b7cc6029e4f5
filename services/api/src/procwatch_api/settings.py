"""API settings: the shared connection URLs plus `PROCWATCH_API_*` variables."""

from __future__ import annotations

import ipaddress

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import SettingsConfigDict

from procwatch_runtime.settings import ConnectionSettings


class ApiSettings(ConnectionSettings):
    model_config = SettingsConfigDict(env_prefix="PROCWATCH_API_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    # API worker processes, each with its own database pools and, on Linux, its own listening
    # socket (SO_REUSEPORT), across which the kernel spreads new connections.
    workers: int = 1
    log_level: str = "INFO"

    # Requests per token per minute (fixed one-minute window in Redis).
    rate_limit_per_minute: int = 600
    # Requests with a missing-user token (401) per client address per minute; beyond it, 429.
    failed_auth_per_minute: int = 120
    # Redis is only an optimisation: a dead Redis must not slow requests much.
    redis_timeout_s: float = 0.25
    # After a Redis failure, skip it for this long instead of timing out on every request.
    redis_retry_after_s: float = 2.0

    # Request bodies larger than this are refused with 413 before parsing.
    max_body_bytes: int = 64 * 1024
    # A connection whose request line and headers have not all arrived this long after it opened
    # (or after the request's first byte) is answered 408 and closed (slow_clients.py).
    header_timeout_s: float = Field(default=10.0, gt=0)
    # A request whose body has not fully arrived this long after the request began: 408.
    body_timeout_s: float = Field(default=15.0, gt=0)
    # An idle kept-alive connection is closed after this long (uvicorn's timeout_keep_alive).
    keep_alive_timeout_s: int = Field(default=5, ge=1)

    # On shutdown, requests still running this long after the listener closed are cancelled. Live
    # update streams (GET /events) never end by themselves: without a bound they would hold a
    # stopping worker forever; their browsers reconnect to another worker.
    shutdown_grace_s: float = Field(default=5.0, gt=0)

    # How long a dashboard sign-in (procwatch_api.web) lasts.
    web_session_hours: int = Field(default=7 * 24, ge=1)
    # Whether the dashboard's session cookie is marked Secure. Unset: when the request came over
    # https (behind a proxy: uvicorn's forwarded headers, trusted from 127.0.0.1 by default).
    web_cookie_secure: bool | None = None

    db_pool_size: int = 10
    # Connections for the two hot reads (one short statement each), in total over the workers
    # (each gets its share, at least 1). Unset: 4 for one worker, 1 per worker for more. A few per
    # PostgreSQL core is enough: more only run at once and contend (bench/RESULTS.md has the
    # measurements). Requests beyond it queue, for at most app.READ_POOL_TIMEOUT_S (then 503).
    read_pool_size: int | None = Field(default=None, ge=1)

    @property
    def read_pool_size_per_worker(self) -> int:
        workers = max(1, self.workers)
        if self.read_pool_size is None:
            return 4 if workers == 1 else 1
        return max(1, -(-self.read_pool_size // workers))
    db_max_overflow: int = 10

    # GET /events (live updates, docs/live.md): recent events kept per connected user, for
    # Last-Event-ID resume; an older id gets a `reset`.
    live_ring_size: int = Field(default=500, ge=1)
    # Events queued per browser stream; a stream whose queue is full is too slow and is dropped
    # (its browser reconnects and resumes). Must hold one message's events (a server's processes).
    live_client_queue: int = Field(default=1000, ge=1)
    # Open streams per user on one API worker; beyond, 429 too_many_streams.
    live_max_clients_per_user: int = Field(default=100, ge=1)
    # How long a user's recent events are kept after their last stream closed (the resume window).
    live_resume_window_s: float = Field(default=300.0, gt=0)
    # An idle stream gets a keep-alive comment at least this often (proxies close silent streams).
    live_heartbeat_s: float = Field(default=15.0, gt=0)
    # The reconnect delay the stream asks browsers for (its `retry:` line).
    live_retry_ms: int = Field(default=2000, ge=0)

    # GET /metrics (Prometheus) on the API port, and the request metrics behind it (docs/metrics.md).
    metrics_enabled: bool = True
    # Client networks GET /metrics answers (others get 404): loopback and private networks, where
    # Prometheus runs. A reverse proxy in front should not forward /metrics (JSON list of CIDRs).
    metrics_allowed_networks: list[str] = [
        "127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"]

    @field_validator("metrics_allowed_networks")
    @classmethod
    def _networks(cls, networks: list[str]) -> list[str]:
        for network in networks:
            ipaddress.ip_network(network, strict=False)  # a typo fails at start, not at each scrape
        return networks

    outbox_poll_interval_s: float = 1.0
    nats_connect_timeout_s: float = 2.0

    # /channels: the notifier's switches, read here too (the API checks a channel's target when it
    # is saved and sends its test). Private and loopback targets, and plain http to them, are
    # refused unless allowed (`procwatch up` and the tests allow them).
    allow_private_targets: bool = Field(
        default=False,
        validation_alias=AliasChoices("PROCWATCH_NOTIFIER_ALLOW_PRIVATE_TARGETS", "allow_private_targets"),
    )
    # The SMTP server email channels' tests go through (smtp://user:pass@host:port or smtps://...).
    smtp_url: str | None = Field(
        default=None, validation_alias=AliasChoices("PROCWATCH_SMTP_URL", "smtp_url"),
    )
    # The From address of those test mails (the notifier's setting).
    mail_from: str = Field(
        default="procwatch@localhost",
        validation_alias=AliasChoices("PROCWATCH_NOTIFIER_MAIL_FROM", "mail_from"),
    )
