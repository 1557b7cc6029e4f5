"""The dashboard (procwatch_api.web) over HTTP, in-process: sign-in, sessions, CSRF, the pages'
forms and the chart series. The browser's view of the same is tests/e2e/browser."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest
from fastapi import Depends

from procwatch_api.settings import ApiSettings
from procwatch_api.web.sessions import SESSION_COOKIE, SIGNIN_CSRF_COOKIE, session_or_token_user
from procwatch_db import accounts
from procwatch_db.urls import libpq_url
from procwatch_domain.secrets import hash_secret
from tests.integration.api.conftest import insert_samples, sql
from tests.support.factories import make_process
from tests.support.routes import walk_routes

pytestmark = pytest.mark.integration
CSRF_INPUT = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = CSRF_INPUT.search(html)
    assert match, "the page has no CSRF field"
    return match.group(1)


async def sign_in(client: httpx.AsyncClient, token: str) -> httpx.Response:
    form = await client.get("/ui/signin")
    return await client.post("/ui/signin", data={"csrf": csrf_of(form.text), "token": token})


@pytest.fixture
async def web(client) -> httpx.AsyncClient:
    """A client with its own cookie jar over the shared app (one user's browser)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(client.app), base_url="http://api.test") as c:
        yield c


async def test_pages_need_a_session(web):
    response = await web.get("/ui")
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/signin"


async def test_sign_in_sets_a_strict_http_only_cookie_storing_only_a_hash(web, user, database_url):
    bad = await sign_in(web, "pwt_not-a-token")
    assert bad.status_code == 401
    assert "not valid" in bad.text
    response = await sign_in(web, user.token)
    assert response.status_code == 303
    cookie = next(v for k, v in response.headers.multi_items() if k == "set-cookie" and SESSION_COOKIE in v)
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie  # plain http here
    session_id = web.cookies[SESSION_COOKIE]
    stored = sql(database_url, "select session_hash from web_sessions where user_id = %s", (user.id,))
    assert stored == [(hash_secret(session_id),)]
    assert (await web.get("/ui")).status_code == 200


async def test_sign_in_form_refuses_a_post_without_its_csrf_cookie(web, user):
    await web.get("/ui/signin")
    web.cookies.delete(SIGNIN_CSRF_COOKIE)
    response = await web.post("/ui/signin", data={"csrf": "forged", "token": user.token})
    assert response.status_code == 403
    assert SESSION_COOKIE not in web.cookies


async def test_fleet_shows_servers_with_their_counts(web, user, server, database_url):
    make_process(database_url, server, "nginx", last_count=0, last_sample_at=datetime.now(UTC))
    make_process(database_url, server, "redis", last_count=2, last_sample_at=datetime.now(UTC))
    await sign_in(web, user.token)
    html = (await web.get("/ui")).text
    assert server.hostname in html
    assert re.search(r'data-testid="count-down">1<', html)
    assert re.search(r'data-testid="count-up">1<', html)


async def test_add_process_shows_the_seed_validation_message_inline(web, user, server):
    await sign_in(web, user.token)
    page = await web.get(f"/ui/servers/{server.id}")
    token = csrf_of(page.text)
    refused = await web.post(f"/ui/servers/{server.id}/processes",
                                 data={"csrf": token, "process_name": "nginx;rm", "enabled": "1"})
    assert refused.status_code == 400
    assert 'id="process_name-error"' in refused.text and "shell metacharacters" in refused.text
    no_csrf = await web.post(f"/ui/servers/{server.id}/processes", data={"process_name": "nginx"})
    assert no_csrf.status_code == 403
    added = await web.post(f"/ui/servers/{server.id}/processes",
                               data={"csrf": token, "process_name": "nginx", "enabled": "1", "alert_on_down": "1",
                                     "cpu_threshold_pct": "80"})
    assert added.status_code == 303
    duplicate = await web.post(f"/ui/servers/{server.id}/processes",
                                   data={"csrf": token, "process_name": "nginx", "enabled": "1"})
    assert duplicate.status_code == 409
    assert "already" in duplicate.text
    listed = (await web.get(f"/ui/servers/{server.id}")).text
    assert re.search(r">nginx</a>.*?data-testid=\"status\">pending<", listed, re.S)


async def test_pause_edit_and_delete(web, user, server, database_url):
    process_id = make_process(database_url, server, "worker")
    await sign_in(web, user.token)
    base = f"/ui/servers/{server.id}/processes/{process_id}"
    token = csrf_of((await web.get(base)).text)
    paused = await web.post(base + "/enabled", data={"csrf": token, "enabled": "0", "back": base})
    assert paused.status_code == 303 and paused.headers["location"] == base
    assert sql(database_url, "select enabled from watched_processes where id = %s", (process_id,)) == [(False,)]
    bad = await web.post(base, data={"csrf": token, "process_name": "worker", "cpu_threshold_pct": "500"})
    assert bad.status_code == 400 and 'id="cpu_threshold_pct-error"' in bad.text
    saved = await web.post(base, data={"csrf": token, "process_name": "worker2", "enabled": "1",
                                           "cpu_threshold_pct": "75"})
    assert saved.status_code == 303
    assert sql(database_url, "select process_name, enabled, cpu_threshold_pct from watched_processes where id = %s",
               (process_id,)) == [("worker2", True, 75.0)]
    deleted = await web.post(base + "/delete", data={"csrf": token})
    assert deleted.status_code == 303
    assert sql(database_url, "select 1 from watched_processes where id = %s", (process_id,)) == []


async def test_another_users_server_is_not_found(web, other_user, server):
    await sign_in(web, other_user.token)
    response = await web.get(f"/ui/servers/{server.id}")
    assert response.status_code == 404
    assert "text/html" in response.headers["content-type"]


async def test_series_buckets_samples_and_marks_restarts(web, user, server, database_url):
    created = datetime.now(UTC) - timedelta(minutes=10)
    process_id = make_process(database_url, server, "api", created_at=created)
    start = datetime.now(UTC) - timedelta(minutes=5)
    insert_samples(database_url, process_id, [
        (start + timedelta(seconds=10 * i), 2, 1000 if i < 6 else 2000) for i in range(12)
    ])
    await sign_in(web, user.token)
    body = (await web.get(f"/ui/servers/{server.id}/processes/{process_id}/series")).json()
    assert 1 <= body["step_s"] <= 2
    assert len(body["t"]) == 12 and body["count"] == [2] * 12
    restart_at = (start + timedelta(seconds=60)).timestamp()
    assert len(body["restarts"]) == 1 and body["restarts"][0] == pytest.approx(restart_at, abs=2)
    other = await web.get(f"/ui/servers/{server.id}/processes/{process_id + 10_000}/series")
    assert other.status_code == 404 and other.json()["error"] == "not_found"


async def test_one_time_link_signs_in_once(web, user, database_url):
    with psycopg.connect(libpq_url(database_url)) as conn:
        token = accounts.create_signin_link_token(conn, user.id, 60)
    first = await web.get(f"/ui/signin/link?token={token}")
    assert first.status_code == 303 and SESSION_COOKIE in web.cookies
    web.cookies.clear()
    second = await web.get(f"/ui/signin/link?token={token}")
    assert second.status_code == 401


async def test_sign_out_ends_the_session(web, user, database_url):
    await sign_in(web, user.token)
    session_hash = hash_secret(web.cookies[SESSION_COOKIE])
    token = csrf_of((await web.get("/ui")).text)
    assert (await web.post("/ui/signout", data={"csrf": token})).status_code == 303
    assert sql(database_url, "select 1 from web_sessions where session_hash = %s", (session_hash,)) == []
    assert (await web.get("/ui")).status_code == 303


async def test_session_or_token_user_accepts_either(client, web, user):
    async def whoami(user_id: int = Depends(session_or_token_user)) -> dict:
        return {"user_id": user_id}

    if not any(getattr(r, "path", None) == "/test-whoami" for r in client.app.routes):
        client.app.add_api_route("/test-whoami", whoami)
    assert (await web.get("/test-whoami")).status_code == 401
    assert (await web.get("/test-whoami", headers=user.headers)).json() == {"user_id": user.id}
    await sign_in(web, user.token)
    assert (await web.get("/test-whoami")).json() == {"user_id": user.id}
    bad_token = await web.get("/test-whoami", headers={"Authorization": "Bearer nope"})
    assert bad_token.status_code == 401  # a bearer header is judged alone, never rescued by the cookie


async def test_alerts_page_splits_firing_now_from_recent(web, user, server, database_url):
    pid = make_process(database_url, server, "queue")
    now = datetime.now(UTC)
    for state, resolved_at, event in (("resolved", now - timedelta(minutes=5), "old"), ("firing", None, "new")):
        sql(database_url,
            "insert into alerts (watched_process_id, server_id, user_id, type, state, value, threshold, started_at,"
            " resolved_at, event_id) values (%s, %s, %s, 'process_cpu_high', %s, 91.5, 80, %s, %s, %s)",
            (pid, server.id, user.id, state, now - timedelta(minutes=10), resolved_at, f"web-{pid}-{event}"))
    await sign_in(web, user.token)
    html = (await web.get("/ui/alerts")).text
    firing, recent = html.split('id="recent"')
    assert firing.count("<tr data-alert-id=") == 1 and 'data-testid="firing-count">1<' in firing
    assert recent.count("<tr data-alert-id=") == 2 and f"/ui/servers/{server.id}/processes/{pid}" in recent


async def test_channel_form_shows_the_validation_message_inline_and_adds_a_webhook(web, user, monkeypatch):
    from procwatch_domain import crypto

    monkeypatch.setenv(crypto.SECRETS_KEY_ENV, crypto.new_key())
    await sign_in(web, user.token)
    token = csrf_of((await web.get("/ui/channels")).text)
    refused = await web.post("/ui/channels", data={"csrf": token, "type": "webhook", "name": "hook",
                                                       "target": "ftp://nowhere"})
    assert refused.status_code == 400 and 'id="target-error"' in refused.text
    # A public address as a literal: the SSRF check passes it without DNS, and nothing is sent.
    added = await web.post("/ui/channels", data={"csrf": token, "type": "webhook", "name": "ops hook",
                                                     "target": "https://1.0.0.1/hooks/procwatch"})
    assert added.status_code == 201 and "whsec_" in added.text and "ops hook" in added.text


async def test_forms_take_utf8_and_are_bounded_like_api_bodies(web, user, server, database_url):
    await sign_in(web, user.token)
    token = csrf_of((await web.get(f"/ui/servers/{server.id}")).text)
    added = await web.post(f"/ui/servers/{server.id}/processes",
                           data={"csrf": token, "process_name": "café", "enabled": "1"})
    assert added.status_code == 303
    assert sql(database_url, "select 1 from watched_processes where server_id = %s and process_name = 'café'",
               (server.id,)) == [(1,)]
    limit = ApiSettings.model_fields["max_body_bytes"].default
    huge = await web.post(f"/ui/servers/{server.id}/processes", data={"csrf": token, "process_name": "x" * limit})
    assert huge.status_code == 413


async def test_channel_test_button_sends_and_the_delivery_log_page_shows(database_url, redis_url, nats_url, user,
                                                                         monkeypatch):
    from procwatch_domain import crypto
    from tests.integration.api.conftest import api_settings, running_api
    from tests.integration.api.test_channels import Receiver

    monkeypatch.setenv(crypto.SECRETS_KEY_ENV, crypto.new_key())
    receiver = Receiver()
    try:
        settings = api_settings(database_url, redis_url, nats_url, allow_private_targets=True)
        async with running_api(settings) as client:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(client.app), base_url="http://api.test") as web:
                await sign_in(web, user.token)
                token = csrf_of((await web.get("/ui/channels")).text)
                added = await web.post("/ui/channels", data={"csrf": token, "type": "webhook", "name": "local",
                                                             "target": receiver.url})
                assert added.status_code == 201
                channel_id = re.search(r'href="/ui/channels/(\d+)"', added.text).group(1)
                tested = await web.post(f"/ui/channels/{channel_id}/test", data={"csrf": token})
                assert tested.status_code == 200 and "delivered (HTTP 200)" in tested.text
                assert len(receiver.requests) == 1 and b"test" in receiver.requests[0][1]
                # The test is not a delivery (as in the JSON route); a delivery the notifier made is listed.
                assert "Nothing sent to this channel yet" in (await web.get(f"/ui/channels/{channel_id}")).text
                sql(database_url, "insert into deliveries (channel_id, alert_id, alert_type, alert_state, payload,"
                    " status, attempts, last_status_code) values (%s, 'alert-1', 'process_down', 'firing', '{}',"
                    " 'delivered', 1, 200)", (int(channel_id),))
                log_page = (await web.get(f"/ui/channels/{channel_id}")).text
                assert "process_down (firing)" in log_page and "delivered" in log_page
                deleted = await web.post(f"/ui/channels/{channel_id}/delete", data={"csrf": token})
                assert deleted.status_code == 303
                assert (await web.get(f"/ui/channels/{channel_id}")).status_code == 404
    finally:
        receiver.close()


def dashboard_routes(app) -> list[tuple[str, str]]:
    """(METHOD, path) of every dashboard page and form with an id in its path."""
    return [(method, path) for path, route in walk_routes(app.routes) if path.startswith("/ui/") and "{" in path
            for method in sorted(route.methods - {"HEAD"})]


async def test_another_users_ids_are_not_found_on_every_page_and_form(client, web, user, other_user, server,
                                                                      database_url):
    """The dashboard's isolation walk: signed in as another user, every page and form addressed with
    the owner's ids answers like a missing id (404), and nothing of the owner's changes."""
    process_id = make_process(database_url, server, "secret-proc")
    with psycopg.connect(libpq_url(database_url)) as conn:
        (alert_id,) = conn.execute(
            "insert into alerts (watched_process_id, server_id, user_id, type, state, started_at, event_id)"
            " values (%s, %s, %s, 'process_down', 'firing', now(), %s) returning id",
            (process_id, server.id, user.id, f"web-iso-{process_id}")).fetchone()
        (window_id,) = conn.execute(
            "insert into maintenance_windows (user_id, name, starts_at, ends_at) values"
            " (%s, 'secret-window', now(), now() + interval '1 hour') returning id", (user.id,)).fetchone()
        (channel_id,) = conn.execute(
            "insert into channels (user_id, type, name, target_encrypted, target_hint) values"
            " (%s, 'email', 'secret-channel', 'x', 'owner@example.com') returning id", (user.id,)).fetchone()
    owner_ids = {"server_id": server.id, "process_id": process_id, "alert_id": alert_id, "window_id": window_id,
                 "channel_id": channel_id}
    snapshot = ("select (select array_agg(row(p.*)::text) from watched_processes p where p.server_id = %(s)s),"
                " (select row(a.*)::text from alerts a where a.id = %(a)s),"
                " (select row(w.*)::text from maintenance_windows w where w.id = %(w)s),"
                " (select row(c.*)::text from channels c where c.id = %(c)s)")
    params = {"s": server.id, "a": alert_id, "w": window_id, "c": channel_id}
    before = sql(database_url, snapshot, params)
    await sign_in(web, other_user.token)
    csrf = csrf_of((await web.get("/ui/channels")).text)
    routes = dashboard_routes(client.app)
    assert len(routes) >= 10
    for method, path in routes:
        url = path.format(**owner_ids)
        if method == "GET":
            response = await web.get(url)
        else:
            response = await web.post(url, data={"csrf": csrf, "process_name": "renamed", "name": "renamed"},
                                      headers={"Origin": "http://api.test"})
        assert response.status_code == 404, (method, path, response.status_code)
        assert "secret-proc" not in response.text and "secret-window" not in response.text
    assert sql(database_url, snapshot, params) == before, "another user's dashboard request changed the owner's rows"
