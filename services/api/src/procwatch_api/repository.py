"""All SQL of the API. Functions take the request's connection and never commit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

PROCESS_COLUMNS = (
    "id, server_id, user_id, process_name, enabled, alert_on_down, alert_on_restart, alert_on_cpu,"
    " alert_on_memory, cpu_threshold_pct, memory_threshold_pct, last_count, last_cpu_pct, last_memory_pct,"
    " last_sample_at, alerted_state, samples_total, created_at, updated_at"
)
SERVER_COLUMNS = "id, hostname, last_agent_version, created_at"
# Allocated in the statement that changes the process, so the event id is known before the outbox insert.
NEXT_EVENT_ID = "nextval(pg_get_serial_sequence('outbox_events', 'id')) as event_id"
DUPLICATE_NAME_CONSTRAINT = "uq_watched_processes_server_name"
# The get route's two sample queries (bench/api_load.py EXPLAINs these very strings).
NEWEST_SAMPLES_SQL = (
    "select id, watched_process_id, count, cpu_pct, memory_pct, oldest_start_unix, recorded_at"
    " from process_samples where watched_process_id = :pid order by recorded_at desc limit :n"
)
OLDEST_START_CHANGES_SQL = (
    "select o from (select oldest_start_unix as o, recorded_at,"
    " lag(oldest_start_unix) over (order by recorded_at) as prev,"
    " row_number() over (order by recorded_at) as rn"
    " from process_samples where watched_process_id = :pid and recorded_at >= :since) w"
    " where rn = 1 or o is distinct from prev order by recorded_at"
)


class DuplicateName(Exception):
    pass


@dataclass
class ServerPlan:
    id: int
    hostname: str
    last_agent_version: str | None
    plan: str
    limit: int


def _is_duplicate_name(exc: IntegrityError) -> bool:
    diag = getattr(exc.orig, "diag", None)
    return getattr(diag, "constraint_name", None) == DUPLICATE_NAME_CONSTRAINT


class Repository:
    """One request's unit of work: its connection, and whether it wrote outbox rows."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.outbox_rows = 0

    async def _all(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        result = await self.conn.execute(text(sql), params)
        return [dict(row) for row in result.mappings().all()]

    async def _one(self, sql: str, **params: Any) -> dict[str, Any] | None:
        result = await self.conn.execute(text(sql), params)
        row = result.mappings().first()
        return dict(row) if row is not None else None

    # --- auth ---------------------------------------------------------------

    async def user_id_for_token_hash(self, token_hash: str) -> int | None:
        row = await self._one(
            "select user_id from api_tokens where token_hash = :h and revoked_at is null", h=token_hash
        )
        return row["user_id"] if row else None

    # --- servers ------------------------------------------------------------

    async def server_with_plan(self, user_id: int, server_id: int, *, lock: bool = False) -> ServerPlan | None:
        row = await self._one(
            "select s.id, s.hostname, s.last_agent_version, u.plan, p.max_processes_per_server as limit"
            " from servers s join users u on u.id = s.user_id join plans p on p.name = u.plan"
            " where s.id = :sid and s.user_id = :uid" + (" for update of s" if lock else ""),
            sid=server_id, uid=user_id,
        )
        return ServerPlan(**row) if row else None

    async def server_exists(self, user_id: int, server_id: int) -> bool:
        row = await self._one("select 1 as ok from servers where id = :sid and user_id = :uid", sid=server_id, uid=user_id)
        return row is not None

    async def list_servers(self, user_id: int) -> list[dict[str, Any]]:
        return await self._all(f"select {SERVER_COLUMNS} from servers where user_id = :uid order by id", uid=user_id)

    async def get_server(self, user_id: int, server_id: int) -> dict[str, Any] | None:
        return await self._one(
            f"select {SERVER_COLUMNS} from servers where id = :sid and user_id = :uid", sid=server_id, uid=user_id
        )

    async def insert_server(self, user_id: int, hostname: str, agent_key_hash: str) -> dict[str, Any]:
        row = await self._one(
            f"insert into servers (user_id, hostname, agent_key_hash) values (:uid, :h, :k) returning {SERVER_COLUMNS}",
            uid=user_id, h=hostname, k=agent_key_hash,
        )
        assert row is not None
        return row

    async def delete_server(self, user_id: int, server_id: int) -> bool:
        row = await self._one(
            "delete from servers where id = :sid and user_id = :uid returning id", sid=server_id, uid=user_id
        )
        return row is not None

    # --- processes ----------------------------------------------------------

    async def list_processes(self, server_id: int) -> list[dict[str, Any]]:
        return await self._all(
            f"select {PROCESS_COLUMNS} from watched_processes where server_id = :sid order by id", sid=server_id
        )

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

    async def newest_samples(self, process_id: int, limit: int) -> list[dict[str, Any]]:
        # Backward scan of uq_process_samples_process_time.
        return await self._all(NEWEST_SAMPLES_SQL, pid=process_id, n=limit)

    async def oldest_start_changes_since(self, process_id: int, since: datetime) -> list[int | None]:
        """oldest_start_unix of the process's samples since `since`, in time order, with every sample
        whose value equals the previous one's left out (in SQL).

        Range scan of uq_process_samples_process_time over the window only (at most 24 h of one
        process). Dropping a value equal to its predecessor never changes what the restart rule
        (procwatch_domain.restarts) counts, since a pair of equal values is never a restart; it
        turns the 8,640 rows of a day at 10 s ticks into a few dozen, so the cost no longer grows
        with the sample rate in Python. tests/unit/test_bench_restart_runs.py checks the equivalence.
        """
        result = await self.conn.execute(text(OLDEST_START_CHANGES_SQL), {"pid": process_id, "since": since})
        return list(result.scalars().all())

    async def alerts_page(self, process_id: int, before_id: int | None, limit: int) -> list[dict[str, Any]]:
        return await self._all(
            "select id, type, state, value, threshold, started_at, resolved_at, resolve_reason from alerts"
            " where watched_process_id = :pid and (cast(:before as bigint) is null or id < cast(:before as bigint))"
            " order by id desc limit :n",
            pid=process_id, before=before_id, n=limit,
        )

    # --- outbox -------------------------------------------------------------

    async def insert_outbox_event(self, event_id: int, subject: str, payload: str) -> None:
        await self.conn.execute(
            text("insert into outbox_events (id, subject, payload) values (:id, :subject, :payload)"),
            {"id": event_id, "subject": subject, "payload": payload},
        )
        self.outbox_rows += 1
