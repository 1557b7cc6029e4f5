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

Cluster and partitions (docs/scaling.md): `replicas` is each stream's replica count (3 on a 3-node
cluster, PROCWATCH_NATS_REPLICAS); with more than one ingest (alerter) partition, AGENT_SAMPLES
(SAMPLE_EVENTS and PROCESS_EVENTS) store `<prefix>.<server_id>` as `<prefix>.<partition>.<server_id>`
through a subject transform, one durable per partition. Every service declares the same streams, so
these come from the shared settings (`limits_for`). A transform changes in place, but only once no
consumer of the stream has a message waiting: a message stored in the old layout would be invisible
to the new partition's consumers (`_migrate_transform`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig, SubjectTransform
from nats.js.errors import BadRequestError

from procwatch_contracts import subjects
from procwatch_runtime.settings import ConnectionSettings

log = logging.getLogger("procwatch.streams")


@dataclass(frozen=True)
class StreamLimits:
    agent_samples_max_age_s: float = 24 * 3600
    events_max_age_s: float = 7 * 24 * 3600
    # JetStream drops a re-sent message with the same Nats-Msg-Id inside this window.
    duplicate_window_s: float = 300
    replicas: int = 1
    # Partitions by server of AGENT_SAMPLES (ingest) and of SAMPLE_EVENTS + PROCESS_EVENTS (the alerter).
    ingest_partitions: int = 1
    alerter_partitions: int = 1


def limits_for(settings: ConnectionSettings, limits: StreamLimits = StreamLimits()) -> StreamLimits:
    """`limits` with the deployment's replicas and partition counts (the same for every service)."""
    return replace(limits, replicas=settings.nats_replicas, ingest_partitions=settings.ingest_partitions,
                   alerter_partitions=settings.alerter_partitions)


def ingest_durable(base: str, partition: int, partitions: int) -> str:
    """Ingest's durable on AGENT_SAMPLES for one partition (`base` itself when unpartitioned)."""
    return base if partitions == 1 else f"{base}-{partition}"


def stream_configs(limits: StreamLimits = StreamLimits()) -> list[StreamConfig]:
    def cfg(name: str, subject: str | list[str], max_age: float,
            retention: RetentionPolicy = RetentionPolicy.LIMITS, partitions: int = 1) -> StreamConfig:
        return StreamConfig(
            name=name,
            subjects=[subject] if isinstance(subject, str) else subject,
            storage=StorageType.FILE,
            retention=retention,
            discard=DiscardPolicy.OLD,
            max_age=max_age,
            duplicate_window=limits.duplicate_window_s,
            num_replicas=limits.replicas,
            subject_transform=SubjectTransform(src=subject, dest=subjects.partition_transform(subject, partitions))
            if partitions > 1 else None,
        )

    return [
        cfg(subjects.AGENT_SAMPLES_STREAM, subjects.AGENT_SAMPLES_SUBJECTS, limits.agent_samples_max_age_s,
            RetentionPolicy.INTEREST, limits.ingest_partitions),
        cfg(subjects.SAMPLE_EVENTS_STREAM, subjects.SAMPLE_EVENTS_SUBJECTS, limits.events_max_age_s,
            partitions=limits.alerter_partitions),
        cfg(subjects.ALERTS_STREAM, [subjects.ALERTS_SUBJECTS, subjects.ALERT_ACKS_SUBJECTS], limits.events_max_age_s),
        cfg(subjects.PROCESS_EVENTS_STREAM, subjects.PROCESS_EVENTS_SUBJECTS, limits.events_max_age_s,
            partitions=limits.alerter_partitions),
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
            elif _transform_of(info.config) != _transform_of(config):
                await _migrate_transform(js, config)
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


def _transform_of(config: StreamConfig) -> tuple[str, str] | None:
    t = config.subject_transform
    return (t.src, t.dest) if t is not None and t.dest else None


async def _migrate_transform(js: JetStreamContext, config: StreamConfig) -> None:
    """Change a stream's partitioning (its subject transform) in place once none of its consumers has a
    message waiting; until then the stream keeps its layout (and its old consumers read it), and the
    next start tries again."""
    waiting = sum([c.num_pending + c.num_ack_pending async for c in _consumers(js, config.name)])
    if waiting:
        log.warning("stream keeps its partitioning until its consumers caught up",
                    extra={"stream": config.name, "waiting": waiting})
        return
    await js.update_stream(config)
    log.warning("stream partitioning changed", extra={
        "stream": config.name, "transform": config.subject_transform.dest if config.subject_transform else None})


async def _consumers(js: JetStreamContext, stream: str):
    offset = 0
    while True:
        page = await js.consumers_info(stream, offset=offset)
        for consumer in page:
            yield consumer
        if not page:
            return
        offset += len(page)
