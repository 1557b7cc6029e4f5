"""The servers resource's liveness (issue 15): last_seen_at, status, offline_after_s, alert_on_offline,
PUT /servers/{id}, and the server's own alert history GET /servers/{id}/alerts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.integration.api.conftest import sql
from tests.support.factories import make_process

pytestmark = pytest.mark.integration


async def test_a_new_server_is_pending_with_the_default_settings(client, user):
    r = await client.post("/servers", json={"hostname": "web-1"}, headers=user.headers)
    s = r.json()["server"]
    assert (s["status"], s["last_seen_at"], s["offline_after_s"], s["alert_on_offline"]) == ("pending", None, 30, 1)
    r = await client.post("/servers", json={"hostname": "web-2", "offline_after_s": 120, "alert_on_offline": False},
                          headers=user.headers)
    assert r.status_code == 201
    assert (r.json()["server"]["offline_after_s"], r.json()["server"]["alert_on_offline"]) == (120, 0)


async def test_status_follows_last_seen_and_the_deadline(client, database_url, user, server):
    sql(database_url, "update servers set last_seen_at = now() - interval '5 seconds',"
                      " offline_deadline_at = now() + interval '25 seconds' where id = %s", (server.id,))
    s = (await client.get(f"/servers/{server.id}", headers=user.headers)).json()["server"]
    assert s["status"] == "online" and s["last_seen_at"].endswith("Z")
    seen = datetime.fromisoformat(s["last_seen_at"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - seen) - timedelta(seconds=5)) < timedelta(seconds=5)
    sql(database_url, "update servers set offline_deadline_at = now() - interval '1 second' where id = %s",
        (server.id,))
    listed = (await client.get("/servers", headers=user.headers)).json()["servers"]
    assert [x["status"] for x in listed if x["id"] == server.id] == ["offline"]


async def test_put_updates_the_settings_and_moves_the_deadline(client, database_url, user, server):
    sql(database_url, "update servers set last_seen_at = now(), offline_deadline_at = now() + interval '30 seconds'"
                      " where id = %s", (server.id,))
    r = await client.put(f"/servers/{server.id}", json={"offline_after_s": 600, "alert_on_offline": 0},
                         headers=user.headers)
    assert r.status_code == 200, r.text
    s = r.json()["server"]
    assert (s["offline_after_s"], s["alert_on_offline"], s["status"]) == (600, 0, "online")
    (seen, deadline, flag), = sql(database_url, "select last_seen_at, offline_deadline_at, alert_on_offline"
                                                " from servers where id = %s", (server.id,))
    assert deadline - seen == timedelta(seconds=600) and flag is False
    # Renaming only; the representation can be echoed back (read-only fields ignored).
    r = await client.put(f"/servers/{server.id}", json={**s, "hostname": "renamed"}, headers=user.headers)
    assert r.status_code == 200 and r.json()["server"]["hostname"] == "renamed"
    assert r.json()["server"]["offline_after_s"] == 600


@pytest.mark.parametrize("body, field", [
    ({"offline_after_s": 29}, "offline_after_s"), ({"offline_after_s": 86_401}, "offline_after_s"),
    ({"offline_after_s": "60"}, "offline_after_s"), ({"offline_after_s": None}, "offline_after_s"),
    ({"alert_on_offline": 2}, "alert_on_offline"), ({"hostname": "a b"}, "hostname"), ({"colour": 1}, "colour"),
    ({}, "body"),
], ids=repr)
async def test_put_validation_errors_use_the_error_body(client, user, server, body, field):
    r = await client.put(f"/servers/{server.id}", json=body, headers=user.headers)
    assert r.status_code == 400
    assert r.json()["error"] == "validation_failed" and [i["field"] for i in r.json()["issues"]] == [field]


async def test_put_of_another_users_or_a_missing_server_is_404(client, user, other_user, server):
    for path, headers in ((f"/servers/{server.id}", other_user.headers), ("/servers/999999999", user.headers),
                          ("/servers/x", user.headers)):
        for body in ({"offline_after_s": 60}, {"offline_after_s": 1}):  # ownership before validation
            r = await client.put(path, json=body, headers=headers)
            assert r.status_code == 404 and r.json()["error"] == "server_not_found"


async def test_server_alert_history_lists_only_the_servers_own_alerts(client, database_url, user, other_user, server):
    pid = make_process(database_url, server, "nginx")
    t = datetime(2026, 5, 24, 18, 0, tzinfo=UTC)
    for i in range(3):
        sql(database_url, "insert into alerts (watched_process_id, server_id, user_id, hostname, type, state, value,"
                          " threshold, started_at, resolved_at, resolve_reason, event_id)"
                          " values (null, %s, %s, 'h', 'server_offline', 'resolved', 31.5, 30, %s, %s, 'recovered', %s)",
            (server.id, user.id, t + timedelta(minutes=i), t + timedelta(minutes=i, seconds=40),
             f"alert-server-{server.id}-test-{i}"))
    sql(database_url, "insert into alerts (watched_process_id, server_id, user_id, type, state, started_at, event_id)"
                      " values (%s, %s, %s, 'process_down', 'firing', %s, %s)",
        (pid, server.id, user.id, t, f"alert-{pid}-test"))
    r = await client.get(f"/servers/{server.id}/alerts?limit=2", headers=user.headers)
    assert r.status_code == 200, r.text
    page = r.json()
    assert [a["started_at"] for a in page["alerts"]] == ["2026-05-24T18:02:00Z", "2026-05-24T18:01:00Z"]
    assert page["alerts"][0] == {"id": page["alerts"][0]["id"], "type": "server_offline", "state": "resolved",
                                 "value": 31.5, "threshold": 30, "started_at": "2026-05-24T18:02:00Z",
                                 "resolved_at": "2026-05-24T18:02:40Z", "resolve_reason": "recovered",
                                 "suppressed": 0, "acknowledged_at": None, "acknowledged_by": None, "ack_note": None}
    rest = (await client.get(f"/servers/{server.id}/alerts?cursor={page['next_cursor']}",
                             headers=user.headers)).json()
    assert [a["started_at"] for a in rest["alerts"]] == ["2026-05-24T18:00:00Z"] and rest["next_cursor"] is None
    # The process's alert is on the process's history, not the server's.
    proc = (await client.get(f"/servers/{server.id}/processes/{pid}/alerts", headers=user.headers)).json()
    assert [a["type"] for a in proc["alerts"]] == ["process_down"]
    assert (await client.get(f"/servers/{server.id}/alerts", headers=other_user.headers)).status_code == 404
    assert (await client.get(f"/servers/{server.id}/alerts?cursor=zz", headers=user.headers)).status_code == 400


async def test_openapi_documents_the_liveness_fields_and_routes(client):
    doc = (await client.get("/openapi.json")).json()
    server = doc["components"]["schemas"]["Server"]
    assert {"last_seen_at", "status", "offline_after_s", "alert_on_offline"} <= set(server["properties"])
    assert server["properties"]["status"]["enum"] == ["pending", "online", "offline"]
    update = doc["components"]["schemas"]["ServerUpdate"]
    assert update["properties"]["offline_after_s"]["minimum"] == 30
    assert update["properties"]["offline_after_s"]["maximum"] == 86_400
    assert {"required": ["offline_after_s"]} in update["anyOf"]
    assert "put" in doc["paths"]["/servers/{server_id}"]
    assert "server_offline" in doc["components"]["schemas"]["Alert"]["properties"]["type"]["enum"]
    assert "get" in doc["paths"]["/servers/{server_id}/alerts"]
