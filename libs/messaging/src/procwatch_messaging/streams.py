"""Declare every JetStream stream of the project, idempotently.

Each service calls `ensure_streams` at start, so whichever starts first creates
them and a restart changes nothing (an existing stream is updated in place to
the configured limits).
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
    def cfg(name: str, subject: str, max_age: float) -> StreamConfig:
        return StreamConfig(
            name=name,
            subjects=[subject],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD,
            max_age=max_age,
            duplicate_window=limits.duplicate_window_s,
            num_replicas=limits.replicas,
        )

    return [
        cfg(subjects.AGENT_SAMPLES_STREAM, subjects.AGENT_SAMPLES_SUBJECTS, limits.agent_samples_max_age_s),
        cfg(subjects.SAMPLE_EVENTS_STREAM, subjects.SAMPLE_EVENTS_SUBJECTS, limits.events_max_age_s),
        cfg(subjects.ALERTS_STREAM, subjects.ALERTS_SUBJECTS, limits.events_max_age_s),
        cfg(subjects.PROCESS_EVENTS_STREAM, subjects.PROCESS_EVENTS_SUBJECTS, limits.events_max_age_s),
        cfg(subjects.DEADLETTER_STREAM, subjects.DEADLETTER_SUBJECTS, limits.events_max_age_s),
    ]


async def ensure_streams(js: JetStreamContext, limits: StreamLimits = StreamLimits()) -> None:
    for config in stream_configs(limits):
        try:
            await js.add_stream(config)
        except BadRequestError:
            # Exists with other settings: bring it to the configured ones.
            await js.update_stream(config)
        log.debug("stream ready", extra={"stream": config.name})
