"""Broker entrypoints: parse, run the service in one transaction, commit, publish, ack.

Ack policy is manual: a message is acked only after its transaction committed
(or after it was dead-lettered). Alert events are written to the outbox in the
transaction and published right after the commit by the outbox relay's fast path
(`OutboxRelay.publish_committed`, in commit order); whatever that does not publish,
the relay's pass does (docs/alerts.md).

- Sample events come in batches (procwatch_messaging.pull.BatchPullLoop, one batch
  at a time, in stream order): the valid events of a batch are evaluated in ONE
  transaction, committed, then all acked; the poison ones are dead-lettered and
  acked without failing the rest.
- Lifecycle events come one at a time (FastStream pull subscriber, low rate).
- Poison (not a valid event, or an error that persists for
  `max_attempts_on_error` attempts): published to the dead-letter subject with a
  `Procwatch-Reason` header, then acked; it never blocks the consumer. A batch that
  keeps failing with an unexpected error is split: its events are retried one per
  transaction, in order, so only the culprit is dead-lettered.
- Transient (database or broker unreachable): the batch (or event) is retried in
  place with exponential backoff, telling JetStream it is still in progress. No
  later message is fetched meanwhile, so nothing overtakes it (docs/alerts.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg
from nats.aio.msg import Msg
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from pydantic import BaseModel, ValidationError

from procwatch_contracts import subjects
from procwatch_contracts.fast import SampleRecordedView, parse_sample_recorded
from procwatch_contracts.messages import ProcessChanged, SampleRecorded
from procwatch_messaging import acks
from procwatch_runtime import metrics

from procwatch_alerter.maintenance import WindowCache
from procwatch_alerter.repository import AlerterRepository
from procwatch_alerter.service import AlerterService, Outcome
from procwatch_alerter.settings import AlerterSettings

if TYPE_CHECKING:
    from faststream.nats.message import NatsMessage
    from nats.js import JetStreamContext

    from procwatch_messaging.outbox import OutboxRelay

log = logging.getLogger("procwatch.alerter")

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (psycopg.OperationalError, PoolTimeout, OSError)
Work = Callable[[AlerterService], Awaitable[Outcome]]


def _invalid_reason(model: type[BaseModel], exc: ValidationError) -> str:
    return f"invalid {model.__name__}: {exc.errors()[0].get('msg', 'invalid')}"[:200]


@dataclass
class BatchStats:
    """Counters of the sample consumer (logged at shutdown; read by tests)."""

    batches: int = 0
    messages: int = 0
    largest_batch: int = 0


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
        self.stats = BatchStats()
        # Shared by every unit: the windows are loaded once per refresh, not per batch.
        self.windows = WindowCache(settings.maintenance_refresh_s)

    # --- sample events: batches -------------------------------------------------

    async def on_sample_batch(self, batch: Sequence[Msg]) -> None:
        """One fetched batch, in stream order: one transaction, commit, publish its alerts, ack."""
        if not batch:
            return
        started = time.perf_counter()
        self.stats.batches += 1
        self.stats.messages += len(batch)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        valid: list[tuple[Msg, SampleRecordedView]] = []
        poison: list[tuple[Msg, str]] = []
        for msg in batch:
            try:  # the fast decoder; the model decides what it refuses, and explains a refusal
                valid.append((msg, parse_sample_recorded(msg.data)))
            except ValidationError as exc:
                poison.append((msg, _invalid_reason(SampleRecorded, exc)))
        if valid:
            events = [e for _, e in valid]
            outcome = await self._in_transaction(
                [m for m, _ in valid], lambda svc: svc.on_samples_recorded_batch(events),
                subjects.DEADLETTER_SAMPLE_EVENTS, split=True,
            )
            if outcome is _SPLIT:
                await self._one_by_one(valid)
            elif outcome is None:  # stopping: the batch was handed back
                await self._nak([m for m, _ in poison])
                return
            else:
                for msg, _ in valid:
                    await msg.ack()
                _observe_sample_alerts(outcome)
                self._log_outcome(outcome, f"batch of {len(batch)}", (time.perf_counter() - started) * 1000)
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("sample batch handled", extra={
                        "events": len(batch), "samples": sum(len(e.samples) for e in events),
                        "alerts": len(outcome.alerts), "handled_ms": round((time.perf_counter() - started) * 1000, 1),
                        # How long the first event waited in the stream before this batch took it.
                        "waited_ms": _waited_ms(batch[0], started)})
        for msg, reason in poison:
            await self._dead_letter(msg, subjects.DEADLETTER_SAMPLE_EVENTS, reason)

    async def _one_by_one(self, valid: Sequence[tuple[Msg, SampleRecordedView]]) -> None:
        """A batch that kept failing unexpectedly: one transaction per event, in order."""
        for i, (msg, event) in enumerate(valid):
            started = time.perf_counter()
            outcome = await self._in_transaction([msg], lambda svc, e=event: svc.on_samples_recorded(e),
                                               subjects.DEADLETTER_SAMPLE_EVENTS)
            if outcome is None:
                if self.stopping.is_set():
                    # Hand back the rest too, in order (the failed one was handed back already).
                    await self._nak([m for m, _ in valid[i + 1:]])
                    return
                continue  # dead-lettered
            await msg.ack()
            _observe_sample_alerts(outcome)
            self._log_outcome(outcome, msg.subject, (time.perf_counter() - started) * 1000)

    # --- lifecycle events: one at a time --------------------------------------------

    async def on_process_event(self, msg: NatsMessage) -> None:
        raw = msg.raw_message
        started = time.perf_counter()
        try:
            event = ProcessChanged.model_validate_json(raw.data)
        except ValidationError as exc:
            await self._dead_letter(raw, subjects.DEADLETTER_PROCESS_EVENTS, _invalid_reason(ProcessChanged, exc))
            return
        outcome = await self._in_transaction([raw], lambda svc: svc.on_process_changed(event),
                                               subjects.DEADLETTER_PROCESS_EVENTS)
        if outcome is None or outcome is _SPLIT:  # dead-lettered or stopping
            return
        await raw.ack()
        self._log_outcome(outcome, raw.subject, (time.perf_counter() - started) * 1000)

    def _log_outcome(self, outcome: Outcome, subject: str, handled_ms: float) -> None:
        for alert in outcome.alerts:
            log.info(
                "alert",
                extra={"alert_id": alert.id, "type": alert.type, "state": alert.state,
                       "server_id": alert.server.id, "process_id": alert.process.id if alert.process else None, "reason": alert.reason,
                       "handled_ms": round(handled_ms, 1)},
            )
        if outcome.skipped_foreign:
            log.warning("samples naming another server's processes ignored",
                        extra={"count": outcome.skipped_foreign, "subject": subject})
        if outcome.skipped_stale:
            log.debug("stale samples skipped", extra={"count": outcome.skipped_stale, "subject": subject})

    async def _in_transaction(self, msgs: Sequence[Msg], work: Work, deadletter: str, *, split: bool = False):
        """Run `work` in one transaction; retry transient failures in place (keeping order).

        Returns the Outcome; None if the messages were dead-lettered (single message)
        or handed back because the alerter is stopping; `_SPLIT` if `split` and the
        work kept failing unexpectedly (the caller retries the events one by one).
        """
        delay = 0.1
        failures = 0
        subject = msgs[0].subject if len(msgs) == 1 else f"batch of {len(msgs)}"
        while True:
            try:
                return await self._commit(work)
            except TRANSIENT_ERRORS as exc:
                log.warning(
                    "transient failure; retrying",
                    extra={"error": type(exc).__name__, "subject": subject, "retry_in_s": delay},
                )
            except Exception as exc:  # a bug or a row the code cannot handle: bounded retries
                failures += 1
                log.exception(
                    "event processing failed",
                    extra={"error": type(exc).__name__, "subject": subject, "attempt": failures},
                )
                if failures >= self._settings.max_attempts_on_error:
                    if split and len(msgs) > 1:
                        return _SPLIT
                    await self._dead_letter(msgs[0], deadletter, f"processing_failed: {type(exc).__name__}")
                    return None
            if self.stopping.is_set():
                # Shutting down: hand it back; JetStream redelivers it (before later messages).
                await self._nak(msgs, delay=0.0)
                return None
            for msg in msgs:  # still working on it: no redelivery while we wait out the outage
                with suppress(Exception):
                    await msg.in_progress()
            await asyncio.sleep(delay)
            delay = min(self._settings.max_backoff_s, delay * 2)

    async def run_unit(self, work: Work) -> Outcome:
        """`work` as one unit outside any message (the periodic jobs): its writes in one transaction,
        its alert events published in commit order with the consumers' (see `_commit`). Raises what
        `work` raised; the job runs again at its next turn."""
        return await self._commit(work)

    async def _commit(self, work: Work) -> Outcome:
        """Run `work`; its writes go in one transaction, then its alert events are published at once.

        The pool's connections are in autocommit mode: the service's unlocked reads
        need no transaction, and `write_transaction` opens the one for its writes. The
        relay's `ordered()` is taken after the last write (every row lock is held by
        then, so no deadlock with the other handler) and held past the commit until the
        events are published: the sample loop's and the lifecycle handler's events
        leave in commit order (a process's "resolved" never overtakes its "firing")."""
        async with AsyncExitStack() as ordered:
            async with self._pool.connection() as conn:

                @asynccontextmanager
                async def write_transaction():
                    async with conn.transaction():
                        yield
                        if self._relay is not None:
                            await ordered.enter_async_context(self._relay.ordered())

                outcome = await work(AlerterService(AlerterRepository(conn), write_transaction, self.windows.current))
            if outcome.outbox and self._relay is not None:
                await self._relay.publish_committed(outcome.outbox)  # never raises: the relay retries
        metrics.ALERTER_SAMPLES_EVALUATED.inc(outcome.evaluated)
        for alert in outcome.alerts:  # alerts are rare: per alert is fine
            metrics.ALERTER_ALERTS.labels(alert.type, alert.state).inc()
        return outcome

    async def _nak(self, msgs: Sequence[Msg], delay: float = 0.0) -> None:
        await acks.nak(msgs, delay)

    async def _dead_letter(self, msg: Msg, subject: str, reason: str) -> None:
        """Park it (procwatch_messaging.acks), retrying the publish until it is stored: the message
        stays in hand meanwhile, so nothing after it is handled first."""
        delay = 0.1
        while True:
            try:
                await acks.dead_letter(acks.js_publisher(self._js()), subject, [(msg, reason)])
                return
            except Exception as exc:  # broker trouble: keep the message until it is parked
                if self.stopping.is_set():
                    return
                log.warning("dead-letter publish failed; retrying", extra={"error": type(exc).__name__})
                await asyncio.sleep(delay)
                delay = min(self._settings.max_backoff_s, delay * 2)


_SPLIT = object()


def _observe_sample_alerts(outcome: Outcome) -> None:
    """Sample -> alert latency of alerts raised by samples (their occurred_at is the sample's time)."""
    if outcome.alerts:
        now = time.time()
        for alert in outcome.alerts:
            metrics.ALERTER_SAMPLE_TO_ALERT.observe(max(0.0, now - alert.occurred_at.timestamp()))


def _waited_ms(msg: Msg, handled_from: float) -> float | None:
    with suppress(Exception):
        stored = msg.metadata.timestamp.timestamp()  # when the server stored it (same host in the bench)
        return round((time.time() - (time.perf_counter() - handled_from) - stored) * 1000, 1)
    return None
