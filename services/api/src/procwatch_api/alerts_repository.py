"""All SQL of the alert acknowledgement routes (/alerts/{id}/ack).

Runs on the request's unit of work (deps.AlertsRepo); its outbox rows count on that unit, so the
outbox relay is woken after the commit. Every statement names the owner.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text

from procwatch_api.repository import ALERT_COLUMNS, Repository, RowQueries

_QUALIFIED = ", ".join(f"a.{c.strip()}" for c in ALERT_COLUMNS.split(","))


class AlertsRepository(RowQueries):
    def __init__(self, unit: Repository) -> None:
        self.unit = unit
        self.conn = unit.conn

    async def lock_alert(self, user_id: int, alert_id: int) -> dict[str, Any] | None:
        """The user's alert with what its event names (server, process), locked until the commit."""
        return await self._one(
            f"select {_QUALIFIED}, a.event_id, a.server_id, a.watched_process_id, wp.process_name,"
            " coalesce(s.hostname, a.hostname, '') as hostname"
            " from alerts a left join watched_processes wp on wp.id = a.watched_process_id"
            " left join servers s on s.id = a.server_id"
            " where a.id = :aid and a.user_id = :uid for update of a",
            aid=alert_id, uid=user_id,
        )

    async def set_acknowledgement(self, alert_id: int, at: datetime | None, by: int | None,
                                  note: str | None) -> dict[str, Any]:
        row = await self._one(
            "update alerts set acknowledged_at = :at, acknowledged_by = :by, ack_note = :note where id = :aid"
            f" returning {ALERT_COLUMNS}",
            at=at, by=by, note=note, aid=alert_id,
        )
        assert row is not None  # locked by lock_alert
        return row

    async def add_outbox(self, subject: str, msg_id: str, payload: str) -> None:
        await self.conn.execute(
            text("insert into outbox_events (subject, msg_id, payload) values (:subject, :msg_id, :payload)"),
            {"subject": subject, "msg_id": msg_id, "payload": payload},
        )
        self.unit.outbox_rows += 1
