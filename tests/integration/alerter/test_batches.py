"""The alerter's batched consumption: several events per fetch, one transaction per batch.

Events are published before the alerter starts, so its first fetch finds them all
waiting in the stream and takes them as one batch (asserted with the consumer's counters).
"""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from procwatch_alerter.repository import AlerterRepository
from procwatch_alerter.service import AlerterService
from procwatch_contracts import subjects
from procwatch_db.urls import libpq_url

pytestmark = pytest.mark.integration


async def _deadlettered(js, sub, payload: bytes, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    found = []
    while time.monotonic() < deadline:
        try:
            found += await sub.fetch(10, timeout=0.5)
        except Exception:
            pass
        hits = [m for m in found if m.data == payload]
        if hits:
            return hits
    raise AssertionError("the poison event was not dead-lettered")


async def test_down_up_down_in_one_batch_fires_resolves_fires_in_order_once_each(world):
    proc = world.process("nginx")
    other = world.process("redis", alert_on_cpu=True, cpu_threshold_pct=50)
    # One agent message per minute, each with both processes: a batch of 4 events.
    for minute, count, cpu in [(0, 2, 10), (1, 0, 90), (2, 3, 10), (3, 0, 10)]:
        await world.publish(world.event(world.sample(proc, minute, count=count),
                                        world.sample(other, minute, cpu=cpu)))
    app = await world.start_alerter()
    events = await world.alerts(5)
    mine = [(a.type, a.state) for a, _ in events if a.process.id == proc.id]
    assert mine == [("process_down", "firing"), ("process_down", "resolved"), ("process_down", "firing")]
    theirs = [(a.type, a.state) for a, _ in events if a.process.id == other.id]
    assert theirs == [("process_cpu_high", "firing"), ("process_cpu_high", "resolved")]
    assert app.handlers.stats.largest_batch >= 4  # they were handled as one batch
    # Occurred-at follows the samples, in order.
    assert [a.occurred_at for a, _ in events if a.process.id == proc.id] == [
        world.sample(proc, m).recorded_at for m in (1, 2, 3)]
    history = world.history(proc.id)
    assert [(r["type"], r["state"]) for r in history] == [("process_down", "resolved"), ("process_down", "firing")]
    assert history[0]["resolved_at"] == world.sample(proc, 2).recorded_at
    assert history[1]["started_at"] == world.sample(proc, 3).recorded_at and history[1]["resolved_at"] is None
    row = world.row(proc.id)
    assert row["alerted_state"] == "down" and row["alert_evaluated_at"] == world.sample(proc, 3).recorded_at
    await world.send(proc, 4, count=1)  # sentinel: nothing else came before it
    assert await world.kinds(1) == [("process_down", "resolved")]
    for event, _ in world.received:
        assert world.sql("select count(*) from outbox_events where msg_id = %s", event.id) == [(1,)]


async def test_poison_event_in_the_middle_of_a_batch_is_dead_lettered_and_the_rest_processed(world, js):
    proc = world.process("nginx")
    dl = await js.pull_subscribe(subjects.DEADLETTER_SAMPLE_EVENTS, stream=subjects.DEADLETTER_STREAM)
    poison = f'{{"v": 1, "server_id": {world.server.id}, "samples": "nope"}}'.encode()
    await world.send(proc, 0, count=2)
    await world.send(proc, 1, count=0)
    await world.js.publish(subjects.samples_recorded(world.server.id), poison)
    await world.send(proc, 2, count=1)
    app = await world.start_alerter()
    assert await world.kinds(2) == [("process_down", "firing"), ("process_down", "resolved")]
    assert app.handlers.stats.largest_batch >= 4
    [msg] = await _deadlettered(js, dl, poison)
    assert msg.headers[subjects.REASON_HEADER].startswith("invalid SampleRecorded")
    assert msg.headers["Procwatch-Original-Subject"] == subjects.samples_recorded(world.server.id)
    await dl.unsubscribe()
    # Everything was acked: nothing waits for redelivery on the durable.
    info = await js.consumer_info(subjects.SAMPLE_EVENTS_STREAM, app.settings.durable)
    deadline = time.monotonic() + 5
    while (info.num_ack_pending or info.num_pending) and time.monotonic() < deadline:
        info = await js.consumer_info(subjects.SAMPLE_EVENTS_STREAM, app.settings.durable)
    assert (info.num_ack_pending, info.num_pending) == (0, 0)


async def test_redelivered_committed_batch_writes_and_publishes_nothing_twice(world):
    """Crash after a batch's commit, before its acks: the whole batch comes again."""
    proc = world.process("nginx", alert_on_restart=True)
    batch = [
        world.event(world.sample(proc, 0, start=1000)),
        world.event(world.sample(proc, 1, count=0)),
        world.event(world.sample(proc, 2, start=2000)),  # up again (restart needs count > 0 both sides)
        world.event(world.sample(proc, 3, start=3000)),  # restarted
    ]
    async with await psycopg.AsyncConnection.connect(libpq_url(world.database_url)) as conn:
        async with conn.transaction():
            outcome = await AlerterService(AlerterRepository(conn)).on_samples_recorded_batch(batch)
    committed = [(a.type, a.state) for a in outcome.alerts]
    assert committed == [("process_down", "firing"), ("process_down", "resolved"), ("process_restarted", "firing")]
    rows_before = world.history(proc.id)
    for event in batch:  # still in the stream, never acked
        await world.publish(event)
    app = await world.start_alerter()
    # The committed alerts go out once (the relay), the redelivered batch adds nothing.
    assert await world.kinds(3) == committed
    await world.send(proc, 4, count=0)  # sentinel
    assert await world.kinds(1) == [("process_down", "firing")]
    assert app.handlers.stats.largest_batch >= 4
    assert world.history(proc.id)[: len(rows_before)] == rows_before
    assert len(world.history(proc.id)) == len(rows_before) + 1
    assert len({a.id for a, _ in world.received}) == len(world.received)


async def test_batch_service_equals_one_by_one_and_keeps_the_skip_rule_across_events(world):
    """Within one batch a late older sample is skipped (alert_evaluated_at carried in memory)."""
    proc = world.process("java", alert_on_cpu=True, cpu_threshold_pct=50)
    hot = world.event(world.sample(proc, 10, cpu=90))
    late = world.event(world.sample(proc, 5, cpu=10, is_latest=True))  # older, claims latest
    cool = world.event(world.sample(proc, 11, cpu=10))
    async with await psycopg.AsyncConnection.connect(libpq_url(world.database_url)) as conn:
        async with conn.transaction():
            outcome = await AlerterService(AlerterRepository(conn)).on_samples_recorded_batch([hot, late, cool])
    assert [(a.type, a.state, a.occurred_at) for a in outcome.alerts] == [
        ("process_cpu_high", "firing", hot.sampled_at), ("process_cpu_high", "resolved", cool.sampled_at)]
    assert outcome.skipped_stale == 1
    assert world.row(proc.id)["alert_evaluated_at"] == cool.sampled_at


async def test_procwatch_alerter_runs_on_uvloop_alerts_and_stops_cleanly_on_sigterm(world, js, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    proc = world.process("nginx")
    durable = f"alerter-main-{proc.id}"
    env = {**os.environ, "DATABASE_URL": world.database_url, "NATS_URL": world.nats_url, "LOG_LEVEL": "INFO",
           "PROCWATCH_ALERTER_DURABLE": durable,
           "PROCWATCH_ALERTER_SAMPLE_SUBJECT": subjects.samples_recorded(world.server.id),
           "PROCWATCH_ALERTER_PROCESS_SUBJECT": subjects.processes_changed(world.server.id),
           "PROCWATCH_ALERTER_FETCH_TIMEOUT_S": "0.5"}
    log_path = tmp_path / "alerter.log"
    with open(log_path, "wb") as log:
        child = subprocess.Popen([sys.executable, "-m", "procwatch.cli", "alerter"], env=env,
                                 stdout=log, stderr=subprocess.STDOUT)
    try:
        await world.send(proc, 0, count=2)
        await world.send(proc, 1, count=0)
        assert await world.kinds(1) == [("process_down", "firing")]
        child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        while child.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert child.poll() == 0, log_path.read_text()[-2000:]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)
    text = log_path.read_text()
    assert "alerter started" in text and "event_loop=uvloop" in text, text[-2000:]
    assert "alerter stopped" in text
    info = await js.consumer_info(subjects.SAMPLE_EVENTS_STREAM, durable)
    assert info.num_ack_pending == 0  # the batch was acked before exit


async def test_alert_events_leave_right_after_the_commit_not_at_the_relay_poll(world):
    """The fast path: the handler publishes the committed outbox rows itself and marks them."""
    proc = world.process("nginx", alert_on_cpu=True, cpu_threshold_pct=50)
    await world.start_alerter(relay_poll_interval_s=60.0)  # only the fast path (or a wake) can publish in time now
    await world.send(proc, 0, cpu=10)
    await world.send(proc, 1, cpu=90)
    sent = time.monotonic()
    assert await world.kinds(1) == [("process_cpu_high", "firing")]
    assert time.monotonic() - sent < 5
    await world.send(proc, 2, cpu=10)
    assert await world.kinds(1) == [("process_cpu_high", "resolved")]
    for event, _ in world.received:
        deadline = time.monotonic() + 5
        while world.sql("select published_at is not null from outbox_events where msg_id = %s", event.id) != [(True,)]:
            assert time.monotonic() < deadline, "the outbox row was not marked published"
            await asyncio.sleep(0.05)
