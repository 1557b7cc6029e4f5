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


def server_id_from_subject(subject: str) -> int | None:
    """The trailing `<server_id>` of `agent.samples.<id>` / `agent.config.<id>`."""
    tail = subject.rsplit(".", 1)[-1]
    return int(tail) if tail.isdigit() and len(tail) < 19 else None
