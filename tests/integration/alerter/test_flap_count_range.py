"""Issue #18 through the real alerter (NATS + PostgreSQL): count ranges fire and resolve, flap
protection fires on the N-th consecutive sample, and a redelivered sample is never counted twice.

"Nothing else arrived" is checked with a sentinel, as in test_alerter.py: a server's events are
handled in order, so an extra alert would arrive before the sentinel's."""

from __future__ import annotations

import asyncio
import time

import pytest

pytestmark = pytest.mark.integration


async def test_count_range_fires_and_resolves_with_the_bound_crossed(world):
    proc = world.process("worker", min_count=2, max_count=4)
    await world.start_alerter()
    await world.send(proc, 0, count=3)
    await world.send(proc, 1, count=1)  # below min_count
    await world.send(proc, 2, count=1)  # still: no repeat
    [(below, _)] = await world.alerts(1)
    assert (below.type, below.state, below.value, below.threshold) == ("process_count_out_of_range", "firing", 1, 2)
    assert below.occurred_at == world.sample(proc, 1).recorded_at
    assert world.row(proc.id)["alerted_state"] == "count_range"
    await world.send(proc, 3, count=0)  # down's condition: the range neither fires again nor resolves
    assert await world.kinds(1) == [("process_down", "firing")]
    assert world.row(proc.id)["alerted_state"] == "down,count_range"
    await world.send(proc, 4, count=3)  # back, and within the range
    assert await world.kinds(2) == [("process_down", "resolved"), ("process_count_out_of_range", "resolved")]
    await world.send(proc, 5, count=6)  # above max_count
    [(above, _)] = await world.alerts(1)
    assert (above.type, above.state, above.value, above.threshold) == ("process_count_out_of_range", "firing", 6, 4)
    await world.send(proc, 6, count=4)
    [(back, _)] = await world.alerts(1)
    assert (back.state, back.reason, back.value) == ("resolved", "recovered", 4)
    assert [(r["type"], r["state"], r["value"], r["threshold"]) for r in world.history(proc.id)] == [
        ("process_count_out_of_range", "resolved", 1, 2), ("process_down", "resolved", 0, None),
        ("process_count_out_of_range", "resolved", 6, 4),
    ]
    assert world.row(proc.id)["alerted_state"] is None


async def test_no_bounds_means_no_count_alert(world):
    proc = world.process("worker")  # min_count / max_count null: the rule is off
    await world.start_alerter()
    await world.send(proc, 0, count=1)
    await world.send(proc, 1, count=10_000)
    await world.send(proc, 2, count=0)  # sentinel
    assert await world.kinds(1) == [("process_down", "firing")]


async def test_flap_fires_on_the_third_sample_and_resolves_on_the_second_good_one(world):
    proc = world.process("java", alert_on_cpu=True, cpu_threshold_pct=80, alert_after_samples=3,
                         resolve_after_samples=2)
    await world.start_alerter()
    await world.send(proc, 0, cpu=95)
    await world.send(proc, 1, cpu=95)
    await world.send(proc, 2, cpu=10)  # the run is interrupted: it starts again
    for minute in (3, 4, 5, 6):
        await world.send(proc, minute, cpu=95)
    [(firing, _)] = await world.alerts(1)
    assert (firing.type, firing.state) == ("process_cpu_high", "firing")
    assert firing.occurred_at == world.sample(proc, 5).recorded_at, "the 3rd consecutive hot sample"
    await world.send(proc, 7, cpu=10)
    await world.send(proc, 8, cpu=95)  # a good run of 1 is not enough
    await world.send(proc, 9, cpu=10)
    await world.send(proc, 10, cpu=10)
    [(resolved, _)] = await world.alerts(1)
    assert (resolved.state, resolved.reason) == ("resolved", "recovered")
    assert resolved.occurred_at == world.sample(proc, 10).recorded_at
    row = world.row(proc.id)
    assert (row["alerted_state"], row["alert_streaks"]) == (None, None)
    assert len(world.history(proc.id)) == 1


async def test_redelivered_samples_are_not_counted_twice(world):
    proc = world.process("java", alert_on_cpu=True, cpu_threshold_pct=80, alert_after_samples=3)
    sentinel = world.process("sentinel")  # flap protection off (1): its down fires at once
    await world.start_alerter()
    first = world.event(world.sample(proc, 0, cpu=95))
    second = world.event(world.sample(proc, 1, cpu=95))
    await world.publish(first, msg_id="first")
    await world.publish(second, msg_id="second")
    # JetStream keeps these copies: redeliveries in effect. Counted again they would fire.
    await world.publish(first, msg_id="first-again")
    await world.publish(second, msg_id="second-again")
    await world.send(sentinel, 2, count=0)
    assert [(a.process.id, a.type) for a, _ in await world.alerts(1)] == [(sentinel.id, "process_down")]
    row = world.row(proc.id)
    assert row["alerted_state"] is None and row["alert_streaks"] == "cpu:2"
    await world.publish(world.event(world.sample(proc, 2.5, cpu=95)), msg_id="third")
    await world.publish(world.event(world.sample(proc, 2.5, cpu=95)), msg_id="third-again")
    await world.send(proc, 3, cpu=95)  # a 4th hot sample: already firing, no repeat
    await world.send(sentinel, 4, count=1)
    events = await world.alerts(2)
    assert [(a.process.id, a.type, a.state) for a, _ in events] == [
        (proc.id, "process_cpu_high", "firing"), (sentinel.id, "process_down", "resolved")]
    assert events[0][0].occurred_at == world.sample(proc, 2.5).recorded_at, "fired on the 3rd sample"
    assert len(world.history(proc.id)) == 1
    row = world.row(proc.id)
    assert (row["alerted_state"], row["alert_streaks"]) == ("cpu", None)


async def _row_when(world, process_id, predicate, timeout=10.0):
    """The process row once `predicate(row)` holds (polled with a deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        row = world.row(process_id)
        if predicate(row):
            return row
        assert time.monotonic() < deadline, f"row never matched: {row}"
        await asyncio.sleep(0.05)


async def test_clearing_both_bounds_resolves_an_open_range_alert(world):
    proc = world.process("worker", min_count=2)
    await world.start_alerter()
    await world.send(proc, 0, count=1)
    assert await world.kinds(1) == [("process_count_out_of_range", "firing")]
    world.sql("update watched_processes set min_count = null where id = %s returning id", proc.id)
    await world.changed(proc, "updated")
    [(resolved, _)] = await world.alerts(1)
    assert (resolved.type, resolved.state, resolved.reason) == ("process_count_out_of_range", "resolved",
                                                                "flag_disabled")
    assert world.row(proc.id)["alerted_state"] is None


async def test_a_pause_clears_a_run_in_progress(world):
    proc = world.process("java", alert_on_cpu=True, cpu_threshold_pct=80, alert_after_samples=3)
    await world.start_alerter()
    await world.send(proc, 0, cpu=95)
    await world.send(proc, 1, cpu=95)
    await _row_when(world, proc.id, lambda r: r["alert_streaks"] == "cpu:2")
    world.sql("update watched_processes set enabled = false where id = %s returning id", proc.id)
    await world.changed(proc, "updated")
    await _row_when(world, proc.id, lambda r: r["alert_streaks"] is None)
    world.sql("update watched_processes set enabled = true where id = %s returning id", proc.id)
    await world.send(proc, 2, cpu=95)  # resumed: the run starts again, this is its 1st sample
    row = await _row_when(world, proc.id, lambda r: r["alert_streaks"] is not None)
    assert row["alert_streaks"] == "cpu:1" and row["alerted_state"] is None
