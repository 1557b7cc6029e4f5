"""Maintenance windows in the alerter: transitions inside a window are recorded and published with
`suppressed: true`; an episode still firing when its window ends is published once more
(`maintenance_ended`); a notified episode's resolution is never suppressed."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.integration.alerter.conftest import T0

pytestmark = pytest.mark.integration


def add_window(world, *, start, end, server_ids=None, process_ids=None) -> int:
    # effective_until NULL: the samples are stamped T0 (months ago), and the alerter loads only the
    # windows that ended less than a day ago (the API sets it to the window's end).
    [(window_id,)] = world.sql(
        "insert into maintenance_windows (user_id, name, starts_at, ends_at, server_ids, process_ids)"
        " values (%s, 'deploy', %s, %s, %s, %s) returning id",
        world.server.user_id, start, end, server_ids, process_ids)
    return window_id


def end_window_now(world, window_id: int) -> None:
    # As the API does (POST .../end): updated_at moves, which is what the alerter's cache watches.
    world.sql("update maintenance_windows set ended_at = now(), updated_at = now() where id = %s returning id",
              window_id)


FAST = dict(maintenance_refresh_s=0, maintenance_check_every_s=0.2)


async def test_down_inside_a_window_is_suppressed_then_notified_once_when_it_ends(world):
    proc = world.process("nginx")
    other = world.process("cron")
    # From before the samples' time until an hour from now: covers the samples and the present.
    window = add_window(world, start=T0, end=T0 + timedelta(days=400), process_ids=[proc.id])
    await world.start_alerter(**FAST)
    await world.send(proc, 1, count=0)
    [(firing, _)] = await world.alerts(1)
    assert (firing.type, firing.state, firing.suppressed) == ("process_down", "firing", True)
    [row] = world.history(proc.id)
    assert row["suppressed"] is True and row["unsuppressed_at"] is None
    # Out of the window's scope: not suppressed.
    await world.send(other, 1, count=0)
    [(unscoped, _)] = await world.alerts(1)
    assert unscoped.process.id == other.id and unscoped.suppressed is False

    end_window_now(world, window)
    [(ended, headers)] = await world.alerts(1)
    assert (ended.type, ended.state, ended.reason) == ("process_down", "firing", "maintenance_ended")
    assert ended.suppressed is False and ended.episode_id == firing.id
    assert headers["Nats-Msg-Id"] == ended.id == f"{firing.id}.maintenance_ended"
    [row] = world.history(proc.id)
    assert row["unsuppressed_at"] is not None
    # Once: several more runs of the job add nothing; the next event is the sentinel's.
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    await world.send(other, 2, count=3)
    [(sentinel, _)] = await world.alerts(1)
    assert (sentinel.process.id, sentinel.state) == (other.id, "resolved")
    # The episode was notified (after the window): its resolution is notified too.
    await world.send(proc, 3, count=2)
    [(resolved, _)] = await world.alerts(1)
    assert (resolved.state, resolved.suppressed) == ("resolved", False)


async def test_an_episode_that_starts_and_ends_inside_a_window_stays_suppressed(world):
    proc = world.process("nginx")
    add_window(world, start=T0, end=T0 + timedelta(minutes=30), server_ids=[world.server.id])
    # That window ended months ago by the clock (the samples are stamped T0): the maintenance_ended
    # job would notify the episode if it ran between the first two samples. A second window, in
    # effect now but long after the samples, keeps the episode covered for the job only.
    now = datetime.now(UTC)
    add_window(world, start=now - timedelta(hours=1), end=now + timedelta(hours=1), server_ids=[world.server.id])
    await world.start_alerter(**FAST)
    await world.send(proc, 1, count=0)
    await world.send(proc, 2, count=2)
    await world.send(proc, 40, count=0)  # after the window: notified
    events = [(a.state, a.suppressed) for a, _ in await world.alerts(3)]
    assert events == [("firing", True), ("resolved", True), ("firing", False)]
    assert [r["suppressed"] for r in world.history(proc.id)] == [True, False]


async def test_resolution_of_a_notified_episode_inside_a_window_is_not_suppressed(world):
    proc = world.process("nginx")
    add_window(world, start=T0 + timedelta(minutes=5), end=T0 + timedelta(minutes=30))
    await world.start_alerter(**FAST)
    await world.send(proc, 1, count=0)  # before the window: notified
    await world.send(proc, 10, count=2)  # resolves inside it: still notified
    await world.send(proc, 11, start=5000)  # a restart inside it: suppressed
    events = [(a.type, a.state, a.suppressed) for a, _ in await world.alerts(2)]
    assert events == [("process_down", "firing", False), ("process_down", "resolved", False)]
