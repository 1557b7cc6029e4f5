"""ALERTS event -> delivery row -> a real local receiver gets a verifiable signed webhook;
retries, Retry-After, 410, channel isolation, order, filters, redelivery, dead-letter."""

from __future__ import annotations

import time

import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from procwatch_contracts import subjects
from tests.integration.notifier.conftest import body_of

pytestmark = pytest.mark.integration


async def test_alert_event_arrives_as_a_verifiable_standard_webhook(notify_world):
    w = notify_world
    channel = w.webhook("/hook")
    await w.start()
    event = w.event(type_="process_cpu_high", value=93.5, threshold=50.0)
    await w.publish(event)
    await w.receiver.wait(lambda r: r.at("/hook"), what="the webhook")
    (got,) = w.receiver.at("/hook")
    payload = Webhook(channel.secret).verify(got.body, got.headers)
    assert payload["type"] == "process.cpu_high"
    assert payload["data"]["id"] == event.id and payload["data"]["value"] == 93.5
    assert got.headers["webhook-id"] == event.id
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 60
    await w.until(lambda: w.deliveries(channel.id)[0]["status"] == "delivered", what="delivered")
    (row,) = w.deliveries(channel.id)
    assert row["attempts"] == 1 and row["last_status_code"] == 200 and row["alert_id"] == event.id


async def test_alertmanager_format(notify_world):
    w = notify_world
    channel = w.webhook("/am", fmt="alertmanager")
    await w.start()
    await w.publish(w.event(state="firing"))
    await w.receiver.wait(lambda r: r.at("/am"))
    got = w.receiver.at("/am")[0]
    body = Webhook(channel.secret).verify(got.body, got.headers)
    assert body["version"] == "4" and body["status"] == "firing" and body["alerts"][0]["labels"]["process"] == "nginx"


async def test_a_500_is_retried_with_the_same_webhook_id(notify_world):
    w = notify_world
    channel = w.webhook("/flaky")
    w.receiver.script("/flaky", 500, 503)
    await w.start()
    event = w.event()
    await w.publish(event)
    await w.receiver.wait(lambda r: len(r.at("/flaky")) >= 3, what="three attempts")
    attempts = w.receiver.at("/flaky")
    assert [a.status for a in attempts] == [500, 503, 200]
    assert {a.headers["webhook-id"] for a in attempts} == {event.id}
    for a in attempts:
        Webhook(channel.secret).verify(a.body, a.headers)
    # the schedule (0.3 s, 0.6 s, +-10 %) is waited between attempts
    assert attempts[1].at - attempts[0].at >= 0.25 and attempts[2].at - attempts[1].at >= 0.5
    await w.until(lambda: w.deliveries(channel.id)[0]["status"] == "delivered")
    assert w.deliveries(channel.id)[0]["attempts"] == 3


async def test_429_retry_after_is_honoured(notify_world):
    w = notify_world
    channel = w.webhook("/limited")
    w.receiver.script("/limited", 429, headers={"Retry-After": "2"})
    await w.start()
    await w.publish(w.event())
    await w.receiver.wait(lambda r: len(r.at("/limited")) >= 2, what="the retry")
    first, second = w.receiver.at("/limited")[:2]
    assert first.status == 429 and second.status == 200
    assert second.at - first.at >= 1.9  # not the 0.3 s of the schedule
    await w.until(lambda: w.deliveries(channel.id)[0]["status"] == "delivered")


async def test_410_disables_the_channel(notify_world):
    w = notify_world
    channel = w.webhook("/gone")
    w.receiver.script("/gone", 410)
    await w.start()
    first, second = w.event(process_id=1), w.event(process_id=2)
    await w.publish(first, second)
    await w.until(lambda: not w.sql("select enabled from channels where id = %s", channel.id)[0][0],
                  what="channel disabled")
    enabled, reason = w.sql("select enabled, disabled_reason from channels where id = %s", channel.id)[0]
    assert reason == "410 Gone from receiver"
    await w.until(lambda: all(d["status"] != "pending" for d in w.deliveries(channel.id)))
    statuses = {d["alert_id"]: d["status"] for d in w.deliveries(channel.id)}
    assert statuses[first.id] == "failed" and statuses.get(second.id, "skipped") == "skipped"
    assert len(w.receiver.at("/gone")) == 1
    # a disabled channel gets no new deliveries
    await w.publish(w.event(process_id=3))
    await w.publish(w.event(process_id=3), msg_id="marker")
    assert len(w.deliveries(channel.id)) <= 2


async def test_a_hanging_channel_does_not_delay_a_healthy_one(notify_world):
    w = notify_world
    w.webhook("/hang")
    healthy = w.webhook("/fast")
    w.receiver.hang("/hang")
    await w.start(request_timeout_s=10.0)
    await w.publish(w.event(process_id=1))
    await w.receiver.wait(lambda r: r.at("/hang") and r.at("/fast"), what="both requests")
    started = time.monotonic()
    for pid in range(2, 12):
        await w.publish(w.event(process_id=pid))
    await w.receiver.wait(lambda r: len(r.at("/fast")) >= 11, timeout=5, what="healthy channel's 11 webhooks")
    assert time.monotonic() - started < 5  # while /hang still holds its first request
    assert len(w.receiver.at("/hang")) == 1
    assert {d["status"] for d in w.deliveries(healthy.id)} <= {"delivered", "pending"}


async def test_resolved_never_overtakes_its_firing(notify_world):
    w = notify_world
    channel = w.webhook("/order")
    w.receiver.script("/order", 500, 500)  # the firing fails twice
    await w.start()
    firing = w.event(process_id=5, state="firing")
    resolved = w.event(process_id=5, state="resolved")
    await w.publish(firing, resolved)
    await w.until(lambda: len(w.deliveries(channel.id)) == 2 and
                  all(d["status"] == "delivered" for d in w.deliveries(channel.id)), what="both delivered")
    ids = [orjson.loads(r.body)["data"]["id"] for r in w.receiver.at("/order")]
    assert ids == [firing.id, firing.id, firing.id, resolved.id]


async def test_filters_and_send_resolved(notify_world):
    w = notify_world
    only_cpu = w.webhook("/cpu", alert_types=["process_cpu_high"])
    other_server = w.webhook("/other", server_ids=[w.server.id + 1_000_000])
    no_resolved = w.webhook("/noresolved", send_resolved=False)
    await w.start()
    down = w.event(type_="process_down")
    cpu = w.event(type_="process_cpu_high", value=90.0, threshold=50.0)
    down_resolved = w.event(type_="process_down", state="resolved")
    await w.publish(down, cpu, down_resolved)
    await w.until(lambda: len(w.deliveries(no_resolved.id)) == 2 and len(w.deliveries(only_cpu.id)) == 1)
    assert [d["alert_id"] for d in w.deliveries(only_cpu.id)] == [cpu.id]
    assert [d["alert_id"] for d in w.deliveries(no_resolved.id)] == [down.id, cpu.id]
    assert w.deliveries(other_server.id) == []


async def test_a_redelivered_alert_makes_no_second_delivery(notify_world):
    w = notify_world
    channel = w.webhook("/once")
    await w.start()
    event = w.event()
    await w.publish(event)
    await w.until(lambda: w.deliveries(channel.id) and w.deliveries(channel.id)[0]["status"] == "delivered")
    await w.publish(event, msg_id=event.id + "-again")  # past JetStream's dedupe: a real redelivery
    marker = w.event()
    await w.publish(marker)
    await w.until(lambda: len(w.deliveries(channel.id)) == 2, what="the marker's delivery")
    assert [d["alert_id"] for d in w.deliveries(channel.id)] == [event.id, marker.id]
    await w.receiver.wait(lambda r: len(r.at("/once")) == 2)


async def test_an_invalid_event_is_dead_lettered(notify_world):
    w = notify_world
    channel = w.webhook("/dl")
    await w.start()
    sub = await w.js.subscribe(subjects.DEADLETTER_ALERTS, ordered_consumer=True)
    try:
        await w.js.publish(subjects.alerts(w.server.id, 9), b'{"not": "an alert"}', headers={"Nats-Msg-Id": "bad-" + str(time.time())})
        good = w.event()
        await w.publish(good)
        msg = await sub.next_msg(timeout=10)
        while msg.headers.get("Procwatch-Original-Subject") != subjects.alerts(w.server.id, 9):
            msg = await sub.next_msg(timeout=10)
        assert msg.headers[subjects.REASON_HEADER].startswith("invalid AlertEvent")
        await w.receiver.wait(lambda r: r.at("/dl"))
        assert w.deliveries(channel.id)[0]["alert_id"] == good.id
    finally:
        await sub.unsubscribe()


async def test_a_400_fails_that_delivery_and_the_channel_goes_on(notify_world):
    w = notify_world
    channel = w.webhook("/picky")
    w.receiver.script("/picky", 400)
    await w.start()
    rejected, accepted = w.event(process_id=1), w.event(process_id=2)
    await w.publish(rejected, accepted)
    await w.until(lambda: [d["status"] for d in w.deliveries(channel.id)] == ["failed", "delivered"],
                  what="failed then delivered")
    assert w.deliveries(channel.id)[0]["last_status_code"] == 400
    assert len(w.receiver.at("/picky")) == 2  # no retry of the 400


async def test_a_delivery_failing_past_the_give_up_age_is_dead(notify_world):
    w = notify_world
    channel = w.webhook("/down")
    w.receiver.script("/down", *[503] * 50)
    await w.start(give_up_after_s=1.5)
    await w.publish(w.event())
    await w.until(lambda: w.deliveries(channel.id) and w.deliveries(channel.id)[0]["status"] == "dead",
                  what="dead")
    row = w.deliveries(channel.id)[0]
    assert row["attempts"] >= 2 and row["last_status_code"] == 503 and row["next_attempt_at"] is None
