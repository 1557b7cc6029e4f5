"""All SQL of the ingest service (psycopg 3, async). The caller owns the transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import AsyncConnection


@dataclass(frozen=True, slots=True)
class ServerRow:
    id: int
    user_id: int
    hostname: str
    agent_key_hash: str


@dataclass(frozen=True, slots=True)
class LockedProcess:
    id: int
    server_id: int
    process_name: str
    enabled: bool
    alert_on_down: bool
    alert_on_restart: bool
    alert_on_cpu: bool
    alert_on_memory: bool
    cpu_threshold_pct: float
    memory_threshold_pct: float
    last_count: int | None
    last_oldest_start_unix: int | None
    last_sample_at: datetime | None


@dataclass(frozen=True, slots=True)
class StoredSample:
    """A sample already in the table (a replay), with the one before it in time."""

    sample_id: int
    watched_process_id: int
    recorded_at: datetime
    previous_count: int | None
    previous_oldest_start_unix: int | None
    previous_recorded_at: datetime | None


@dataclass(frozen=True, slots=True)
class ProcessUpdate:
    id: int
    inserted: int
    # None: the last_* fields stay (no newer sample in the batch).
    last_count: int | None
    last_cpu_pct: float | None
    last_memory_pct: float | None
    last_sample_at: datetime | None
    last_oldest_start_unix: int | None


async def configure_connection(conn: AsyncConnection) -> None:
    """Per pooled connection: UTC session time zone and the batch staging table."""
    await conn.execute("set time zone 'UTC'")
    await conn.execute(
        "create temp table if not exists ingest_stage (wpid bigint, count int, cpu float8, mem float8,"
        " oldest bigint, t timestamptz) on commit delete rows"
    )
    await conn.commit()


class IngestRepository:
    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    async def load_servers(self, server_ids: list[int]) -> dict[int, ServerRow]:
        cur = await self.conn.execute(
            "select id, user_id, hostname, agent_key_hash from servers where id = any(%s::bigint[])",
            (server_ids,),
        )
        return {r[0]: ServerRow(*r) for r in await cur.fetchall()}

    async def load_enabled_processes(self, server_ids: list[int]) -> dict[int, dict[str, int]]:
        """server id -> {process_name: watched process id} for enabled processes."""
        cur = await self.conn.execute(
            "select server_id, process_name, id from watched_processes"
            " where server_id = any(%s::bigint[]) and enabled",
            (server_ids,),
        )
        out: dict[int, dict[str, int]] = {sid: {} for sid in server_ids}
        for server_id, name, pid in await cur.fetchall():
            out[server_id][name] = pid
        return out

    async def enabled_process_names(self, server_id: int) -> list[str]:
        cur = await self.conn.execute(
            "select process_name from watched_processes where server_id = %s and enabled order by process_name",
            (server_id,),
        )
        return [r[0] for r in await cur.fetchall()]

    async def lock_processes(self, process_ids: list[int]) -> dict[int, LockedProcess]:
        """Lock the rows in id order (replicas then never deadlock) and read their current state."""
        cur = await self.conn.execute(
            "select id, server_id, process_name, enabled, alert_on_down, alert_on_restart, alert_on_cpu,"
            " alert_on_memory, cpu_threshold_pct, memory_threshold_pct, last_count,"
            " last_oldest_start_unix, last_sample_at"
            " from watched_processes where id = any(%s::bigint[]) order by id for no key update",
            (sorted(process_ids),),
        )
        return {r[0]: LockedProcess(*r) for r in await cur.fetchall()}

    async def insert_samples(self, rows: list[tuple]) -> list[int | None]:
        """Insert the batch; returns, per row, the new sample id or None when (process, time)
        existed already (a replay).

        rows: (watched_process_id, count, cpu_pct, memory_pct, oldest_start_unix, recorded_at),
        unique (process, time) within the batch.

        Fast path (every batch but replays): allocate the ids in one statement, then COPY
        straight into process_samples inside a savepoint. A unique violation rolls the
        savepoint back and the batch takes the slow path: COPY into the session's staging
        table, INSERT .. SELECT .. ON CONFLICT DO NOTHING RETURNING.
        """
        async with self.conn.cursor(binary=True) as cur:
            await cur.execute(
                "select nextval('process_samples_id_seq') from generate_series(1, %s)", (len(rows),)
            )
            ids = [r[0] for r in await cur.fetchall()]
            try:
                async with self.conn.transaction():  # savepoint
                    async with cur.copy(
                        "copy process_samples (id, watched_process_id, count, cpu_pct, memory_pct,"
                        " oldest_start_unix, recorded_at) from stdin (format binary)"
                    ) as copy:
                        copy.set_types(["int8", "int8", "int4", "float8", "float8", "int8", "timestamptz"])
                        for sample_id, row in zip(ids, rows):
                            await copy.write_row((sample_id, *row))
                return ids  # type: ignore[return-value]
            except psycopg.errors.UniqueViolation:
                pass
            async with cur.copy(
                "copy ingest_stage (wpid, count, cpu, mem, oldest, t) from stdin (format binary)"
            ) as copy:
                copy.set_types(["int8", "int4", "float8", "float8", "int8", "timestamptz"])
                for row in rows:
                    await copy.write_row(row)
            await cur.execute(
                "insert into process_samples"
                " (watched_process_id, count, cpu_pct, memory_pct, oldest_start_unix, recorded_at)"
                " select wpid, count, cpu, mem, oldest, t from ingest_stage"
                " on conflict (watched_process_id, recorded_at) do nothing"
                " returning id, watched_process_id, recorded_at"
            )
            inserted = {(pid, at): sid for sid, pid, at in await cur.fetchall()}
            return [inserted.get((row[0], row[5])) for row in rows]

    async def delete_samples(self, sample_ids: list[int]) -> None:
        if sample_ids:
            await self.conn.execute("delete from process_samples where id = any(%s::bigint[])", (sample_ids,))

    async def stored_samples(self, process_ids: list[int], times: list[datetime]) -> list[StoredSample]:
        """Samples that exist already (or are out of order), each with its predecessor in time."""
        cur = await self.conn.execute(
            "select p.id, p.watched_process_id, p.recorded_at, prev.count, prev.oldest_start_unix, prev.recorded_at"
            " from unnest(%s::bigint[], %s::timestamptz[]) as u(wpid, t)"
            " join process_samples p on p.watched_process_id = u.wpid and p.recorded_at = u.t"
            " left join lateral (select q.count, q.oldest_start_unix, q.recorded_at from process_samples q"
            "   where q.watched_process_id = u.wpid and q.recorded_at < u.t"
            "   order by q.recorded_at desc limit 1) prev on true",
            (process_ids, times),
        )
        return [StoredSample(*r) for r in await cur.fetchall()]

    async def update_processes(self, updates: list[ProcessUpdate]) -> None:
        """Move last_* forward (never back) and add the inserted rows to samples_total."""
        if not updates:
            return
        updates = sorted(updates, key=lambda u: u.id)
        await self.conn.execute(
            "update watched_processes w set"
            " samples_total = w.samples_total + u.inserted,"
            " last_count = case when u.t > w.last_sample_at or w.last_sample_at is null then u.cnt else w.last_count end,"
            " last_cpu_pct = case when u.t > w.last_sample_at or w.last_sample_at is null then u.cpu else w.last_cpu_pct end,"
            " last_memory_pct = case when u.t > w.last_sample_at or w.last_sample_at is null then u.mem else w.last_memory_pct end,"
            " last_oldest_start_unix = case when u.t > w.last_sample_at or w.last_sample_at is null"
            "   then u.oldest else w.last_oldest_start_unix end,"
            " last_sample_at = case when u.t > w.last_sample_at or w.last_sample_at is null then u.t else w.last_sample_at end,"
            " updated_at = now()"
            " from unnest(%s::bigint[], %s::bigint[], %s::int[], %s::float8[], %s::float8[], %s::bigint[],"
            "   %s::timestamptz[]) as u(id, inserted, cnt, cpu, mem, oldest, t)"
            " where w.id = u.id and (u.inserted > 0 or u.t > w.last_sample_at or w.last_sample_at is null)",
            (
                [u.id for u in updates],
                [u.inserted for u in updates],
                [u.last_count for u in updates],
                [u.last_cpu_pct for u in updates],
                [u.last_memory_pct for u in updates],
                [u.last_oldest_start_unix for u in updates],
                [u.last_sample_at for u in updates],
            ),
            binary=True,
        )

    async def set_agent_versions(self, versions: dict[int, str]) -> None:
        if not versions:
            return
        ids = sorted(versions)
        await self.conn.execute(
            "update servers s set last_agent_version = u.v"
            " from unnest(%s::bigint[], %s::text[]) as u(id, v)"
            " where s.id = u.id and s.last_agent_version is distinct from u.v",
            (ids, [versions[i] for i in ids]),
        )
