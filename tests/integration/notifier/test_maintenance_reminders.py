"""Suppressed events (maintenance windows) make no delivery; reminders at a channel's cadence while
an episode stays firing and unacknowledged, each with its own webhook-id; an acknowledgement stops
them; a resolution ends the episode and a new one starts unacknowledged."""

from __future__ import annotations

import pytest
from standardwebhooks.webhooks import Webhook

from tests.integration.notifier.conftest import body_of
from tests.support.factories import make_process

pytestmark = pytest.mark.integration

FAST = dict(reminder_check_every_s=0.2)


def open_episode(w, event, process_id: int) -> int:
    """The alerts row the alerter writes with a firing event."""
    [(alert_id,)] = w.sql(
        "insert into alerts (watched_process_id, server_id, user_id, type, state, started_at, event_id)"
        " values (%s, %s, %s, %s, 'firing', %s, %s) returning id",
        process_id, w.server.id, w.user.id, event.type, event.occurred_at, event.id)
    return alert_id


def set_repeat(w, channel_id: int, seconds: int) -> None:
    # Below the API's minimum (60 s) so the test runs in seconds; the job only reads the column.
    w.sql("update channels set repeat_every_s = %s where id = %s returning id", seconds, channel_id)


async def runs_pass(w, n: int = 3) -> None:
    """Wait until the reminders job has run `n` more times."""
    start = w.app.reminders.runs
    await w.until(lambda: w.app.reminders.runs >= start + n, what=f"{n} reminder job runs")


async def test_a_suppressed_event_makes_no_delivery(notify_world):
    w = notify_world
    channel = w.webhook("/hook")
    await w.start()
    quiet = w.event().model_copy(update={"suppressed": True})
    sentinel = w.event(process_id=2)
    await w.publish(quiet, sentinel)
    await w.until(lambda: len(w.deliveries(channel.id)) >= 1, what="the sentinel's delivery")
    await w.receiver.wait(lambda r: r.at("/hook"), what="the sentinel")
    assert [d["alert_id"] for d in w.deliveries(channel.id)] == [sentinel.id]
    assert w.app.handlers.stats.suppressed == 1


async def test_reminders_at_the_cadence_until_acknowledged(notify_world):
    w = notify_world
    channel = w.webhook("/hook")
    set_repeat(w, channel.id, 1)
    process_id = make_process(w.database_url, w.server, "nginx")
    event = w.event(process_id=process_id)
    alert_id = open_episode(w, event, process_id)
    await w.start(**FAST)
    await w.publish(event)
    await w.receiver.wait(lambda r: len(r.at("/hook")) >= 3, timeout=20, what="the first notification + 2 reminders")
    got = w.receiver.at("/hook")[:3]
    assert [g.headers["webhook-id"] for g in got] == [event.id, f"{event.id}.reminder-1", f"{event.id}.reminder-2"]
    first, reminder = (Webhook(channel.secret).verify(g.body, g.headers) for g in got[:2])
    assert first["data"]["reminder"] == 0 and reminder["data"]["reminder"] == 1
    assert reminder["data"]["episode_id"] == event.id and reminder["data"]["occurred_at"] == first["data"]["occurred_at"]
    rows = w.deliveries(channel.id)
    assert [r["reminder"] for r in rows][:3] == [0, 1, 2] and {r["episode_id"] for r in rows} == {event.id}
    # Spaced by the cadence (1 s), not one per run of the job (every 0.2 s).
    assert got[2].at - got[1].at >= 0.8

    w.sql("update alerts set acknowledged_at = now(), acknowledged_by = %s where id = %s returning id",
          w.user.id, alert_id)
    await runs_pass(w, 2)  # a reminder written before the ack may still be sent
    count = len(w.deliveries(channel.id))
    await runs_pass(w, 10)  # two seconds of runs: the cadence passed twice
    assert len(w.deliveries(channel.id)) == count


async def test_resolution_ends_the_episode_and_a_new_one_starts_unacknowledged(notify_world):
    w = notify_world
    channel = w.chat("slack", "/slack")
    set_repeat(w, channel.id, 1)
    process_id = make_process(w.database_url, w.server, "nginx")
    first = w.event(process_id=process_id)
    alert_id = open_episode(w, first, process_id)
    w.sql("update alerts set acknowledged_at = now(), acknowledged_by = %s where id = %s returning id",
          w.user.id, alert_id)
    await w.start(**FAST)
    await w.publish(first)
    await w.receiver.wait(lambda r: r.at("/slack"), what="the first notification")
    await runs_pass(w, 8)
    assert [d["reminder"] for d in w.deliveries(channel.id)] == [0]  # acknowledged: no reminder

    w.sql("update alerts set resolved_at = now(), state = 'resolved' where id = %s returning id", alert_id)
    second = w.event(process_id=process_id)
    open_episode(w, second, process_id)
    await w.publish(second)
    await w.until(lambda: any(d["alert_id"] == f"{second.id}.reminder-1" for d in w.deliveries(channel.id)),
                  what="a reminder of the new episode")
    assert not any(d["episode_id"] == first.id and d["reminder"] for d in w.deliveries(channel.id))
    await w.receiver.wait(lambda r: any("[reminder 1]" in str(body_of(g)) for g in r.at("/slack")),
                          what="the reminder's text")


async def test_reminders_are_held_while_a_window_covers_the_alert(notify_world):
    w = notify_world
    channel = w.webhook("/hook")
    set_repeat(w, channel.id, 1)
    process_id = make_process(w.database_url, w.server, "nginx")
    event = w.event(process_id=process_id)
    open_episode(w, event, process_id)
    [(window_id,)] = w.sql(
        "insert into maintenance_windows (user_id, name, starts_at, ends_at, server_ids, effective_until)"
        " values (%s, 'deploy', now() - interval '1 minute', now() + interval '1 hour', %s,"
        " now() + interval '1 hour') returning id", w.user.id, [w.server.id])
    await w.start(**FAST)
    await w.publish(event)  # notified before the window (not suppressed): the first notification
    await w.receiver.wait(lambda r: r.at("/hook"), what="the first notification")
    await runs_pass(w, 10)
    assert [d["reminder"] for d in w.deliveries(channel.id)] == [0] and w.app.reminders.held > 0
    w.sql("update maintenance_windows set ended_at = now(), effective_until = now() where id = %s returning id",
          window_id)
    await w.until(lambda: any(d["reminder"] == 1 for d in w.deliveries(channel.id)), what="the reminder after the window")
