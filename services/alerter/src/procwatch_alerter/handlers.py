"""Broker entrypoints: parse, run the service in one transaction, commit, wake the relay, ack.

Ack policy is manual: a message is acked only after its transaction committed
(or after it was dead-lettered). Messages of one subscription are handled one at
a time, in stream order, so per-server (and so per-process) order is kept.

- Poison (not a valid event, or an error that persists for
  `max_attempts_on_error` attempts): published to the dead-letter subject with a
  `Procwatch-Reason` header, then acked; it never blocks the consumer.
- Transient (database or broker unreachable): retried in place with exponential
  backoff, telling JetStream the message is still in progress, so later
  messages do not overtake it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import TYPE_CHECKING

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from pydantic import BaseModel, ValidationError

from procwatch_contracts import subjects
from procwatch_contracts.messages import ProcessChanged, SampleRecorded
from procwatch_alerter.repository import AlerterRepository
from procwatch_alerter.service import AlerterService, Outcome
from procwatch_alerter.settings import AlerterSettings

if TYPE_CHECKING:
    from faststream.nats.message import NatsMessage
    from nats.js import JetStreamContext

    from procwatch_messaging.outbox import OutboxRelay

log = logging.getLogger("procwatch.alerter")

ORIGINAL_SUBJECT_HEADER = "Procwatch-Original-Subject"
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (psycopg.OperationalError, PoolTimeout, OSError)


class Handlers:
    def __init__(
        self,
        settings: AlerterSettings,
        pool: AsyncConnectionPool,
        js: Callable[[], JetStreamContext],
        relay: OutboxRelay | None,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._js = js
        self._relay = relay
        self.stopping = asyncio.Event()

    async def on_sample_event(self, msg: NatsMessage) -> None:
        await self._handle(msg, SampleRecorded, subjects.DEADLETTER_SAMPLE_EVENTS,
                           lambda svc, event: svc.on_samples_recorded(event))

    async def on_process_event(self, msg: NatsMessage) -> None:
        await self._handle(msg, ProcessChanged, subjects.DEADLETTER_PROCESS_EVENTS,
                           lambda svc, event: svc.on_process_changed(event))

    async def _handle(
        self,
        msg: NatsMessage,
        model: type[BaseModel],
        deadletter_subject: str,
        work: Callable[[AlerterService, BaseModel], Awaitable[Outcome]],
    ) -> None:
        raw = msg.raw_message
        started = time.perf_counter()
        try:
            event = model.model_validate_json(raw.data)
        except ValidationError as exc:
            reason = f"invalid {model.__name__}: {exc.errors()[0].get('msg', 'invalid')}"[:200]
            await self._dead_letter(msg, deadletter_subject, reason)
            return

        outcome = await self._in_transaction(msg, event, work)
        if outcome is None:  # dead-lettered or stopping
            return
        if outcome.alerts and self._relay is not None:
            self._relay.wake()
        await msg.ack()
        self._log_outcome(outcome, raw.subject, (time.perf_counter() - started) * 1000)

    def _log_outcome(self, outcome: Outcome, subject: str, handled_ms: float) -> None:
        for alert in outcome.alerts:
            log.info(
                "alert",
                extra={"alert_id": alert.id, "type": alert.type, "state": alert.state,
                       "server_id": alert.server.id, "process_id": alert.process.id, "reason": alert.reason,
                       "handled_ms": round(handled_ms, 1)},
            )
        if outcome.skipped_stale:
            log.debug("stale samples skipped", extra={"count": outcome.skipped_stale, "subject": subject})

    async def _in_transaction(self, msg: NatsMessage, event, work) -> Outcome | None:
        delay = 0.1
        failures = 0
        while True:
            try:
                async with self._pool.connection() as conn, conn.transaction():
                    return await work(AlerterService(AlerterRepository(conn)), event)
            except TRANSIENT_ERRORS as exc:
                log.warning(
                    "transient failure; retrying",
                    extra={"error": type(exc).__name__, "subject": msg.raw_message.subject, "retry_in_s": delay},
                )
            except Exception as exc:  # a bug or a row the code cannot handle: bounded retries
                failures += 1
                log.exception(
                    "event processing failed",
                    extra={"error": type(exc).__name__, "subject": msg.raw_message.subject, "attempt": failures},
                )
                if failures >= self._settings.max_attempts_on_error:
                    dl = subjects.DEADLETTER_SAMPLE_EVENTS if isinstance(event, SampleRecorded) else subjects.DEADLETTER_PROCESS_EVENTS
                    await self._dead_letter(msg, dl, f"processing_failed: {type(exc).__name__}")
                    return None
            if self.stopping.is_set():
                # Shutting down: leave it unacked; JetStream redelivers it to the next consumer.
                with suppress(Exception):
                    await msg.nack(delay=1.0)
                return None
            with suppress(Exception):
                await msg.in_progress()
            await asyncio.sleep(delay)
            delay = min(self._settings.max_backoff_s, delay * 2)

    async def _dead_letter(self, msg: NatsMessage, subject: str, reason: str) -> None:
        raw = msg.raw_message
        delay = 0.1
        while True:
            try:
                await self._js().publish(
                    subject,
                    raw.data,
                    headers={subjects.REASON_HEADER: reason, ORIGINAL_SUBJECT_HEADER: raw.subject},
                    timeout=5.0,
                )
                break
            except Exception as exc:  # broker trouble: keep the message until it is parked
                if self.stopping.is_set():
                    return
                log.warning("dead-letter publish failed; retrying", extra={"error": type(exc).__name__})
                await asyncio.sleep(delay)
                delay = min(self._settings.max_backoff_s, delay * 2)
        log.warning("event dead-lettered", extra={"subject": raw.subject, "deadletter": subject, "reason": reason})
        await msg.ack()
