"""Wiring of the alerter (`procwatch alerter` runs `main()`): what runs, handed to the worker runtime
(procwatch_messaging.worker), which connects, declares the streams, drains and reports health.

    procwatch alerter        # DATABASE_URL, NATS_URL, PROCWATCH_ALERTER_* from the environment

    SAMPLE_EVENTS  --(durable pull consumer, BatchPullLoop, one batch at a time)--> Handlers.on_sample_batch
    PROCESS_EVENTS --(durable pull consumer, FastStream, one at a time)--> Handlers.on_process_event
    outbox_events  --(OutboxRelay, a background task of the worker)--> ALERTS
    servers        --(OfflineDetector.run, a periodic job, one replica at a time)--> outbox_events (server_offline)
    alerts         --(MaintenanceEndJob.run, a periodic job)--> outbox_events (maintenance_ended, once per episode)
"""

from __future__ import annotations

import logging
from dataclasses import asdict

import uvloop
from faststream import AckPolicy
from faststream.nats import ConsumerConfig, DeliverPolicy, JStream, PullSub
from faststream.nats.annotations import NatsMessage
from nats.js.api import AckPolicy as NatsAckPolicy
from nats.js.api import ConsumerConfig as NatsConsumerConfig
from nats.js.api import DeliverPolicy as NatsDeliverPolicy

from procwatch_contracts import subjects
from procwatch_messaging.outbox import OutboxRelay
from procwatch_messaging.worker import PullConsumer, Worker, WorkerPool, WorkerService
from procwatch_runtime.gc_tuning import tune_gc
from procwatch_runtime.logs import configure_logging

from procwatch_alerter.handlers import Handlers
from procwatch_alerter.maintenance import MaintenanceEndJob
from procwatch_alerter.offline import OfflineDetector
from procwatch_alerter.settings import AlerterSettings

log = logging.getLogger("procwatch.alerter")


class AlerterApp(WorkerService):
    """The alerter's parts on a Worker. `start()` / `stop()` for tests; `main()` for production."""

    def __init__(self, settings: AlerterSettings) -> None:
        self.settings = settings
        self.worker = Worker("alerter", settings, pool=WorkerPool(
            min_size=settings.db_pool_min, max_size=settings.db_pool_max, timeout_s=30.0,
            # Autocommit: reads that decide nothing run outside a transaction; writes open one
            # explicitly (handlers._commit), so a batch that changes nothing costs one round trip.
            kwargs={"application_name": f"procwatch-alerter:{settings.durable}"[:63], "autocommit": True},
        ))
        self.broker = self.worker.broker
        self.pool = self.worker.pool
        self.relay = OutboxRelay(settings.database_url, lambda: self.worker.js,
                                 poll_interval=settings.relay_poll_interval_s)
        self.handlers = Handlers(settings, self.pool, lambda: self.worker.js, self.relay)
        self.sample_loop = self.worker.pull_loop(
            PullConsumer(settings.sample_subject, subjects.SAMPLE_EVENTS_STREAM, settings.durable,
                         self._sample_consumer_config()),
            self.handlers.on_sample_batch,
            batch_size=settings.batch_size, batch_timeout_s=settings.batch_timeout_s,
            idle_poll_s=settings.fetch_timeout_s, max_in_flight=1,  # one batch at a time: stream order
            drain_timeout_s=max(5.0, settings.ack_wait_s), name="alerter-sample-loop", check="consumer",
        )
        self._register_lifecycle_consumer()
        # One last relay pass on drain, so what was committed goes out now rather than at next start.
        self.worker.background("alerter-outbox-relay", self.relay.run, flush=self.relay.publish_pending,
                               check="outbox_relay")
        self.offline = OfflineDetector(settings, lambda: self.worker.js, self.handlers.run_unit)
        self.offline_job = self.worker.periodic(
            "offline-servers", self.offline.run, every_s=settings.offline_check_every_s, jitter=0.2,
        ) if settings.offline_detection else None
        self.maintenance = MaintenanceEndJob(self.handlers.run_unit, settings.maintenance_batch)
        self.maintenance_job = self.worker.periodic(
            "maintenance-ended", self.maintenance.run, every_s=settings.maintenance_check_every_s, jitter=0.2,
        )
        self.worker.on_drain(self.handlers.stopping.set)
        self.worker.on_stopped(lambda: log.info("alerter stopped", extra=asdict(self.handlers.stats)))


    def _sample_consumer_config(self) -> NatsConsumerConfig:
        s = self.settings
        return NatsConsumerConfig(
            ack_policy=NatsAckPolicy.EXPLICIT,  # acked per message, only after commit (or dead-lettering)
            ack_wait=s.ack_wait_s,
            max_deliver=-1,  # outages are waited out; poison events are dead-lettered
            # Room for a full batch (only one is unacked at a time; order does not rely on
            # this limit: a failing batch is retried in place, see docs/alerts.md).
            max_ack_pending=max(1000, 2 * s.batch_size),
            deliver_policy=NatsDeliverPolicy.NEW if s.deliver_policy == "new" else NatsDeliverPolicy.ALL,
        )

    def _register_lifecycle_consumer(self) -> None:
        s = self.settings
        handlers = self.handlers

        @self.worker.subscriber(
            s.process_subject,
            stream=JStream(subjects.PROCESS_EVENTS_STREAM, declare=False),
            durable=f"{s.durable}-lifecycle",
            deliver_policy=DeliverPolicy.NEW if s.deliver_policy == "new" else DeliverPolicy.ALL,
            config=ConsumerConfig(ack_wait=s.ack_wait_s, max_deliver=-1),
            pull_sub=PullSub(batch_size=1, timeout=s.fetch_timeout_s),
            # Acked by the handler after commit (or after dead-lettering), never by the framework.
            ack_policy=AckPolicy.MANUAL,
            description="ProcessChanged events: resolve alerts on pause, delete, flag off.",
        )
        async def on_process_event(msg: NatsMessage) -> None:
            await handlers.on_process_event(msg)



def main() -> None:
    settings = AlerterSettings()
    if not logging.getLogger().handlers:
        configure_logging(settings.log_level)
    app = AlerterApp(settings)
    tune_gc(settings.gc_gen0_threshold)
    uvloop.run(app.run())
