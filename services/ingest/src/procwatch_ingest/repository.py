"""All SQL of the ingest service (psycopg 3, async). The caller owns the transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import psycopg
from psycopg import AsyncConnection

from procwatch_domain.rules import SETTINGS, setting_columns_sql


@dataclass(frozen=True, slots=True)
class ServerRow:
    id: int
    user_id: int
    hostname: str
    agent_key_hash: str
    # Its owner's plan's sample retention: an older sample is refused (it would be dropped anyway).
    retention_days: int


# A watched process as locked for a batch (a tuple: thousands are built per batch), fields in
# `lock_processes`' column order. Its alert settings (one field per setting of the rule
# registry) are the slice `ALERT_SETTINGS`, in `ProcessAlertConfig` field order.
LockedProcess = NamedTuple("LockedProcess", [  # type: ignore[misc]
    ("id", int), ("server_id", int), ("process_name", str), ("enabled", bool),
    *((s.name, s.annotation) for s in SETTINGS),
    ("last_count", int | None), ("last_oldest_start_unix", int | None), ("last_sample_at", datetime | None),
    ("alerted_state", str | None),
])
ALERT_SETTINGS = slice(4, 4 + len(SETTINGS))


@dataclass(frozen=True, slots=True)
class StoredSample:
    """A sample already in the table (a replay), with the one before it in time."""

    sample_id: int
    watched_process_id: int
    recorded_at: datetime
    previous_count: int | None
    previous_oldest_start_unix: int | None
    previous_recorded_at: datetime | None


class ProcessUpdate(NamedTuple):
    """One process's change in a batch; written to ingest_last as is, in this field order."""

    id: int
    inserted: int
    # None: the last_* fields stay (no newer sample in the batch).
    last_count: int | None
    last_cpu_pct: float | None
    last_memory_pct: float | None
    last_sample_at: datetime | None
    last_oldest_start_unix: int | None


# Moves last_* forward (never back) and adds the inserted rows to samples_total, from the
# batch's per-process values in the session's ingest_last table.
UPDATE_PROCESSES_FROM_STAGE_SQL = (
    "update watched_processes w set"
    " samples_total = w.samples_total + u.inserted,"
    " last_count = case when u.t > w.last_sample_at or w.last_sample_at is null then u.cnt else w.last_count end,"
    " last_cpu_pct = case when u.t > w.last_sample_at or w.last_sample_at is null then u.cpu else w.last_cpu_pct end,"
    " last_memory_pct = case when u.t > w.last_sample_at or w.last_sample_at is null then u.mem else w.last_memory_pct end,"
    " last_oldest_start_unix = case when u.t > w.last_sample_at or w.last_sample_at is null"
    "   then u.oldest else w.last_oldest_start_unix end,"
    " last_sample_at = case when u.t > w.last_sample_at or w.last_sample_at is null then u.t else w.last_sample_at end,"
    " updated_at = now()"
    " from ingest_last u"
    # The array condition makes the planner reach watched_processes by its primary key: the
    # unanalyzed temp table alone gets a hash join over a full scan of watched_processes.
    " where w.id = u.id and w.id = any(array(select id from ingest_last))"
    " and (u.inserted > 0 or u.t > w.last_sample_at or w.last_sample_at is null)"
)


async def configure_connection(conn: AsyncConnection) -> None:
    """Per pooled connection: UTC session time zone and the batch staging tables."""
    await conn.execute("set time zone 'UTC'")
    await conn.execute(
        "create temp table if not exists ingest_stage (wpid bigint, count int, cpu float8, mem float8,"
        " oldest bigint, t timestamptz) on commit delete rows"
    )
    await conn.execute(
        "create temp table if not exists ingest_last (id bigint, inserted int, cnt int, cpu float8, mem float8,"
        " oldest bigint, t timestamptz) on commit delete rows"
    )
    await conn.commit()


def bigint_array(values: list[int]) -> str:
    """An int list as a PostgreSQL array literal (bind as %s::bigint[]): for thousands of ids
    this is ~20x cheaper than psycopg's per-element array dumper."""
    return "{" + ",".join(map(str, values)) + "}"


class IngestRepository:
    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    async def load_servers(self, server_ids: list[int]) -> dict[int, ServerRow]:
        cur = await self.conn.execute(
            "select s.id, s.user_id, s.hostname, s.agent_key_hash, p.retention_days"
            " from servers s join users u on u.id = s.user_id join plans p on p.name = u.plan"
            " where s.id = any(%s::bigint[])",
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
            "select id, server_id, process_name, enabled, " + setting_columns_sql() + ", last_count,"
            " last_oldest_start_unix, last_sample_at, alerted_state"
            " from watched_processes where id = any(%s::bigint[]) order by id for no key update",
            (bigint_array(sorted(process_ids)),),
        )
        make = LockedProcess._make
        return {r[0]: make(r) for r in await cur.fetchall()}

    async def insert_samples(self, rows: list[tuple], ids: list[int], *, may_be_replay: bool = True
                             ) -> list[int | None]:
        """Insert the batch; returns, per row, the new sample id or None when (process, time)
        existed already (a replay).

        rows: (watched_process_id, count, cpu_pct, memory_pct, oldest_start_unix, recorded_at),
        unique (process, time) within the batch; ids: one fresh id per row (`allocate_id_blocks`).

        Fast path: COPY straight into process_samples with the given ids. When the batch
        `may_be_replay` (a redelivery), that COPY runs inside a savepoint, and a unique
        violation rolls it back and takes the slow path: COPY into the session's staging
        table, INSERT .. SELECT .. ON CONFLICT DO NOTHING RETURNING. Otherwise a unique
        violation fails the transaction (the caller redelivers the batch as a replay).
        """
        async with self.conn.cursor(binary=True) as cur:
            if not may_be_replay:
                await self._copy_samples(cur, rows, ids)
                return ids  # type: ignore[return-value]
            try:
                async with self.conn.transaction():  # savepoint
                    await self._copy_samples(cur, rows, ids)
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

    @staticmethod
    async def _copy_samples(cur, rows: list[tuple], ids: list[int]) -> None:
        async with cur.copy(
            "copy process_samples (id, watched_process_id, count, cpu_pct, memory_pct,"
            " oldest_start_unix, recorded_at) from stdin (format binary)"
        ) as copy:
            copy.set_types(["int8", "int8", "int4", "float8", "float8", "int8", "timestamptz"])
            for sample_id, row in zip(ids, rows):
                await copy.write_row((sample_id, *row))

    async def allocate_id_blocks(self, blocks: int) -> list[int]:
        """The first ids of `blocks` blocks of process_samples ids, each [v, v + procwatch_db.tables.SAMPLE_ID_BLOCK) ours alone."""
        cur = await self.conn.execute(
            "select nextval('process_samples_id_seq') from generate_series(1, %s)", (blocks,)
        )
        return [first for (first,) in await cur.fetchall()]

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
        """Move last_* forward (never back) and add the inserted rows to samples_total.

        The batch's per-process values go in by binary COPY into the session's staging
        table (thousands of rows: far cheaper than binding seven arrays), then one UPDATE.
        """
        if not updates:
            return
        updates = sorted(updates, key=lambda u: u.id)
        async with self.conn.cursor(binary=True) as cur:
            async with cur.copy(
                "copy ingest_last (id, inserted, cnt, cpu, mem, t, oldest) from stdin (format binary)"
            ) as copy:
                copy.set_types(["int8", "int4", "int4", "float8", "float8", "timestamptz", "int8"])
                for u in updates:  # ProcessUpdate's field order
                    await copy.write_row(u)
            await cur.execute(UPDATE_PROCESSES_FROM_STAGE_SQL)

    async def update_servers(self, versions: dict[int, str], seen: dict[int, datetime]) -> None:
        """One statement for the batch's servers (one lock order, ids ascending: two statements
        locking overlapping sets could deadlock with a concurrent batch):
        - the agent version, where it changed;
        - liveness: last_seen_at moved forward (never back) with the offline deadline."""
        ids = sorted(versions.keys() | seen.keys())
        if not ids:
            return
        await self.conn.execute(
            "update servers s set last_agent_version = coalesce(u.v, s.last_agent_version),"
            " last_seen_at = case when u.t > s.last_seen_at or s.last_seen_at is null"
            "   then u.t else s.last_seen_at end,"
            " offline_deadline_at = case when u.t > s.last_seen_at or s.last_seen_at is null"
            "   then u.t + make_interval(secs => s.offline_after_s) else s.offline_deadline_at end"
            " from unnest(%s::bigint[], %s::text[], %s::timestamptz[]) as u(id, v, t)"
            " where s.id = u.id and (s.last_agent_version is distinct from coalesce(u.v, s.last_agent_version)"
            "   or u.t > s.last_seen_at or (s.last_seen_at is null and u.t is not null))",
            (bigint_array(ids), [versions.get(i) for i in ids], [seen.get(i) for i in ids]),
        )
