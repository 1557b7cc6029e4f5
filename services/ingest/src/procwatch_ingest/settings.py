"""Ingest settings: `PROCWATCH_INGEST_*` environment variables (URLs and the health endpoint come from
WorkerSettings)."""

from __future__ import annotations

import os

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from procwatch_contracts import subjects
from procwatch_messaging.streams import StreamLimits, ingest_durable
from procwatch_runtime.settings import WorkerSettings


class IngestSettings(WorkerSettings):
    model_config = SettingsConfigDict(env_prefix="PROCWATCH_INGEST_", extra="ignore")

    # Batching ("natural", procwatch_messaging.pull): a batch is whatever waited, up to
    # `batch_size` messages, handed over at once. While another batch is in flight, a
    # partial batch is held until that one finishes or `batch_timeout_ms` passed, then
    # topped up (it could not commit before the one in flight anyway).
    batch_size: int = Field(default=500, ge=1, le=10_000)
    batch_timeout_ms: int = Field(default=50, ge=1, le=60_000)
    # Batches handled at once: one parses and writes while the previous commits and
    # publishes (commit + publish stay in order, one batch at a time).
    max_in_flight: int = Field(default=2, ge=1, le=8)

    # The durable pull consumer shared by every replica, and the watch-list queue group.
    durable: str = "procwatch-ingest"
    # With PROCWATCH_INGEST_PARTITIONS > 1 (shared settings): the partition of AGENT_SAMPLES this replica
    # reads (0 .. partitions-1), on the durable `<durable>-<partition>`; no two partitions hold one
    # server's messages, so each server's samples are committed in order (docs/scaling.md).
    partition: int = Field(default=0, ge=0)
    watchlist_queue: str = "procwatch-ingest"
    # Seconds the server waits for an ack before redelivering (a crashed replica's batch).
    ack_wait_s: float = Field(default=30.0, gt=0)
    # Where a NEW durable starts: "all" (the stream's backlog) or "new" (tests, fresh replicas of a demo).
    deliver_policy: str = Field(default="all", pattern="^(all|new)$")

    # Caches (see docs/ingest.md): server credentials and per-server process names.
    server_cache_ttl_s: float = Field(default=10.0, ge=0)
    unknown_server_cache_ttl_s: float = Field(default=2.0, ge=0)
    process_cache_ttl_s: float = Field(default=5.0, ge=0)

    # Samples further ahead of the ingest clock are rejected.
    max_future_s: float = Field(default=300.0, ge=0)
    # Told to agents in the watch-list reply.
    interval_seconds: float = Field(default=10.0, gt=0)
    # A server's last_seen_at (liveness, docs/ingest.md) is written only when it moved forward by at
    # least this many seconds since the value this replica last wrote (offline_after_s is >= 30).
    last_seen_step_s: float = Field(default=1.0, ge=0, le=10)

    # JetStream stream limits, applied when the service starts.
    samples_max_age_s: float = Field(default=24 * 3600, gt=0)
    events_max_age_s: float = Field(default=7 * 24 * 3600, gt=0)
    duplicate_window_s: float = Field(default=300, ge=120)

    # Seconds a committed batch's failed event publish is retried in place (the next batch waits, so each
    # server's events keep their order across a broker hiccup or a cluster's leader election) before the
    # batch is handed back for redelivery. Keep it well below ack_wait_s.
    publish_retry_s: float = Field(default=10.0, ge=0)
    # Redelivery delay after a transient failure: base * 2^(attempt-1), capped.
    retry_base_s: float = Field(default=0.5, gt=0)
    retry_max_s: float = Field(default=10.0, gt=0)

    # PostgreSQL pool.
    pool_min_size: int = Field(default=1, ge=1)
    pool_max_size: int = Field(default=4, ge=1)
    pool_timeout_s: float = Field(default=5.0, gt=0)

    stats_log_interval_s: float = Field(default=60.0, gt=0)

    # Retention (docs/retention.md): one replica at a time (advisory lock) keeps the daily
    # partitions of process_samples and removes samples older than the owner's plan retention.
    retention_enabled: bool = True
    # Seconds between retention passes (the first one runs min(interval, 60 s) after start).
    retention_interval_s: float = Field(default=300.0, gt=0)
    # Daily partitions created ahead of today (today - 1 .. today + N).
    partitions_ahead_days: int = Field(default=7, ge=1, le=60)
    # Most rows deleted per retention transaction.
    retention_batch_rows: int = Field(default=5000, ge=1, le=100_000)
    # lock_timeout of each retention/partition transaction; a busy step is retried next pass.
    retention_lock_timeout_ms: int = Field(default=1000, ge=10)

    # PROCWATCH_INGEST_LOG_LEVEL, else LOG_LEVEL (what `procwatch --log-level` also reads).
    log_level: str = Field(default_factory=lambda: os.environ.get("LOG_LEVEL", "INFO"))

    @model_validator(mode="after")
    def _partition_in_range(self) -> IngestSettings:
        if self.partition >= self.ingest_partitions:
            raise ValueError(f"partition {self.partition} outside 0..{self.ingest_partitions - 1}")
        return self

    @property
    def consumer_subject(self) -> str:
        """The stored subjects this replica's durable reads."""
        if self.ingest_partitions == 1:
            return subjects.AGENT_SAMPLES_SUBJECTS
        return subjects.partition_filter(subjects.AGENT_SAMPLES_SUBJECTS, self.partition)

    @property
    def consumer_durable(self) -> str:
        return ingest_durable(self.durable, self.partition, self.ingest_partitions)

    def stream_limits(self) -> StreamLimits:
        return StreamLimits(
            agent_samples_max_age_s=self.samples_max_age_s,
            events_max_age_s=self.events_max_age_s,
            duplicate_window_s=self.duplicate_window_s,
        )

    @property
    def batch_timeout_s(self) -> float:
        return self.batch_timeout_ms / 1000.0
