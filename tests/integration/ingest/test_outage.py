"""Outages and restarts, each test with its own ingest instance (no module-wide consumer running)."""

from __future__ import annotations

import random
import signal

import psycopg
import pytest

import procwatch.embedded
from procwatch.embedded import EmbeddedPostgres
from procwatch_db.migrate import upgrade
from procwatch_db.urls import libpq_url
from procwatch_ingest.app import IngestApp
from tests.integration.ingest.conftest import (
    eventually, ingest_settings, now_utc, publish, publish_sample, query, reading, sample_body,
)
from tests.support.factories import make_process, make_server, make_user

pytestmark = pytest.mark.integration


@pytest.mark.faults
async def test_postgres_down_mid_stream_is_waited_out_and_nothing_is_lost_or_doubled(tmp_path, nats_url, monkeypatch):
    pg = EmbeddedPostgres(tmp_path / "pg")
    url = pg.start()
    upgrade(url)
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        # Ids far from the shared test database's, so no other consumer mistakes these subjects.
        base = 3_000_000_000 + random.randrange(1_000_000_000)
        for seq in ("users_id_seq", "servers_id_seq", "watched_processes_id_seq"):
            conn.execute(f"alter sequence {seq} restart with {base}")
    app = IngestApp(ingest_settings(url, nats_url, retry_base_s=0.2, retry_max_s=0.5, pool_timeout_s=0.5))
    await app.start()
    try:
        server = make_server(url, make_user(url))
        pid = make_process(url, server, "nginx")
        await publish_sample(nc := app.broker.config.connection_state.connection, server, now_utc(-60),
                             [reading("nginx")])
        await eventually(lambda: query(url, "select samples_total from watched_processes where id=%s", (pid,)) == [(1,)])

        pg.proc.send_signal(signal.SIGINT)  # fast shutdown: the server is gone
        pg.proc.wait(15)
        retried = app.stats.batches_retried
        times = [now_utc(-50 + i) for i in range(5)]
        for t in times:
            await publish_sample(nc, server, t, [reading("nginx", oldest=int(t.timestamp()))])
        await eventually(lambda: app.stats.batches_retried > retried)

        # PostgreSQL binds with SO_REUSEADDR, so it can take its port back while the old
        # connections sit in TIME_WAIT; the helper's pre-check would pick another port.
        port = pg.port
        monkeypatch.setattr(procwatch.embedded, "port_is_free", lambda p: True)
        pg.start()
        assert pg.port == port
        await eventually(lambda: query(url, "select samples_total from watched_processes where id=%s", (pid,)) == [(6,)],
                         timeout=30)
        # A redelivered, already committed tick adds no row and changes no counter.
        dup_before = app.stats.samples_duplicate
        await publish(nc, server, sample_body(server.id, times[-1], [reading("nginx", oldest=int(times[-1].timestamp()))]))
        await eventually(lambda: app.stats.samples_duplicate > dup_before)
        assert query(url, "select samples_total, last_sample_at from watched_processes where id=%s", (pid,)) == [
            (6, times[-1])]
        assert query(url, "select count(*) from process_samples where watched_process_id=%s", (pid,)) == [(6,)]
    finally:
        await app.stop()
        pg.stop()


async def test_graceful_stop_then_restart_stores_everything_exactly_once(database_url, nats_url):
    settings = ingest_settings(database_url, nats_url)
    server = make_server(database_url, make_user(database_url))
    pid = make_process(database_url, server, "nginx")
    first = IngestApp(settings)
    await first.start()
    nc = first.broker.config.connection_state.connection
    times = [now_utc(-100 + i) for i in range(40)]
    for t in times:
        await publish_sample(nc, server, t, [reading("nginx")])
    await first.stop()  # whatever was in flight is committed, published and acked; the rest stays queued
    second = IngestApp(settings)  # same durable: picks up where the first left off
    await second.start()
    try:
        await eventually(lambda: query(database_url, "select samples_total from watched_processes where id=%s",
                                       (pid,)) == [(40,)])
        assert query(database_url, "select count(*), max(recorded_at) from process_samples where watched_process_id=%s",
                     (pid,)) == [(40, times[-1])]
    finally:
        await second.stop()
