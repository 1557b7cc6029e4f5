"""The schema, as SQLModel tables: the one description of every stored row.

Alembic migrations (`procwatch_db/migrations`) create and change the schema in
every real database; these classes describe the schema they produce (the
services query with raw SQL, not through these classes). A test
(tests/integration/test_schema.py) checks that the two agree.

The alert settings' columns of watched_processes are not spelled out here: one per
setting of the rule registry (`procwatch_domain.rules.SETTINGS`), see `_setting_column`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import Field, SQLModel

from procwatch_domain.rules import SETTINGS, Setting


def _now_column(**kw) -> Column:
    return Column(DateTime(timezone=True), nullable=False, server_default=text("now()"), **kw)


class Plan(SQLModel, table=True):
    __tablename__ = "plans"

    name: str = Field(sa_column=Column(String(32), primary_key=True))
    max_processes_per_server: int = Field(sa_column=Column(Integer, nullable=False))
    max_servers: int = Field(sa_column=Column(Integer, nullable=False))
    retention_days: int = Field(sa_column=Column(Integer, nullable=False))


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    email: str = Field(sa_column=Column(String(320), nullable=False, unique=True))
    plan: str = Field(sa_column=Column(String(32), ForeignKey("plans.name"), nullable=False))
    created_at: datetime | None = Field(default=None, sa_column=_now_column())


class ApiToken(SQLModel, table=True):
    __tablename__ = "api_tokens"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    user_id: int = Field(sa_column=Column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True))
    # sha256 of the bearer token, hex; the token itself is never stored.
    token_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    name: str = Field(sa_column=Column(String(100), nullable=False, server_default=""))
    created_at: datetime | None = Field(default=None, sa_column=_now_column())
    revoked_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))


class Server(SQLModel, table=True):
    __tablename__ = "servers"
    __table_args__ = (
        CheckConstraint("offline_after_s between 1 and 86400", name="ck_servers_offline_after_s"),
        # The alerter's due scan (services/alerter offline job): only servers that can go offline.
        Index("ix_servers_offline_due", "offline_deadline_at",
              postgresql_where=text("offline_since IS NULL AND alert_on_offline")),
        Index("ix_servers_offline_declared", "id", postgresql_where=text("offline_since IS NOT NULL")),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    user_id: int = Field(sa_column=Column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True))
    hostname: str = Field(sa_column=Column(String(255), nullable=False))
    last_agent_version: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    # sha256 of the agent key, hex; the key is shown once at creation.
    agent_key_hash: str = Field(sa_column=Column(String(64), nullable=False))
    created_at: datetime | None = Field(default=None, sa_column=_now_column())
    # Liveness (migration 0006, procwatch_domain.liveness): broker time of the newest authenticated
    # agent message, and that + offline_after_s (written together by ingest and the API).
    last_seen_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    offline_deadline_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    # The last_seen_at at which the alerter declared it offline; NULL while it is not.
    offline_since: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    offline_after_s: int = Field(default=30, sa_column=Column(Integer, nullable=False, server_default=text("30")))
    alert_on_offline: bool = Field(default=True, sa_column=Column(Boolean, nullable=False, server_default=text("true")))


class WatchedProcess(SQLModel, table=True):
    __tablename__ = "watched_processes"
    __table_args__ = (UniqueConstraint("server_id", "process_name", name="uq_watched_processes_server_name"),)

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    server_id: int = Field(sa_column=Column(BigInteger, ForeignKey("servers.id", ondelete="CASCADE"), nullable=False))
    user_id: int = Field(sa_column=Column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False))
    process_name: str = Field(sa_column=Column(String(100), nullable=False))
    enabled: bool = Field(default=True, sa_column=Column(Boolean, nullable=False, server_default=text("true")))
    # + one column per alert setting (after the class: `_setting_column`)
    last_count: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    last_cpu_pct: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    last_memory_pct: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    last_sample_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    # The newest sample's oldest start time: the "previous sample" the ingest
    # hands to the alerter for the restart rule, without reading history.
    last_oldest_start_unix: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    alerted_state: str | None = Field(default=None, sa_column=Column(String(32), nullable=True))
    # Sample time of the newest sample the alerter evaluated (migration 0002): a
    # redelivered or late, older sample event is skipped, so it never alerts twice.
    alert_evaluated_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    # Flap protection's run per firing-or-not condition, e.g. "cpu:2" (migration 0008,
    # procwatch_domain.alerts.format_streaks): written with alerted_state in the same statement.
    alert_streaks: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    # Maintained by ingest in the same transaction as the rows, so GET never
    # counts history (see docs/decisions.md).
    samples_total: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default=text("0")))
    created_at: datetime | None = Field(default=None, sa_column=_now_column())
    updated_at: datetime | None = Field(default=None, sa_column=_now_column())


def _setting_column(setting: Setting) -> Column:
    """The column of an alert setting: NOT NULL, its registry default as the server default
    (a plain string: rendered as a quoted literal, which PostgreSQL casts to the column type);
    a nullable setting (default null) is a nullable column without a server default."""
    if setting.is_flag:
        return Column(setting.name, Boolean, nullable=False, server_default=str(setting.default).lower())
    kind = Integer if setting.type is int else Float
    if setting.nullable:
        return Column(setting.name, kind, nullable=True)
    return Column(setting.name, kind, nullable=False, server_default=f"{setting.default:g}")


for _setting in SETTINGS:
    WatchedProcess.__table__.append_column(_setting_column(_setting))


# process_samples_id_seq's INCREMENT BY: each nextval owns the ids [v, v + SAMPLE_ID_BLOCK).
SAMPLE_ID_BLOCK = 1000


class ProcessSample(SQLModel, table=True):
    """Partitioned by day on recorded_at (migration 0003, `procwatch_db.partitions`,
    docs/retention.md): partitions `process_samples_pYYYYMMDD` plus `process_samples_default`.
    The primary key includes the partition key, as PostgreSQL requires."""

    __tablename__ = "process_samples"
    __table_args__ = (
        # Serves idempotent replays, "newest 100" (backward scan) and "last 24h" (range).
        UniqueConstraint("watched_process_id", "recorded_at", name="uq_process_samples_process_time"),
        {"postgresql_partition_by": "RANGE (recorded_at)"},
    )

    # Ids come from process_samples_id_seq, which hands out blocks of SAMPLE_ID_BLOCK
    # (migration 0004): ingest pre-allocates a batch's ids with one nextval per block.
    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    watched_process_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey("watched_processes.id", ondelete="CASCADE"), nullable=False)
    )
    count: int = Field(sa_column=Column(Integer, nullable=False))
    cpu_pct: float = Field(sa_column=Column(Float, nullable=False))
    memory_pct: float = Field(sa_column=Column(Float, nullable=False))
    oldest_start_unix: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    recorded_at: datetime = Field(sa_column=Column(DateTime(timezone=True), primary_key=True, nullable=False))



class OutboxEvent(SQLModel, table=True):
    """Events written in the same transaction as the change they describe.

    A relay publishes rows with `published_at IS NULL` to NATS after commit and
    then marks them; a crash between commit and publish only delays the event.
    `Nats-Msg-Id` is `msg_id` or `outbox-<id>`, so a re-publish after a crash is dropped by
    JetStream's duplicate window.
    """

    __tablename__ = "outbox_events"
    __table_args__ = (Index("ix_outbox_events_unpublished", "id", postgresql_where=text("published_at IS NULL")),)

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    subject: str = Field(sa_column=Column(String(255), nullable=False))
    # Nats-Msg-Id to publish with; NULL means `outbox-<id>`. Alerts set their
    # deterministic alert id here so JetStream drops any second copy.
    msg_id: str | None = Field(default=None, sa_column=Column(String(200), nullable=True))
    payload: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime | None = Field(default=None, sa_column=_now_column())
    published_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))


class Alert(SQLModel, table=True):
    """Alert history: one row per episode (firing -> resolved); restarts are one-shot rows.
    A server-level alert (server_offline) has watched_process_id NULL."""

    __tablename__ = "alerts"
    __table_args__ = (
        Index("ix_alerts_process_newest", "watched_process_id", "id"),
        Index("ix_alerts_server_newest", "server_id", "id", postgresql_where=text("watched_process_id IS NULL")),
        # At most one open server-level episode per server and type.
        Index(
            "uq_alerts_open_server_episode", "server_id", "type", unique=True,
            postgresql_where=text("resolved_at IS NULL AND watched_process_id IS NULL"),
        ),
        # At most one open episode per process and condition.
        Index(
            "uq_alerts_open_episode", "watched_process_id", "type", unique=True,
            postgresql_where=text("resolved_at IS NULL AND type <> 'process_restarted'"),
        ),
        # The maintenance-ended job (migration 0009): suppressed episodes still waiting for their notification.
        Index("ix_alerts_suppressed_open", "id",
              postgresql_where=text("suppressed AND resolved_at IS NULL AND unsuppressed_at IS NULL")),
        # The reminders job: open episodes only.
        Index("ix_alerts_open", "user_id",
              postgresql_where=text("resolved_at IS NULL AND type <> 'process_restarted'")),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    watched_process_id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger, ForeignKey("watched_processes.id", ondelete="CASCADE"), nullable=True),
    )
    server_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    user_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    type: str = Field(sa_column=Column(String(32), nullable=False))
    state: str = Field(sa_column=Column(String(16), nullable=False))
    value: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    threshold: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    started_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    resolved_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    resolve_reason: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    # Nats-Msg-Id of the firing event: a redelivered sample finds it and writes nothing.
    event_id: str = Field(sa_column=Column(String(200), nullable=False, unique=True))
    # Server-level alerts: the hostname at firing (a deleted server's "resolved" still names it).
    hostname: str | None = Field(default=None, sa_column=Column(String(255), nullable=True))
    # Migration 0009 (docs/maintenance.md): the episode started inside a maintenance window (nobody was
    # notified), and when its one notification after the window was written.
    suppressed: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, server_default=text("false")))
    unsuppressed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    # The acknowledgement (POST /alerts/{id}/ack): who (user id), when, and an optional note.
    acknowledged_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    acknowledged_by: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    ack_note: str | None = Field(default=None, sa_column=Column(String(500), nullable=True))


class MaintenanceWindow(SQLModel, table=True):
    """A user's maintenance window (migration 0009, procwatch_domain.maintenance): one-off
    (starts_at .. ends_at) or recurring (rrule + duration_s, wall-clock in `timezone`)."""

    __tablename__ = "maintenance_windows"
    __table_args__ = (
        CheckConstraint(
            "(rrule is null and ends_at is not null and duration_s is null)"
            " or (rrule is not null and ends_at is null and duration_s is not null)",
            name="ck_maintenance_windows_kind",
        ),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    user_id: int = Field(sa_column=Column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True))
    name: str = Field(sa_column=Column(String(100), nullable=False))
    starts_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    ends_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    rrule: str | None = Field(default=None, sa_column=Column(String(500), nullable=True))
    duration_s: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    timezone: str = Field(default="UTC", sa_column=Column(String(64), nullable=False, server_default="UTC"))
    # NULL and NULL: the whole account.
    server_ids: list[int] | None = Field(default=None, sa_column=Column(ARRAY(BigInteger), nullable=True))
    process_ids: list[int] | None = Field(default=None, sa_column=Column(ARRAY(BigInteger), nullable=True))
    # Ended early: the occurrence in effect then ends then.
    ended_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    # End of the last occurrence (NULL: a rule without end): the alerter loads what can still apply.
    effective_until: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    created_at: datetime | None = Field(default=None, sa_column=_now_column())
    updated_at: datetime | None = Field(default=None, sa_column=_now_column())


class Channel(SQLModel, table=True):
    """A user's notification channel (migration 0007, docs/notifications.md).

    The target (a URL, or the JSON list of email addresses) and the webhook signing
    secret are stored encrypted (`procwatch_domain.crypto`): Slack and Discord URLs
    carry tokens. `target_hint` is the masked form shown after creation.
    """

    __tablename__ = "channels"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    user_id: int = Field(sa_column=Column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True))
    type: str = Field(sa_column=Column(String(16), nullable=False))
    name: str = Field(sa_column=Column(String(100), nullable=False))
    format: str = Field(default="standard", sa_column=Column(String(16), nullable=False, server_default="standard"))
    target_encrypted: str = Field(sa_column=Column(Text, nullable=False))
    target_hint: str = Field(sa_column=Column(String(200), nullable=False))
    secret_encrypted: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # NULL = every alert type / every server of the user.
    alert_types: list[str] | None = Field(default=None, sa_column=Column(ARRAY(Text), nullable=True))
    server_ids: list[int] | None = Field(default=None, sa_column=Column(ARRAY(BigInteger), nullable=True))
    send_resolved: bool = Field(default=True, sa_column=Column(Boolean, nullable=False, server_default=text("true")))
    enabled: bool = Field(default=True, sa_column=Column(Boolean, nullable=False, server_default=text("true")))
    # Set by the notifier when it disables the channel (e.g. a receiver answering 410 Gone).
    disabled_reason: str | None = Field(default=None, sa_column=Column(String(200), nullable=True))
    repeat_every_s: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    created_at: datetime | None = Field(default=None, sa_column=_now_column())
    updated_at: datetime | None = Field(default=None, sa_column=_now_column())
    # Chat burst state (procwatch_notify.digest), shared by the notifier replicas: when the
    # channel's last message went out and how many the current burst has had.
    paced_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    burst_streak: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default=text("0")))


class Delivery(SQLModel, table=True):
    """One alert event to one channel: the notifier's attempts and their outcome."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("channel_id", "alert_id", name="uq_deliveries_channel_alert"),
        # The sender's scan: pending rows that are due.
        Index("ix_deliveries_pending_due", "next_attempt_at", postgresql_where=text("status = 'pending'")),
        # GET /channels/{id}/deliveries, newest first.
        Index("ix_deliveries_channel_newest", "channel_id", text("id DESC")),
        # The reminders job: a channel's deliveries of one episode (migration 0009).
        Index("ix_deliveries_channel_episode", "channel_id", "episode_id",
              postgresql_where=text("episode_id IS NOT NULL")),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    channel_id: int = Field(sa_column=Column(BigInteger, ForeignKey("channels.id", ondelete="CASCADE"), nullable=False))
    alert_id: str = Field(sa_column=Column(String(200), nullable=False))
    alert_type: str = Field(sa_column=Column(String(32), nullable=False))
    alert_state: str = Field(sa_column=Column(String(16), nullable=False))
    payload: str = Field(sa_column=Column(Text, nullable=False))
    # pending | delivered | failed | dead (gave up) | skipped
    status: str = Field(sa_column=Column(String(16), nullable=False))
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default=text("0")))
    next_attempt_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    last_status_code: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    last_error: str | None = Field(default=None, sa_column=Column(String(300), nullable=True))
    created_at: datetime | None = Field(default=None, sa_column=_now_column())
    delivered_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    # The firing event id of the episode a firing delivery is about (reminders find it), and
    # 0 for the first notification, n for the n-th reminder.
    episode_id: str | None = Field(default=None, sa_column=Column(String(200), nullable=True))
    reminder: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default=text("0")))


class WebSession(SQLModel, table=True):
    """A dashboard sign-in (procwatch_api.web.sessions): the cookie holds the id, this only its sha256."""

    __tablename__ = "web_sessions"
    __table_args__ = (UniqueConstraint("session_hash", name="uq_web_sessions_session_hash"),)

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    session_hash: str = Field(sa_column=Column(String(64), nullable=False))
    user_id: int = Field(sa_column=Column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True))
    created_at: datetime | None = Field(default=None, sa_column=_now_column())
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class WebSigninLink(SQLModel, table=True):
    """A one-time sign-in link (`procwatch up` prints one): sha256 of its token, short expiry, deleted when used."""

    __tablename__ = "web_signin_links"
    __table_args__ = (UniqueConstraint("token_hash", name="uq_web_signin_links_token_hash"),)

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    token_hash: str = Field(sa_column=Column(String(64), nullable=False))
    user_id: int = Field(sa_column=Column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False))
    created_at: datetime | None = Field(default=None, sa_column=_now_column())
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


PLANS: dict[str, tuple[int, int, int]] = {
    # name: (processes per server, retention days, servers per user)
    "hobby": (3, 1, 5),
    "pro": (10, 7, 25),
    "team": (25, 30, 100),
    "scale": (50, 90, 500),
}

metadata = SQLModel.metadata
