"""The alerter end to end on real NATS + PostgreSQL: sample events in, alert events out of ALERTS.

"Nothing else arrived" is checked with a sentinel: the alerter keeps a server's
events in order, so any extra event would arrive before the sentinel's alert.
"""

from __future__ import annotations

import time

import psycopg
import pytest

from procwatch_alerter.repository import AlerterRepository
from procwatch_alerter.service import AlerterService
from procwatch_contracts import subjects
from procwatch_db.urls import libpq_url
from procwatch_domain.alerts import alert_id

pytestmark = pytest.mark.integration


async def test_down_fires_once_then_resolves(world):
    proc = world.process("nginx")
    await world.start_alerter()
    for minute, count in [(0, 2), (1, 0), (2, 0), (3, 0), (4, 3)]:
        await world.send(proc, minute, count=count)
    events = await world.alerts(2)
    assert [(a.type, a.state) for a, _ in events] == [("process_down", "firing"), ("process_down", "resolved")]
    firing, resolved = events[0][0], events[1][0]
    assert firing.occurred_at == world.sample(proc, 1).recorded_at  # the down sample's time, not the last one
    assert firing.user_id == world.server.user_id
    assert (firing.server.id, firing.server.hostname) == (world.server.id, world.server.hostname)
    assert (firing.process.id, firing.process.process_name) == (proc.id, "nginx")
    assert firing.sample["count"] == 0 and resolved.reason == "recovered" and resolved.value == 3
    # Nats-Msg-Id is the deterministic alert id.
    assert events[0][1]["Nats-Msg-Id"] == firing.id == alert_id(proc.id, "process_down", "firing", firing.occurred_at)
    [row] = world.history(proc.id)
    assert (row["type"], row["state"], row["resolve_reason"]) == ("process_down", "resolved", "recovered")
    assert row["started_at"] == firing.occurred_at and row["resolved_at"] == resolved.occurred_at
    assert row["event_id"] == firing.id
    assert world.row(proc.id)["alerted_state"] is None


async def test_cpu_hot_for_three_samples_is_one_alert_and_alerted_state_tracks_it(world):
    proc = world.process("java", alert_on_cpu=True, cpu_threshold_pct=80, alert_on_memory=True, memory_threshold_pct=50)
    await world.start_alerter()
    await world.send(proc, 0, cpu=10)
    for minute in (1, 2, 3):
        await world.send(proc, minute, cpu=95.5)
    assert await world.kinds(1) == [("process_cpu_high", "firing")]
    assert world.received[0][0].value == 95.5 and world.received[0][0].threshold == 80
    await world.send(proc, 4, cpu=95.5, mem=70)  # memory joins
    assert await world.kinds(1) == [("process_memory_high", "firing")]
    assert world.row(proc.id)["alerted_state"] == "cpu,memory"
    await world.send(proc, 5, cpu=80, mem=70)  # at the threshold: resolved
    assert await world.kinds(1) == [("process_cpu_high", "resolved")]
    assert world.row(proc.id)["alerted_state"] == "memory"
    await world.send(proc, 6, cpu=1, mem=50)
    assert await world.kinds(1) == [("process_memory_high", "resolved")]
    assert world.row(proc.id)["alerted_state"] is None
    assert [(r["type"], r["state"]) for r in world.history(proc.id)] == [
        ("process_cpu_high", "resolved"), ("process_memory_high", "resolved"),
    ]


async def test_restart_fires_with_flag_on_and_not_with_flag_off(world):
    on = world.process("redis", alert_on_restart=True)
    off = world.process("worker", alert_on_restart=False)
    await world.start_alerter()
    for proc in (on, off):
        await world.send(proc, 0, start=1000)
        await world.send(proc, 1, start=1000)
        await world.send(proc, 2, start=2000)  # restarted
    await world.send(off, 3, count=0)  # sentinel: anything for `off` would come before this
    events = await world.alerts(2)
    assert [(a.process.id, a.type, a.state) for a, _ in events] == [
        (on.id, "process_restarted", "firing"), (off.id, "process_down", "firing"),
    ]
    restart = events[0][0]
    assert restart.sample["oldest_start_unix"] == 2000 and restart.sample["previous_oldest_start_unix"] == 1000
    [row] = world.history(on.id)
    assert (row["type"], row["resolved_at"]) == ("process_restarted", None)  # one-shot
    assert world.row(on.id)["alerted_state"] is None


async def test_redelivered_event_produces_no_second_alert_or_row(world):
    proc = world.process("nginx", alert_on_restart=True)
    await world.start_alerter()
    await world.send(proc, 0, start=1000)
    restarted = world.event(world.sample(proc, 1, start=2000))
    await world.publish(restarted, msg_id="first")
    await world.publish(restarted, msg_id="second")  # JetStream keeps both: a redelivery in effect
    await world.send(proc, 2, count=0)
    await world.publish(restarted, msg_id="third")  # and once more after a newer sample
    await world.send(proc, 3, count=1, start=3000)  # sentinel
    assert await world.kinds(3) == [
        ("process_restarted", "firing"), ("process_down", "firing"), ("process_down", "resolved"),
    ]
    assert [r["type"] for r in world.history(proc.id)] == ["process_restarted", "process_down"]
    for event, _ in world.received:  # one outbox row per alert id: never written twice
        assert world.sql("select count(*) from outbox_events where msg_id = %s", event.id) == [(1,)]


async def test_late_older_sample_never_retriggers(world):
    proc = world.process("nginx", alert_on_cpu=True, cpu_threshold_pct=50)
    await world.start_alerter()
    await world.send(proc, 10, cpu=90)
    assert await world.kinds(1) == [("process_cpu_high", "firing")]
    await world.send(proc, 11, cpu=10)
    assert await world.kinds(1) == [("process_cpu_high", "resolved")]
    # An older sample arrives late (even claiming to be the latest): stored by ingest, never alerts.
    await world.publish(world.event(world.sample(proc, 5, cpu=99, count=0, is_latest=False)))
    await world.publish(world.event(world.sample(proc, 6, cpu=99, is_latest=True)))
    await world.send(proc, 12, count=0)  # sentinel
    assert await world.kinds(1) == [("process_down", "firing")]
    assert world.row(proc.id)["alert_evaluated_at"] == proc.previous.recorded_at


async def test_pause_and_flag_off_resolve_open_alerts_with_a_reason(world):
    paused = world.process("nginx", alert_on_cpu=True, cpu_threshold_pct=50)
    flagged = world.process("java", alert_on_memory=True, memory_threshold_pct=10)
    await world.start_alerter()
    await world.send(paused, 0, count=0)
    await world.send(paused, 1, cpu=90)  # down resolved, cpu firing
    await world.send(flagged, 0, mem=20)
    assert await world.kinds(4) == [
        ("process_down", "firing"), ("process_down", "resolved"), ("process_cpu_high", "firing"),
        ("process_memory_high", "firing"),
    ]
    world.sql("update watched_processes set enabled = false where id = %s returning id", paused.id)
    world.sql("update watched_processes set alert_on_memory = false where id = %s returning id", flagged.id)
    await world.changed(paused, "updated")
    await world.changed(flagged, "updated")
    events = await world.alerts(2)
    assert [(a.process.id, a.type, a.state, a.reason) for a, _ in events] == [
        (paused.id, "process_cpu_high", "resolved", "paused"),
        (flagged.id, "process_memory_high", "resolved", "flag_disabled"),
    ]
    assert world.row(paused.id)["alerted_state"] is None and world.row(flagged.id)["alerted_state"] is None
    assert world.history(paused.id)[-1]["resolve_reason"] == "paused"
    assert world.history(flagged.id)[-1]["resolve_reason"] == "flag_disabled"
    # A redelivered lifecycle event finds nothing open; a paused process's samples never alert.
    await world.changed(paused, "updated")
    await world.send(paused, 2, count=0)
    await world.send(flagged, 1, count=0)  # sentinel
    assert await world.kinds(1) == [("process_down", "firing")]
    assert world.received[-1][0].process.id == flagged.id


async def test_delete_resolves_what_was_firing(world):
    proc = world.process("nginx", alert_on_cpu=True, cpu_threshold_pct=50)
    await world.start_alerter()
    await world.send(proc, 0, cpu=99)
    assert await world.kinds(1) == [("process_cpu_high", "firing")]
    alerted_state = world.row(proc.id)["alerted_state"]
    world.sql("delete from watched_processes where id = %s returning id", proc.id)
    await world.changed(proc, "deleted", alerted_state=alerted_state)
    [(event, headers)] = await world.alerts(1)
    assert (event.type, event.state, event.reason) == ("process_cpu_high", "resolved", "deleted")
    assert event.server.hostname == world.server.hostname and event.process.process_name == "nginx"


async def test_deleting_the_server_resolves_with_the_hostname_the_event_carries(world):
    """With the server row gone, the hostname comes from the lifecycle event, not the database."""
    proc = world.process("nginx", alert_on_cpu=True, cpu_threshold_pct=50)
    await world.start_alerter()
    await world.send(proc, 0, cpu=99)
    assert await world.kinds(1) == [("process_cpu_high", "firing")]
    alerted_state = world.row(proc.id)["alerted_state"]
    world.sql("delete from servers where id = %s returning id", world.server.id)
    await world.changed(proc, "deleted", alerted_state=alerted_state, hostname=world.server.hostname)
    [(event, _)] = await world.alerts(1)
    assert (event.type, event.state, event.reason) == ("process_cpu_high", "resolved", "deleted")
    assert event.server.hostname == world.server.hostname


async def test_committed_but_unacked_event_is_not_repeated_after_a_restart(world):
    """Crash after commit, before ack: the next alerter gets the event again and writes nothing."""
    proc = world.process("nginx")
    durable = f"alerter-crash-{proc.id}"
    down = world.event(world.sample(proc, 1, count=0))
    # What the crashed alerter committed for this event (same code path, transaction committed, no ack):
    async with await psycopg.AsyncConnection.connect(libpq_url(world.database_url)) as conn:
        async with conn.transaction():
            outcome = await AlerterService(AlerterRepository(conn)).on_samples_recorded(down)
    assert [(a.type, a.state) for a in outcome.alerts] == [("process_down", "firing")]
    await world.publish(down)  # still in the stream, never acked
    await world.start_alerter(durable)
    await world.send(proc, 2, count=1)
    # The committed firing (published by the relay) and the resolution: no second firing.
    assert await world.kinds(2) == [("process_down", "firing"), ("process_down", "resolved")]
    assert len(world.history(proc.id)) == 1


async def test_restart_mid_stream_loses_nothing_and_duplicates_nothing(world):
    proc = world.process("nginx", alert_on_cpu=True, cpu_threshold_pct=50)
    durable = f"alerter-restart-{proc.id}"
    await world.start_alerter(durable)
    expected = []
    hot = False
    for minute in range(12):
        hot = not hot if minute % 2 == 0 else hot
        await world.send(proc, minute, cpu=90 if hot else 10)
        if minute == 5:
            await world.stop_alerter()  # mid-stream; later events wait in the stream
        if minute == 8:
            await world.start_alerter(durable)
    for minute in range(12):
        if minute % 2 == 0:
            expected.append(("process_cpu_high", "firing" if (minute // 2) % 2 == 0 else "resolved"))
    assert await world.kinds(len(expected)) == expected
    await world.send(proc, 20, count=0)  # sentinel: no duplicates before it
    assert await world.kinds(1) == [("process_down", "firing")]
    assert len({a.id for a, _ in world.received}) == len(world.received)


async def test_lost_database_connections_are_retried_without_losing_or_repeating(world):
    proc = world.process("nginx")
    app = await world.start_alerter()
    await world.send(proc, 0, count=2)
    await world.send(proc, 1, count=0)
    assert await world.kinds(1) == [("process_down", "firing")]
    # A real fault: PostgreSQL drops every connection of this alerter (pool and its checks).
    killed = world.sql(
        "select pg_terminate_backend(pid) from pg_stat_activity where application_name = %s",
        f"procwatch-alerter:{app.settings.durable}",
    )
    assert killed and all(ok for (ok,) in killed)
    await world.send(proc, 2, count=1)
    await world.send(proc, 3, count=0)
    assert await world.kinds(2) == [("process_down", "resolved"), ("process_down", "firing")]
    assert [r["state"] for r in world.history(proc.id)] == ["resolved", "firing"]


async def test_poison_event_is_dead_lettered_and_does_not_block(world, js):
    proc = world.process("nginx")
    dl = await js.pull_subscribe(subjects.DEADLETTER_SAMPLE_EVENTS, stream=subjects.DEADLETTER_STREAM)
    await world.start_alerter()
    poison = b'{"v": 1, "server_id": "not-a-number"}'
    await js.publish(subjects.samples_recorded(world.server.id), poison)
    await world.send(proc, 1, count=0)
    assert await world.kinds(1) == [("process_down", "firing")]
    found = []
    deadline = time.monotonic() + 5
    while not any(m.data == poison for m in found) and time.monotonic() < deadline:
        try:
            found += await dl.fetch(10, timeout=1)
        except Exception:
            pass
    [msg] = [m for m in found if m.data == poison]
    assert msg.headers[subjects.REASON_HEADER].startswith("invalid SampleRecorded")
    await dl.unsubscribe()
