"""Lifecycle events through the outbox, per-token rate limiting, and degraded dependencies."""

from __future__ import annotations

import logging
import time

import nats
import pytest
import redis.asyncio as aioredis
from nats.js.api import DeliverPolicy

from procwatch_contracts import subjects
from procwatch_contracts.messages import ProcessChanged
from procwatch_domain.secrets import hash_secret
from tests.integration.api.conftest import api_settings, closed_port_url, eventually, running_api, sql, utc
from tests.support.factories import make_process, make_server, make_user

pytestmark = pytest.mark.integration


async def collect(sub, expected: int, deadline_s: float = 5.0) -> list:
    got = []
    deadline = time.monotonic() + deadline_s
    while len(got) < expected and time.monotonic() < deadline:
        try:
            got.append(await sub.next_msg(timeout=0.2))
        except nats.errors.TimeoutError:
            pass
    return got


async def test_create_update_delete_publish_process_changed_events(client, database_url, js, user, server):
    sub = await js.subscribe(subjects.processes_changed(server.id), ordered_consumer=True, deliver_policy=DeliverPolicy.NEW)
    try:
        r = await client.post(f"/servers/{server.id}/processes", json={"process_name": "nginx", "alert_on_cpu": True},
                              headers=user.headers)
        pid = r.json()["process"]["id"]
        await client.put(f"/servers/{server.id}/processes/{pid}", json={"cpu_threshold_pct": 90}, headers=user.headers)
        sql(database_url, "update watched_processes set alerted_state = 'cpu' where id = %s", (pid,))
        await client.delete(f"/servers/{server.id}/processes/{pid}", headers=user.headers)
        msgs = await collect(sub, 3)
    finally:
        await sub.unsubscribe()
    events = [ProcessChanged.model_validate_json(m.data) for m in msgs]
    assert [e.change for e in events] == ["created", "updated", "deleted"]
    assert all(e.process_id == pid and e.server_id == server.id and e.user_id == user.id for e in events)
    assert events[0].config.alert_on_cpu and events[0].config.cpu_threshold_pct == 50
    assert events[1].config.cpu_threshold_pct == 90
    # On delete the row is gone: the event carries what was firing so the alerter can resolve it.
    assert events[2].alerted_state == "cpu"
    assert [m.headers["Nats-Msg-Id"] for m in msgs] == [f"outbox-{e.event_id}" for e in events]
    assert all(e.hostname is None for e in events)  # the server still exists: the alerter reads it
    # Rows are marked published right after the JetStream acks (poll: that commit may trail delivery).
    published = await eventually(lambda: len(sql(
        database_url, "select id from outbox_events where id = any(%s) and published_at is not null",
        ([e.event_id for e in events],))) == 3)
    assert published


async def test_deleting_a_server_sends_deleted_events_that_carry_its_hostname(client, js, user, server):
    sub = await js.subscribe(subjects.processes_changed(server.id), ordered_consumer=True, deliver_policy=DeliverPolicy.NEW)
    try:
        r = await client.post(f"/servers/{server.id}/processes", json={"process_name": "nginx"}, headers=user.headers)
        pid = r.json()["process"]["id"]
        assert (await client.delete(f"/servers/{server.id}", headers=user.headers)).json() == {"ok": True}
        msgs = await collect(sub, 2)
    finally:
        await sub.unsubscribe()
    events = [ProcessChanged.model_validate_json(m.data) for m in msgs]
    assert [(e.change, e.process_id, e.hostname) for e in events] == [
        ("created", pid, None), ("deleted", pid, server.hostname)]


async def test_a_failed_request_writes_no_event(client, database_url, user, server):
    make_process(database_url, server, "nginx")
    before = sql(database_url, "select count(*) from outbox_events")[0][0]
    r = await client.post(f"/servers/{server.id}/processes", json={"process_name": "nginx"}, headers=user.headers)
    assert r.status_code == 409
    assert sql(database_url, "select count(*) from outbox_events")[0][0] == before


async def test_the_api_serves_while_nats_is_down_and_the_event_is_published_later(database_url, redis_url, nats_url, js):
    user = make_user(database_url)
    server = make_server(database_url, user)
    sub = await js.subscribe(subjects.processes_changed(server.id), ordered_consumer=True, deliver_policy=DeliverPolicy.NEW)
    try:
        async with running_api(api_settings(database_url, redis_url, closed_port_url("nats"))) as down:
            r = await down.post(f"/servers/{server.id}/processes", json={"process_name": "nginx"}, headers=user.headers)
            assert r.status_code == 201
            ready = await down.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["nats"].startswith("error")
        pid = r.json()["process"]["id"]
        # A healthy API instance (same database) relays what waited in the outbox.
        async with running_api(api_settings(database_url, redis_url, nats_url)):
            msgs = await collect(sub, 1)
    finally:
        await sub.unsubscribe()
    assert len(msgs) == 1
    event = ProcessChanged.model_validate_json(msgs[0].data)
    assert (event.change, event.process_id) == ("created", pid)


async def test_rate_limit_is_429_with_retry_after_per_token(database_url, redis_url, nats_url):
    user, other = make_user(database_url), make_user(database_url)
    async with running_api(api_settings(database_url, redis_url, nats_url, rate_limit_per_minute=3)) as c:
        codes = []
        limited = []
        for _ in range(7):  # 7 > 2 windows x 3: at least one 429 even if the minute rolls over
            r = await c.get("/servers", headers=user.headers)
            codes.append(r.status_code)
            if r.status_code == 429:
                limited.append(r)
        other_r = await c.get("/servers", headers=other.headers)
        unauth = await c.get("/servers", headers={"Authorization": "Bearer nope"})
    assert codes[:3] == [200, 200, 200]
    assert limited, codes
    body = limited[0].json()
    assert body["error"] == "rate_limited" and body["message"] and body["limit"] == 3
    assert 1 <= int(limited[0].headers["retry-after"]) <= 60
    assert other_r.status_code == 200  # windows are per token
    assert unauth.status_code == 401
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [k.decode() for k in await client.keys("procwatch:ratelimit:*")]
    finally:
        await client.aclose()
    assert any(hash_secret(user.token) in k for k in keys)
    assert not any(user.token in k for k in keys)


async def test_redis_down_fails_open_quickly_and_logs_once(database_url, nats_url, caplog):
    user = make_user(database_url)
    caplog.set_level(logging.WARNING, logger="procwatch.api.ratelimit")
    settings = api_settings(database_url, closed_port_url("redis"), nats_url, rate_limit_per_minute=1)
    async with running_api(settings) as c:
        started = time.monotonic()
        codes = [(await c.get("/servers", headers=user.headers)).status_code for _ in range(10)]
        elapsed = time.monotonic() - started
    assert codes == [200] * 10
    assert elapsed < 3, elapsed
    warnings = [r for r in caplog.records if "redis unavailable" in r.getMessage()]
    assert len(warnings) == 1


async def test_alert_history_pages_newest_first(client, database_url, user, server):
    pid = make_process(database_url, server, "nginx")
    for i in range(5):
        resolved = i < 4  # at most one open episode per process and type
        sql(database_url,
            "insert into alerts (watched_process_id, server_id, user_id, type, state, value, threshold, started_at,"
            " resolved_at, resolve_reason, event_id) values (%s, %s, %s, 'process_cpu_high', %s, 91.5, 80, %s, %s, %s, %s)",
            (pid, server.id, user.id, "resolved" if resolved else "firing", utc(10 - i),
             utc(9 - i) if resolved else None, "recovered" if resolved else None, f"ev-{pid}-{i}"))
    base = f"/servers/{server.id}/processes/{pid}/alerts"
    seen, cursor, pages = [], None, 0
    while True:
        r = await client.get(base, params={"limit": 2, **({"cursor": cursor} if cursor else {})}, headers=user.headers)
        assert r.status_code == 200, r.text
        body = r.json()
        pages += 1
        seen += body["alerts"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and len(seen) == 5
    ids = [a["id"] for a in seen]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 5
    newest = seen[0]
    assert set(newest) == {"id", "type", "state", "value", "threshold", "started_at", "resolved_at", "resolve_reason",
                           "suppressed", "acknowledged_at", "acknowledged_by", "ack_note"}
    assert (newest["state"], newest["resolved_at"], newest["value"], newest["threshold"]) == ("firing", None, 91.5, 80)
    assert seen[-1]["resolve_reason"] == "recovered" and seen[-1]["resolved_at"].endswith("Z")
    default = await client.get(base, headers=user.headers)
    assert len(default.json()["alerts"]) == 5 and default.json()["next_cursor"] is None
