"""Retention passes against real PostgreSQL: per-plan deletion, partition drop/create, concurrency."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from procwatch_db import partitions
from procwatch_ingest.repository import IngestRepository, ProcessUpdate, configure_connection
from procwatch_ingest.service import SampleIdPool
from procwatch_ingest.retention import RETENTION_LOCK_KEY, RetentionConfig, run_retention_pass
from tests.integration.retention.conftest import add_samples, connect, partition_of, totals_and_counts
from tests.support.factories import make_process, make_server, make_user

pytestmark = pytest.mark.integration

NOW = datetime.now(timezone.utc).replace(minute=30, second=0, microsecond=0)
TODAY = NOW.date()
SMALL = RetentionConfig(batch_rows=50, processes_per_transaction=2, lock_timeout_ms=2000)


def hourly_days(days: int, per_day: int = 4) -> list[datetime]:
    """`per_day` samples a day for `days` days back from NOW (newest 10 minutes ago)."""
    return [NOW - timedelta(minutes=10) - timedelta(days=d, hours=6 * h) for d in range(days) for h in range(per_day)]


def test_a_pass_keeps_each_owners_plan_retention_and_drops_old_partitions(retention_db):
    url = retention_db
    hobby, pro, scale = make_user(url, "hobby"), make_user(url, "pro"), make_user(url, "scale")
    h1 = make_process(url, make_server(url, hobby), "nginx")
    h2 = make_process(url, make_server(url, hobby), "redis")
    p1 = make_process(url, make_server(url, pro), "nginx")
    s1 = make_process(url, make_server(url, scale), "nginx")
    with connect(url) as conn:  # day partitions for the last 100 days, as if the system had run that long
        partitions.ensure_partitions(conn, TODAY, back_days=100, ahead_days=1)
    times = hourly_days(100)
    wrong_clock = [NOW - timedelta(days=200), NOW - timedelta(days=400)]  # into the default partition
    for pid in (h1, h2, p1, s1):
        add_samples(url, pid, times + wrong_clock)

    result = run_retention_pass(url, NOW, SMALL)

    assert result is not None and result.busy == []
    expected = {pid: sum(1 for t in times if t >= NOW - timedelta(days=days))
                for pid, days in ((h1, 1), (h2, 1), (p1, 7), (s1, 90))}
    got = totals_and_counts(url, list(expected))
    assert got == {pid: (n, n) for pid, n in expected.items()}
    assert expected[h1] == 4 and expected[s1] == 360
    for pid, days in ((h1, 1), (p1, 7), (s1, 90)):
        oldest = min(t for _, t in partition_of(url, pid))
        assert oldest >= NOW - timedelta(days=days)
    with connect(url) as conn:
        names = partitions.list_partitions(conn)
        (in_default,) = conn.execute("select count(*) from process_samples_default").fetchone()
    days = sorted(d for d in map(partitions.partition_day, names) if d)
    # Whole days older than 90 days are gone as partitions; today+7 exists; the default is empty.
    assert len(result.dropped) >= 8 and result.rows_dropped > 0
    assert all(partitions.day_start(d + timedelta(days=1)) > NOW - timedelta(days=90) for d in days)
    assert days[-1] == TODAY + timedelta(days=7) and "process_samples_default" in names
    assert in_default == 0
    # Row deletions ran in many small transactions (≤ 50 rows each).
    assert result.rows_deleted > 0 and result.transactions > result.rows_deleted // 50

    again = run_retention_pass(url, NOW, SMALL)
    assert again is not None and again.rows_deleted == 0 and again.dropped == [] and again.created == []
    assert totals_and_counts(url, list(expected)) == got


def test_creating_a_partition_moves_rows_already_in_the_default_partition(retention_db):
    url = retention_db
    user = make_user(url, "scale")
    pid = make_process(url, make_server(url, user), "nginx")
    day = TODAY + timedelta(days=30)  # beyond the partitions made ahead: lands in the default
    rows = [partitions.day_start(day) + timedelta(hours=h) for h in range(5)]
    add_samples(url, pid, rows + [partitions.day_start(day + timedelta(days=1))])
    assert {p for p, _ in partition_of(url, pid)} == {"process_samples_default"}

    with connect(url) as conn:
        result = partitions.ensure_partitions(conn, day, back_days=0, ahead_days=0)

    name = partitions.partition_name(day)
    assert result.created == [name] and result.moved_from_default == 5
    placed = partition_of(url, pid)
    assert [p for p, _ in placed] == [name] * 5 + ["process_samples_default"]
    assert totals_and_counts(url, [pid]) == {pid: (6, 6)}
    # New rows of that day now go to the new partition; the unique key still holds across the move.
    add_samples(url, pid, [partitions.day_start(day) + timedelta(hours=7)])
    assert partition_of(url, pid)[5][0] == name
    with pytest.raises(psycopg.errors.UniqueViolation):
        add_samples(url, pid, [rows[0]])
    # Idempotent: nothing to create the second time.
    with connect(url) as conn:
        assert partitions.ensure_partitions(conn, day, back_days=0, ahead_days=0).created == []


def test_only_one_replica_runs_a_pass_at_a_time(retention_db):
    with connect(retention_db) as holder:
        holder.execute("select pg_advisory_lock(%s)", (RETENTION_LOCK_KEY,))
        assert run_retention_pass(retention_db, NOW, SMALL) is None
        holder.execute("select pg_advisory_unlock(%s)", (RETENTION_LOCK_KEY,))
    assert run_retention_pass(retention_db, NOW, SMALL) is not None


def test_a_busy_partition_is_postponed_not_waited_for(retention_db):
    """A transaction holding a lock on an expired partition: the drop gives up after
    lock_timeout and says so; the next pass drops it."""
    url = retention_db
    old_day = TODAY - timedelta(days=120)
    with connect(url) as conn:
        partitions.ensure_partitions(conn, old_day, back_days=0, ahead_days=0)
    with connect(url, autocommit=False) as blocker:
        blocker.execute(f"lock table {partitions.partition_name(old_day)} in row exclusive mode")
        result = run_retention_pass(url, NOW, RetentionConfig(lock_timeout_ms=100))
        blocker.rollback()
    assert result is not None and [b.split(":")[0] for b in result.busy] == [f"drop {partitions.partition_name(old_day)}"]
    assert run_retention_pass(url, NOW, SMALL).dropped == [partitions.partition_name(old_day)]


async def test_ingest_keeps_writing_while_a_pass_deletes(retention_db):
    """The ingest repository's real write path (COPY / ON CONFLICT, row locks in id order,
    samples_total += inserted) runs batch after batch while a pass deletes expired rows of
    the same processes in small transactions: no error, no deadlock, exact counters."""
    url = retention_db
    hobby = make_user(url, "hobby")
    server = make_server(url, hobby)
    pids = [make_process(url, server, f"p{i}") for i in range(3)]
    old = [NOW - timedelta(days=2, seconds=s) for s in range(1500)]  # expired for hobby (1 day)
    for pid in pids:
        add_samples(url, pid, old)

    stop = threading.Event()
    batches = 0
    inserted_total = 0

    async def ingest_writer() -> None:
        nonlocal batches, inserted_total
        conn = await psycopg.AsyncConnection.connect(url)
        await configure_connection(conn)
        id_pool = SampleIdPool()
        try:
            i = 0
            while not stop.is_set() or batches < 5:
                rows = []
                for pid in pids:
                    rows.append((pid, 1, 1.0, 2.0, 1700000000, NOW - timedelta(seconds=i)))
                    # a replayed old sample: may conflict with a row the pass is deleting
                    rows.append((pid, 1, 1.0, 2.0, 1700000000, old[i % len(old)]))
                async with conn.transaction():
                    repo = IngestRepository(conn)
                    ids = await repo.insert_samples(rows, await id_pool.take(repo, len(rows)))
                    await repo.lock_processes(pids)
                    counts = {pid: 0 for pid in pids}
                    for row, sample_id in zip(rows, ids):
                        if sample_id is not None:
                            counts[row[0]] += 1
                    await repo.update_processes([ProcessUpdate(pid, counts[pid], 1, 1.0, 2.0, NOW - timedelta(seconds=i),
                                                               1700000000) for pid in pids])
                inserted_total += sum(counts.values())
                batches += 1
                i += 1
                if batches >= 2000:
                    break
        finally:
            await conn.close()

    async def retention() -> partitions.StepResult:
        try:
            return await asyncio.to_thread(run_retention_pass, url, NOW,
                                           RetentionConfig(batch_rows=100, processes_per_transaction=1))
        finally:
            stop.set()

    result, _ = await asyncio.wait_for(asyncio.gather(retention(), ingest_writer()), timeout=60)
    print(f"retention deleted {result.rows_deleted} rows in {result.transactions} transactions"
          f" while ingest committed {batches} batches ({inserted_total} rows)")

    assert result is not None and result.busy == [] and result.rows_deleted >= 3 * 1000
    assert batches >= 5 and inserted_total >= 3 * batches  # every fresh sample went in
    got = totals_and_counts(url, pids)
    assert all(total == count for total, count in got.values()), got
    # After one more pass only what the plan keeps is left.
    run_retention_pass(url, NOW, SMALL)
    with connect(url) as conn:
        (stale,) = conn.execute(
            "select count(*) from process_samples where watched_process_id = any(%s) and recorded_at < %s",
            (pids, NOW - timedelta(days=1))).fetchone()
    assert stale == 0
    assert all(total == count for total, count in totals_and_counts(url, pids).values())


async def test_the_ingest_background_task_runs_passes_until_stopped(retention_db):
    from procwatch_ingest.retention import RetentionTask

    url = retention_db
    pid = make_process(url, make_server(url, make_user(url, "pro")), "nginx")
    add_samples(url, pid, [datetime.now(timezone.utc) - timedelta(days=8), datetime.now(timezone.utc)])
    task = RetentionTask(url, RetentionConfig(interval_s=0.1))
    task.start()
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while totals_and_counts(url, [pid])[pid] != (1, 1) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
    finally:
        await task.stop()
    assert totals_and_counts(url, [pid]) == {pid: (1, 1)}
    assert task.passes >= 1 and task.last_result is not None and task.last_result.rows_deleted == 1
