"""The parent resource: /servers."""

from __future__ import annotations

import pytest

from procwatch_domain.secrets import hash_secret
from tests.integration.api.conftest import sql
from tests.support.factories import make_process

pytestmark = pytest.mark.integration


async def test_create_shows_the_agent_key_once_and_stores_only_its_hash(client, database_url, user):
    r = await client.post("/servers", json={"hostname": "web-01.prod"}, headers=user.headers)
    assert r.status_code == 201, r.text
    s = r.json()["server"]
    assert set(s) == {"id", "hostname", "last_agent_version", "created_at", "agent_key", "last_seen_at", "status",
                      "offline_after_s", "alert_on_offline"}
    assert s["hostname"] == "web-01.prod" and s["last_agent_version"] is None
    assert s["agent_key"].startswith("pwa_") and s["created_at"].endswith("Z")
    stored = sql(database_url, "select agent_key_hash, user_id from servers where id = %s", (s["id"],))
    assert stored == [(hash_secret(s["agent_key"]), user.id)]
    shown = await client.get(f"/servers/{s['id']}", headers=user.headers)
    assert shown.status_code == 200 and "agent_key" not in shown.json()["server"]
    listed = await client.get("/servers", headers=user.headers)
    assert [x["id"] for x in listed.json()["servers"]] == [s["id"]]
    assert "agent_key" not in listed.text


@pytest.mark.parametrize(
    "hostname",
    ["", "a" * 256, "web 01", "web\t01", "web\n01", "web\r01", "web\u00a001", "web\u200301", "web\x0001", "web\x1b01",
     None, 12, ["web"]],
    ids=repr,
)
async def test_hostname_is_validated(client, user, hostname):
    r = await client.post("/servers", json={"hostname": hostname}, headers=user.headers)
    assert r.status_code == 400
    assert r.json()["error"] == "validation_failed" and r.json()["issues"][0]["field"] == "hostname"


@pytest.mark.parametrize("hostname", ["a", "a" * 255, "web-01.prod", "10.0.0.7", "сервер-1"])
async def test_valid_hostnames(client, user, hostname):
    r = await client.post("/servers", json={"hostname": hostname}, headers=user.headers)
    assert r.status_code == 201 and r.json()["server"]["hostname"] == hostname


async def test_hostname_is_required_and_unknown_fields_rejected(client, user):
    r = await client.post("/servers", json={"name": "x"}, headers=user.headers)
    assert r.status_code == 400
    assert {i["field"] for i in r.json()["issues"]} == {"hostname", "name"}


async def test_delete_server_removes_it_and_its_processes(client, database_url, user, server):
    pid = make_process(database_url, server, "nginx")
    r = await client.delete(f"/servers/{server.id}", headers=user.headers)
    assert r.status_code == 200 and r.json() == {"ok": True}
    assert sql(database_url, "select count(*) from watched_processes where id = %s", (pid,)) == [(0,)]
    r = await client.get(f"/servers/{server.id}", headers=user.headers)
    assert r.status_code == 404 and r.json()["error"] == "server_not_found"
    r = await client.get(f"/servers/{server.id}/processes", headers=user.headers)
    assert r.status_code == 404 and r.json()["error"] == "server_not_found"
