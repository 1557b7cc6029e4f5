"""Sample ids come in blocks (migration 0004): concurrent batches never share an id, and a
plain INSERT that leaves `id` to its default never collides with a pre-allocated block."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from procwatch_db.tables import SAMPLE_ID_BLOCK
from procwatch_db.urls import libpq_url
from procwatch_ingest.repository import IngestRepository, configure_connection
from procwatch_ingest.service import SampleIdPool
from tests.support.factories import make_process, make_server, make_user

pytestmark = pytest.mark.integration


async def _connect(url: str) -> psycopg.AsyncConnection:
    conn = await psycopg.AsyncConnection.connect(libpq_url(url))
    await configure_connection(conn)
    return conn


async def test_concurrent_batches_get_disjoint_ids_and_defaults_do_not_collide(database_url):
    pid = make_process(database_url, make_server(database_url, make_user(database_url, "scale")), "ids")
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    sizes = [1, SAMPLE_ID_BLOCK - 1, SAMPLE_ID_BLOCK, SAMPLE_ID_BLOCK + 1, 2 * SAMPLE_ID_BLOCK + 3]
    conns = [await _connect(database_url) for _ in sizes]
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]

    async def batch(conn: psycopg.AsyncConnection, size: int, offset: int) -> list[int | None]:
        rows = [(pid, 1, 0.5, 0.5, None, t0 + timedelta(milliseconds=offset + k)) for k in range(size)]
        async with conn.transaction():
            repo = IngestRepository(conn)
            ids = await repo.insert_samples(rows, await SampleIdPool().take(repo, size))
            await asyncio.sleep(0)  # let the other transactions interleave
        return ids

    try:
        results = await asyncio.gather(*(batch(c, n, o) for c, n, o in zip(conns, sizes, offsets)))
    finally:
        for conn in conns:
            await conn.close()

    all_ids = [i for ids in results for i in ids]
    assert [len(ids) for ids in results] == sizes and None not in all_ids
    assert len(set(all_ids)) == len(all_ids) == sum(sizes)
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        (default_id,) = conn.execute(
            "insert into process_samples (watched_process_id, count, cpu_pct, memory_pct, recorded_at)"
            " values (%s, 1, 0, 0, %s) returning id", (pid, t0 - timedelta(minutes=1))).fetchone()
        stored = {r[0] for r in conn.execute(
            "select id from process_samples where watched_process_id = %s", (pid,)).fetchall()}
    assert default_id not in all_ids
    assert stored == set(all_ids) | {default_id}


def test_the_sequence_hands_out_blocks_of_the_size_ingest_assumes(database_url):
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        (increment,) = conn.execute(
            "select increment_by from pg_sequences where sequencename = 'process_samples_id_seq'").fetchone()
    assert increment == SAMPLE_ID_BLOCK

