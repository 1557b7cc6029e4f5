"""Alerter settings: the shared connection URLs and health endpoint (WorkerSettings) plus `PROCWATCH_ALERTER_*`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from procwatch_contracts import subjects
from procwatch_messaging.streams import ingest_durable
from procwatch_runtime.settings import WorkerSettings


class AlerterSettings(WorkerSettings):
    model_config = SettingsConfigDict(env_prefix="PROCWATCH_ALERTER_", extra="ignore")

    # Durable consumer name (the lifecycle consumer is `<durable>-lifecycle`).
    # One durable per subject partition: a second replica on the same durable
    # would interleave a server's events (see sample_subject).
    durable: str = "alerter"
    # Subject filters. Per-process order needs one consumer per server's subject at
    # a time: to scale out, give each replica a disjoint partition of servers
    # (e.g. NATS subject-mapping partitions), never two replicas on one filter.
    sample_subject: str = subjects.SAMPLE_EVENTS_SUBJECTS
    process_subject: str = subjects.PROCESS_EVENTS_SUBJECTS
    # With PROCWATCH_ALERTER_PARTITIONS > 1 (shared settings, the streams' subject transforms): the
    # partition this replica evaluates (0 .. partitions-1). It sets both subject filters to that
    # partition's subjects and the durable to `<durable>-<partition>`.
    partition: int = Field(default=0, ge=0)
    # Where a newly created durable starts. "all" (default): nothing published
    # before the alerter's first start is missed; "new": skip the stream's backlog.
    # An existing durable always resumes from its ack floor.
    deliver_policy: Literal["new", "all"] = "all"
    ack_wait_s: float = 30.0
    # Pull timeout of the consumers (seconds): how long one fetch waits when idle
    # (also bounds how long shutdown waits for the fetch in progress).
    fetch_timeout_s: float = 1.0
    # Sample events are handled in batches (one transaction per batch) of up to
    # batch_size messages: whatever waited while the previous batch was handled
    # ("natural batching", procwatch_messaging.pull). batch_timeout_ms only holds a
    # partial batch back while another is in flight, which the alerter (one batch at
    # a time, to keep stream order) never has.
    batch_size: int = Field(default=200, ge=1, le=5000)
    batch_timeout_ms: int = Field(default=20, ge=0, le=10_000)
    db_pool_min: int = 1
    db_pool_max: int = 4
    # Outbox relay: poll interval when not woken (publishes right after each commit).
    relay_poll_interval_s: float = 1.0
    # Transient failures (database, broker) are retried in place, keeping order;
    # the backoff doubles up to this cap.
    max_backoff_s: float = 10.0
    # Unexpected (non-transient) errors: attempts before the event is dead-lettered.
    max_attempts_on_error: int = 3
    # Server liveness (docs/alerts.md, "Offline servers"): the periodic job that declares servers
    # offline (server_offline) and resolves those alerts. One replica runs it at a time.
    offline_detection: bool = True
    offline_check_every_s: float = Field(default=1.0, gt=0, le=60)
    # Servers declared offline per run at most (the rest on the next run).
    offline_batch: int = Field(default=1000, ge=1, le=100_000)
    # Ingest counts as caught up (liveness may be judged) while its durable consumer on
    # AGENT_SAMPLES has at most this many messages pending or unacked ...
    offline_max_backlog: int = Field(default=10_000, ge=0)
    # ... and its oldest unacked message is at most this many seconds older than the stream's newest.
    offline_max_lag_s: float = Field(default=5.0, ge=0)
    # Extra wait after the pipeline is caught up again, on top of each server's offline_after_s.
    offline_grace_s: float = Field(default=0.0, ge=0)
    # Ingest's durable consumer on AGENT_SAMPLES (PROCWATCH_INGEST_DURABLE).
    ingest_durable: str = "procwatch-ingest"
    # Maintenance windows (docs/maintenance.md): how long the loaded windows are used before they are
    # read again (a window created, changed or ended through the API takes effect within this) ...
    maintenance_refresh_s: float = Field(default=5.0, ge=0, le=300)
    # ... and how often the job that notifies, once, the episodes still firing when their window ended runs.
    maintenance_check_every_s: float = Field(default=5.0, gt=0, le=300)
    # Episodes notified per run of that job at most (the rest on the next run).
    maintenance_batch: int = Field(default=1000, ge=1, le=100_000)
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _partitioned(self) -> AlerterSettings:
        if self.partition >= self.alerter_partitions:
            raise ValueError(f"partition {self.partition} outside 0..{self.alerter_partitions - 1}")
        if self.alerter_partitions > 1:
            self.sample_subject = subjects.partition_filter(subjects.SAMPLE_EVENTS_SUBJECTS, self.partition)
            self.process_subject = subjects.partition_filter(subjects.PROCESS_EVENTS_SUBJECTS, self.partition)
            self.durable = f"{self.durable}-{self.partition}"
        return self

    @property
    def ingest_durables(self) -> list[str]:
        """Ingest's durables on AGENT_SAMPLES, one per ingest partition."""
        return [ingest_durable(self.ingest_durable, k, self.ingest_partitions) for k in range(self.ingest_partitions)]

    @property
    def batch_timeout_s(self) -> float:
        return self.batch_timeout_ms / 1000
