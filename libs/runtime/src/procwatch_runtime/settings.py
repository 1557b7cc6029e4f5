"""Where the shared servers are, and the process settings every service shares. Each service's Settings
extends this one.

The three URLs are read from the unprefixed variables operators know
(DATABASE_URL, REDIS_URL, NATS_URL); everything service-specific carries the
service's prefix (PROCWATCH_API_, PROCWATCH_INGEST_, PROCWATCH_ALERTER_).
"""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from procwatch_runtime.gc_tuning import DEFAULT_GEN0_THRESHOLD


class ConnectionSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    # PostgreSQL, the system of record (`postgresql://user:pass@host:port/db`).
    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/procwatch",
        validation_alias=AliasChoices("DATABASE_URL", "database_url"),
    )
    # Redis: rate-limit windows and caches only; flushing it loses no data.
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", validation_alias=AliasChoices("REDIS_URL", "redis_url")
    )
    # NATS with JetStream (`nats://user:pass@host:4222`); a cluster's nodes comma-separated (the client
    # connects to any and fails over to the others).
    nats_url: str = Field(default="nats://127.0.0.1:4222", validation_alias=AliasChoices("NATS_URL", "nats_url"))
    # Replicas of every JetStream stream: 3 on a 3-node cluster (a node can be lost), 1 on a single server.
    # The same value for every service: each declares the streams at start.
    nats_replicas: int = Field(default=1, ge=1, le=5,
                               validation_alias=AliasChoices("PROCWATCH_NATS_REPLICAS", "nats_replicas"))
    # Partitions by server of AGENT_SAMPLES, one ingest replica and durable each (PROCWATCH_INGEST_PARTITION);
    # 1: none, subjects unchanged. The same value for every service (docs/scaling.md: change it once the
    # consumers caught up).
    ingest_partitions: int = Field(default=1, ge=1, le=256,
                                   validation_alias=AliasChoices("PROCWATCH_INGEST_PARTITIONS", "ingest_partitions"))
    # Partitions by server of SAMPLE_EVENTS and PROCESS_EVENTS, one alerter each (PROCWATCH_ALERTER_PARTITION);
    # 1: none. The same value for every service.
    alerter_partitions: int = Field(default=1, ge=1, le=256,
                                    validation_alias=AliasChoices("PROCWATCH_ALERTER_PARTITIONS",
                                                                  "alerter_partitions"))

    # api, ingest and alerter (not the agent): net allocations between collections of CPython's youngest
    # GC generation (procwatch_runtime.gc_tuning: why not the default 700); 0 keeps CPython's defaults.
    # With the service's prefix, e.g. PROCWATCH_INGEST_GC_GEN0_THRESHOLD.
    gc_gen0_threshold: int = Field(default=DEFAULT_GEN0_THRESHOLD, ge=0)

    @property
    def nats_servers(self) -> list[str]:
        """NATS_URL as the list of servers a client is given."""
        return [url.strip() for url in self.nats_url.split(",") if url.strip()]


class WorkerSettings(ConnectionSettings):
    """What every broker worker (procwatch_runtime.worker) shares; ingest and the alerter extend it."""

    # ingest and alerter: port of the health endpoint (GET /healthz, /readyz; procwatch_runtime.health); off
    # unless set, 0 picks a free port. With the service's prefix, e.g. PROCWATCH_INGEST_HEALTH_PORT.
    health_port: int | None = Field(default=None, ge=0, le=65535)
    # Address the health endpoint listens on (0.0.0.0 in a container).
    health_host: str = "127.0.0.1"
    # Seconds each readiness check may take before it counts as failed (/readyz answers 503).
    health_timeout_s: float = Field(default=2.0, gt=0)
