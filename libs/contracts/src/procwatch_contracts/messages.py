"""Message shapes (v1). Strict: a wrong type is an error, never silently coerced."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, create_model

from procwatch_domain import liveness, rules

MAX_PROCESSES_PER_MESSAGE = 1000
MAX_MESSAGE_BYTES = 1024 * 1024

# Bounds of a reading (docs/ingest.md, "Sample bounds"). cpu_pct is per-core percent like
# `ps`, summed over the PIDs: at most 100 per core, for up to 100 000 cores. memory_pct sums
# RSS, which counts shared pages once per PID: up to 10 000 times the machine's memory.
# Generous for any real host; a value beyond is a broken or hostile agent, never stored.
MAX_CORES = 100_000
MAX_CPU_PCT = 100.0 * MAX_CORES
MAX_MEMORY_PCT = 100.0 * 10_000

CpuPercent = Annotated[float, Field(ge=0, le=MAX_CPU_PCT, allow_inf_nan=False)]
MemoryPercent = Annotated[float, Field(ge=0, le=MAX_MEMORY_PCT, allow_inf_nan=False)]
NonNegativeInt = Annotated[int, Field(ge=0, le=2**31 - 1)]
UnixTime = Annotated[int, Field(ge=0, le=2**62)]


class _Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


# --- agent -> ingest -------------------------------------------------------


class ProcessReading(_Message):
    """One watched name on one tick: all matching PIDs summed."""

    process_name: Annotated[str, Field(min_length=1, max_length=100)]
    count: NonNegativeInt
    # Per-core percent like `ps`, so a busy multi-threaded process may exceed 100;
    # summed RSS counts shared pages once per PID, so memory may too.
    cpu_pct: CpuPercent
    memory_pct: MemoryPercent
    oldest_start_unix: UnixTime | None


class AgentSample(_Message):
    """Subject `agent.samples.<server_id>`; headers `Authorization: Bearer <key>`, `Nats-Msg-Id`."""

    v: Literal[1]
    server_id: Annotated[int, Field(ge=1, le=2**63 - 1)]
    agent_version: Annotated[str, Field(min_length=1, max_length=64)]
    sampled_at: AwareDatetime
    processes: Annotated[list[ProcessReading], Field(max_length=MAX_PROCESSES_PER_MESSAGE)]


class WatchListRequest(_Message):
    """Request on `agent.config.<server_id>` (header `Authorization: Bearer <key>`)."""

    v: Literal[1] = 1
    agent_version: str | None = None


class WatchListReply(_Message):
    v: Literal[1] = 1
    server_id: int
    process_names: list[str]
    interval_seconds: float
    error: str | None = None


# --- ingest -> alerter -----------------------------------------------------


# A process's alert settings: one field per setting of the rule registry
# (procwatch_domain.rules.SETTINGS), in its order. Each defaults to the registry's default, so
# a message written before a setting existed still parses (and means what it meant then).
ProcessAlertConfig = create_model(
    "ProcessAlertConfig",
    __base__=_Message,
    __module__=__name__,
    **{s.name: (s.annotation, s.default) for s in rules.SETTINGS},  # type: ignore[call-overload]
)


class RecordedSample(_Message):
    """One committed sample, with what the alerter needs to decide without a database read."""

    sample_id: int
    watched_process_id: int
    process_name: str
    count: int
    cpu_pct: float
    memory_pct: float
    oldest_start_unix: int | None
    recorded_at: datetime
    # The sample before this one in time order (None for the first sample).
    previous_count: int | None
    previous_oldest_start_unix: int | None
    previous_recorded_at: datetime | None
    # False when the sample arrived after a newer one: stored, but never alerts.
    is_latest: bool
    config: ProcessAlertConfig
    # The process's alerted_state as committed with this sample, before the alerter judges it
    # (the live view's status; procwatch_domain.status). None from producers that predate it.
    alerted_state: str | None = None


class SampleRecorded(_Message):
    """Subject `samples.recorded.<server_id>`: one per committed agent message."""

    v: Literal[1] = 1
    server_id: int
    hostname: str
    user_id: int
    agent_version: str
    sampled_at: datetime
    samples: list[RecordedSample]
    # The broker's time of the newest message from this server in ingest's batch: the server's
    # liveness time (its last_seen_at; the live view's `server` event). None from older producers.
    server_seen_at: datetime | None = None


# --- api -> alerter, agents -----------------------------------------------


class ProcessChanged(_Message):
    """Subject `processes.changed.<server_id>`: a watched process was created, updated or deleted."""

    v: Literal[1] = 1
    event_id: int
    change: Literal["created", "updated", "deleted"]
    server_id: int
    user_id: int
    process_id: int
    process_name: str
    enabled: bool
    config: ProcessAlertConfig
    # What was firing when the change committed: on delete the row is gone, so
    # this is how the alerter knows which alerts to resolve.
    alerted_state: str | None = None
    # Set when the server itself is being deleted (its row is gone when the
    # alerter resolves the process's alerts); otherwise read from the server.
    hostname: str | None = None
    occurred_at: datetime


# --- alerter -> integrations ----------------------------------------------

# One per rule of the registry, plus the server-level types (procwatch_domain.liveness).
AlertType = Literal[liveness.ALL_ALERT_TYPES]  # type: ignore[valid-type]
AlertState = Literal["firing", "resolved"]


class AlertServer(_Message):
    id: int
    hostname: str


class AlertProcess(_Message):
    id: int
    process_name: str


class AlertEvent(_Message):
    """Subject `alerts.<server_id>.<process_id>` (a process's alert) or `alerts.<server_id>.server`
    (a server-level alert: `process` is null, e.g. `server_offline`), stream ALERTS, `Nats-Msg-Id` = `id`.

    `server_offline`: `value` = seconds since the server was last seen (at firing), `threshold` =
    its offline_after_s; resolve reasons `recovered`, `flag_disabled`, `deleted`.

    Maintenance and reminders (docs/maintenance.md, docs/notifications.md): `suppressed` is true
    for a transition inside a maintenance window (recorded, published, never notified). When the
    window ends, an episode still firing is published once more, `state` firing, `reason`
    `maintenance_ended`, with `episode_id` = the id of its (suppressed) firing event. A reminder
    (the notifier's, never on the broker) carries `reminder` = n >= 1 and id
    `<episode_id>.reminder-<n>`; the first notification has `reminder` 0."""

    v: Literal[1] = 1
    id: str
    type: AlertType
    state: AlertState
    occurred_at: datetime
    user_id: int
    server: AlertServer
    process: AlertProcess | None = None
    value: float | None = None
    threshold: float | None = None
    sample: dict | None = None
    reason: str | None = None
    suppressed: bool = False
    # The firing event that opened the episode, when this event is not it (maintenance_ended, reminders).
    episode_id: str | None = None
    reminder: Annotated[int, Field(ge=0)] = 0


class AlertAcknowledged(_Message):
    """Subject `alerts.<server_id>.<process_id>.ack` (`alerts.<server_id>.server.ack` for a server-level
    alert), stream ALERTS, `Nats-Msg-Id` = `id`: an alert episode was acknowledged (`acknowledged`
    true: by `by_user_id` at `occurred_at`, with `note`) or un-acknowledged (false).

    `alert_id` is the history row's id (GET .../alerts, POST /alerts/{id}/ack); `episode_id` the id
    of the episode's firing AlertEvent. Not an AlertEvent: the notifier, which filters `alerts.*.*`,
    never sees it; an integration that wants both subscribes to `alerts.>`."""

    v: Literal[1] = 1
    id: str
    alert_id: int
    episode_id: str
    type: AlertType
    acknowledged: bool
    occurred_at: datetime
    user_id: int
    by_user_id: int
    note: str | None = None
    server: AlertServer
    process: AlertProcess | None = None
