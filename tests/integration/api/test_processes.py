"""The seed's five routes: shapes, defaults, status codes, errors, samples and restarts."""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.integration.api.conftest import insert_samples, sql, utc
from tests.support.factories import make_process, make_server, make_user

pytestmark = pytest.mark.integration

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")
FULL_PROCESS_KEYS = {
    "id", "server_id", "user_id", "process_name", "enabled", "alert_on_down", "alert_on_restart", "alert_on_cpu",
    "alert_on_memory", "cpu_threshold_pct", "memory_threshold_pct", "last_count", "last_cpu_pct",
    "last_memory_pct", "last_sample_at", "alerted_state", "status", "created_at", "updated_at",
    # issue #18: count ranges and flap protection
    "alert_on_count_range", "min_count", "max_count", "alert_after_samples", "resolve_after_samples",
}


def url(server_id, process_id=None) -> str:
    base = f"/servers/{server_id}/processes"
    return base if process_id is None else f"{base}/{process_id}"


async def test_create_with_the_seed_body_answers_201_with_the_full_pending_process(client, user, server):
    body = {"process_name": "nginx", "alert_on_cpu": True, "cpu_threshold_pct": 80,
            "alert_on_memory": True, "memory_threshold_pct": 75}
    r = await client.post(url(server.id), json=body, headers=user.headers)
    assert r.status_code == 201, r.text
    p = r.json()["process"]
    assert set(p) == FULL_PROCESS_KEYS
    assert p["server_id"] == server.id and p["user_id"] == user.id and isinstance(p["id"], int)
    assert p["process_name"] == "nginx"
    assert (p["enabled"], p["alert_on_down"], p["alert_on_restart"], p["alert_on_cpu"], p["alert_on_memory"]) == (1, 1, 0, 1, 1)
    assert p["cpu_threshold_pct"] == 80 and p["memory_threshold_pct"] == 75
    assert p["status"] == "pending"
    assert p["last_count"] is None and p["last_sample_at"] is None and p["alerted_state"] is None
    assert ISO_Z.match(p["created_at"]) and ISO_Z.match(p["updated_at"])
    # Integral numbers render like the seed: 80, not 80.0.
    assert '"cpu_threshold_pct":80,' in r.text


async def test_create_applies_the_seed_defaults(client, user, server):
    r = await client.post(url(server.id), json={"process_name": "redis-server"}, headers=user.headers)
    assert r.status_code == 201
    p = r.json()["process"]
    assert (p["enabled"], p["alert_on_down"], p["alert_on_restart"], p["alert_on_cpu"], p["alert_on_memory"]) == (1, 1, 0, 0, 0)
    assert (p["cpu_threshold_pct"], p["memory_threshold_pct"]) == (50, 25)


async def test_list_has_the_seed_shape_with_plan_and_server(client, database_url, user, server):
    pid = make_process(database_url, server, "nginx", cpu_threshold_pct=80, memory_threshold_pct=75, alert_on_restart=False)
    insert_samples(database_url, pid, [(utc(1), 4, 1716566400)])
    make_process(database_url, server, "paused-one", enabled=False)
    sql(database_url, "update servers set last_agent_version = '2.4.1' where id = %s", (server.id,))
    r = await client.get(url(server.id), headers=user.headers)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"processes", "plan_limit", "current_count", "plan", "server"}
    assert (body["plan"], body["plan_limit"], body["current_count"]) == ("pro", 10, 2)
    assert body["server"] == {"id": server.id, "hostname": "web-01.prod", "last_agent_version": "2.4.1"}
    nginx, paused = body["processes"]
    assert set(nginx) == FULL_PROCESS_KEYS
    assert nginx["status"] == "up" and nginx["last_count"] == 4
    assert nginx["last_cpu_pct"] == 1.5 and nginx["last_memory_pct"] == 2.5
    assert ISO_Z.match(nginx["last_sample_at"])
    assert paused["status"] == "paused" and paused["enabled"] == 0


@pytest.mark.parametrize(
    ("columns", "status"),
    [
        ({"enabled": False, "last_count": 0, "alerted_state": "down"}, "paused"),
        ({}, "pending"),
        ({"last_count": 0, "alerted_state": "down", "with_sample": True}, "down"),
        ({"last_count": 3, "alerted_state": "cpu,memory", "with_sample": True}, "alerting"),
        ({"last_count": 1, "alerted_state": "count_range", "with_sample": True}, "alerting"),
        ({"last_count": 0, "alerted_state": "down,count_range", "with_sample": True}, "down"),
        ({"last_count": 3, "with_sample": True}, "up"),
    ],
)
async def test_status_is_computed_with_the_design_precedence(client, database_url, user, server, columns, status):
    columns = dict(columns)
    if columns.pop("with_sample", False):
        columns["last_sample_at"] = utc(0)
    pid = make_process(database_url, server, "p", **columns)
    r = await client.get(url(server.id, pid), headers=user.headers)
    assert r.json()["process"]["status"] == status


async def test_empty_server_lists_nothing(client, user, server):
    r = await client.get(url(server.id), headers=user.headers)
    assert r.status_code == 200
    assert r.json()["processes"] == [] and r.json()["current_count"] == 0


async def test_get_shows_newest_100_samples_the_counter_total_and_recent_restarts(client, database_url, user, server):
    pid = make_process(database_url, server, "nginx")
    # 130 samples one minute apart; the oldest start increases twice inside 24h.
    rows = []
    for i in range(130):
        start = 1000 if i < 50 else (2000 if i < 90 else 3000)
        rows.append((utc(130 - i), 4, start))
    # An old restart (older than 24h) that must not count.
    rows += [(utc(60 * 30), 4, 10), (utc(60 * 29), 4, 20)]
    insert_samples(database_url, pid, rows)
    # The counter is what GET reports, never a count(*): make them differ on purpose.
    sql(database_url, "update watched_processes set samples_total = 8640 where id = %s", (pid,))

    r = await client.get(url(server.id, pid), headers=user.headers)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"process", "samples", "samples_total", "recent_restarts"}
    assert body["samples_total"] == 8640
    assert body["recent_restarts"] == 2
    samples = body["samples"]
    assert len(samples) == 100
    times = [s["recorded_at"] for s in samples]
    assert times == sorted(times, reverse=True)
    newest_inserted = max(at for at, _, _ in rows)
    assert times[0] == newest_inserted.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert set(samples[0]) == {"id", "watched_process_id", "count", "cpu_pct", "memory_pct", "oldest_start_unix", "recorded_at"}
    assert samples[0]["watched_process_id"] == pid and samples[0]["count"] == 4 and samples[0]["cpu_pct"] == 1.5
    assert body["process"]["id"] == pid and body["process"]["status"] == "up"


async def test_down_then_up_is_not_a_restart(client, database_url, user, server):
    pid = make_process(database_url, server, "flappy")
    insert_samples(database_url, pid, [(utc(3), 1, 100), (utc(2), 0, None), (utc(1), 1, 200)])
    r = await client.get(url(server.id, pid), headers=user.headers)
    assert r.json()["recent_restarts"] == 0


async def test_update_changes_only_given_fields_and_answers_the_full_process(client, database_url, user, server):
    pid = make_process(database_url, server, "nginx", alert_on_cpu=True)
    r = await client.put(url(server.id, pid), json={"cpu_threshold_pct": 90}, headers=user.headers)
    assert r.status_code == 200, r.text
    p = r.json()["process"]
    assert set(p) == FULL_PROCESS_KEYS
    assert (p["id"], p["process_name"], p["cpu_threshold_pct"], p["alert_on_cpu"], p["memory_threshold_pct"]) == (pid, "nginx", 90, 1, 25)
    assert p["status"] == "pending"


async def test_update_accepts_an_echoed_representation_ignoring_read_only_fields(client, database_url, user, server):
    pid = make_process(database_url, server, "nginx")
    current = (await client.get(url(server.id, pid), headers=user.headers)).json()["process"]
    r = await client.put(url(server.id, pid), json={**current, "enabled": 0, "status": "up", "id": 999}, headers=user.headers)
    assert r.status_code == 200, r.text
    assert r.json()["process"]["enabled"] == 0 and r.json()["process"]["status"] == "paused"
    assert r.json()["process"]["id"] == pid


@pytest.mark.parametrize("body", [{}, {"status": "up", "id": 3}])
async def test_update_without_updatable_fields_is_400(client, database_url, user, server, body):
    pid = make_process(database_url, server, "nginx")
    r = await client.put(url(server.id, pid), json=body, headers=user.headers)
    assert r.status_code == 400
    assert r.json()["error"] == "validation_failed" and r.json()["issues"]


async def test_rename_to_a_taken_name_is_409_and_changes_nothing(client, database_url, user, server):
    make_process(database_url, server, "nginx")
    pid = make_process(database_url, server, "redis")
    r = await client.put(url(server.id, pid), json={"process_name": "nginx"}, headers=user.headers)
    assert r.status_code == 409
    assert r.json()["error"] == "duplicate_process" and r.json()["message"]
    assert sql(database_url, "select process_name from watched_processes where id = %s", (pid,)) == [("redis",)]


async def test_rename_to_its_own_name_is_fine(client, database_url, user, server):
    pid = make_process(database_url, server, "nginx")
    r = await client.put(url(server.id, pid), json={"process_name": "nginx"}, headers=user.headers)
    assert r.status_code == 200


async def test_create_with_a_taken_name_is_409(client, database_url, user, server):
    make_process(database_url, server, "nginx")
    r = await client.post(url(server.id), json={"process_name": "nginx"}, headers=user.headers)
    assert r.status_code == 409 and r.json()["error"] == "duplicate_process"


async def test_same_name_on_another_server_is_fine(client, database_url, user, server):
    make_process(database_url, server, "nginx")
    second = make_server(database_url, user)
    r = await client.post(url(second.id), json={"process_name": "nginx"}, headers=user.headers)
    assert r.status_code == 201


async def test_plan_limit_is_402_with_scope_plan_limit_and_count(client, database_url):
    user = make_user(database_url, "hobby")
    server = make_server(database_url, user)
    for name in ("a", "b", "c"):
        assert (await client.post(url(server.id), json={"process_name": name}, headers=user.headers)).status_code == 201
    r = await client.post(url(server.id), json={"process_name": "d"}, headers=user.headers)
    assert r.status_code == 402
    body = r.json()
    assert body["error"] == "plan_limit_reached" and body["message"]
    assert (body["scope"], body["plan"], body["limit"], body["current_count"]) == ("per_server", "hobby", 3, 3)
    # Limits are per server: another server of the same user still has room.
    other = make_server(database_url, user)
    assert (await client.post(url(other.id), json={"process_name": "d"}, headers=user.headers)).status_code == 201


async def test_concurrent_creates_never_exceed_the_plan_limit(client, database_url):
    user = make_user(database_url, "hobby")
    server = make_server(database_url, user)
    responses = await asyncio.gather(
        *(client.post(url(server.id), json={"process_name": f"p{i}"}, headers=user.headers) for i in range(8))
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] * 3 + [402] * 5
    assert sql(database_url, "select count(*) from watched_processes where server_id = %s", (server.id,)) == [(3,)]


async def test_delete_answers_ok_and_cascades_samples(client, database_url, user, server):
    pid = make_process(database_url, server, "nginx")
    insert_samples(database_url, pid, [(utc(2), 1, 5), (utc(1), 1, 5)])
    r = await client.delete(url(server.id, pid), headers=user.headers)
    assert r.status_code == 200 and r.json() == {"ok": True}
    assert sql(database_url, "select count(*) from process_samples where watched_process_id = %s", (pid,)) == [(0,)]
    r = await client.get(url(server.id, pid), headers=user.headers)
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = await client.delete(url(server.id, pid), headers=user.headers)
    assert r.status_code == 404 and r.json()["error"] == "not_found"


async def test_missing_process_is_not_found_on_every_process_route(client, user, server):
    for method, path, body in [
        ("GET", url(server.id, 987654321), None),
        ("PUT", url(server.id, 987654321), {"enabled": False}),
        ("DELETE", url(server.id, 987654321), None),
        ("GET", url(server.id, 987654321) + "/alerts", None),
    ]:
        r = await client.request(method, path, json=body, headers=user.headers)
        assert r.status_code == 404, (method, path)
        assert r.json() == {"error": "not_found", "message": "watched process not found"}


async def test_a_process_of_another_server_of_the_same_user_is_not_found(client, database_url, user, server):
    other = make_server(database_url, user)
    pid = make_process(database_url, other, "nginx")
    r = await client.get(url(server.id, pid), headers=user.headers)
    assert r.status_code == 404 and r.json()["error"] == "not_found"
