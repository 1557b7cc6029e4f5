"""Declare every JetStream stream of the project, idempotently.

Each service calls `ensure_streams` at start, so whichever starts first creates
them and a restart changes nothing (an existing stream is updated in place to
the configured limits).

AGENT_SAMPLES is a work queue: every agent message carries its key
(`Authorization: Bearer pwa_…`, contract v1), so a message is deleted as soon as
ingest acks it instead of resting for a day (docs/decisions.md). A work-queue
stream admits one consumer per subject: ingest's durable is the only reader.
A stream's retention cannot be changed in place, so an AGENT_SAMPLES created
with limits retention (before this change) is recreated once nothing in it
waits for a consumer (`_migrate_retention`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from procwatch_contracts import subjects

log = logging.getLogger("procwatch.streams")


@dataclass(frozen=True)
class StreamLimits:
    agent_samples_max_age_s: float = 24 * 3600
    events_max_age_s: float = 7 * 24 * 3600
    # JetStream drops a re-sent message with the same Nats-Msg-Id inside this window.
    duplicate_window_s: float = 300
    replicas: int = 1


def stream_configs(limits: StreamLimits = StreamLimits()) -> list[StreamConfig]:
    def cfg(name: str, subject: str | list[str], max_age: float,
            retention: RetentionPolicy = RetentionPolicy.LIMITS) -> StreamConfig:
        return StreamConfig(
            name=name,
            subjects=[subject] if isinstance(subject, str) else subject,
            storage=StorageType.FILE,
            retention=retention,
            discard=DiscardPolicy.OLD,
            max_age=max_age,
            duplicate_window=limits.duplicate_window_s,
            num_replicas=limits.replicas,
        )

    return [
        cfg(subjects.AGENT_SAMPLES_STREAM, subjects.AGENT_SAMPLES_SUBJECTS, limits.agent_samples_max_age_s,
            RetentionPolicy.INTEREST),
        cfg(subjects.SAMPLE_EVENTS_STREAM, subjects.SAMPLE_EVENTS_SUBJECTS, limits.events_max_age_s),
        cfg(subjects.ALERTS_STREAM, [subjects.ALERTS_SUBJECTS, subjects.ALERT_ACKS_SUBJECTS], limits.events_max_age_s),
        cfg(subjects.PROCESS_EVENTS_STREAM, subjects.PROCESS_EVENTS_SUBJECTS, limits.events_max_age_s),
        cfg(subjects.DEADLETTER_STREAM, subjects.DEADLETTER_SUBJECTS, limits.events_max_age_s),
    ]


async def ensure_streams(js: JetStreamContext, limits: StreamLimits = StreamLimits()) -> None:
    for config in stream_configs(limits):
        try:
            await js.add_stream(config)
        except BadRequestError:
            # Exists with other settings: bring it to the configured ones.
            info = await js.stream_info(config.name)
            if info.config.retention != config.retention:
                await _migrate_retention(js, config, info)
            else:
                await js.update_stream(config)
        log.debug("stream ready", extra={"stream": config.name})


async def _migrate_retention(js: JetStreamContext, config: StreamConfig, info) -> None:
    """Recreate a stream whose retention differs from `config` (JetStream cannot change it in place),
    but only once no message in it still waits for a consumer: until then it is left as it is, and
    the next start tries again. Its consumers go with it; each service recreates its own."""
    consumers = [c async for c in _consumers(js, config.name)]
    waiting = sum(c.num_pending + c.num_ack_pending for c in consumers)
    if waiting or (info.state.messages and not consumers):
        log.warning("stream keeps its old retention until its messages are consumed",
                    extra={"stream": config.name, "waiting": waiting or info.state.messages})
        return
    await js.delete_stream(config.name)
    try:
        await js.add_stream(config)
    except BadRequestError:
        pass  # another service migrated it at the same moment (same config)
    log.warning("stream recreated with a new retention",
                extra={"stream": config.name, "retention": str(config.retention)})


async def _consumers(js: JetStreamContext, stream: str):
    offset = 0
    while True:
        page = await js.consumers_info(stream, offset=offset)
        for consumer in page:
            yield consumer
        if not page:
            return
        offset += len(page)
