"""Daily partitions of `process_samples` and sample retention (docs/retention.md).

`process_samples` is RANGE-partitioned on `recorded_at` (migration 0003): one
partition per UTC day, named `process_samples_pYYYYMMDD`, plus
`process_samples_default` for rows no day partition covers (agents with wrong
clocks, days not created yet).

The SQL helpers take a *synchronous* psycopg connection in autocommit mode and
run their own short transactions, each with a `lock_timeout`: DDL on a
partitioned table needs brief strong locks (ATTACH: SHARE ROW EXCLUSIVE on
watched_processes because of the foreign key, ACCESS EXCLUSIVE on the default
partition; DROP of a partition: ACCESS EXCLUSIVE on the parent), and a DDL
statement waiting in the lock queue stalls every writer behind it. With a short
timeout a busy moment costs ingest at most that long; the step is retried on
the next pass (`LockNotAvailable` / `DeadlockDetected` are reported, not raised).

Invariant kept by every transaction here: `watched_processes.samples_total`
equals the process's row count in `process_samples` after each commit (rows
that move between partitions are not counted twice; rows that are dropped or
deleted are subtracted in the same transaction).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone

import psycopg
from psycopg import sql

log = logging.getLogger("procwatch.db.partitions")

PARENT = "process_samples"
DEFAULT_PARTITION = "process_samples_default"
_DAY_NAME = re.compile(r"^process_samples_p(\d{8})$")

# Step failures that only mean "busy right now": retried on the next pass.
BUSY_ERRORS = (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected,
               psycopg.errors.SerializationFailure)


# --- pure helpers --------------------------------------------------------------

def partition_name(day: date) -> str:
    return f"process_samples_p{day:%Y%m%d}"


def partition_day(name: str) -> date | None:
    """The day a `process_samples_pYYYYMMDD` partition holds; None for any other name."""
    m = _DAY_NAME.match(name)
    if not m:
        return None
    try:
        return datetime.strptime(m.group(1), "%Y%m%d").date()
    except ValueError:
        return None


def is_partition_name(name: str) -> bool:
    return name == DEFAULT_PARTITION or partition_day(name) is not None


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=timezone.utc)


def utc_day(moment: datetime) -> date:
    if moment.tzinfo is None:
        raise ValueError("a timezone-aware datetime is required")
    return moment.astimezone(timezone.utc).date()


def days_to_ensure(today: date, back_days: int = 1, ahead_days: int = 7) -> list[date]:
    """Days that must have a partition: today - back_days .. today + ahead_days."""
    return [today + timedelta(days=d) for d in range(-back_days, ahead_days + 1)]


def days_to_drop(days: Iterable[date], now: datetime, max_retention_days: int) -> list[date]:
    """Partitions whose whole day is older than the longest retention of any plan."""
    cutoff = now - timedelta(days=max_retention_days)
    return sorted(d for d in days if day_start(d + timedelta(days=1)) <= cutoff)


def include_name(name: str | None, type_: str, parent_names: dict) -> bool:
    """Alembic `include_name` hook: the partitions are not tables of the model
    (only their parent `process_samples` is)."""
    return not (type_ == "table" and name is not None and is_partition_name(name))


# --- SQL -----------------------------------------------------------------------

@dataclass
class StepResult:
    created: list[str] = field(default_factory=list)
    moved_from_default: int = 0
    dropped: list[str] = field(default_factory=list)
    rows_dropped: int = 0
    rows_deleted: int = 0
    transactions: int = 0
    busy: list[str] = field(default_factory=list)  # steps skipped until the next pass


def _set_lock_timeout(conn: psycopg.Connection, lock_timeout_ms: int) -> None:
    conn.execute(sql.SQL("set local lock_timeout = {}").format(sql.Literal(f"{int(lock_timeout_ms)}ms")))


def list_partitions(conn: psycopg.Connection) -> dict[str, str]:
    """name -> partition bound expression, for every partition of process_samples."""
    rows = conn.execute(
        "select c.relname, pg_get_expr(c.relpartbound, c.oid) from pg_inherits i"
        " join pg_class c on c.oid = i.inhrelid where i.inhparent = %s::regclass order by c.relname",
        (PARENT,),
    ).fetchall()
    return {name: bound for name, bound in rows}


def create_day_partition(conn: psycopg.Connection, day: date, *, lock_timeout_ms: int = 1000) -> int:
    """Create the partition of `day` in one short transaction; returns the rows moved
    into it from the default partition.

    Safe when the default partition already holds rows of that day (ATTACH would
    refuse them): the new table is created standalone, the day's rows are moved
    out of the (locked) default partition into it, then it is attached. Rows only
    change partition, so no `samples_total` changes.
    """
    name = partition_name(day)
    lo, hi = day_start(day), day_start(day + timedelta(days=1))
    with conn.transaction():
        _set_lock_timeout(conn, lock_timeout_ms)
        # ATTACH locks the default partition ACCESS EXCLUSIVE anyway; take it first so
        # no row can land in it between the move and the attach.
        conn.execute(sql.SQL("lock table {} in access exclusive mode").format(sql.Identifier(DEFAULT_PARTITION)))
        conn.execute(sql.SQL("create table {} (like {} including defaults)").format(
            sql.Identifier(name), sql.Identifier(PARENT)))
        moved = conn.execute(
            sql.SQL(
                "with moved as (delete from {d} where recorded_at >= %s and recorded_at < %s returning *)"
                " insert into {p} select * from moved"
            ).format(d=sql.Identifier(DEFAULT_PARTITION), p=sql.Identifier(name)),
            (lo, hi),
        ).rowcount
        conn.execute(sql.SQL("alter table {} attach partition {} for values from ({}) to ({})").format(
            sql.Identifier(PARENT), sql.Identifier(name), sql.Literal(lo), sql.Literal(hi)))
    return max(moved, 0)


def ensure_partitions(conn: psycopg.Connection, today: date, *, back_days: int = 1, ahead_days: int = 7,
                      lock_timeout_ms: int = 1000, result: StepResult | None = None) -> StepResult:
    """Make sure a partition exists for every day from today - back_days to today + ahead_days."""
    result = result or StepResult()
    existing = set(list_partitions(conn))
    for day in days_to_ensure(today, back_days, ahead_days):
        name = partition_name(day)
        if name in existing:
            continue
        try:
            moved = create_day_partition(conn, day, lock_timeout_ms=lock_timeout_ms)
        except BUSY_ERRORS as exc:
            result.busy.append(f"create {name}: {type(exc).__name__}")
            continue
        except psycopg.errors.DuplicateTable:
            continue  # another replica made it in the meantime
        result.transactions += 1
        result.created.append(name)
        result.moved_from_default += moved
        log.info("partition created", extra={"partition": name, "rows_moved_from_default": moved})
    return result


def max_retention_days(conn: psycopg.Connection) -> int:
    (days,) = conn.execute("select coalesce(max(retention_days), 0) from plans").fetchone()
    return int(days)


def drop_day_partition(conn: psycopg.Connection, day: date, *, lock_timeout_ms: int = 1000) -> int:
    """Drop one day partition in one short transaction, subtracting its rows from
    `samples_total` in the same transaction; returns the rows dropped.

    Lock order (no deadlock with ingest, which takes the parent before the
    watched_processes rows): SHARE on the partition (only writers of that old day
    wait), count its rows per process, ACCESS EXCLUSIVE on the parent (what DROP
    needs anyway, so it is held only for the update and the drop), then the
    watched_processes rows in id order.
    """
    name = partition_name(day)
    with conn.transaction():
        _set_lock_timeout(conn, lock_timeout_ms)
        conn.execute(sql.SQL("lock table {} in share mode").format(sql.Identifier(name)))
        counts = conn.execute(sql.SQL(
            "select watched_process_id, count(*) from {} group by 1 order by 1").format(sql.Identifier(name))
        ).fetchall()
        conn.execute(sql.SQL("lock table {} in access exclusive mode").format(sql.Identifier(PARENT)))
        if counts:
            ids = [c[0] for c in counts]
            conn.execute("select id from watched_processes where id = any(%s) order by id for no key update", (ids,))
            conn.execute(
                "update watched_processes w set samples_total = w.samples_total - u.n"
                " from unnest(%s::bigint[], %s::bigint[]) as u(id, n) where w.id = u.id",
                (ids, [c[1] for c in counts]),
            )
        conn.execute(sql.SQL("drop table {}").format(sql.Identifier(name)))
    return sum(c[1] for c in counts)


def drop_expired_partitions(conn: psycopg.Connection, now: datetime, *, lock_timeout_ms: int = 1000,
                            result: StepResult | None = None) -> StepResult:
    """(a) Drop every day partition older than the longest plan retention."""
    result = result or StepResult()
    keep_days = max_retention_days(conn)
    days = [d for d in (partition_day(n) for n in list_partitions(conn)) if d is not None]
    for day in days_to_drop(days, now, keep_days):
        name = partition_name(day)
        try:
            rows = drop_day_partition(conn, day, lock_timeout_ms=lock_timeout_ms)
        except BUSY_ERRORS as exc:
            result.busy.append(f"drop {name}: {type(exc).__name__}")
            continue
        except psycopg.errors.UndefinedTable:
            continue  # dropped by another replica
        result.transactions += 1
        result.dropped.append(name)
        result.rows_dropped += rows
        log.info("partition dropped", extra={"partition": name, "rows": rows, "max_retention_days": keep_days})
    return result


def process_cutoffs(conn: psycopg.Connection, now: datetime) -> list[tuple[int, datetime]]:
    """(watched process id, oldest sample time its owner's plan keeps), in id order."""
    return conn.execute(
        "select w.id, %s::timestamptz - make_interval(days => p.retention_days)"
        " from watched_processes w join users u on u.id = w.user_id join plans p on p.name = u.plan"
        " where w.samples_total > 0 order by w.id",
        (now,),
    ).fetchall()


def delete_expired_rows(conn: psycopg.Connection, process_ids: list[int], cutoffs: list[datetime], *,
                        max_rows: int = 5000, lock_timeout_ms: int = 1000) -> int:
    """One short transaction: delete at most `max_rows` rows older than each process's
    cutoff (index (watched_process_id, recorded_at), only partitions below the cutoff
    are probed) and subtract exactly the deleted counts from `samples_total`.

    The processes that have such rows are locked first, in id order (like ingest),
    so neither ingest nor an API delete (which cascades into the samples) can
    deadlock with this transaction. Returns the rows deleted.
    """
    with conn.transaction():
        _set_lock_timeout(conn, lock_timeout_ms)
        due = conn.execute(
            "select w.id from watched_processes w"
            " join unnest(%s::bigint[], %s::timestamptz[]) as c(id, cutoff) on c.id = w.id"
            " where exists (select 1 from process_samples s where s.watched_process_id = c.id"
            "   and s.recorded_at < c.cutoff)"
            " order by w.id for no key update of w",
            (process_ids, cutoffs),
        ).fetchall()
        if not due:
            return 0
        due_ids = {r[0] for r in due}
        pairs = [(pid, cut) for pid, cut in zip(process_ids, cutoffs) if pid in due_ids]
        deleted = conn.execute(
            "with victims as ("
            "  select v.watched_process_id, v.recorded_at"
            "  from unnest(%s::bigint[], %s::timestamptz[]) as c(id, cutoff)"
            "  cross join lateral (select s.watched_process_id, s.recorded_at from process_samples s"
            "    where s.watched_process_id = c.id and s.recorded_at < c.cutoff"
            "    order by s.recorded_at limit %s) v"
            "  limit %s)"
            " , gone as (delete from process_samples p using victims v"
            "   where p.watched_process_id = v.watched_process_id and p.recorded_at = v.recorded_at"
            "   returning p.watched_process_id)"
            " select watched_process_id, count(*) from gone group by 1 order by 1",
            ([p for p, _ in pairs], [c for _, c in pairs], max_rows, max_rows),
        ).fetchall()
        if deleted:
            conn.execute(
                "update watched_processes w set samples_total = w.samples_total - u.n"
                " from unnest(%s::bigint[], %s::bigint[]) as u(id, n) where w.id = u.id",
                ([d[0] for d in deleted], [d[1] for d in deleted]),
            )
    return sum(d[1] for d in deleted)


def delete_expired_samples(conn: psycopg.Connection, now: datetime, *, max_rows: int = 5000,
                           processes_per_transaction: int = 200, lock_timeout_ms: int = 1000,
                           result: StepResult | None = None,
                           should_continue: Callable[[], bool] = lambda: True) -> StepResult:
    """(b) Delete, in small transactions, every row older than its owner's plan retention."""
    result = result or StepResult()
    cutoffs = process_cutoffs(conn, now)
    for start in range(0, len(cutoffs), processes_per_transaction):
        if not should_continue():
            break
        chunk = cutoffs[start:start + processes_per_transaction]
        ids, cuts = [c[0] for c in chunk], [c[1] for c in chunk]
        while True:
            try:
                n = delete_expired_rows(conn, ids, cuts, max_rows=max_rows, lock_timeout_ms=lock_timeout_ms)
            except BUSY_ERRORS as exc:
                result.busy.append(f"delete processes {ids[0]}..{ids[-1]}: {type(exc).__name__}")
                break
            result.transactions += 1
            result.rows_deleted += n
            if n < max_rows:
                break
    return result
