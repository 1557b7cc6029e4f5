"""Wiring of the alerter: broker, consumers, database pool, outbox relay. `main()` runs it.

    procwatch alerter        # DATABASE_URL, NATS_URL, PROCWATCH_ALERTER_* from the environment

    SAMPLE_EVENTS  --(durable pull consumer, BatchPullLoop, one batch at a time)--> Handlers.on_sample_batch
    PROCESS_EVENTS --(durable pull consumer, FastStream, one at a time)--> Handlers.on_process_event
"""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import suppress
from dataclasses import asdict

import uvloop
from faststream import AckPolicy, FastStream
from faststream.nats import ConsumerConfig, DeliverPolicy, JStream, NatsBroker, PullSub
from faststream.nats.annotations import NatsMessage
from faststream.specification import AsyncAPI
from nats.js.api import AckPolicy as NatsAckPolicy
from nats.js.api import ConsumerConfig as NatsConsumerConfig
from nats.js.api import DeliverPolicy as NatsDeliverPolicy
from psycopg_pool import AsyncConnectionPool

from procwatch_contracts import subjects
from procwatch_contracts.messages import SampleRecorded
from procwatch_db.urls import libpq_url
from procwatch_messaging.outbox import OutboxRelay
from procwatch_messaging.pull import BatchPullLoop
from procwatch_messaging.streams import ensure_streams
from procwatch_runtime.gc_tuning import tune_gc
from procwatch_runtime.logs import configure_logging

from procwatch_alerter.handlers import Handlers
from procwatch_alerter.health import health_server
from procwatch_alerter.settings import AlerterSettings

log = logging.getLogger("procwatch.alerter")


class AlerterApp:
    """The alerter in one process. `start()` / `stop()` for tests; `main()` for production."""

    def __init__(self, settings: AlerterSettings) -> None:
        self.settings = settings
        # Per-message access lines at DEBUG: at fleet rates INFO would be one line per sample event.
        self.broker = NatsBroker(
            settings.nats_url, graceful_timeout=15.0, max_reconnect_attempts=-1,
            logger=logging.getLogger("procwatch.alerter.broker"), log_level=logging.DEBUG,
        )
        self.pool = AsyncConnectionPool(
            libpq_url(settings.database_url),
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
            open=False,
            # Autocommit: reads that decide nothing run outside a transaction; writes open one
            # explicitly (handlers._commit), so a batch that changes nothing costs one round trip.
            kwargs={"connect_timeout": 5, "application_name": f"procwatch-alerter:{settings.durable}"[:63],
                    "autocommit": True},
        )
        self.relay: OutboxRelay | None = None
        self._relay_task: asyncio.Task | None = None
        self.health = health_server(self)  # None unless health_port is set
        self.handlers = Handlers(settings, self.pool, self._js, None)
        # Documentation only (never started): describes the sample consumer, which is our own
        # pull loop, in the AsyncAPI document.
        self.docs_broker = NatsBroker(settings.nats_url)
        self.sample_loop = BatchPullLoop(
            self._subscribe_samples, self.handlers.on_sample_batch,
            batch_size=settings.batch_size, batch_timeout_s=settings.batch_timeout_s,
            idle_poll_s=settings.fetch_timeout_s, max_in_flight=1,  # one batch at a time: stream order
            drain_timeout_s=max(5.0, settings.ack_wait_s), name="alerter-sample-loop",
        )
        self._register_subscribers()

    def _js(self):
        return self.broker.config.connection_state.stream

    def _register_subscribers(self) -> None:
        s = self.settings
        handlers = self.handlers
        deliver = DeliverPolicy.NEW if s.deliver_policy == "new" else DeliverPolicy.ALL

        def consumer(durable: str, description: str, pull_sub: PullSub) -> dict:
            return dict(
                durable=durable,
                deliver_policy=deliver,
                config=ConsumerConfig(ack_wait=s.ack_wait_s, max_deliver=-1),
                pull_sub=pull_sub,
                # Acked by the handler after commit (or after dead-lettering), never by the framework.
                ack_policy=AckPolicy.MANUAL,
                description=description,
            )

        # Sample events: BatchPullLoop (see procwatch_messaging.pull for why not FastStream's
        # batch pull), declared here for the AsyncAPI document only.
        @self.docs_broker.subscriber(
            s.sample_subject,
            stream=JStream(subjects.SAMPLE_EVENTS_STREAM, declare=False),
            **consumer(
                s.durable,
                "SampleRecorded events, in batches (up to batch_size: whatever arrived while the previous "
                "batch was handled), in stream order: evaluate the alert rules, write and publish alert "
                "events in one transaction per batch; acked after commit.",
                PullSub(batch_size=s.batch_size, timeout=s.batch_timeout_s, batch=True),
            ),
        )
        async def on_sample_event(body: list[SampleRecorded]) -> None:  # pragma: no cover - docs only
            raise NotImplementedError

        @self.broker.subscriber(
            s.process_subject,
            stream=JStream(subjects.PROCESS_EVENTS_STREAM, declare=False),
            **consumer(
                f"{s.durable}-lifecycle",
                "ProcessChanged events: resolve alerts on pause, delete, flag off.",
                PullSub(batch_size=1, timeout=s.fetch_timeout_s),
            ),
        )
        async def on_process_event(msg: NatsMessage) -> None:
            await handlers.on_process_event(msg)

    async def _subscribe_samples(self):
        s = self.settings
        return await self._js().pull_subscribe(
            s.sample_subject,
            durable=s.durable,
            stream=subjects.SAMPLE_EVENTS_STREAM,
            config=NatsConsumerConfig(
                ack_policy=NatsAckPolicy.EXPLICIT,  # acked per message, only after commit (or dead-lettering)
                ack_wait=s.ack_wait_s,
                max_deliver=-1,  # outages are waited out; poison events are dead-lettered
                # Room for a full batch (only one is unacked at a time; order does not rely on
                # this limit: a failing batch is retried in place, see docs/alerts.md).
                max_ack_pending=max(1000, 2 * s.batch_size),
                deliver_policy=NatsDeliverPolicy.NEW if s.deliver_policy == "new" else NatsDeliverPolicy.ALL,
            ),
        )

    async def start(self) -> None:
        await self.pool.open(wait=False)
        await self.broker.connect()
        await ensure_streams(self._js())
        self.relay = OutboxRelay(self.settings.database_url, self._js(), poll_interval=self.settings.relay_poll_interval_s)
        self.handlers._relay = self.relay
        self._relay_task = asyncio.create_task(self.relay.run(), name="alerter-outbox-relay")
        await self.broker.start()
        await self.sample_loop.start()
        if self.health is not None:
            await self.health.start()
        log.info(
            "alerter started",
            extra={"durable": self.settings.durable, "samples": self.settings.sample_subject,
                   "batch_size": self.settings.batch_size, "batch_timeout_ms": self.settings.batch_timeout_ms,
                   "event_loop": type(asyncio.get_running_loop()).__module__,
                   "lifecycle": self.settings.process_subject},
        )

    async def stop(self) -> None:
        if self.health is not None:
            await self.health.stop()
        self.handlers.stopping.set()
        # Stop consuming first (the batch in flight finishes or is handed back), keep the
        # connection for the relay.
        with suppress(Exception):
            await self.sample_loop.stop()
        for sub in self.broker.subscribers:
            with suppress(Exception):
                await sub.stop()
        if self._relay_task is not None:
            # One last pass so what was committed goes out now rather than at next start.
            if self.relay is not None:
                with suppress(Exception):
                    await asyncio.wait_for(self.relay.publish_pending(), timeout=5)
            self._relay_task.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await self._relay_task
        with suppress(Exception):
            await self.broker.stop()
        await self.pool.close()
        log.info("alerter stopped", extra=asdict(self.handlers.stats))


async def serve(settings: AlerterSettings, stop: asyncio.Event) -> None:
    app = AlerterApp(settings)
    delay = 0.5
    while not stop.is_set():
        try:
            await app.start()
            break
        except Exception as exc:  # dependencies not up yet: wait them out
            log.warning("alerter start failed; retrying", extra={"error": type(exc).__name__, "retry_in_s": delay})
            with suppress(Exception):
                await app.broker.stop()
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            delay = min(settings.max_backoff_s, delay * 2)
    await stop.wait()
    await app.stop()


def main() -> None:
    settings = AlerterSettings()
    if not logging.getLogger().handlers:
        configure_logging(settings.log_level)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    tune_gc(settings.gc_gen0_threshold)
    uvloop.run(run())


def asyncapi_document() -> dict:
    """The alerter's AsyncAPI document (what it consumes), as a JSON-able dict."""
    settings = AlerterSettings(database_url="postgresql://unused/none", nats_url="nats://127.0.0.1:4222")
    alerter = AlerterApp(settings)
    app = FastStream(alerter.broker, specification=AsyncAPI(
        alerter.docs_broker, alerter.broker, title="procwatch alerter", version="1"))
    return app.schema.to_specification().to_jsonable()
