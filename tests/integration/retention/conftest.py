"""Retention tests get their own database: they write time-shifted samples and drop partitions."""

from __future__ import annotations

from datetime import datetime

import psycopg
import pytest

from procwatch_db.urls import libpq_url
from tests.support.servers import create_fresh_database


@pytest.fixture
def retention_db(servers) -> str:
    """A fresh migrated database per test (about a second): a pass touches every process in it."""
    return create_fresh_database(servers.postgres_url)


def connect(url: str, autocommit: bool = True) -> psycopg.Connection:
    conn = psycopg.connect(libpq_url(url), autocommit=autocommit)
    conn.execute("set time zone 'UTC'")
    return conn


def add_samples(url: str, process_id: int, times: list[datetime]) -> None:
    """Rows written straight with SQL, bumping samples_total in the same transaction (as ingest does)."""
    with connect(url, autocommit=False) as conn:
        with conn.cursor() as cur:
            cur.executemany(
                "insert into process_samples (watched_process_id, count, cpu_pct, memory_pct, oldest_start_unix,"
                " recorded_at) values (%s, 1, 1.0, 2.0, 1700000000, %s)",
                [(process_id, t) for t in times],
            )
        conn.execute("update watched_processes set samples_total = samples_total + %s where id = %s",
                     (len(times), process_id))


def totals_and_counts(url: str, process_ids: list[int]) -> dict[int, tuple[int, int]]:
    """process id -> (samples_total, count(*))."""
    with connect(url) as conn:
        rows = conn.execute(
            "select w.id, w.samples_total, (select count(*) from process_samples s where s.watched_process_id = w.id)"
            " from watched_processes w where w.id = any(%s)",
            (process_ids,),
        ).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def partition_of(url: str, process_id: int) -> list[tuple[str, datetime]]:
    with connect(url) as conn:
        return conn.execute(
            "select tableoid::regclass::text, recorded_at from process_samples where watched_process_id = %s"
            " order by recorded_at", (process_id,),
        ).fetchall()
