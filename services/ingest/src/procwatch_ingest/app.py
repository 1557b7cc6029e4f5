"""Wiring of the ingest service (`procwatch ingest` runs `main()`): what runs, handed to the worker
runtime (procwatch_messaging.worker), which connects, declares the streams, drains and reports health.

    AGENT_SAMPLES --(durable pull consumer, BatchPullLoop, batches, manual ack)--> SampleBatchHandler
    agent.config.* --(core request-reply, queue group)--> WatchListHandler
    SampleBatchHandler --> samples.recorded.<server_id> (SAMPLE_EVENTS), deadletter.agent.samples
    jobs: ingest-stats (every replica), retention (procwatch_ingest.retention, one replica at a time)
"""

from __future__ import annotations

import logging

import uvloop

from faststream import AckPolicy
from faststream.nats import JStream, NatsBroker, NatsMessage, PullSub
from faststream.params import NoCast
from nats.js.api import AckPolicy as AckPolicyNats
from nats.js.api import ConsumerConfig, DeliverPolicy

from procwatch_contracts import subjects
from procwatch_contracts.messages import (
    AgentSample,
    AlertAcknowledged,
    AlertEvent,
    SampleRecorded,
    WatchListReply,
    WatchListRequest,
)
from procwatch_messaging.publish import AckedPublisher
from procwatch_messaging.worker import PullConsumer, Worker, WorkerPool, WorkerService
from procwatch_runtime.gc_tuning import tune_gc
from procwatch_runtime.logs import configure_logging

from procwatch_ingest.handlers import SampleBatchHandler, WatchListHandler
from procwatch_ingest.repository import configure_connection
from procwatch_ingest.retention import RetentionConfig, RetentionTask
from procwatch_ingest.service import IngestService
from procwatch_ingest.settings import IngestSettings
from procwatch_ingest.stats import IngestStats

log = logging.getLogger("procwatch.ingest")


class IngestApp(WorkerService):
    """The service's parts on a Worker; startable in-process (tests, bench) or by `main()`."""

    def __init__(self, settings: IngestSettings):
        self.settings = settings
        self.stats = IngestStats()
        self.service = IngestService(
            server_cache_ttl_s=settings.server_cache_ttl_s,
            unknown_server_cache_ttl_s=settings.unknown_server_cache_ttl_s,
            process_cache_ttl_s=settings.process_cache_ttl_s,
            max_future_s=settings.max_future_s,
            last_seen_step_s=settings.last_seen_step_s,
            stats=self.stats,
        )
        self.worker = Worker("ingest", settings, stream_limits=settings.stream_limits(), pool=WorkerPool(
            min_size=settings.pool_min_size, max_size=settings.pool_max_size, timeout_s=settings.pool_timeout_s,
            check_on_checkout=True, configure=configure_connection,
        ))
        self.broker = self.worker.broker
        self.pool = self.worker.pool
        self._publisher: AckedPublisher | None = None
        self.batches = SampleBatchHandler(
            self.service, self.pool, self._events_publisher,
            retry_base_s=settings.retry_base_s, retry_max_s=settings.retry_max_s,
            publish_retry_s=settings.publish_retry_s,
        )
        self.watch_lists = WatchListHandler(self.service, self.pool, settings.interval_seconds)
        self.pull_loop = self.worker.pull_loop(
            PullConsumer(settings.consumer_subject, subjects.AGENT_SAMPLES_STREAM, settings.consumer_durable,
                         self._consumer_config()),
            self.batches.handle, batch_size=settings.batch_size, batch_timeout_s=settings.batch_timeout_s,
            max_in_flight=settings.max_in_flight, name="ingest-pull-loop", check="consumer",
        )
        # A batch fetched from now on goes straight back (nak, no delay) to another replica.
        self.worker.on_drain(self._start_draining)
        self.worker.periodic("ingest-stats", self._log_stats, every_s=settings.stats_log_interval_s, jitter=0.0,
                             exclusive=False)
        self.worker.on_stopped(lambda: log.info("ingest stopped", extra=self.stats.snapshot()))
        self.retention = RetentionTask(settings.database_url, RetentionConfig(
            interval_s=settings.retention_interval_s, partitions_ahead_days=settings.partitions_ahead_days,
            batch_rows=settings.retention_batch_rows, lock_timeout_ms=settings.retention_lock_timeout_ms,
        )) if settings.retention_enabled else None
        if self.retention is not None:
            # Its own schedule and advisory lock (a pass runs in a thread; docs/retention.md).
            self.worker.part("retention", self.retention.start, self.retention.stop)
        # Documentation only (never started): the AsyncAPI document (procwatch_ingest.spec).
        self.docs_broker = NatsBroker(settings.nats_url)
        self._register()


    def _events_publisher(self) -> AckedPublisher:
        """The publisher of SampleRecorded and dead-letter messages, on the worker's client."""
        nc = self.worker.nc
        if self._publisher is None or self._publisher.nc is not nc:
            self._publisher = AckedPublisher(nc)
        return self._publisher

    def _consumer_config(self) -> ConsumerConfig:
        s = self.settings
        return ConsumerConfig(
            ack_policy=AckPolicyNats.EXPLICIT,  # acked per message, only after commit (or dead-lettering)
            ack_wait=s.ack_wait_s,
            max_ack_pending=max(1000, 4 * s.batch_size),
            max_deliver=-1,  # outages are waited out; poison messages are dead-lettered, not retried
            deliver_policy=DeliverPolicy.NEW if s.deliver_policy == "new" else DeliverPolicy.ALL,
        )

    def _start_draining(self) -> None:
        self.batches.draining = True

    async def _log_stats(self) -> None:
        log.info("ingest stats", extra=self.stats.snapshot())

    def _register(self) -> None:
        s = self.settings
        watch_lists = self.watch_lists

        @self.worker.subscriber(
            subjects.AGENT_CONFIG_SUBJECTS,
            queue=s.watchlist_queue,
            include_in_schema=False,  # documented with its real types on the docs broker below
        )
        async def on_watch_list(body: NoCast[WatchListRequest], msg: NatsMessage) -> WatchListReply:
            # NoCast: an empty or odd request body still gets a reply (the key decides).
            return await watch_lists.handle(msg.raw_message.subject, msg.headers)

        @self.docs_broker.subscriber(
            subjects.AGENT_CONFIG_SUBJECTS,
            queue=s.watchlist_queue,
            title="agent.config.{server_id}",
            description=(
                "Watch-list request-reply (core NATS, queue group). Header `Authorization: Bearer <agent key>`. "
                "Reply: WatchListReply {v, server_id, process_names (enabled, sorted), interval_seconds, error}; "
                "error is \"unauthorized\" (empty list) for a missing/wrong key or unknown server."
            ),
        )
        async def doc_watch_list(body: WatchListRequest) -> WatchListReply:  # pragma: no cover - docs only
            raise NotImplementedError

        # Declared for the AsyncAPI document; the hot path publishes through JetStream directly.
        self.broker.publisher(
            subjects.SAMPLE_EVENTS_SUBJECTS, stream=JStream(subjects.SAMPLE_EVENTS_STREAM, declare=False),
            title="samples.recorded.{server_id}", schema=SampleRecorded,
            description="One event per committed agent message; `Nats-Msg-Id` = sr-<server_id>-<sampled_at>.",
        )
        self.broker.publisher(
            subjects.DEADLETTER_AGENT_SAMPLES, stream=JStream(subjects.DEADLETTER_STREAM, declare=False),
            title=subjects.DEADLETTER_AGENT_SAMPLES, schema=bytes,
            description="The original agent payload, headers `Procwatch-Reason` and `Procwatch-Original-Subject`.",
        )

        # What the alerter publishes (documented here: this document is the broker API's one).
        self.docs_broker.publisher(
            subjects.ALERTS_SUBJECTS, stream=JStream(subjects.ALERTS_STREAM, declare=False),
            title="alerts.{server_id}.{target}", schema=AlertEvent,
            description=(
                "Alert events (AlertEvent v1), published by the alerter through its outbox; `Nats-Msg-Id` = id. "
                "target: a process id for a process's alerts; `server` for a server's own (`server_offline`, "
                "process null, value = seconds since last seen, threshold = offline_after_s). "
                "suppressed = inside a maintenance window (never notified); reason `maintenance_ended` = "
                "the one notification of an episode still firing when its window ended (docs/maintenance.md)."
            ),
        )
        self.docs_broker.publisher(
            subjects.ALERT_ACKS_SUBJECTS, stream=JStream(subjects.ALERTS_STREAM, declare=False),
            title="alerts.{server_id}.{target}.ack", schema=AlertAcknowledged,
            description=(
                "Acknowledgements (AlertAcknowledged v1), published by the API through its outbox when an alert "
                "is acknowledged (acknowledged true) or un-acknowledged (false); `Nats-Msg-Id` = id."
            ),
        )

        # The AGENT_SAMPLES consumer is our own pull loop (procwatch_messaging.pull.BatchPullLoop): FastStream 0.7.8's batch
        # pull loop loses an in-progress batch when nats-py raises the builtin TimeoutError
        # mid-batch (those messages then wait for ack_wait), and it cancels a batch in flight on
        # shutdown. So this subscriber lives on a documentation-only broker that is never
        # started: it describes the channel in the AsyncAPI document with the exact same shape.
        @self.docs_broker.subscriber(
            subjects.AGENT_SAMPLES_SUBJECTS,
            stream=JStream(subjects.AGENT_SAMPLES_STREAM, declare=False),
            durable=s.durable,
            pull_sub=PullSub(batch_size=s.batch_size, timeout=s.batch_timeout_s, batch=True),
            ack_policy=AckPolicy.MANUAL,
            title="agent.samples.{server_id}",
            description=(
                "Agent samples (AgentSample v1) from the AGENT_SAMPLES stream, durable pull consumer "
                f"`{s.durable}`, manual ack after commit. Headers: `Authorization: Bearer <agent key>`, "
                "`Nats-Msg-Id` (one per server and tick)."
            ),
        )
        async def doc_agent_samples(body: list[AgentSample]) -> None:  # pragma: no cover - docs only
            raise NotImplementedError



def create_app(settings: IngestSettings | None = None) -> IngestApp:
    return IngestApp(settings or IngestSettings())


def main() -> None:
    settings = IngestSettings()
    configure_logging(settings.log_level)
    app = create_app(settings)
    tune_gc(settings.gc_gen0_threshold)  # after startup built what lives for good
    uvloop.run(app.run())


if __name__ == "__main__":
    main()
