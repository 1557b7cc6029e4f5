"""Reminders (docs/notifications.md, "Reminders"): the periodic job `reminders` (one replica at a
time). A channel with `repeat_every_s` is notified again while an alert episode it was told of
stays firing and unacknowledged, every `repeat_every_s` after its last notification to that
channel; an acknowledgement stops them, a resolution ends the episode, and a maintenance window
covering the alert holds them (they resume after it).

A reminder is a new delivery of the episode's firing event to that channel only: `reminder` n
(n >= 1), id `<episode_id>.reminder-<n>` (so its webhook-id differs from the first notification's,
which receivers dedupe on), `episode_id` the first notification's id, `occurred_at` unchanged (when
the episode started). (channel, id) is unique, so the n-th reminder is written once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from psycopg_pool import AsyncConnectionPool

from procwatch_contracts.messages import AlertEvent
from procwatch_domain.maintenance import WindowIndex

from procwatch_notifier.repository import DueReminder, NotifierRepository

log = logging.getLogger("procwatch.notifier.reminders")


def reminder_id(episode_id: str, n: int) -> str:
    return f"{episode_id}.reminder-{n}"


def reminder_event(last: AlertEvent, episode_id: str, n: int) -> AlertEvent:
    """The n-th reminder of an episode, from its last notification (the first one, a
    maintenance_ended one, or the previous reminder)."""
    return last.model_copy(update={"id": reminder_id(episode_id, n), "episode_id": episode_id, "reminder": n,
                                   "reason": None, "suppressed": False})


class ReminderJob:
    def __init__(self, pool: AsyncConnectionPool, batch: int, wake: Callable[[], None],
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._pool = pool
        self._batch = batch
        self._wake = wake
        self._clock = clock
        self.written = 0
        self.held = 0
        self.runs = 0

    async def run(self) -> None:
        self.runs += 1
        async with self._pool.connection() as conn, conn.transaction():
            repo = NotifierRepository(conn)
            due = await repo.due_reminders(self._batch)
            if not due:
                return
            windows = WindowIndex(await repo.windows_of_users(sorted({d.user_id for d in due})))
            now = self._clock()
            rows: list[tuple[DueReminder, str, str]] = []
            for d in due:
                if windows.suppressed(d.user_id, d.server_id, d.watched_process_id, now):
                    self.held += 1
                    continue
                event = reminder_event(AlertEvent.model_validate_json(d.payload), d.episode_id, d.reminder + 1)
                rows.append((d, event.id, event.model_dump_json()))
            written = await repo.insert_reminders(rows)
        self.written += written
        if written:
            log.info("reminders written", extra={"count": written})
            self._wake()
