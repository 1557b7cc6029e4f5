"""Wiring of the notifier (`procwatch notifier` runs `main()`): what runs, handed to the worker runtime.

    procwatch notifier     # DATABASE_URL, NATS_URL, PROCWATCH_SECRETS_KEY, PROCWATCH_NOTIFIER_*, PROCWATCH_SMTP_URL

    ALERTS --(durable pull consumer, BatchPullLoop, one batch at a time)--> Handlers.on_alert_batch
           --> deliveries (pending)
    deliveries --(Sender, a background task: claim, send per channel, settle)--> webhooks, Slack,
           Discord, email
    alerts + deliveries --(ReminderJob.run, a periodic job, one replica at a time)--> deliveries (reminders)
"""

from __future__ import annotations

import logging
from dataclasses import asdict

import uvloop
from nats.js.api import AckPolicy as NatsAckPolicy
from nats.js.api import ConsumerConfig as NatsConsumerConfig
from nats.js.api import DeliverPolicy as NatsDeliverPolicy

from procwatch_contracts import subjects
from procwatch_domain import crypto
from procwatch_messaging.worker import PullConsumer, Worker, WorkerPool, WorkerService
from procwatch_runtime.logs import configure_logging

from procwatch_notifier.handlers import Handlers
from procwatch_notifier.reminders import ReminderJob
from procwatch_notifier.service import Sender
from procwatch_notifier.settings import NotifierSettings

log = logging.getLogger("procwatch.notifier")


class NotifierApp(WorkerService):
    """The notifier's parts on a Worker. `start()` / `stop()` for tests; `main()` for production."""

    def __init__(self, settings: NotifierSettings) -> None:
        self.settings = settings
        self.worker = Worker("notifier", settings, pool=WorkerPool(
            min_size=settings.db_pool_min, max_size=settings.db_pool_max, timeout_s=30.0,
            # Autocommit: the repository opens its transactions explicitly.
            kwargs={"application_name": f"procwatch-notifier:{settings.durable}"[:63], "autocommit": True},
        ))
        assert self.worker.pool is not None
        self.sender = Sender(settings, self.worker.pool)
        self.handlers = Handlers(settings, self.worker.pool, lambda: self.worker.js, self.sender.wake)
        self.worker.pull_loop(
            PullConsumer(settings.subject, subjects.ALERTS_STREAM, settings.durable, NatsConsumerConfig(
                ack_policy=NatsAckPolicy.EXPLICIT,  # acked after the deliveries committed
                ack_wait=settings.ack_wait_s,
                max_deliver=-1,  # outages are waited out; invalid events are dead-lettered
                max_ack_pending=max(1000, 2 * settings.batch_size),
                deliver_policy=NatsDeliverPolicy.NEW if settings.deliver_policy == "new" else NatsDeliverPolicy.ALL,
            )),
            self.handlers.on_alert_batch, batch_size=settings.batch_size, batch_timeout_s=0.0,
            idle_poll_s=settings.fetch_timeout_s, max_in_flight=1,  # one batch at a time: stream order
            drain_timeout_s=max(5.0, settings.ack_wait_s), name="notifier-alert-loop", check="consumer")
        self.worker.background("notifier-sender", self.sender.run, flush=self.sender.stop,
                               flush_timeout_s=settings.request_timeout_s + 2.0, check="sender")
        self.reminders = ReminderJob(self.worker.pool, settings.reminder_batch, self.sender.wake)
        self.worker.periodic("reminders", self.reminders.run, every_s=settings.reminder_check_every_s, jitter=0.2)
        self.worker.on_drain(self.handlers.stopping.set)
        self.worker.on_stopped(lambda: log.info("notifier stopped", extra={
            **asdict(self.handlers.stats), **asdict(self.sender.stats)}))




def main() -> None:
    settings = NotifierSettings()
    if not logging.getLogger().handlers:
        configure_logging(settings.log_level)
    try:
        crypto.check_key()
    except crypto.SecretsKeyError as exc:
        # Channel targets are encrypted: without the key nothing can be sent. The notifier still
        # records deliveries; their attempts fail (and are retried) until the key is set.
        log.error(str(exc))
    uvloop.run(NotifierApp(settings).run())
