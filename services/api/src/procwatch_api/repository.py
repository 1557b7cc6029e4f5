"""All SQL of the API.

`Repository` is a request's unit of work on SQLAlchemy (one transaction, never
committed here). `Reads` serves the two hot read routes (list and get of
processes) from a psycopg pool in autocommit mode: each is one statement that
authenticates the token, checks ownership and reads the rows, so a request is a
single round trip with no BEGIN/COMMIT, and psycopg prepares the statements
server-side after a few uses (no planning per request over the sample
partitions).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any

from psycopg_pool import AsyncConnectionPool
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from procwatch_api.restart_window import Run, runs_from_boundaries
from procwatch_domain.rules import setting_columns_sql

PROCESS_COLUMNS = (
    "id, server_id, user_id, process_name, enabled, " + setting_columns_sql() + ", last_count, last_cpu_pct,"
    " last_memory_pct, last_sample_at, alerted_state, samples_total, created_at, updated_at"
)
SERVER_COLUMNS = ("id, hostname, last_agent_version, created_at, last_seen_at, offline_deadline_at, offline_since,"
                  " offline_after_s, alert_on_offline")
# An alert history row as the API presents it (service.present_alert).
ALERT_COLUMNS = ("id, type, state, value, threshold, started_at, resolved_at, resolve_reason, suppressed,"
                 " acknowledged_at, acknowledged_by, ack_note")
# Allocated in the statement that changes the process, so the event id is known before the outbox insert.
NEXT_EVENT_ID = "nextval(pg_get_serial_sequence('outbox_events', 'id')) as event_id"
DUPLICATE_NAME_CONSTRAINT = "uq_watched_processes_server_name"
_PROCESS_NAMES = tuple(c.strip() for c in PROCESS_COLUMNS.split(","))
# The hot reads return the process's timestamps as naive UTC, like SampleRow's recorded_at:
# service.json_time hands those to orjson (no Python formatting; an aware value costs most).
_PROCESS_TIMES = ("last_sample_at", "created_at", "updated_at")
_WP_COLUMNS = ", ".join(f"wp.{c} at time zone 'UTC' as {c}" if c in _PROCESS_TIMES else f"wp.{c}"
                        for c in _PROCESS_NAMES)
# A SampleRow: these columns in this order, recorded_at as a naive datetime in UTC (decoding and
# formatting a naive timestamp is much cheaper than an aware one, 100 times per get).
SAMPLE_NAMES = ("id", "watched_process_id", "count", "cpu_pct", "memory_pct", "oldest_start_unix", "recorded_at")
SampleRow = tuple
_recorded_at = itemgetter(len(SAMPLE_NAMES) - 1)
# The get route's samples leave PostgreSQL as one array per column in a single row: a row per
# sample carried every process column as NULL, which cost the API more to receive.
# The aggregates take the rows in the order of their sorted subquery (PostgreSQL documents this as
# what "will usually work"; an ORDER BY per aggregate would sort once per
# column), so Reads checks the order and sorts if it was ever not kept.
_SAMPLE_ARRAYS = ", ".join(
    f"array_agg({c})" for c in SAMPLE_NAMES[:-1]
) + ", array_agg(recorded_at at time zone 'UTC')"
# The caller's user id from the token hash: no row when it is unknown or revoked.
_TOKEN = "select user_id from api_tokens where token_hash = %(h)s and revoked_at is null"

# The user of an unexpired dashboard session (procwatch_api.web.sessions), from the sha256 of its id.
_SESSION = "select user_id from web_sessions where session_hash = %(h)s and expires_at > now()"

# List route: token -> user, the owned server with its plan, its processes (one row per
# process; one row with null process columns when it has none; server columns null when
# the server is missing or another user's).
LIST_PROCESSES_SQL = (
    "select t.user_id, s.id, s.hostname, s.last_agent_version, u.plan, pl.max_processes_per_server, "
    + _WP_COLUMNS
    + " from (" + _TOKEN + ") t"
    " left join (servers s join users u on u.id = s.user_id join plans pl on pl.name = u.plan)"
    " on s.id = %(sid)s and s.user_id = t.user_id"
    " left join watched_processes wp on wp.server_id = s.id"
    " order by wp.id"
)
# Get route, one statement (so one snapshot: samples_total and the samples agree, which the
# restart window relies on), one row: user id, owned server id, the process (nulls for what is
# missing), then the newest samples since %(since)s as arrays (backward scan of
# uq_process_samples_process_time in each partition left after pruning on %(since)s), read only
# when the caller owns the process. No row: token unknown/revoked.
GET_PROCESS_SQL = (
    "with t as (" + _TOKEN + "),"
    " s as (select s.id from servers s join t on s.user_id = t.user_id where s.id = %(sid)s),"
    " wp as (select " + PROCESS_COLUMNS + " from watched_processes where id = %(pid)s"
    " and server_id = (select id from s))"
    " select t.user_id, (select id from s), " + _WP_COLUMNS + ", n.*"
    " from t left join wp on true"
    " left join lateral (select " + _SAMPLE_ARRAYS + " from ("
    " select * from process_samples where watched_process_id = %(pid)s"
    " and recorded_at >= cast(%(since)s as timestamp) at time zone 'UTC' and exists (select from wp)"
    " order by recorded_at desc limit %(n)s) newest) n on wp.id is not null"
)
# `since` that keeps every sample (and every partition) in the get statement.
ALL_SAMPLES_SINCE = datetime(1, 1, 1)
# The runs of equal consecutive oldest_start_unix since %(since)s (procwatch_api.restart_window):
# only each run's first and last sample leave PostgreSQL. Times are naive UTC, like SampleRow's.
RESTART_RUNS_SQL = (
    "select o, recorded_at at time zone 'UTC', starts, ends from (select oldest_start_unix as o, recorded_at,"
    " lag(recorded_at) over w is null or lag(oldest_start_unix) over w is distinct from oldest_start_unix"
    " as starts,"
    " lead(recorded_at) over w is null or lead(oldest_start_unix) over w is distinct from oldest_start_unix"
    " as ends"
    " from process_samples where watched_process_id = %(pid)s"
    " and recorded_at >= cast(%(since)s as timestamp) at time zone 'UTC'"
    " window w as (order by recorded_at)) r"
    " where starts or ends order by recorded_at"
)


class DuplicateName(Exception):
    pass


@dataclass
class UserServers:
    """A user's plan, its server limit, and how many servers the user has."""

    plan: str
    limit: int
    count: int


@dataclass
class ServerPlan:
    id: int
    hostname: str
    last_agent_version: str | None
    plan: str
    limit: int


@dataclass
class ProcessesOfServer:
    """What the list route reads; user_id None = token unknown/revoked, server None = not the caller's."""

    user_id: int | None
    server: ServerPlan | None
    processes: list[dict[str, Any]]


@dataclass
class ProcessWithSamples:
    """What the get route reads; user_id None = token unknown/revoked."""

    user_id: int | None
    server_found: bool
    process: dict[str, Any] | None
    samples: list[SampleRow]  # newest first


class Reads:
    """The hot read routes on a psycopg pool (autocommit: nothing to commit, no BEGIN)."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def _rows(self, sql: str, params: dict[str, Any]) -> list[tuple]:
        async with self.pool.connection() as conn:
            # Binary results: timestamps and floats decode in C, not by parsing text.
            cur = await conn.execute(sql, params, binary=True)
            return await cur.fetchall()

    async def processes_of_server(self, token_hash: str, server_id: int) -> ProcessesOfServer:
        rows = await self._rows(LIST_PROCESSES_SQL, {"h": token_hash, "sid": server_id})
        if not rows:
            return ProcessesOfServer(None, None, [])
        first = rows[0]
        if first[1] is None:
            return ProcessesOfServer(first[0], None, [])
        server = ServerPlan(id=first[1], hostname=first[2], last_agent_version=first[3], plan=first[4],
                            limit=first[5])
        names = _PROCESS_NAMES
        processes = [dict(zip(names, row[6:])) for row in rows if row[6] is not None]
        return ProcessesOfServer(first[0], server, processes)

    async def process_with_newest_samples(self, token_hash: str, server_id: int, process_id: int,
                                          limit: int, recent_since: datetime) -> ProcessWithSamples:
        """The newest `limit` samples, looked for first among those since `recent_since` (naive UTC):
        PostgreSQL then opens only the partitions from that day on, not every day kept (up to 90;
        a generic plan over every partition costs PostgreSQL CPU in proportion). When fewer turn up than
        the process has samples, the older ones are read across every partition."""
        found = await self._newest(token_hash, server_id, process_id, limit, recent_since)
        process = found.process
        if process is not None and len(found.samples) < limit and process["samples_total"] > len(found.samples):
            found = await self._newest(token_hash, server_id, process_id, limit, ALL_SAMPLES_SINCE)
        return found

    async def _newest(self, token_hash: str, server_id: int, process_id: int, limit: int,
                      since: datetime) -> ProcessWithSamples:
        rows = await self._rows(GET_PROCESS_SQL, {"h": token_hash, "sid": server_id, "pid": process_id, "n": limit,
                                                  "since": since})
        if not rows:
            return ProcessWithSamples(None, False, None, [])
        row = rows[0]
        end = 2 + len(_PROCESS_NAMES)
        if row[2] is None:
            return ProcessWithSamples(row[0], row[1] is not None, None, [])
        # array_agg over no rows is NULL: a process with no samples (since `since`).
        samples = list(zip(*row[end:])) if row[end] is not None else []
        times = row[-1]
        if samples and any(newer < older for newer, older in zip(times, times[1:])):
            samples.sort(key=_recorded_at, reverse=True)
        return ProcessWithSamples(row[0], row[1] is not None, dict(zip(_PROCESS_NAMES, row[2:end])), samples)

    async def user_id_for_token(self, token_hash: str) -> int | None:
        """The user of an unrevoked token (every route but the two hot reads, which join this in)."""
        rows = await self._rows(_TOKEN, {"h": token_hash})
        return rows[0][0] if rows else None

    async def user_id_for_session(self, session_hash: str) -> int | None:
        """The user of an unexpired dashboard session (the web pages, and /events with a cookie)."""
        rows = await self._rows(_SESSION, {"h": session_hash})
        return rows[0][0] if rows else None

    async def restart_runs_since(self, process_id: int, since: datetime) -> list[Run]:
        """`since` naive UTC. Range scan of uq_process_samples_process_time over the window (at most 24 h of one process)."""
        return runs_from_boundaries(await self._rows(RESTART_RUNS_SQL, {"pid": process_id, "since": since}))


def _is_duplicate_name(exc: IntegrityError) -> bool:
    diag = getattr(exc.orig, "diag", None)
    return getattr(diag, "constraint_name", None) == DUPLICATE_NAME_CONSTRAINT


class RowQueries:
    """Statements on `self.conn` (the request's SQLAlchemy connection) answered as dicts: the base of
    every repository of the unit of work (this one, channels, maintenance windows, acknowledgements)."""

    conn: AsyncConnection

    async def _all(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        result = await self.conn.execute(text(sql), params)
        return [dict(row) for row in result.mappings().all()]

    async def _one(self, sql: str, **params: Any) -> dict[str, Any] | None:
        result = await self.conn.execute(text(sql), params)
        row = result.mappings().first()
        return dict(row) if row is not None else None

    async def _insert_owned(self, table: str, user_id: int, fields: dict[str, Any], returning: str) -> dict[str, Any]:
        """Insert the user's row with `fields` (column names are the caller's, never a client's)."""
        names = "".join(f", {k}" for k in fields)
        values = "".join(f", :{k}" for k in fields)
        row = await self._one(
            f"insert into {table} (user_id{names}) values (:_uid{values}) returning {returning}",
            _uid=user_id, **fields,
        )
        assert row is not None
        return row

    async def _delete_owned(self, table: str, row_id: int, user_id: int) -> bool:
        """Delete the user's row; False when there is none (missing or another user's)."""
        row = await self._one(f"delete from {table} where id = :_id and user_id = :_uid returning id",
                              _id=row_id, _uid=user_id)
        return row is not None

    async def _update_owned(self, table: str, row_id: int, user_id: int, fields: dict[str, Any],
                            returning: str) -> dict[str, Any] | None:
        """Set `fields` (column names are the caller's, never a client's) and updated_at on the user's row."""
        assignments = "".join(f"{k} = :{k}, " for k in fields)
        return await self._one(
            f"update {table} set {assignments}updated_at = now() where id = :_id and user_id = :_uid"
            f" returning {returning}",
            _id=row_id, _uid=user_id, **fields,
        )


class Repository(RowQueries):
    """One request's unit of work: its connection, and whether it wrote outbox rows."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.outbox_rows = 0

    # --- servers ------------------------------------------------------------

    async def server_with_plan(self, user_id: int, server_id: int, *, lock: bool = False) -> ServerPlan | None:
        row = await self._one(
            "select s.id, s.hostname, s.last_agent_version, u.plan, p.max_processes_per_server as limit"
            " from servers s join users u on u.id = s.user_id join plans p on p.name = u.plan"
            " where s.id = :sid and s.user_id = :uid" + (" for update of s" if lock else ""),
            sid=server_id, uid=user_id,
        )
        return ServerPlan(**row) if row else None

    async def lock_user_servers(self, user_id: int) -> UserServers:
        """Locks the user's row until the transaction ends, so concurrent creates of one user's
        servers count one after another (like the server row for its processes). The count is a
        second statement: one that waited for the lock would count with its older snapshot."""
        row = await self._one(
            "select u.plan, p.max_servers as limit from users u join plans p on p.name = u.plan"
            " where u.id = :uid for update of u",
            uid=user_id,
        )
        assert row is not None  # the caller was just authenticated as this user
        count = await self._one("select count(*) as n from servers where user_id = :uid", uid=user_id)
        return UserServers(plan=row["plan"], limit=row["limit"], count=int(count["n"]) if count else 0)

    async def server_exists(self, user_id: int, server_id: int) -> bool:
        row = await self._one("select 1 as ok from servers where id = :sid and user_id = :uid", sid=server_id, uid=user_id)
        return row is not None

    async def list_servers(self, user_id: int) -> list[dict[str, Any]]:
        return await self._all(f"select {SERVER_COLUMNS} from servers where user_id = :uid order by id", uid=user_id)

    async def get_server(self, user_id: int, server_id: int) -> dict[str, Any] | None:
        return await self._one(
            f"select {SERVER_COLUMNS} from servers where id = :sid and user_id = :uid", sid=server_id, uid=user_id
        )

    async def insert_server(self, user_id: int, agent_key_hash: str, fields: dict[str, Any]) -> dict[str, Any]:
        """fields: hostname and any of the liveness settings (the column defaults otherwise)."""
        return await self._insert_owned("servers", user_id, {"agent_key_hash": agent_key_hash, **fields},
                                        SERVER_COLUMNS)

    async def update_server(self, user_id: int, server_id: int, fields: dict[str, Any]) -> dict[str, Any] | None:
        """A new offline_after_s moves the offline deadline with it (the partial index finds it)."""
        assignments = "".join(f", {k} = :{k}" for k in fields)
        return await self._one(
            f"update servers set id = id{assignments},"
            " offline_deadline_at = last_seen_at + make_interval(secs => coalesce(cast(:_after as integer), offline_after_s))"
            f" where id = :_sid and user_id = :_uid returning {SERVER_COLUMNS}",
            _sid=server_id, _uid=user_id, _after=fields.get("offline_after_s"), **fields,
        )

    async def delete_server(self, user_id: int, server_id: int) -> bool:
        return await self._delete_owned("servers", server_id, user_id)

    # --- processes ----------------------------------------------------------

    async def count_processes(self, server_id: int) -> int:
        row = await self._one("select count(*) as n from watched_processes where server_id = :sid", sid=server_id)
        return int(row["n"]) if row else 0

    async def process_of_owned_server(
        self, user_id: int, server_id: int, process_id: int
    ) -> tuple[bool, dict[str, Any] | None]:
        """(server found, process or None) in one query: owner check and row together."""
        row = await self._one(
            "select s.id as owned_server_id, " + ", ".join(f"wp.{c.strip()}" for c in PROCESS_COLUMNS.split(","))
            + " from servers s left join watched_processes wp on wp.server_id = s.id and wp.id = :pid"
            " where s.id = :sid and s.user_id = :uid",
            sid=server_id, uid=user_id, pid=process_id,
        )
        if row is None:
            return False, None
        row.pop("owned_server_id")
        return True, (row if row["id"] is not None else None)

    async def insert_process(self, server_id: int, user_id: int, fields: dict[str, Any]) -> dict[str, Any]:
        names = ", ".join(fields)
        values = ", ".join(f":{k}" for k in fields)
        # No savepoint: a duplicate aborts the whole request, whose transaction is rolled back.
        try:
            row = await self._one(
                f"insert into watched_processes (server_id, user_id, {names}) values (:_sid, :_uid, {values})"
                f" returning {PROCESS_COLUMNS}, {NEXT_EVENT_ID}",
                _sid=server_id, _uid=user_id, **fields,
            )
        except IntegrityError as exc:
            if _is_duplicate_name(exc):
                raise DuplicateName from exc
            raise
        assert row is not None
        return row

    async def update_process(self, server_id: int, process_id: int, fields: dict[str, Any]) -> dict[str, Any] | None:
        assignments = ", ".join(f"{k} = :{k}" for k in fields)
        try:
            return await self._one(
                f"update watched_processes set {assignments}, updated_at = now()"
                f" where id = :_pid and server_id = :_sid returning {PROCESS_COLUMNS}, {NEXT_EVENT_ID}",
                _pid=process_id, _sid=server_id, **fields,
            )
        except IntegrityError as exc:
            if _is_duplicate_name(exc):
                raise DuplicateName from exc
            raise

    async def delete_process(self, server_id: int, process_id: int) -> dict[str, Any] | None:
        return await self._one(
            f"delete from watched_processes where id = :pid and server_id = :sid"
            f" returning {PROCESS_COLUMNS}, {NEXT_EVENT_ID}",
            pid=process_id, sid=server_id,
        )

    async def delete_processes_of_server(self, server_id: int) -> list[dict[str, Any]]:
        return await self._all(
            f"delete from watched_processes where server_id = :sid returning {PROCESS_COLUMNS}, {NEXT_EVENT_ID}",
            sid=server_id,
        )

    # --- samples and alerts -------------------------------------------------

    async def alerts_page(self, process_id: int, before_id: int | None, limit: int) -> list[dict[str, Any]]:
        return await self._all(
            f"select {ALERT_COLUMNS} from alerts"
            " where watched_process_id = :pid and (cast(:before as bigint) is null or id < cast(:before as bigint))"
            " order by id desc limit :n",
            pid=process_id, before=before_id, n=limit,
        )

    async def server_alerts_page(self, server_id: int, before_id: int | None, limit: int) -> list[dict[str, Any]]:
        """The server's own alerts (watched_process_id null): ix_alerts_server_newest."""
        return await self._all(
            f"select {ALERT_COLUMNS} from alerts"
            " where server_id = :sid and watched_process_id is null"
            " and (cast(:before as bigint) is null or id < cast(:before as bigint))"
            " order by id desc limit :n",
            sid=server_id, before=before_id, n=limit,
        )

    # --- outbox -------------------------------------------------------------

    async def insert_outbox_event(self, event_id: int, subject: str, payload: str) -> None:
        await self.conn.execute(
            text("insert into outbox_events (id, subject, payload) values (:id, :subject, :payload)"),
            {"id": event_id, "subject": subject, "payload": payload},
        )
        self.outbox_rows += 1
