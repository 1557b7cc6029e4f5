"""Maintenance windows in the alerter (docs/maintenance.md).

- `WindowCache`: the windows that may be in effect, loaded in one statement and kept for
  `maintenance_refresh_s` (then reloaded if the table changed); the service asks it only when it
  writes a transition (never per sample), so a change made through the API takes effect within
  that time.
- `MaintenanceEndJob`: the periodic job `maintenance-ended` (one replica at a time, like the
  offline job): episodes that started suppressed and are no longer covered by any window are
  published once (AlerterService.notify_after_maintenance).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from procwatch_domain.maintenance import EMPTY_INDEX, WindowIndex

from procwatch_alerter.repository import AlerterRepository
from procwatch_alerter.service import AlerterService, Outcome

log = logging.getLogger("procwatch.alerter.maintenance")

RunUnit = Callable[[Callable[[AlerterService], Awaitable[Outcome]]], Awaitable[Outcome]]


class WindowCache:
    def __init__(self, refresh_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._refresh_s = refresh_s
        self._clock = clock
        self._index: WindowIndex = EMPTY_INDEX
        self._loaded_at: float | None = None
        self._version: tuple | None = None
        self.loads = 0

    def invalidate(self) -> None:
        self._loaded_at = None

    async def current(self, repo: AlerterRepository) -> WindowIndex:
        """The index; past `refresh_s`, the table's version (one aggregate over a small table) is read,
        and the windows only when it changed, so an unchanged fleet of windows keeps its computed spans."""
        now = self._clock()
        if self._loaded_at is None or now - self._loaded_at >= self._refresh_s:
            version = await repo.windows_version()
            if version != self._version or self._loaded_at is None:
                self._index = WindowIndex(await repo.load_windows())
                self._version = version
                self.loads += 1
            self._loaded_at = now
        return self._index


class MaintenanceEndJob:
    def __init__(self, run_unit: RunUnit, batch: int) -> None:
        self._run_unit = run_unit
        self._batch = batch
        self.notified = 0

    async def run(self) -> None:
        outcome = await self._run_unit(lambda svc: svc.notify_after_maintenance(self._batch))
        for alert in outcome.alerts:
            self.notified += 1
            log.info("alert still firing after maintenance", extra={
                "alert_id": alert.id, "type": alert.type, "server_id": alert.server.id,
                "process_id": alert.process.id if alert.process else None})
