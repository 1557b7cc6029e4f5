"""All of the alerter's SQL. Never commits: locks and writes run inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, make_dataclass
from datetime import datetime

from psycopg import AsyncConnection
from psycopg.rows import args_row

from procwatch_domain.maintenance import WINDOW_COLUMNS, Window, window_from_row
from procwatch_domain.rules import SETTINGS, setting_columns_sql
from procwatch_messaging.outbox import INSERT_OUTBOX_ROW_SQL


# A watched process as the alerter sees it, with its server's hostname (fields in
# `PROCESS_COLUMNS` order). Its alert settings are one field per setting of the rule
# registry, so the row itself is the `AlertConfig` the rules read.
ProcessRow = make_dataclass(
    "ProcessRow",
    [
        ("id", int), ("server_id", int), ("user_id", int), ("process_name", str), ("hostname", str),
        ("enabled", bool),
        *((s.name, s.annotation) for s in SETTINGS),
        ("alerted_state", "str | None"), ("alert_evaluated_at", "datetime | None"), ("alert_streaks", "str | None"),
    ],
    slots=True,
)
ProcessRow.__module__ = __name__


@dataclass(frozen=True)
class StateUpdate:
    process_id: int
    alerted_state: str | None
    # None: leave alert_evaluated_at as it is (lifecycle changes).
    evaluated_at: datetime | None
    # The flap streaks after it (procwatch_domain.alerts.format_streaks), written in the same
    # statement as alerted_state: flap protection costs no round trip of its own. No default: the
    # statement overwrites the column, so every writer says what the runs are.
    streaks: str | None


@dataclass(frozen=True)
class AlertRow:
    """A new alert history row (an episode's start, or a one-shot restart). A server-level alert
    (server_offline) has no process and keeps the hostname it fired with."""

    watched_process_id: int | None
    server_id: int
    user_id: int
    type: str
    value: float | None
    threshold: float | None
    started_at: datetime
    event_id: str
    hostname: str | None = None
    # Started inside a maintenance window: nobody was notified (docs/maintenance.md).
    suppressed: bool = False


@dataclass(frozen=True)
class AlertResolution:
    watched_process_id: int
    type: str
    resolved_at: datetime
    reason: str


@dataclass(frozen=True)
class OutboxRow:
    subject: str
    msg_id: str
    payload: str


@dataclass(frozen=True)
class OfflineServer:
    """A server the job just declared offline (its row now has offline_since = last_seen_at)."""

    id: int
    user_id: int
    hostname: str
    last_seen_at: datetime
    offline_after_s: int
    offline_deadline_at: datetime
    now: datetime


@dataclass(frozen=True)
class OpenOfflineAlert:
    """An open server_offline alert that is over: its server is back, no longer flagged, or gone."""

    alert_id: int
    server_id: int
    user_id: int
    hostname: str
    deleted: bool
    alert_on_offline: bool
    last_seen_at: datetime | None
    offline_since: datetime | None
    now: datetime
    # Fired inside a maintenance window and never notified: its resolution is not notified either.
    suppressed_unnotified: bool = False


@dataclass(frozen=True)
class SuppressedEpisode:
    """An open episode that started inside a maintenance window and was never notified."""

    id: int
    event_id: str
    type: str
    server_id: int
    user_id: int
    watched_process_id: int | None
    process_name: str
    hostname: str
    value: float | None
    threshold: float | None
    now: datetime


@dataclass(frozen=True)
class ServerAlertResolution:
    alert_id: int
    resolved_at: datetime
    reason: str


# The names (process, server) come from the database, never from an event: what the
# alerter writes into alerts carries no text a publisher of events chose.
PROCESS_COLUMNS = (
    "wp.id, wp.server_id, wp.user_id, wp.process_name, s.hostname, wp.enabled, "
    + setting_columns_sql("wp.") + ", wp.alerted_state, wp.alert_evaluated_at, wp.alert_streaks"
)
_PROCESSES_WITH_SERVER = "watched_processes wp join servers s on s.id = wp.server_id"


# The offline job's two reads (the bench EXPLAINs them as they are: bench/offline.py). Params:
# judgeable (s), lag (s), type, n.
# Due servers: ix_servers_offline_due (partial: not declared, flag on) read up to now() - lag.
DUE_SERVERS_SQL = (
    "select s.id from servers s"
    " where s.offline_since is null and s.alert_on_offline"
    " and s.offline_deadline_at <= now() - make_interval(secs => %(lag)s)"
    " and s.offline_after_s <= %(judgeable)s"
    " and not exists (select 1 from alerts a where a.server_id = s.id and a.watched_process_id is null"
    "                 and a.type = %(type)s and a.resolved_at is null)"
    " order by s.offline_deadline_at limit %(n)s"
)
# Open alerts of the type whose server is back, unflagged or deleted: uq_alerts_open_server_episode
# (partial: open, server-level) holds only the open ones.
OFFLINE_ALERTS_OVER_SQL = (
    "select a.id, a.server_id, a.user_id, coalesce(s.hostname, a.hostname, ''), s.id is null,"
    " coalesce(s.alert_on_offline, false), s.last_seen_at, s.offline_since, now(),"
    " a.suppressed and a.unsuppressed_at is null"
    " from alerts a left join servers s on s.id = a.server_id"
    " where a.watched_process_id is null and a.type = %(type)s and a.resolved_at is null"
    " and (s.id is null or not s.alert_on_offline or s.offline_since is null or s.last_seen_at > s.offline_since)"
    " order by a.id limit %(n)s"
)

DECLARE_OFFLINE_SQL = (
    "with due as (" + DUE_SERVERS_SQL + " for update of s skip locked)"
    " update servers s set offline_since = s.last_seen_at from due where s.id = due.id"
    " returning s.id, s.user_id, s.hostname, s.last_seen_at, s.offline_after_s, s.offline_deadline_at, now()"
)
LOCK_OFFLINE_ALERTS_OVER_SQL = OFFLINE_ALERTS_OVER_SQL + " for update of a skip locked"


# Positional: one call per row (a sample batch reads thousands of rows a second).
_process_row = args_row(ProcessRow)


# Every window that may still be in effect, or ended within the last day (late samples).
LOAD_WINDOWS_SQL = (f"select {', '.join(WINDOW_COLUMNS)} from maintenance_windows"
                    " where effective_until is null or effective_until > now() - interval '1 day'")


class AlerterRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def lock_processes(self, process_ids: Sequence[int]) -> dict[int, ProcessRow]:
        """Lock the rows (in id order, so concurrent lockers never deadlock); missing ids are deleted."""
        if not process_ids:
            return {}
        async with self._conn.cursor(row_factory=_process_row) as cur:
            await cur.execute(
                f"select {PROCESS_COLUMNS} from {_PROCESSES_WITH_SERVER}"  # columns are ours
                " where wp.id = any(%s) order by wp.id for update of wp",
                (sorted(set(process_ids)),),
            )
            return {row.id: row for row in await cur.fetchall()}

    async def read_processes(self, process_ids: Sequence[int]) -> dict[int, ProcessRow]:
        """The rows without locking them: the common "nothing changes" path writes nothing."""
        if not process_ids:
            return {}
        async with self._conn.cursor(row_factory=_process_row) as cur:
            await cur.execute(
                f"select {PROCESS_COLUMNS} from {_PROCESSES_WITH_SERVER} where wp.id = any(%s)",  # ours
                (sorted(set(process_ids)),),
            )
            return {row.id: row for row in await cur.fetchall()}

    async def save_states(self, updates: Sequence[StateUpdate]) -> None:
        if not updates:
            return
        await self._conn.execute(
            "update watched_processes wp"
            " set alerted_state = v.alerted_state,"
            "     alert_evaluated_at = coalesce(v.evaluated_at, wp.alert_evaluated_at),"
            "     alert_streaks = v.streaks"
            " from unnest(%s::bigint[], %s::text[], %s::timestamptz[], %s::text[])"
            "      as v(id, alerted_state, evaluated_at, streaks)"
            " where wp.id = v.id",
            (
                [u.process_id for u in updates],
                [u.alerted_state for u in updates],
                [u.evaluated_at for u in updates],
                [u.streaks for u in updates],
            ),
        )

    async def insert_alerts(self, rows: Sequence[AlertRow]) -> None:
        """Idempotent: a row whose event_id exists (or a second open episode) is skipped."""
        if not rows:
            return
        async with self._conn.cursor() as cur:
            await cur.executemany(
                "insert into alerts (watched_process_id, server_id, user_id, type, state, value, threshold,"
                " started_at, event_id, hostname, suppressed)"
                " values (%s, %s, %s, %s, 'firing', %s, %s, %s, %s, %s, %s)"
                " on conflict do nothing",
                [
                    (r.watched_process_id, r.server_id, r.user_id, r.type, r.value, r.threshold, r.started_at,
                     r.event_id, r.hostname, r.suppressed)
                    for r in rows
                ],
            )

    async def resolve_alerts(self, resolutions: Sequence[AlertResolution]) -> None:
        if not resolutions:
            return
        async with self._conn.cursor() as cur:
            await cur.executemany(
                "update alerts set state = 'resolved', resolved_at = %s, resolve_reason = %s"
                " where watched_process_id = %s and type = %s and resolved_at is null"
                " and type <> 'process_restarted'",
                [(r.resolved_at, r.reason, r.watched_process_id, r.type) for r in resolutions],
            )

    async def add_outbox(self, rows: Sequence[OutboxRow]) -> list[int]:
        """Insert the rows (one pipelined round); returns their ids, in the same order."""
        if not rows:
            return []
        async with self._conn.cursor() as cur:
            await cur.executemany(INSERT_OUTBOX_ROW_SQL, [(r.subject, r.msg_id, r.payload) for r in rows],
                                  returning=True)
            return [(await cur.fetchone())[0] async for _ in cur.results()]

    # --- maintenance windows (docs/maintenance.md) --------------------------------------

    async def load_windows(self) -> list[Window]:
        """Every window that may still be in effect (or ended within the last day: late samples)."""
        cur = await self._conn.execute(LOAD_WINDOWS_SQL)
        return [window_from_row(r) for r in await cur.fetchall()]

    async def windows_version(self) -> tuple:
        """Changes whenever a window is created, updated, ended or deleted (the cache's reload test)."""
        cur = await self._conn.execute("select count(*), max(updated_at), max(id) from maintenance_windows")
        return tuple(await cur.fetchone())

    async def open_suppressed_episodes(self, process_ids: Sequence[int]) -> set[tuple[int, str]]:
        """(process, type) of the processes' open episodes that started suppressed and were never
        notified (ix_alerts_suppressed_open holds only those)."""
        if not process_ids:
            return set()
        cur = await self._conn.execute(
            "select watched_process_id, type from alerts"
            " where suppressed and resolved_at is null and unsuppressed_at is null and watched_process_id = any(%s)",
            (list(process_ids),),
        )
        return {(r[0], r[1]) for r in await cur.fetchall()}

    async def lock_suppressed_episodes(self, limit: int) -> list[SuppressedEpisode]:
        """Open suppressed episodes still waiting for their notification, oldest first, locked
        (skipping those another transaction holds)."""
        cur = await self._conn.execute(
            "select a.id, a.event_id, a.type, a.server_id, a.user_id, a.watched_process_id,"
            " coalesce(wp.process_name, ''), coalesce(s.hostname, a.hostname, ''), a.value, a.threshold, now()"
            " from alerts a left join watched_processes wp on wp.id = a.watched_process_id"
            " left join servers s on s.id = a.server_id"
            " where a.suppressed and a.resolved_at is null and a.unsuppressed_at is null"
            " and a.type <> 'process_restarted'"
            " order by a.id limit %s for update of a skip locked",
            (limit,),
        )
        return [SuppressedEpisode(*r) for r in await cur.fetchall()]

    async def mark_unsuppressed(self, alert_ids: Sequence[int]) -> None:
        if alert_ids:
            await self._conn.execute("update alerts set unsuppressed_at = now() where id = any(%s)",
                                     (list(alert_ids),))

    async def server_hostname(self, server_id: int) -> str | None:
        cur = await self._conn.execute("select hostname from servers where id = %s", (server_id,))
        row = await cur.fetchone()
        return row[0] if row else None

    # --- server liveness (the offline job) ------------------------------------------

    async def declare_offline(self, alert_type: str, judgeable_after_s: float, limit: int,
                              lag_s: float = 0.0) -> list[OfflineServer]:
        """Mark the due servers offline (offline_since = last_seen_at) and return them, oldest deadline
        first. Due: deadline passed (the database's clock) more than `lag_s` ago (ingest's current lag:
        a message of the server may still be queued that long), not declared yet, flag on, and its
        offline_after_s within what may be judged (procwatch_domain.liveness.LivenessGate). Found by
        ix_servers_offline_due; rows ingest is stamping right now are skipped (they are alive).
        Servers with an open alert of the type (a duplicate would break the unique episode) are left."""
        cur = await self._conn.execute(
            DECLARE_OFFLINE_SQL, {"judgeable": judgeable_after_s, "n": limit, "type": alert_type, "lag": lag_s},
        )
        return sorted((OfflineServer(*r) for r in await cur.fetchall()), key=lambda r: (r.offline_deadline_at, r.id))

    async def offline_alerts_to_resolve(self, alert_type: str, limit: int) -> list[OpenOfflineAlert]:
        """Open alerts of the type (uq_alerts_open_server_episode: only open ones are read) whose
        server is back (last_seen_at moved past offline_since), no longer flagged, or deleted."""
        cur = await self._conn.execute(LOCK_OFFLINE_ALERTS_OVER_SQL, {"type": alert_type, "n": limit})
        return [OpenOfflineAlert(*r) for r in await cur.fetchall()]

    async def clear_recovered(self) -> None:
        """Servers declared offline that were seen since count down to their deadline again
        (ix_servers_offline_declared: only declared ones are read). Also those whose alert was
        resolved by turning the flag off: a silence fires at most once, the next one fires again."""
        await self._conn.execute(
            "update servers set offline_since = null where offline_since is not null and last_seen_at > offline_since"
        )

    async def resolve_server_alerts(self, resolutions: Sequence[ServerAlertResolution]) -> None:
        if not resolutions:
            return
        async with self._conn.cursor() as cur:
            await cur.executemany(
                "update alerts set state = 'resolved', resolved_at = %s, resolve_reason = %s"
                " where id = %s and resolved_at is null",
                [(r.resolved_at, r.reason, r.alert_id) for r in resolutions],
            )
