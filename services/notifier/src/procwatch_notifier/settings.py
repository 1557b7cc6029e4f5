"""Notifier settings: the shared connection URLs and health endpoint (WorkerSettings) plus
`PROCWATCH_NOTIFIER_*`, and `PROCWATCH_SMTP_URL` (shared with anything else that sends mail)."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from procwatch_contracts import subjects
from procwatch_notify.schedule import DEFAULT_DELAYS_S, GIVE_UP_AFTER_S
from procwatch_notify.send import DEFAULT_TIMEOUT_S, SendSettings
from procwatch_runtime.settings import WorkerSettings


class NotifierSettings(WorkerSettings):
    model_config = SettingsConfigDict(env_prefix="PROCWATCH_NOTIFIER_", extra="ignore")

    # Durable consumer on the ALERTS stream (one durable shared by all replicas: each
    # alert is handled by one of them; the deliveries table orders what each channel gets).
    durable: str = "notifier"
    # Subject filter of the consumer (all alerts; tests narrow it to one server).
    subject: str = subjects.ALERTS_SUBJECTS
    # Where a newly created durable starts: "all" (default) also delivers the alerts the
    # stream holds from before the notifier's first start; "new" skips them.
    deliver_policy: Literal["new", "all"] = "all"
    # Seconds JetStream waits for an ack before redelivering (a batch waiting out a database
    # outage reports progress meanwhile).
    ack_wait_s: float = 30.0
    # How long one fetch waits when idle (also bounds how long shutdown waits for it).
    fetch_timeout_s: float = 1.0
    # Alert events inserted per transaction: whatever waited, up to this many.
    batch_size: int = Field(default=500, ge=1, le=5000)
    # Send to private, loopback and link-local addresses, and over plain http to them
    # (`procwatch up` and the tests; never in production: SSRF). Cloud metadata stays refused.
    allow_private_targets: bool = False
    # SMTP server for email channels: smtp://user:pass@host:port (STARTTLS when offered) or
    # smtps://user:pass@host:port. Unset: email deliveries fail and are retried.
    smtp_url: str | None = Field(default=None, validation_alias=AliasChoices("PROCWATCH_SMTP_URL", "smtp_url"))
    # From address of alert emails.
    mail_from: str = "procwatch@localhost"
    # Seconds one attempt (DNS, connect, TLS, request, response) may take.
    request_timeout_s: float = Field(default=DEFAULT_TIMEOUT_S, gt=0, le=60)
    # Channels sent to at the same time (one request in flight per channel).
    max_concurrent_channels: int = Field(default=200, ge=1, le=10_000)
    # Deliveries of one channel claimed at once (sent in order, one at a time); chat channels
    # claim more so a burst can become one digest.
    claim_per_channel: int = Field(default=50, ge=1, le=1000)
    # The same for Slack and Discord channels (a whole burst becomes one digest).
    claim_per_chat_channel: int = Field(default=500, ge=1, le=5000)
    # A claimed delivery is another replica's (or this one's after a restart) to send once its
    # claim is this old: how long a delivery cut short by a crash waits before it is sent again.
    claim_lease_s: float = Field(default=60.0, ge=5, le=3600)
    # How often the sender looks for due deliveries when nothing woke it (retries come due).
    poll_interval_s: float = Field(default=1.0, gt=0, le=60)
    # Retry schedule after a failed attempt (seconds, the last one repeats), +-10 % jitter,
    # given up (`dead`) once a delivery is older than give_up_after_s. See docs/notifications.md.
    retry_delays_s: list[float] = Field(default_factory=lambda: list(DEFAULT_DELAYS_S), min_length=1)
    # Age (seconds since the delivery was created) after which a failing delivery is given up.
    give_up_after_s: float = Field(default=GIVE_UP_AFTER_S, gt=0)
    # Reminders (channels' repeat_every_s, docs/notifications.md): how often the job looks for due
    # ones, and how many it writes per run at most (the rest on the next run).
    reminder_check_every_s: float = Field(default=10.0, gt=0, le=3600)
    reminder_batch: int = Field(default=1000, ge=1, le=100_000)
    # PostgreSQL pool of the consumer and the sender.
    db_pool_min: int = 1
    db_pool_max: int = 10
    # Log level of the notifier's loggers.
    log_level: str = "INFO"

    def send_settings(self) -> SendSettings:
        return SendSettings(allow_private=self.allow_private_targets, timeout_s=self.request_timeout_s,
                            smtp_url=self.smtp_url, mail_from=self.mail_from)
