"""Publish -> rows, last fields, counters and SampleRecorded events (real NATS + PostgreSQL)."""

from __future__ import annotations

import psycopg
import pytest

from procwatch_contracts import subjects
from procwatch_contracts.messages import SampleRecorded
from procwatch_db.urls import libpq_url
from procwatch_domain.restarts import count_restarts
from tests.integration.ingest.conftest import (
    eventually, now_utc, publish_sample, query, reading, stream_messages,
)
from tests.support.factories import make_process, make_server, make_user

pytestmark = pytest.mark.integration


def process_row(database_url, pid):
    return query(
        database_url,
        "select last_count, last_cpu_pct, last_memory_pct, last_sample_at, last_oldest_start_unix, samples_total"
        " from watched_processes where id = %s", (pid,),
    )[0]


def sample_rows(database_url, pid):
    return query(database_url, "select count, cpu_pct, memory_pct, oldest_start_unix, recorded_at"
                               " from process_samples where watched_process_id = %s order by recorded_at", (pid,))


async def test_samples_are_stored_with_last_fields_counters_and_events(ingest, nc, database_url):
    user = make_user(database_url)
    server = make_server(database_url, user)
    nginx = make_process(database_url, server, "nginx", alert_on_cpu=True, cpu_threshold_pct=80)
    redis = make_process(database_url, server, "redis")
    t0 = now_utc(-60)
    t1 = now_utc(-30)
    await publish_sample(nc, server, t0, [reading("nginx", 4, 12.4, 8.1, 1716566400), reading("redis", 1, 0.5, 2.0, 100)])
    await publish_sample(nc, server, t1, [reading("nginx", 4, 20.0, 9.0, 1716569999), reading("redis", 0, 0, 0, None)],
                         agent_version="2.5.0")

    await eventually(lambda: process_row(database_url, nginx)[5] == 2)
    assert process_row(database_url, nginx) == (4, 20.0, 9.0, t1, 1716569999, 2)
    assert process_row(database_url, redis) == (0, 0.0, 0.0, t1, None, 2)
    rows = sample_rows(database_url, nginx)
    assert rows == [(4, 12.4, 8.1, 1716566400, t0), (4, 20.0, 9.0, 1716569999, t1)]
    # The restart rule sees the increase of oldest_start_unix between the two samples.
    assert count_restarts([r[3] for r in rows]) == 1
    assert query(database_url, "select last_agent_version from servers where id = %s", (server.id,)) == [("2.5.0",)]

    events = await stream_messages(nc, subjects.SAMPLE_EVENTS_STREAM, subjects.samples_recorded(server.id), 2)
    parsed = [SampleRecorded.model_validate_json(m.data) for m in events]
    assert [e.sampled_at for e in parsed] == [t0, t1]
    assert events[0].headers["Nats-Msg-Id"] == f"sr-{server.id}-{t0.isoformat().replace('+00:00', 'Z')}"
    second = {s.process_name: s for s in parsed[1].samples}
    assert parsed[1].hostname == server.hostname and parsed[1].user_id == user.id
    assert second["nginx"].previous_count == 4 and second["nginx"].previous_oldest_start_unix == 1716566400
    assert second["nginx"].previous_recorded_at == t0 and second["nginx"].is_latest
    assert second["nginx"].config.alert_on_cpu and second["nginx"].config.cpu_threshold_pct == 80
    assert second["redis"].count == 0 and second["redis"].oldest_start_unix is None
    first = {s.process_name: s for s in parsed[0].samples}
    assert first["nginx"].previous_count is None and first["nginx"].previous_recorded_at is None
    ids = {r[0] for r in query(database_url, "select id from process_samples where watched_process_id = %s", (nginx,))}
    assert {first["nginx"].sample_id, second["nginx"].sample_id} == ids


async def test_same_msg_id_twice_stores_one_sample(ingest, nc, database_url):
    server = make_server(database_url, make_user(database_url))
    pid = make_process(database_url, server, "nginx")
    t = now_utc(-10)
    for _ in range(2):
        await publish_sample(nc, server, t, [reading("nginx", 2)], msg_id=f"{server.id}-{t.isoformat()}")
    # A re-sent tick with a NEW msg id is also stored once (unique process+time).
    await publish_sample(nc, server, t, [reading("nginx", 2)])
    # A later tick acts as a marker: once it is stored, the three copies before it were handled.
    await publish_sample(nc, server, now_utc(-5), [reading("nginx", 2)])
    await eventually(lambda: process_row(database_url, pid)[5] == 2)
    assert len(sample_rows(database_url, pid)) == 2
    assert process_row(database_url, pid)[5] == 2


async def test_out_of_order_tick_is_stored_but_never_moves_last_fields_back(ingest, nc, database_url):
    server = make_server(database_url, make_user(database_url))
    pid = make_process(database_url, server, "nginx")
    new, old = now_utc(-10), now_utc(-100)
    await publish_sample(nc, server, new, [reading("nginx", 3, 30.0, 3.0, 300)])
    await eventually(lambda: process_row(database_url, pid)[5] == 1)
    await publish_sample(nc, server, old, [reading("nginx", 0, 0.0, 0.0, None)], agent_version="1.0.0")
    await eventually(lambda: process_row(database_url, pid)[5] == 2)
    assert process_row(database_url, pid) == (3, 30.0, 3.0, new, 300, 2)
    events = await stream_messages(nc, subjects.SAMPLE_EVENTS_STREAM, subjects.samples_recorded(server.id), 2)
    late = SampleRecorded.model_validate_json(events[-1].data)
    assert late.sampled_at == old and late.samples[0].is_latest is False
    # The newest message's agent version stays.
    assert query(database_url, "select last_agent_version from servers where id = %s", (server.id,)) == [("2.4.1",)]


async def test_unknown_and_paused_process_names_are_dropped_and_counted(ingest, nc, database_url):
    server = make_server(database_url, make_user(database_url))
    pid = make_process(database_url, server, "nginx")
    paused = make_process(database_url, server, "cron", enabled=False)
    before = ingest.stats.samples_dropped
    await publish_sample(nc, server, now_utc(-5), [reading("nginx"), reading("cron"), reading("ghost")])
    # Waits on this ingest's own count: another test module's ingest (its own durable) may store
    # the row first.
    await eventually(lambda: ingest.stats.samples_dropped - before >= 2)
    assert process_row(database_url, pid)[5] == 1
    assert process_row(database_url, paused)[5] == 0
    dl = await stream_messages(nc, subjects.DEADLETTER_STREAM, subjects.DEADLETTER_AGENT_SAMPLES, 0, timeout=0.5)
    assert not [m for m in dl if m.headers.get("Procwatch-Original-Subject") == subjects.agent_samples(server.id)]


async def test_new_process_is_accepted_within_the_cache_ttl(ingest, nc, database_url):
    server = make_server(database_url, make_user(database_url))
    make_process(database_url, server, "nginx")
    await publish_sample(nc, server, now_utc(-20), [reading("nginx")])
    await eventually(lambda: query(database_url, "select 1 from watched_processes where server_id=%s and samples_total=1",
                                   (server.id,)))
    late = make_process(database_url, server, "late")  # cache already holds this server's names

    async def tick():
        await publish_sample(nc, server, now_utc(), [reading("late")])
        return process_row(database_url, late)[5] > 0

    await eventually(tick, timeout=ingest.settings.process_cache_ttl_s + 5, interval=0.3)


async def test_process_paused_or_deleted_after_the_cache_filled_is_not_stored(ingest, nc, database_url):
    server = make_server(database_url, make_user(database_url))
    keep = make_process(database_url, server, "nginx")
    paused = make_process(database_url, server, "cron")
    deleted = make_process(database_url, server, "old")
    await publish_sample(nc, server, now_utc(-30), [reading("nginx"), reading("cron"), reading("old")])
    await eventually(lambda: process_row(database_url, deleted)[5] == 1)  # the name cache now holds all three
    with psycopg.connect(libpq_url(database_url)) as conn:
        conn.execute("update watched_processes set enabled = false where id = %s", (paused,))
        conn.execute("delete from watched_processes where id = %s", (deleted,))
    await publish_sample(nc, server, now_utc(-20), [reading("nginx"), reading("cron"), reading("old")])
    await eventually(lambda: process_row(database_url, keep)[5] == 2)
    assert process_row(database_url, paused)[5] == 1
    assert query(database_url, "select count(*) from process_samples where watched_process_id = %s", (paused,)) == [(1,)]
    assert query(database_url, "select count(*) from process_samples where watched_process_id = %s", (deleted,)) == [(0,)]
