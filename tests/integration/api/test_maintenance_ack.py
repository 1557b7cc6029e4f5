"""/maintenance-windows (CRUD, validation, end early, isolation) and /alerts/{id}/ack (ack, un-ack,
event through the outbox, 404 on another user's alert, 409 on a resolved one)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from nats.js.api import DeliverPolicy

from procwatch_contracts import subjects
from procwatch_contracts.messages import AlertAcknowledged
from tests.integration.api.conftest import sql
from tests.support.factories import make_process, make_server

pytestmark = pytest.mark.integration


def iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


NOW = datetime.now(UTC).replace(microsecond=0)


async def test_one_off_window_crud(client, user, server, database_url):
    pid = make_process(database_url, server, "nginx")
    body = {"name": "db upgrade", "starts_at": iso(NOW - timedelta(minutes=5)), "ends_at": iso(NOW + timedelta(hours=1)),
            "processes": [pid]}
    r = await client.post("/maintenance-windows", json=body, headers=user.headers)
    assert r.status_code == 201, r.text
    w = r.json()["maintenance_window"]
    assert (w["kind"], w["active"], w["processes"], w["servers"], w["timezone"]) == ("one_off", 1, [pid], None, "UTC")
    assert w["current_end_at"] == iso(NOW + timedelta(hours=1)) and w["next_start_at"] is None
    [(until,)] = sql(database_url, "select effective_until from maintenance_windows where id = %s", (w["id"],))
    assert until == NOW + timedelta(hours=1)

    listed = (await client.get("/maintenance-windows", headers=user.headers)).json()["maintenance_windows"]
    assert [x["id"] for x in listed] == [w["id"]]
    r = await client.put(f"/maintenance-windows/{w['id']}", json={"name": "db upgrade 2", "processes": None,
                                                                   "servers": [server.id]}, headers=user.headers)
    assert r.status_code == 200 and r.json()["maintenance_window"]["servers"] == [server.id]
    assert r.json()["maintenance_window"]["processes"] is None
    assert (await client.get(f"/maintenance-windows/{w['id']}", headers=user.headers)).json()[
        "maintenance_window"]["name"] == "db upgrade 2"
    assert (await client.delete(f"/maintenance-windows/{w['id']}", headers=user.headers)).json() == {"ok": True}
    assert (await client.get(f"/maintenance-windows/{w['id']}", headers=user.headers)).status_code == 404


async def test_recurring_window_in_a_time_zone(client, user):
    # Naive starts_at: wall-clock time in the window's zone.
    body = {"name": "nightly", "starts_at": "2026-03-20T02:30:00", "rrule": "RRULE:FREQ=DAILY", "duration_s": 3600,
            "timezone": "Europe/Berlin"}
    r = await client.post("/maintenance-windows", json=body, headers=user.headers)
    assert r.status_code == 201, r.text
    w = r.json()["maintenance_window"]
    assert (w["kind"], w["rrule"], w["starts_at"], w["ends_at"]) == ("recurring", "FREQ=DAILY", "2026-03-20T01:30:00Z",
                                                                     None)
    assert w["next_start_at"] is not None and w["next_start_at"].endswith(("00:30:00Z", "01:30:00Z"))


@pytest.mark.parametrize("body, field", [
    ({"starts_at": "2026-05-01T00:00:00Z", "ends_at": "2026-05-01T01:00:00Z"}, "name"),
    ({"name": "x", "ends_at": "2026-05-01T01:00:00Z"}, "starts_at"),
    ({"name": "x", "starts_at": "2026-05-01T00:00:00Z"}, "ends_at"),
    ({"name": "x", "starts_at": "2026-05-01T02:00:00Z", "ends_at": "2026-05-01T01:00:00Z"}, "ends_at"),
    ({"name": "x", "starts_at": "tomorrow", "ends_at": "2026-05-01T01:00:00Z"}, "starts_at"),
    ({"name": "x", "starts_at": "2026-05-01T00:00:00Z", "rrule": "FREQ=HOURLY", "duration_s": 600}, "rrule"),
    ({"name": "x", "starts_at": "2026-05-01T00:00:00Z", "rrule": "FREQ=DAILY"}, "duration_s"),
    ({"name": "x", "starts_at": "2026-05-01T00:00:00Z", "rrule": "FREQ=DAILY", "duration_s": 10}, "duration_s"),
    ({"name": "x", "starts_at": "2026-05-01T00:00:00Z", "rrule": "FREQ=DAILY", "duration_s": 600,
      "ends_at": "2026-05-02T00:00:00Z"}, "ends_at"),
    ({"name": "x", "starts_at": "2026-05-01T00:00:00Z", "ends_at": "2026-05-01T01:00:00Z", "timezone": "Mars/Base"},
     "timezone"),
    ({"name": "x", "starts_at": "2026-05-01T00:00:00Z", "ends_at": "2026-05-01T01:00:00Z", "servers": [1],
      "processes": [1]}, "processes"),
    ({"name": "x", "starts_at": "2026-05-01T00:00:00Z", "ends_at": "2026-05-01T01:00:00Z", "servers": []}, "servers"),
    ({"name": "x", "starts_at": "2026-05-01T00:00:00Z", "ends_at": "2026-05-01T01:00:00Z", "colour": "red"}, "colour"),
])
async def test_window_validation(client, user, body, field):
    r = await client.post("/maintenance-windows", json=body, headers=user.headers)
    assert r.status_code == 400 and r.json()["error"] == "validation_failed", r.text
    assert field in [i["field"] for i in r.json()["issues"]]


async def test_another_users_servers_and_windows_are_not_found(client, user, other_user, database_url):
    theirs = make_server(database_url, other_user)
    body = {"name": "x", "starts_at": iso(NOW), "ends_at": iso(NOW + timedelta(hours=1)), "servers": [theirs.id]}
    r = await client.post("/maintenance-windows", json=body, headers=user.headers)
    assert r.status_code == 400 and r.json()["issues"] == [{"field": "servers", "message": f"server {theirs.id} not found"}]
    del body["servers"]
    wid = (await client.post("/maintenance-windows", json=body, headers=other_user.headers)).json()[
        "maintenance_window"]["id"]
    for method, path in (("GET", ""), ("PUT", ""), ("DELETE", ""), ("POST", "/end")):
        r = await client.request(method, f"/maintenance-windows/{wid}{path}", json={"name": "mine"} if method == "PUT"
                                 else None, headers=user.headers)
        assert r.status_code == 404 and r.json()["error"] == "not_found", (method, path)
    assert (await client.get("/maintenance-windows/abc", headers=user.headers)).status_code == 404


async def test_end_early(client, user, database_url):
    body = {"name": "x", "starts_at": iso(NOW - timedelta(minutes=1)), "ends_at": iso(NOW + timedelta(hours=2))}
    wid = (await client.post("/maintenance-windows", json=body, headers=user.headers)).json()["maintenance_window"]["id"]
    r = await client.post(f"/maintenance-windows/{wid}/end", headers=user.headers)
    assert r.status_code == 200, r.text
    w = r.json()["maintenance_window"]
    assert w["active"] == 0 and w["ended_at"] is not None
    [(ended_at, until)] = sql(database_url, "select ended_at, effective_until from maintenance_windows where id = %s",
                              (wid,))
    assert until == ended_at and abs((ended_at - datetime.now(UTC)).total_seconds()) < 60
    r = await client.post(f"/maintenance-windows/{wid}/end", headers=user.headers)
    assert r.status_code == 409 and r.json()["error"] == "window_not_active"
    future = {"name": "later", "starts_at": iso(NOW + timedelta(days=1)), "ends_at": iso(NOW + timedelta(days=2))}
    fid = (await client.post("/maintenance-windows", json=future, headers=user.headers)).json()["maintenance_window"]["id"]
    assert (await client.post(f"/maintenance-windows/{fid}/end", headers=user.headers)).status_code == 409


def open_alert(database_url, server, process_id: int, *, type_: str = "process_down") -> int:
    [(alert_id,)] = sql(
        database_url,
        "insert into alerts (watched_process_id, server_id, user_id, type, state, started_at, event_id)"
        " values (%s, %s, %s, %s, 'firing', now(), %s) returning id",
        (process_id, server.id, server.user_id, type_, f"alert-{process_id}-{type_}-{datetime.now(UTC).timestamp()}"))
    return alert_id


async def test_ack_and_unack_publish_events_and_show_in_history(client, user, server, database_url, js):
    pid = make_process(database_url, server, "nginx")
    alert_id = open_alert(database_url, server, pid)
    sub = await js.subscribe(subjects.alert_acks(server.id, pid), ordered_consumer=True,
                             deliver_policy=DeliverPolicy.NEW)
    try:
        r = await client.post(f"/alerts/{alert_id}/ack", json={"note": "on it"}, headers=user.headers)
        assert r.status_code == 200, r.text
        a = r.json()["alert"]
        assert (a["id"], a["acknowledged_by"], a["ack_note"], a["suppressed"]) == (alert_id, user.id, "on it", 0)
        assert a["acknowledged_at"] is not None
        history = (await client.get(f"/servers/{server.id}/processes/{pid}/alerts", headers=user.headers)).json()
        assert history["alerts"][0]["acknowledged_by"] == user.id and history["alerts"][0]["ack_note"] == "on it"
        # No body at all is fine too (re-acknowledging replaces the note).
        r = await client.post(f"/alerts/{alert_id}/ack", headers=user.headers)
        assert r.status_code == 200 and r.json()["alert"]["ack_note"] is None
        r = await client.delete(f"/alerts/{alert_id}/ack", headers=user.headers)
        assert r.status_code == 200 and r.json()["alert"]["acknowledged_at"] is None
        events = []
        for _ in range(3):
            events.append(AlertAcknowledged.model_validate_json((await sub.next_msg(timeout=5)).data))
    finally:
        await sub.unsubscribe()
    assert [(e.acknowledged, e.note) for e in events] == [(True, "on it"), (True, None), (False, None)]
    assert all(e.alert_id == alert_id and e.by_user_id == user.id and e.process.id == pid for e in events)
    [(episode,)] = sql(database_url, "select event_id from alerts where id = %s", (alert_id,))
    assert events[0].episode_id == episode and events[0].server.hostname == server.hostname
    # Not acknowledged: un-acknowledging changes nothing.
    assert (await client.delete(f"/alerts/{alert_id}/ack", headers=user.headers)).status_code == 200


async def test_ack_refusals(client, user, other_user, server, database_url):
    pid = make_process(database_url, server, "nginx")
    alert_id = open_alert(database_url, server, pid)
    assert (await client.post(f"/alerts/{alert_id}/ack", headers=other_user.headers)).status_code == 404
    assert (await client.delete(f"/alerts/{alert_id}/ack", headers=other_user.headers)).status_code == 404
    assert (await client.post("/alerts/999999999/ack", headers=user.headers)).status_code == 404
    assert (await client.post("/alerts/x/ack", headers=user.headers)).status_code == 404
    r = await client.post(f"/alerts/{alert_id}/ack", json={"note": 5, "who": "me"}, headers=user.headers)
    assert r.status_code == 400 and {i["field"] for i in r.json()["issues"]} == {"note", "who"}
    sql(database_url, "update alerts set resolved_at = now(), state = 'resolved' where id = %s", (alert_id,))
    r = await client.post(f"/alerts/{alert_id}/ack", headers=user.headers)
    assert r.status_code == 409 and r.json()["error"] == "alert_not_firing"
    restart = open_alert(database_url, server, pid, type_="process_restarted")
    assert (await client.post(f"/alerts/{restart}/ack", headers=user.headers)).status_code == 409
