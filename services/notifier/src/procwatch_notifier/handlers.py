"""The ALERTS consumer: alert events in, delivery rows out (sending is the Sender's, never here).

Per fetched batch, in stream order: parse; a suppressed event (inside a maintenance window) is
acked and adds nothing; ONE transaction inserts a pending delivery for each
(event, matching channel) (user, alert type filter, server filter, send_resolved, enabled;
ON CONFLICT DO NOTHING: a redelivered event adds nothing); commit; ack; wake the sender.
- Invalid events are dead-lettered (deadletter.alerts, with a Procwatch-Reason) and acked.
- Transient failures (database down) are retried in place with backoff, telling JetStream the
  batch is in progress: nothing later is inserted first, so delivery ids follow stream order.
- A batch that keeps failing otherwise is retried one event per transaction; an event that
  still fails is dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nats.aio.msg import Msg
from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError

from procwatch_contracts import subjects
from procwatch_contracts.messages import AlertEvent
from procwatch_messaging import acks
from procwatch_runtime import metrics
from procwatch_notifier.repository import NewDelivery, NotifierRepository
from procwatch_notifier.service import TRANSIENT_ERRORS
from procwatch_notifier.settings import NotifierSettings

if TYPE_CHECKING:
    from nats.js import JetStreamContext

log = logging.getLogger("procwatch.notifier")

MAX_ATTEMPTS_ON_ERROR = 3
MAX_BACKOFF_S = 5.0
_SPLIT = object()  # _insert's answer: the batch keeps failing, retry its events one by one


@dataclass
class ConsumerStats:
    batches: int = 0
    events: int = 0
    deliveries: int = 0
    dead_lettered: int = 0
    suppressed: int = 0


def new_delivery(event: AlertEvent, raw: bytes) -> NewDelivery:
    episode = (event.episode_id or event.id) if event.state == "firing" else None
    return NewDelivery(event.id, event.type, event.state, event.user_id, event.server.id, raw.decode(),
                       episode, event.reminder)


class Handlers:
    def __init__(self, settings: NotifierSettings, pool: AsyncConnectionPool,
                 js: Callable[[], JetStreamContext], wake: Callable[[], None]) -> None:
        self._settings = settings
        self._pool = pool
        self._js = js
        self._wake = wake
        self.stopping = asyncio.Event()
        self.stats = ConsumerStats()

    async def on_alert_batch(self, batch: Sequence[Msg]) -> None:
        if not batch:
            return
        self.stats.batches += 1
        self.stats.events += len(batch)
        valid: list[tuple[Msg, NewDelivery]] = []
        poison: list[tuple[Msg, str]] = []
        suppressed: list[Msg] = []
        for msg in batch:
            try:
                event = AlertEvent.model_validate_json(msg.data)
                if event.suppressed:  # inside a maintenance window: recorded, never notified
                    suppressed.append(msg)
                    continue
                valid.append((msg, new_delivery(event, msg.data)))
            except ValidationError as exc:
                poison.append((msg, f"invalid AlertEvent: {exc.errors()[0].get('msg', 'invalid')}"))
            except UnicodeDecodeError:
                poison.append((msg, "invalid AlertEvent: not UTF-8"))
        for msg in suppressed:
            await msg.ack()
        self.stats.suppressed += len(suppressed)
        if valid:
            inserted = await self._insert([m for m, _ in valid], [d for _, d in valid])
            if inserted is None:  # stopping: handed back, in order
                await acks.nak([m for m, _ in poison])
                return
            if inserted is _SPLIT:
                for msg, delivery in valid:
                    one = await self._insert([msg], [delivery], split=False)
                    if one is None:
                        return
                    if one is _SPLIT:
                        poison.append((msg, "processing_failed"))
                    else:
                        await msg.ack()
            else:
                for msg, _ in valid:
                    await msg.ack()
            self._wake()
        if poison:
            try:
                await acks.dead_letter(acks.js_publisher(self._js()), subjects.DEADLETTER_ALERTS, poison)
                self.stats.dead_lettered += len(poison)
            except Exception as exc:
                log.warning("dead-letter publish failed; redelivering", extra={"error": type(exc).__name__})
                await acks.nak([m for m, _ in poison], 1.0)

    async def _insert(self, msgs: list[Msg], deliveries: list[NewDelivery], *, split: bool = True):
        """Insert in one transaction; retry transient failures in place. The row count, None if
        stopping (the messages were naked), or _SPLIT after repeated unexpected failures."""
        delay, failures = 0.1, 0
        while True:
            try:
                async with self._pool.connection() as conn, conn.transaction():
                    count = await NotifierRepository(conn).insert_deliveries(deliveries)
                self.stats.deliveries += count
                metrics.NOTIFIER_DELIVERIES_QUEUED.inc(count)
                return count
            except TRANSIENT_ERRORS as exc:
                log.warning("inserting deliveries failed; retrying",
                            extra={"error": type(exc).__name__, "events": len(msgs), "retry_in_s": delay})
            except Exception as exc:
                failures += 1
                log.exception("inserting deliveries failed", extra={"error": type(exc).__name__,
                                                                    "events": len(msgs), "attempt": failures})
                if failures >= MAX_ATTEMPTS_ON_ERROR:
                    return _SPLIT
            if self.stopping.is_set():
                await acks.nak(msgs)
                return None
            for msg in msgs:  # still working on it: no redelivery meanwhile
                with suppress(Exception):
                    await msg.in_progress()
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)

