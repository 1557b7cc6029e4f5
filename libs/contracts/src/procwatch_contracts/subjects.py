"""Subject and stream names of the broker API (see docs/operators-guide.md)."""

from __future__ import annotations

# Agents publish samples; ingest consumes them from the AGENT_SAMPLES stream.
AGENT_SAMPLES_STREAM = "AGENT_SAMPLES"
AGENT_SAMPLES_SUBJECTS = "agent.samples.*"

# Agents ask for their watch list (request-reply, not a stream).
AGENT_CONFIG_SUBJECTS = "agent.config.*"

# Ingest publishes one event per committed agent message; the alerter consumes it.
SAMPLE_EVENTS_STREAM = "SAMPLE_EVENTS"
SAMPLE_EVENTS_SUBJECTS = "samples.recorded.*"

# The alerter publishes alert events; integrations consume them. A process's alerts go on
# `alerts.<server_id>.<process_id>`, a server's own (server_offline) on `alerts.<server_id>.server`.
ALERTS_STREAM = "ALERTS"
ALERTS_SUBJECTS = "alerts.*.*"
SERVER_ALERTS_TOKEN = "server"
# Acknowledgements (AlertAcknowledged) of those alerts, on the same stream: `alerts.<server_id>.<process_id>.ack`.
ALERT_ACKS_SUBJECTS = "alerts.*.*.ack"

# The API publishes process lifecycle events (through its outbox).
PROCESS_EVENTS_STREAM = "PROCESS_EVENTS"
PROCESS_EVENTS_SUBJECTS = "processes.changed.*"

# Messages no consumer can ever process, with a `Procwatch-Reason` header.
DEADLETTER_STREAM = "DEADLETTER"
DEADLETTER_SUBJECTS = "deadletter.>"
DEADLETTER_AGENT_SAMPLES = "deadletter.agent.samples"
DEADLETTER_SAMPLE_EVENTS = "deadletter.samples.recorded"
DEADLETTER_PROCESS_EVENTS = "deadletter.processes.changed"
DEADLETTER_ALERTS = "deadletter.alerts"

REASON_HEADER = "Procwatch-Reason"
# On a dead letter: where the message was published, and its own Nats-Msg-Id (agent samples).
ORIGINAL_SUBJECT_HEADER = "Procwatch-Original-Subject"
ORIGINAL_MSG_ID_HEADER = "Procwatch-Original-Msg-Id"


def agent_samples(server_id: int) -> str:
    return f"agent.samples.{server_id}"


def agent_config(server_id: int) -> str:
    return f"agent.config.{server_id}"


def samples_recorded(server_id: int) -> str:
    return f"samples.recorded.{server_id}"


def alerts(server_id: int, process_id: int) -> str:
    return f"alerts.{server_id}.{process_id}"


def server_alerts(server_id: int) -> str:
    return f"alerts.{server_id}.{SERVER_ALERTS_TOKEN}"


def alert_acks(server_id: int, process_id: int | None) -> str:
    """Where an alert's acknowledgements go: its alert subject + `.ack` (process None: a server's own)."""
    return (alerts(server_id, process_id) if process_id is not None else server_alerts(server_id)) + ".ack"


def processes_changed(server_id: int) -> str:
    return f"processes.changed.{server_id}"


# Partitions by server (docs/scaling.md): a stream's subject transform rewrites `<prefix>.<server_id>` to
# `<prefix>.<partition>.<server_id>` with NATS' deterministic `partition(n, 1)` mapping, so one server
# always lands in one partition and one consumer per partition keeps each server's order. The server id
# stays the last token.
_FNV32_OFFSET, _FNV32_PRIME = 0x811C9DC5, 0x01000193


def partition_transform(subject_pattern: str, partitions: int) -> str:
    """The transform destination of `<prefix>.*` into `partitions` partitions keyed on the server id."""
    prefix = subject_pattern.removesuffix(".*")
    return f"{prefix}.{{{{partition({partitions},1)}}}}.{{{{wildcard(1)}}}}"


def partition_filter(subject_pattern: str, partition: int) -> str:
    """The stored subjects of one partition of `<prefix>.*`: `<prefix>.<partition>.*`."""
    return f"{subject_pattern.removesuffix('.*')}.{partition}.*"


def fnv1a_32(data: bytes) -> int:
    h = _FNV32_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV32_PRIME) & 0xFFFFFFFF
    return h


def partition_of(server_id: int, partitions: int) -> int:
    """The partition NATS' `partition(n, 1)` puts `server_id` in: FNV-1a (32 bit) of the token, mod n."""
    return fnv1a_32(str(server_id).encode()) % partitions


def server_id_from_subject(subject: str) -> int | None:
    """The trailing `<server_id>` of `agent.samples.<id>` / `agent.config.<id>`."""
    tail = subject.rsplit(".", 1)[-1]
    return int(tail) if tail.isdigit() and len(tail) < 19 else None
