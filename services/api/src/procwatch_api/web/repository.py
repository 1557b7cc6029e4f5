"""All SQL of the dashboard (procwatch_api.web) that the API's other repositories do not already have.

Runs on the request's unit of work (the connection of repository.Repository: one transaction,
never committed here). Every read names the owner, so another user's rows are never shown.
The session lookup on every page is repository.Reads.user_id_for_session (the read pool).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import text

from procwatch_api.repository import PROCESS_COLUMNS, Repository

_WP_COLUMNS = ", ".join(f"wp.{c.strip()}" for c in PROCESS_COLUMNS.split(","))
# The newest alerts shown on the alerts page and per process.
RECENT_ALERTS = 50
# Every column of the alert (service.present_alert reads what the alerts table has, whatever
# migrations added), with where it fired.
_ALERT_COLUMNS = ("a.*, coalesce(wp.process_name, '') as process_name,"
                  " coalesce(s.hostname, a.hostname) as server_hostname")


class Bucket(NamedTuple):
    """One point of a process chart: the samples of [at, at + step) aggregated."""

    at: datetime
    cpu_pct: float
    memory_pct: float
    count_min: int
    count_max: int
    oldest_start_min: int | None
    oldest_start_max: int | None


class WebRepository(Repository):
    """The API's Repository (same connection helpers) plus what only the pages read and write."""

    # --- sign-in ------------------------------------------------------------

    async def insert_session(self, user_id: int, session_hash: str, expires_at: datetime) -> None:
        await self.conn.execute(
            text("insert into web_sessions (session_hash, user_id, expires_at) values (:h, :uid, :exp)"),
            {"h": session_hash, "uid": user_id, "exp": expires_at},
        )

    async def delete_session(self, session_hash: str) -> None:
        # Expired sessions of anyone go too: sign-outs keep the table small without a job.
        await self.conn.execute(
            text("delete from web_sessions where session_hash = :h or expires_at < now()"), {"h": session_hash}
        )

    async def consume_signin_link(self, token_hash: str) -> int | None:
        """The link's user when it is unused and unexpired; it is deleted either way (one use).
        Links are made by procwatch_db.accounts.create_signin_link_token (`procwatch up`, admin)."""
        row = await self._one(
            "delete from web_signin_links where token_hash = :h returning user_id, expires_at > now() as valid",
            h=token_hash,
        )
        return row["user_id"] if row and row["valid"] else None

    # --- pages --------------------------------------------------------------

    async def processes_of_user(self, user_id: int) -> list[dict[str, Any]]:
        """Every watched process of the user (the fleet's counts), bounded by the plan's limits."""
        return await self._all(
            f"select {_WP_COLUMNS} from watched_processes wp where wp.user_id = :uid order by wp.server_id, wp.id",
            uid=user_id,
        )

    async def processes_of_server(self, user_id: int, server_id: int) -> list[dict[str, Any]]:
        return await self._all(
            f"select {_WP_COLUMNS} from watched_processes wp where wp.server_id = :sid and wp.user_id = :uid"
            " order by wp.process_name",
            sid=server_id, uid=user_id,
        )

    async def buckets(self, process_id: int, start: datetime, end: datetime, step_s: int) -> list[Bucket]:
        """The process's samples in [start, end] in buckets of step_s seconds (one range scan of
        uq_process_samples_process_time; a bounded number of rows whatever the range)."""
        result = await self.conn.execute(text(
            "select to_timestamp(floor(extract(epoch from recorded_at) / :step) * :step) as at,"
            " avg(cpu_pct), avg(memory_pct), min(count), max(count), min(oldest_start_unix), max(oldest_start_unix)"
            " from process_samples where watched_process_id = :pid and recorded_at between :start and :end"
            " group by 1 order by 1"
        ), {"pid": process_id, "start": start, "end": end, "step": step_s})
        return [Bucket(*row) for row in result.all()]

    async def open_alerts(self, user_id: int) -> list[dict[str, Any]]:
        """Firing now: the open episodes of the user's processes (the partial index of open
        episodes) and of the user's servers."""
        return await self._all(
            f"select {_ALERT_COLUMNS} from watched_processes wp"
            " join alerts a on a.watched_process_id = wp.id and a.resolved_at is null"
            " join servers s on s.id = wp.server_id where wp.user_id = :uid"
            f" union all select {_ALERT_COLUMNS} from servers s"
            " join alerts a on a.server_id = s.id and a.watched_process_id is null and a.resolved_at is null"
            " left join watched_processes wp on false where s.user_id = :uid"
            " order by id desc",
            uid=user_id,
        )

    async def recent_alerts(self, user_id: int, limit: int = RECENT_ALERTS) -> list[dict[str, Any]]:
        """The user's newest alerts: the newest `limit` of each process and server (index scans of
        ix_alerts_process_newest / ix_alerts_server_newest), merged."""
        return await self._all(
            f"select * from (select {_ALERT_COLUMNS} from watched_processes wp"
            " join servers s on s.id = wp.server_id"
            " cross join lateral (select * from alerts where watched_process_id = wp.id order by id desc"
            " limit :n) a where wp.user_id = :uid"
            f" union all select {_ALERT_COLUMNS} from servers s"
            " cross join lateral (select * from alerts where server_id = s.id and watched_process_id is null"
            " order by id desc limit :n) a left join watched_processes wp on false where s.user_id = :uid) r"
            " order by id desc limit :n",
            uid=user_id, n=limit,
        )
