"""Wiring: the FastStream app of the ingest service (`procwatch ingest` runs `main()`).

    broker  = NatsBroker(NATS_URL)
    AGENT_SAMPLES --(durable pull consumer, batches, manual ack)--> SampleBatchHandler
    agent.config.* --(core request-reply, queue group)--> WatchListHandler
    SampleBatchHandler --> samples.recorded.<server_id> (SAMPLE_EVENTS), deadletter.agent.samples
"""

from __future__ import annotations

import asyncio
import logging

import uvloop
import yaml

from faststream import AckPolicy, FastStream
from faststream.nats import JStream, NatsBroker, NatsMessage, PullSub
from faststream.params import NoCast
from faststream.specification import AsyncAPI
from nats.js.api import AckPolicy as AckPolicyNats
from nats.js.api import ConsumerConfig, DeliverPolicy
from psycopg_pool import AsyncConnectionPool

from procwatch_contracts import subjects
from procwatch_contracts.messages import AgentSample, SampleRecorded, WatchListReply, WatchListRequest
from procwatch_db.urls import libpq_url
from procwatch_messaging.publish import AckedPublisher
from procwatch_messaging.pull import BatchPullLoop
from procwatch_messaging.streams import ensure_streams
from procwatch_runtime.gc_tuning import tune_gc
from procwatch_runtime.logs import configure_logging

from procwatch_ingest.handlers import SampleBatchHandler, WatchListHandler
from procwatch_ingest.health import health_server
from procwatch_ingest.repository import configure_connection
from procwatch_ingest.retention import RetentionConfig, RetentionTask
from procwatch_ingest.service import IngestService
from procwatch_ingest.settings import IngestSettings
from procwatch_ingest.stats import IngestStats

log = logging.getLogger("procwatch.ingest")

ASYNCAPI_TITLE = "procwatch broker API (ingest)"
ASYNCAPI_VERSION = "1"


class IngestApp:
    """The service: FastStream app + its resources, startable in-process (tests) or by `main()`."""

    def __init__(self, settings: IngestSettings):
        self.settings = settings
        self.stats = IngestStats()
        self.service = IngestService(
            server_cache_ttl_s=settings.server_cache_ttl_s,
            unknown_server_cache_ttl_s=settings.unknown_server_cache_ttl_s,
            process_cache_ttl_s=settings.process_cache_ttl_s,
            max_future_s=settings.max_future_s,
            stats=self.stats,
        )
        self.pool = AsyncConnectionPool(
            libpq_url(settings.database_url),
            min_size=settings.pool_min_size,
            max_size=max(settings.pool_min_size, settings.pool_max_size),
            timeout=settings.pool_timeout_s,
            check=AsyncConnectionPool.check_connection,
            configure=configure_connection,
            open=False,
            name="ingest",
        )
        self.broker = NatsBroker(
            settings.nats_url,
            max_reconnect_attempts=-1,  # wait out broker outages
            reconnect_time_wait=0.5,
            logger=logging.getLogger("procwatch.ingest.broker"),
            log_level=logging.DEBUG,
        )
        self._publisher: AckedPublisher | None = None
        self.batches = SampleBatchHandler(
            self.service, self.pool, self._events_publisher,
            retry_base_s=settings.retry_base_s, retry_max_s=settings.retry_max_s,
        )
        self.watch_lists = WatchListHandler(self.service, self.pool, settings.interval_seconds)
        self.pull_loop = BatchPullLoop(
            self._subscribe_samples, self.batches.handle, batch_size=settings.batch_size,
            batch_timeout_s=settings.batch_timeout_s, max_in_flight=settings.max_in_flight, name="ingest-pull-loop",
        )
        self.docs_broker = NatsBroker(settings.nats_url)
        self._register()
        self.app = FastStream(
            self.broker,
            specification=AsyncAPI(
                self.docs_broker, self.broker, title=ASYNCAPI_TITLE, version=ASYNCAPI_VERSION,
                description="Messages the ingest service consumes, answers and publishes (contracts v1).",
            ),
            on_startup=[self._open],
            after_startup=[self.pull_loop.start, self._start_health],
            on_shutdown=[self._drain],
            after_shutdown=[self._close],
            logger=log,
        )
        self._stats_task: asyncio.Task | None = None
        self.health = health_server(self)  # None unless health_port is set
        self.retention = RetentionTask(settings.database_url, RetentionConfig(
            interval_s=settings.retention_interval_s, partitions_ahead_days=settings.partitions_ahead_days,
            batch_rows=settings.retention_batch_rows, lock_timeout_ms=settings.retention_lock_timeout_ms,
        )) if settings.retention_enabled else None

    def _events_publisher(self) -> AckedPublisher:
        """The publisher of SampleRecorded and dead-letter messages, on the broker's current client."""
        nc = self.broker.config.connection_state.connection
        if self._publisher is None or self._publisher.nc is not nc:
            self._publisher = AckedPublisher(nc)
        return self._publisher

    def _register(self) -> None:
        s = self.settings
        watch_lists = self.watch_lists

        @self.broker.subscriber(
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

    async def _subscribe_samples(self):
        s = self.settings
        js = self.broker.config.connection_state.stream
        return await js.pull_subscribe(
            subjects.AGENT_SAMPLES_SUBJECTS,
            durable=s.durable,
            stream=subjects.AGENT_SAMPLES_STREAM,
            config=ConsumerConfig(
                ack_policy=AckPolicyNats.EXPLICIT,  # acked per message, only after commit (or dead-lettering)
                ack_wait=s.ack_wait_s,
                max_ack_pending=max(1000, 4 * s.batch_size),
                max_deliver=-1,  # outages are waited out; poison messages are dead-lettered, not retried
                deliver_policy=DeliverPolicy.NEW if s.deliver_policy == "new" else DeliverPolicy.ALL,
            ),
        )

    # --- lifecycle -------------------------------------------------------------

    async def _open(self) -> None:
        client = await self.broker.connect()
        await ensure_streams(client.jetstream(), self.settings.stream_limits())
        await self.pool.open(wait=False)
        self._stats_task = asyncio.create_task(self._log_stats())
        if self.retention is not None:
            self.retention.start()
        log.info("ingest starting", extra={"durable": self.settings.durable, "batch_size": self.settings.batch_size,
                                           "batch_timeout_ms": self.settings.batch_timeout_ms})

    async def _drain(self) -> None:
        """Stop taking batches, let the one in flight commit, publish and ack."""
        self.batches.draining = True  # a batch fetched from now on goes straight back (nak, no delay)
        await self.pull_loop.stop()
        if self.retention is not None:
            await self.retention.stop()

    async def _start_health(self) -> None:
        if self.health is not None:
            await self.health.start()

    async def _close(self) -> None:
        if self.health is not None:
            await self.health.stop()
        if self._stats_task:
            self._stats_task.cancel()
        await self.pool.close()
        log.info("ingest stopped", extra=self.stats.snapshot())

    async def _log_stats(self) -> None:
        while True:
            await asyncio.sleep(self.settings.stats_log_interval_s)
            log.info("ingest stats", extra=self.stats.snapshot())

    async def start(self) -> None:
        """Start in the running loop (tests, bench); `stop()` shuts down gracefully."""
        await self.app.start()

    async def stop(self) -> None:
        await self.app.stop()

    async def run(self) -> None:
        """Block until SIGTERM / SIGINT, then shut down gracefully."""
        await self.app.run()


def create_app(settings: IngestSettings | None = None) -> IngestApp:
    return IngestApp(settings or IngestSettings())


def asyncapi_yaml(settings: IngestSettings | None = None) -> str:
    """The AsyncAPI document of the broker API, as committed in docs/asyncapi.yaml."""
    settings = settings or IngestSettings(
        database_url="postgresql://unused/none", nats_url="nats://127.0.0.1:4222",
        watchlist_queue="procwatch-ingest", durable="procwatch-ingest",
    )
    app = create_app(settings)
    doc = app.app.schema.to_specification().to_jsonable()
    # FastStream's channel order depends on hash order (PYTHONHASHSEED): sort for a stable file.
    for key in ("channels", "operations"):
        if key in doc:
            doc[key] = dict(sorted(doc[key].items()))
    for key in ("messages", "schemas"):
        if key in doc.get("components", {}):
            doc["components"][key] = dict(sorted(doc["components"][key].items()))
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def main() -> None:
    settings = IngestSettings()
    configure_logging(settings.log_level)
    app = create_app(settings)
    tune_gc(settings.gc_gen0_threshold)  # after startup built what lives for good
    uvloop.run(app.run())


if __name__ == "__main__":
    main()
