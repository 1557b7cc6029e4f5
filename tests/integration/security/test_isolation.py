"""Every route of the app's route table, walked as another user and with no token.

Routes are enumerated from `app.routes`, so a new route is walked without editing this test (a
route with a path parameter the walker does not know fails it). Another user's resources answer
exactly like missing ones (same status, same body) and are left untouched; without a token every
route answers the same 401.
"""

from __future__ import annotations

import re

import psycopg
import pytest
from procwatch_db.urls import libpq_url
from procwatch_domain import crypto

from tests.support.factories import make_process, make_server, make_user
from tests.support.routes import walk_routes

pytestmark = pytest.mark.integration

# Public by design: the probes, and the Prometheus metrics (no token; private networks only, see
# tests/integration/api/test_metrics.py).
PUBLIC = {"/healthz", "/readyz", "/metrics"}
# A body that would be valid for the route (ownership must be decided whatever the body).
BODIES = {
    ("POST", "/servers"): {"hostname": "intruder-01"},
    ("POST", "/servers/{server_id}/processes"): {"process_name": "intruder"},
    ("PUT", "/servers/{server_id}/processes/{process_id}"): {"enabled": False, "process_name": "renamed"},
    ("POST", "/channels"): {"type": "email", "name": "intruder", "to": ["intruder@example.com"]},
    ("PUT", "/channels/{channel_id}"): {"name": "renamed", "enabled": False},
    ("PUT", "/servers/{server_id}"): {"hostname": "renamed", "offline_after_s": 60, "alert_on_offline": False},
    ("POST", "/maintenance-windows"): {"name": "intruder", "starts_at": "2026-12-01T00:00:00Z",
                                       "ends_at": "2026-12-02T00:00:00Z"},
    ("PUT", "/maintenance-windows/{window_id}"): {"name": "renamed"},
    ("POST", "/alerts/{alert_id}/ack"): {"note": "intruder"},
}
MISSING_ID = "999999999"
# Responses that never end (server-sent events): the in-process client waits for a whole body. Their
# isolation is walked over a real server in tests/integration/api/test_live_events.py; without a
# token they are walked here like every route (the 401 comes before the stream).
STREAMS = {("GET", "/events")}


def api_routes(app) -> list[tuple[str, str]]:
    """(METHOD, path) of every API route in the app's route table, health checks aside. The
    dashboard's pages (cookie sessions, not in the API's document) have their own walk in
    tests/integration/api/test_web_pages.py."""
    out = []
    for path, route in walk_routes(app.routes):
        if path not in PUBLIC and route.include_in_schema:
            out += [(m, path) for m in sorted(route.methods - {"HEAD", "OPTIONS"})]
    return out


def fill(path: str, ids: dict[str, str]) -> str:
    params = re.findall(r"{(\w+)}", path)
    unknown = set(params) - set(ids)
    assert not unknown, f"route {path} has path parameters this walker does not know: {unknown}"
    return path.format(**ids)


def owner_state(database_url, server_id):
    with psycopg.connect(libpq_url(database_url)) as conn:
        return conn.execute(
            "select s.id, s.hostname, p.id, p.process_name, p.enabled, p.samples_total,"
            " (select count(*) from alerts a where a.watched_process_id = p.id)"
            " from servers s join watched_processes p on p.server_id = s.id where s.id = %s order by p.id",
            (server_id,)).fetchall()


def owner_window_and_alert(database_url, window_id, pid):
    with psycopg.connect(libpq_url(database_url)) as conn:
        return (conn.execute("select * from maintenance_windows where id = %s", (window_id,)).fetchall(),
                conn.execute("select * from alerts where watched_process_id = %s order by id", (pid,)).fetchall())


def owner_channel(database_url, channel_id):
    with psycopg.connect(libpq_url(database_url)) as conn:
        return conn.execute("select c.*, (select count(*) from deliveries d where d.channel_id = c.id)"
                            " from channels c where c.id = %s", (channel_id,)).fetchall()


@pytest.fixture(scope="module", autouse=True)
def secrets_key():
    """The channels' encryption key (channel routes answer 503 without one)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(crypto.SECRETS_KEY_ENV, crypto.new_key())
        yield


@pytest.fixture
def owned(database_url):
    """The owner's server, process (with an alert), channel (with a delivery) and maintenance window;
    the ids to address them."""
    owner = make_user(database_url, "pro")
    server = make_server(database_url, owner, "secret-host.internal")
    pid = make_process(database_url, server, "secret-proc", samples_total=3)
    with psycopg.connect(libpq_url(database_url)) as conn:
        (alert_id,) = conn.execute(
            "insert into alerts (watched_process_id, server_id, user_id, type, state, started_at, event_id)"
            " values (%s, %s, %s, 'process_down', 'firing', now(), %s) returning id",
            (pid, server.id, owner.id, f"iso-{pid}")).fetchone()
        (window_id,) = conn.execute(
            "insert into maintenance_windows (user_id, name, starts_at, ends_at, server_ids)"
            " values (%s, 'secret-window', now(), now() + interval '1 hour', %s) returning id",
            (owner.id, [server.id])).fetchone()
        (channel_id,) = conn.execute(
            "insert into channels (user_id, type, name, target_encrypted, target_hint) values"
            " (%s, 'email', 'secret-channel', %s, 'owner@example.com') returning id",
            (owner.id, crypto.encrypt('["owner@example.com"]'))).fetchone()
        conn.execute("insert into deliveries (channel_id, alert_id, alert_type, alert_state, payload, status)"
                     " values (%s, %s, 'process_down', 'firing', '{}', 'delivered')", (channel_id, f"iso-{pid}"))
    return owner, server, pid, channel_id, window_id, alert_id


def test_the_walk_covers_every_route(client):
    routes = api_routes(client.app)
    documented = {(m.upper(), p) for p, item in client.app.openapi()["paths"].items() for m in item
                  if p not in PUBLIC}
    assert set(routes) == documented and len(routes) >= 10
    assert ("DELETE", "/servers/{server_id}") in routes
    assert ("GET", "/servers/{server_id}/processes/{process_id}/alerts") in routes


async def test_another_users_token_sees_nothing_and_changes_nothing(client, database_url, owned):
    owner, server, pid, channel_id, window_id, alert_id = owned
    intruder = make_user(database_url, "pro")
    intruder_server = make_server(database_url, intruder)
    intruder_pid = make_process(database_url, intruder_server, "mine")
    before = owner_state(database_url, server.id)
    channel_before = owner_channel(database_url, channel_id)
    window_and_alert_before = owner_window_and_alert(database_url, window_id, pid)
    walked = 0
    for method, path in api_routes(client.app):
        body = BODIES.get((method, path))
        if (method, path) in STREAMS:
            continue
        if "{" not in path:
            r = await client.request(method, path, json=body, headers=intruder.headers)
            assert r.status_code < 400, (method, path, r.text)
            assert "secret-window" not in r.text
            assert str(server.id) not in [str(s.get("id")) for s in r.json().get("servers", [])]
            assert server.hostname not in r.text and owner.email not in r.text and "secret-channel" not in r.text
            walked += 1
            continue
        targets = {
            # the owner's server, process and channel
            "foreign": {"server_id": str(server.id), "process_id": str(pid), "channel_id": str(channel_id),
                        "window_id": str(window_id), "alert_id": str(alert_id)},
            # the intruder's own server with the owner's process id
            "foreign_process": {"server_id": str(intruder_server.id), "process_id": str(pid)},
        }
        missing = {
            "foreign": {"server_id": MISSING_ID, "process_id": MISSING_ID, "channel_id": MISSING_ID,
                        "window_id": MISSING_ID, "alert_id": MISSING_ID},
            "foreign_process": {"server_id": str(intruder_server.id), "process_id": MISSING_ID},
        }
        for name, ids in targets.items():
            if name == "foreign_process" and "{process_id}" not in path:
                continue
            got = await client.request(method, fill(path, ids), json=body, headers=intruder.headers)
            ref = await client.request(method, fill(path, missing[name]), json=body, headers=intruder.headers)
            assert got.status_code == ref.status_code == 404, (method, path, name, got.status_code, got.text)
            assert got.json() == ref.json(), (method, path, name)
            assert got.json()["error"] in {"server_not_found", "not_found"}
            assert server.hostname not in got.text and "secret-proc" not in got.text
            assert "secret-channel" not in got.text and "secret-window" not in got.text
            walked += 1
    assert walked >= len(api_routes(client.app)) - len(STREAMS)
    assert owner_state(database_url, server.id) == before, "another user's request changed the owner's rows"
    assert owner_channel(database_url, channel_id) == channel_before, "another user changed the owner's channel"
    assert owner_window_and_alert(database_url, window_id, pid) == window_and_alert_before, \
        "another user changed the owner's window or acknowledged their alert"
    # The intruder's own process is still intact too (the foreign_process walk addressed the owner's id).
    with psycopg.connect(libpq_url(database_url)) as conn:
        assert conn.execute("select process_name from watched_processes where id = %s",
                            (intruder_pid,)).fetchone() is not None


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer pwt_forged"}], ids=["no_token", "bad_token"])
async def test_without_a_valid_token_every_route_is_the_same_401(client, database_url, owned, headers):
    owner, server, pid, channel_id, window_id, alert_id = owned
    before = owner_state(database_url, server.id)
    channel_before = owner_channel(database_url, channel_id)
    window_and_alert_before = owner_window_and_alert(database_url, window_id, pid)
    bodies = set()
    for method, path in api_routes(client.app):
        for ids in ({"server_id": str(server.id), "process_id": str(pid), "channel_id": str(channel_id),
                     "window_id": str(window_id), "alert_id": str(alert_id)},
                    {"server_id": MISSING_ID, "process_id": MISSING_ID, "channel_id": MISSING_ID,
                     "window_id": MISSING_ID, "alert_id": MISSING_ID}):
            r = await client.request(method, fill(path, ids), json=BODIES.get((method, path)), headers=headers)
            assert r.status_code == 401, (method, path, r.status_code)
            assert r.headers["www-authenticate"] == "Bearer"
            bodies.add(r.text)
    assert len(bodies) == 1, bodies  # nothing tells an existing resource from a missing one
    assert owner_state(database_url, server.id) == before
    assert owner_channel(database_url, channel_id) == channel_before
