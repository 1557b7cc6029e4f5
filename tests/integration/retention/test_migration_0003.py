"""Migration 0003 turns process_samples into a partitioned table without losing a row."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import psycopg
import pytest
from alembic import command

from procwatch_db.migrate import alembic_config, upgrade
from procwatch_db.urls import libpq_url
from tests.integration.retention.conftest import connect
from tests.support.factories import make_process, make_server, make_user

pytestmark = pytest.mark.integration


@pytest.fixture
def db_at_0002(servers) -> str:
    name = f"procwatch_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq_url(servers.postgres_url), autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    url = urlsplit(libpq_url(servers.postgres_url))._replace(path=f"/{name}").geturl()
    upgrade(url, "0002_alert_evaluated_at")
    return url


def samples(url: str) -> list[tuple]:
    with connect(url) as conn:
        return conn.execute("select id, watched_process_id, count, cpu_pct, memory_pct, oldest_start_unix,"
                            " recorded_at from process_samples order by id").fetchall()


def test_0003_keeps_every_row_and_constraint_and_downgrades(db_at_0002):
    url = db_at_0002
    user = make_user(url, "scale")
    pid = make_process(url, make_server(url, user), "nginx")
    now = datetime.now(timezone.utc).replace(microsecond=0)
    times = [now - timedelta(days=d, minutes=m) for d in (0, 1, 3, 40, 300) for m in (1, 2)]
    with connect(url) as conn:
        for i, t in enumerate(times):
            conn.execute("insert into process_samples (watched_process_id, count, cpu_pct, memory_pct,"
                         " oldest_start_unix, recorded_at) values (%s, %s, 1.5, 2.5, %s, %s)",
                         (pid, i, 1700000000 + i, t))
        conn.execute("update watched_processes set samples_total = %s where id = %s", (len(times), pid))
    before = samples(url)

    upgrade(url)

    assert samples(url) == before
    with connect(url) as conn:
        (relkind,) = conn.execute("select relkind from pg_class where relname = 'process_samples'").fetchone()
        constraints = dict(conn.execute(
            "select conname, pg_get_constraintdef(oid) from pg_constraint"
            " where conrelid = 'process_samples'::regclass").fetchall())
        placed = dict(conn.execute(
            "select recorded_at, tableoid::regclass::text from process_samples").fetchall())
        (owner,) = conn.execute("select pg_get_serial_sequence('process_samples', 'id')").fetchone()
        (new_id,) = conn.execute(
            "insert into process_samples (watched_process_id, count, cpu_pct, memory_pct, recorded_at)"
            " values (%s, 1, 1, 1, %s) returning id", (pid, now + timedelta(seconds=1))).fetchone()
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("insert into process_samples (watched_process_id, count, cpu_pct, memory_pct, recorded_at)"
                         " values (%s, 1, 1, 1, %s)", (pid, times[0]))
    assert relkind == "p"
    assert constraints == {
        "process_samples_pkey": "PRIMARY KEY (id, recorded_at)",
        "uq_process_samples_process_time": "UNIQUE (watched_process_id, recorded_at)",
        "process_samples_watched_process_id_fkey":
            "FOREIGN KEY (watched_process_id) REFERENCES watched_processes(id) ON DELETE CASCADE",
    }
    # Day partitions for the days that had rows (40 days back included), the 300-day-old
    # rows (beyond the backfill bound) in the default partition.
    def day(t):
        return f"process_samples_p{t.astimezone(timezone.utc):%Y%m%d}"

    assert all(placed[t] == day(t) for t in times if t > now - timedelta(days=100))
    assert {placed[t] for t in times if t < now - timedelta(days=100)} == {"process_samples_default"}
    assert owner == "public.process_samples_id_seq" and new_id > max(r[0] for r in before)

    command.downgrade(alembic_config(url), "0002_alert_evaluated_at")
    after = samples(url)
    assert after[:len(before)] == before and len(after) == len(before) + 1
    with connect(url) as conn:
        (relkind,) = conn.execute("select relkind from pg_class where relname = 'process_samples'").fetchone()
        conn.execute("delete from watched_processes where id = %s", (pid,))  # the FK still cascades
        (left,) = conn.execute("select count(*) from process_samples").fetchone()
    assert relkind == "r" and left == 0
    upgrade(url)  # and up again on an empty table
