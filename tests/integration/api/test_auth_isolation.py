"""401 on every route, before anything else; another user's resources answer exactly like missing ones."""

from __future__ import annotations

import psycopg
import pytest

from procwatch_db import accounts
from procwatch_db.urls import libpq_url
from tests.support.factories import make_process

pytestmark = pytest.mark.integration

SERVER_NOT_FOUND = {"error": "server_not_found", "message": "server not found"}
NOT_FOUND = {"error": "not_found", "message": "watched process not found"}


def routes(server_id, process_id):
    """Every authenticated route, with a body that would be valid."""
    s, p = f"/servers/{server_id}", f"/servers/{server_id}/processes/{process_id}"
    return [
        ("GET", "/servers", None),
        ("POST", "/servers", {"hostname": "x"}),
        ("GET", s, None),
        ("DELETE", s, None),
        ("GET", s + "/processes", None),
        ("POST", s + "/processes", {"process_name": "fresh"}),
        ("GET", p, None),
        ("PUT", p, {"enabled": False}),
        ("DELETE", p, None),
        ("GET", p + "/alerts", None),
    ]


BAD_AUTH = [
    {},
    {"Authorization": ""},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer "},
    {"Authorization": "Basic dXNlcjpwYXNz"},
    {"Authorization": "Bearer pwt_not-a-real-token"},
    {"Authorization": "Bearer " + "x" * 5000},
]


@pytest.mark.parametrize("headers", BAD_AUTH, ids=lambda h: repr(h)[:30])
async def test_every_route_is_401_without_a_valid_token(client, database_url, server, headers):
    pid = make_process(database_url, server, "nginx")
    # Also for resources that do not exist and ids that are malformed: auth comes first.
    for server_id, process_id in [(server.id, pid), (999999999, 1), ("abc", "xyz")]:
        for method, path, body in routes(server_id, process_id):
            r = await client.request(method, path, json=body, headers=headers)
            assert r.status_code == 401, (method, path)
            assert r.json()["error"] == "unauthorized" and r.json()["message"]
            assert r.headers["www-authenticate"] == "Bearer"
    # Nothing was changed by the unauthenticated writes.
    with psycopg.connect(libpq_url(database_url)) as conn:
        assert conn.execute("select count(*) from watched_processes where server_id = %s", (server.id,)).fetchone() == (1,)
        assert conn.execute("select count(*) from servers where id = %s", (server.id,)).fetchone() == (1,)


async def test_a_revoked_token_is_401_right_away(client, database_url, user, server):
    assert (await client.get("/servers", headers=user.headers)).status_code == 200
    with psycopg.connect(libpq_url(database_url)) as conn:
        assert accounts.revoke_api_token(conn, user.token)
    r = await client.get(f"/servers/{server.id}/processes", headers=user.headers)
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"


async def test_bearer_scheme_is_case_insensitive(client, user):
    r = await client.get("/servers", headers={"Authorization": f"bearer {user.token}"})
    assert r.status_code == 200


async def test_another_users_server_answers_like_a_missing_one_on_every_route(client, database_url, server, other_user):
    pid = make_process(database_url, server, "nginx")
    for method, path, body in routes(server.id, pid)[2:]:
        foreign = await client.request(method, path, json=body, headers=other_user.headers)
        missing = await client.request(method, path.replace(f"/servers/{server.id}", "/servers/999999999"),
                                       json=body, headers=other_user.headers)
        assert foreign.status_code == missing.status_code == 404, (method, path)
        assert foreign.json() == missing.json() == SERVER_NOT_FOUND
    # The owner's data is untouched.
    with psycopg.connect(libpq_url(database_url)) as conn:
        row = conn.execute("select enabled from watched_processes where id = %s", (pid,)).fetchone()
    assert row == (True,)


async def test_another_users_servers_are_not_listed(client, database_url, server, other_user):
    r = await client.get("/servers", headers=other_user.headers)
    assert r.status_code == 200 and server.id not in [s["id"] for s in r.json()["servers"]]


@pytest.mark.parametrize(
    "raw_id", ["abc", "-1", "0", "1.5", "1e3", "9223372036854775808", "99999999999999999999999", "%20", "١٢", "0x10"]
)
async def test_malformed_server_ids_are_server_not_found(client, user, raw_id):
    for method, path, body in routes(raw_id, 1)[2:]:
        r = await client.request(method, path, json=body, headers=user.headers)
        assert r.status_code == 404, (method, path)
        assert r.json() == SERVER_NOT_FOUND


@pytest.mark.parametrize("raw_id", ["abc", "-1", "0", "9223372036854775808", "1.0", "٣"])
async def test_malformed_process_ids_are_not_found(client, user, server, raw_id):
    for method, path, body in routes(server.id, raw_id)[6:]:
        r = await client.request(method, path, json=body, headers=user.headers)
        assert r.status_code == 404, (method, path)
        assert r.json() == NOT_FOUND
