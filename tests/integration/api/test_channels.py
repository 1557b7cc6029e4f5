"""The channels resource (/channels): CRUD, validation, isolation, secrets at rest, deliveries, test sends, SSRF."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from standardwebhooks import Webhook

from procwatch_api.channels_service import MAX_CHANNELS_PER_USER
from procwatch_domain import crypto
from tests.integration.api.conftest import api_settings, closed_port_url, running_api, sql
from tests.support.factories import make_server

pytestmark = pytest.mark.integration

# Public addresses written as literals: the SSRF check passes them without DNS (nothing is sent to them).
SLACK_URL = "https://1.1.1.1/services/T0001AAAA/B0001BBBB/xoxbTOKENxyz123"
WEBHOOK_URL = "https://1.0.0.1/hooks/procwatch?token=s3cr3tT0ken"


@pytest.fixture(scope="module", autouse=True)
def secrets_key() -> Iterator[str]:
    with pytest.MonkeyPatch.context() as mp:
        key = crypto.new_key()
        mp.setenv(crypto.SECRETS_KEY_ENV, key)
        yield key


@pytest.fixture(scope="module")
async def private_client(database_url, redis_url, nats_url) -> AsyncIterator[httpx.AsyncClient]:
    """An API that allows private targets (PROCWATCH_NOTIFIER_ALLOW_PRIVATE_TARGETS=1), for the local receiver."""
    async with running_api(api_settings(database_url, redis_url, nats_url, allow_private_targets=True)) as c:
        yield c


class Receiver:
    """A real local HTTP receiver: records each request, answers `status`."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


async def create(client, user, **body) -> dict:
    r = await client.post("/channels", json=body, headers=user.headers)
    assert r.status_code == 201, r.text
    return r.json()["channel"]


def issues(response) -> dict[str, str]:
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "validation_failed"
    return {i["field"]: i["message"] for i in response.json()["issues"]}


# --- create, read, secrets --------------------------------------------------


async def test_webhook_secret_shown_once_masked_afterwards_and_encrypted_at_rest(client, database_url, user):
    created = await create(client, user, type="webhook", name="ops hook", url=WEBHOOK_URL)
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(secret) > 20
    assert created["target_hint"] == "https://1.0.0.1/hooks/pr…***"
    assert "url" not in created and "s3cr3tT0ken" not in json.dumps(created)
    assert {k: created[k] for k in ("type", "name", "format", "alert_types", "servers", "send_resolved", "enabled",
                                    "disabled_reason")} == {
        "type": "webhook", "name": "ops hook", "format": "standard", "alert_types": None, "servers": None,
        "send_resolved": 1, "enabled": 1, "disabled_reason": None}
    assert created["created_at"].endswith("Z") and created["updated_at"].endswith("Z")

    for answer in ((await client.get(f"/channels/{created['id']}", headers=user.headers)).json()["channel"],
                   (await client.get("/channels", headers=user.headers)).json()["channels"][0]):
        assert answer["secret"] == "whsec_********" and answer["target_hint"] == created["target_hint"]
        assert secret not in json.dumps(answer)

    [(target, stored_secret, hint)] = sql(
        database_url, "select target_encrypted, secret_encrypted, target_hint from channels where id = %s",
        (created["id"],))
    assert "s3cr3tT0ken" not in target and "1.0.0.1" not in target and secret not in stored_secret
    assert crypto.decrypt(target) == WEBHOOK_URL and crypto.decrypt(stored_secret) == secret
    assert hint == created["target_hint"]


async def test_slack_discord_and_email_channels(client, database_url, user):
    slack = await create(client, user, type="slack", name="#ops", url=SLACK_URL)
    assert slack["target_hint"] == "https://1.1.1.1/services/T0…***" and slack["secret"] is None
    discord = await create(client, user, type="discord", name="d", url="https://1.1.1.1/api/webhooks/123/abc")
    assert discord["target_hint"] == "https://1.1.1.1/api/webhooks/12…***"
    email = await create(client, user, type="email", name="on-call", to=["ops@example.com", "b@example.org"],
                         send_resolved=0, alert_types=["process_down", "server_offline"])
    assert email["target_hint"] == "ops@example.com, b@example.org"
    assert email["send_resolved"] == 0 and email["alert_types"] == ["process_down", "server_offline"]
    [(target,)] = sql(database_url, "select target_encrypted from channels where id = %s", (email["id"],))
    assert json.loads(crypto.decrypt(target)) == ["ops@example.com", "b@example.org"]
    [(slack_target,)] = sql(database_url, "select target_encrypted from channels where id = %s", (slack["id"],))
    assert "xoxbTOKEN" not in slack_target
    listed = (await client.get("/channels", headers=user.headers)).json()["channels"]
    assert [c["id"] for c in listed] == [slack["id"], discord["id"], email["id"]]
    assert "xoxbTOKEN" not in json.dumps(listed)


async def test_servers_filter_takes_only_own_servers(client, database_url, user, server, other_user):
    foreign = make_server(database_url, other_user)
    created = await create(client, user, type="slack", name="s", url=SLACK_URL, servers=[server.id, server.id])
    assert created["servers"] == [server.id]
    missing = issues(await client.post("/channels", json={"type": "slack", "name": "s", "url": SLACK_URL,
                                                          "servers": [server.id + 10_000_000]}, headers=user.headers))
    theirs = issues(await client.post("/channels", json={"type": "slack", "name": "s", "url": SLACK_URL,
                                                         "servers": [foreign.id]}, headers=user.headers))
    assert set(theirs) == set(missing) == {"servers"}
    assert theirs["servers"] == missing["servers"].replace(str(server.id + 10_000_000), str(foreign.id))


# --- validation -------------------------------------------------------------


@pytest.mark.parametrize(("body", "fields"), [
    ({}, {"type", "name"}),
    ({"type": "sms", "name": "x", "url": SLACK_URL}, {"type"}),
    ({"type": "slack", "name": "", "url": SLACK_URL}, {"name"}),
    ({"type": "slack", "name": "a" * 101, "url": SLACK_URL}, {"name"}),
    ({"type": "slack", "name": "a\x00b", "url": SLACK_URL}, {"name"}),
    ({"type": "slack", "name": "x"}, {"url"}),
    ({"type": "slack", "name": "x", "url": 12}, {"url"}),
    ({"type": "slack", "name": "x", "url": "https://1.1.1.1/" + "a" * 2000}, {"url"}),
    ({"type": "slack", "name": "x", "url": SLACK_URL, "to": ["a@example.com"]}, {"to"}),
    ({"type": "email", "name": "x"}, {"to"}),
    ({"type": "email", "name": "x", "to": []}, {"to"}),
    ({"type": "email", "name": "x", "to": "ops@example.com"}, {"to"}),
    ({"type": "email", "name": "x", "to": ["not-an-address"]}, {"to"}),
    ({"type": "email", "name": "x", "to": [f"u{i}@example.com" for i in range(11)]}, {"to"}),
    ({"type": "email", "name": "x", "to": ["a@example.com"], "url": SLACK_URL}, {"url"}),
    ({"type": "slack", "name": "x", "url": SLACK_URL, "format": "alertmanager"}, {"format"}),
    ({"type": "webhook", "name": "x", "url": SLACK_URL, "format": "xml"}, {"format"}),
    ({"type": "slack", "name": "x", "url": SLACK_URL, "alert_types": []}, {"alert_types"}),
    ({"type": "slack", "name": "x", "url": SLACK_URL, "alert_types": ["process_exploded"]}, {"alert_types"}),
    ({"type": "slack", "name": "x", "url": SLACK_URL, "alert_types": "process_down"}, {"alert_types"}),
    ({"type": "slack", "name": "x", "url": SLACK_URL, "servers": []}, {"servers"}),
    ({"type": "slack", "name": "x", "url": SLACK_URL, "servers": ["1"]}, {"servers"}),
    ({"type": "slack", "name": "x", "url": SLACK_URL, "servers": [0]}, {"servers"}),
    ({"type": "slack", "name": "x", "url": SLACK_URL, "send_resolved": "yes"}, {"send_resolved"}),
    ({"type": "slack", "name": "x", "url": SLACK_URL, "enabled": 2}, {"enabled"}),
    ({"type": "slack", "name": "x", "url": SLACK_URL, "colour": "red"}, {"colour"}),
], ids=repr)
async def test_create_validation(client, user, body, fields):
    assert set(issues(await client.post("/channels", json=body, headers=user.headers))) == fields


async def test_alertmanager_format_for_webhooks(client, user):
    created = await create(client, user, type="webhook", name="am", url=WEBHOOK_URL, format="alertmanager")
    assert created["format"] == "alertmanager"


async def test_not_json_is_validation_failed(client, user):
    r = await client.post("/channels", content=b"[1]", headers={**user.headers, "content-type": "application/json"})
    assert issues(r) == {"body": "the body must be a JSON object"}


# --- SSRF --------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "http://1.1.1.1/hook",  # plain http to a public host
    "https://127.0.0.1/hook",
    "https://localhost/hook",
    "https://10.0.0.5/hook",
    "https://192.168.1.1/hook",
    "https://[::1]/hook",
    "https://169.254.169.254/latest/meta-data",
    "https://[::ffff:127.0.0.1]/hook",
    "ftp://1.1.1.1/hook",
    "https://user:pw@1.1.1.1/hook",
], ids=repr)
async def test_private_and_plain_targets_are_refused(client, user, url):
    r = await client.post("/channels", json={"type": "webhook", "name": "x", "url": url}, headers=user.headers)
    assert set(issues(r)) == {"url"}


async def test_update_checks_the_url_too_and_metadata_is_refused_even_when_private_is_allowed(
        client, private_client, user):
    channel = await create(client, user, type="slack", name="s", url=SLACK_URL)
    r = await client.put(f"/channels/{channel['id']}", json={"url": "https://10.1.2.3/x"}, headers=user.headers)
    assert set(issues(r)) == {"url"}
    r = await private_client.post("/channels", json={"type": "webhook", "name": "x",
                                                     "url": "http://169.254.169.254/latest"}, headers=user.headers)
    assert "metadata" in issues(r)["url"]
    ok = await private_client.post("/channels", json={"type": "webhook", "name": "x", "url": "http://127.0.0.1:9/x"},
                                   headers=user.headers)
    assert ok.status_code == 201, ok.text


# --- update, delete -----------------------------------------------------------


async def test_update_fields_target_and_reenable(client, database_url, user, server):
    channel = await create(client, user, type="webhook", name="w", url=WEBHOOK_URL)
    [(old_target, old_secret)] = sql(database_url, "select target_encrypted, secret_encrypted from channels"
                                                   " where id = %s", (channel["id"],))
    sql(database_url, "update channels set enabled = false, disabled_reason = '410 Gone from receiver'"
                      " where id = %s", (channel["id"],))
    r = await client.put(f"/channels/{channel['id']}", headers=user.headers, json={
        "name": "renamed", "url": "https://1.1.1.1/new/abc123", "alert_types": ["process_cpu_high"],
        "servers": [server.id], "send_resolved": False, "enabled": True})
    assert r.status_code == 200, r.text
    updated = r.json()["channel"]
    assert updated["name"] == "renamed" and updated["target_hint"] == "https://1.1.1.1/new/ab…***"
    assert updated["alert_types"] == ["process_cpu_high"] and updated["servers"] == [server.id]
    assert updated["send_resolved"] == 0 and updated["enabled"] == 1 and updated["disabled_reason"] is None
    assert updated["secret"] == "whsec_********" and updated["updated_at"] >= channel["updated_at"]
    [(target, secret)] = sql(database_url, "select target_encrypted, secret_encrypted from channels where id = %s",
                             (channel["id"],))
    assert crypto.decrypt(target) == "https://1.1.1.1/new/abc123" and target != old_target
    assert secret == old_secret  # the signing secret is kept
    # null: every type / every server again; an echoed representation changes nothing else.
    r = await client.put(f"/channels/{channel['id']}", headers=user.headers,
                         json={**updated, "alert_types": None, "servers": None})
    assert r.status_code == 200, r.text
    again = r.json()["channel"]
    assert again["alert_types"] is None and again["servers"] is None and again["name"] == "renamed"
    [(target_after,)] = sql(database_url, "select target_encrypted from channels where id = %s", (channel["id"],))
    assert target_after == target


@pytest.mark.parametrize(("body", "fields"), [
    ({}, {"body"}),
    ({"type": "slack"}, {"body"}),  # read-only once created: ignored
    ({"name": None}, {"name"}),
    ({"to": ["a@example.com"]}, {"to"}),
    ({"format": "alertmanager", "enabled": "no"}, {"enabled"}),
    ({"secret": "whsec_mine"}, {"body"}),  # read-only: ignored, so nothing to update
], ids=repr)
async def test_update_validation(client, user, body, fields):
    channel = await create(client, user, type="webhook", name="w", url=WEBHOOK_URL)
    r = await client.put(f"/channels/{channel['id']}", json=body, headers=user.headers)
    assert set(issues(r)) == fields


async def test_delete_removes_channel_and_its_deliveries(client, database_url, user):
    channel = await create(client, user, type="slack", name="s", url=SLACK_URL)
    insert_deliveries(database_url, channel["id"], 2)
    r = await client.delete(f"/channels/{channel['id']}", headers=user.headers)
    assert r.status_code == 200 and r.json() == {"ok": True}
    assert sql(database_url, "select count(*) from deliveries where channel_id = %s", (channel["id"],)) == [(0,)]
    r = await client.get(f"/channels/{channel['id']}", headers=user.headers)
    assert r.status_code == 404 and r.json()["error"] == "not_found"


async def test_channel_limit_per_user(client, database_url, user):
    sql(database_url, "insert into channels (user_id, type, name, target_encrypted, target_hint)"
                      " select %s, 'slack', 'n' || g, 'x', 'h' from generate_series(1, %s) g",
        (user.id, MAX_CHANNELS_PER_USER))
    r = await client.post("/channels", json={"type": "slack", "name": "one more", "url": SLACK_URL},
                          headers=user.headers)
    assert r.status_code == 402
    assert r.json() | {"message": ""} == {"error": "plan_limit_reached", "message": "", "scope": "channels_per_user",
                                          "plan": "pro", "limit": MAX_CHANNELS_PER_USER,
                                          "current_count": MAX_CHANNELS_PER_USER}


# --- isolation --------------------------------------------------------------


async def test_another_users_channel_answers_like_a_missing_one(client, private_client, user, other_user):
    theirs = await create(client, other_user, type="slack", name="s", url=SLACK_URL)
    missing_id = theirs["id"] + 10_000_000
    for method, suffix, body in (("GET", "", None), ("PUT", "", {"name": "mine"}), ("DELETE", "", None),
                                 ("GET", "/deliveries", None), ("POST", "/test", None)):
        answers = []
        for channel_id in (theirs["id"], missing_id, "abc"):
            r = await private_client.request(method, f"/channels/{channel_id}{suffix}", json=body,
                                             headers=user.headers)
            answers.append((r.status_code, r.json()))
        assert answers[0] == answers[1] == answers[2] == (404, {"error": "not_found", "message": "channel not found"})
    assert (await client.get("/channels", headers=user.headers)).json()["channels"] == []
    still = await client.get(f"/channels/{theirs['id']}", headers=other_user.headers)
    assert still.status_code == 200 and still.json()["channel"]["name"] == "s"


async def test_channels_need_a_token(client):
    r = await client.get("/channels")
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"


# --- deliveries ----------------------------------------------------------------


def insert_deliveries(database_url: str, channel_id: int, n: int) -> None:
    sql(database_url,
        "insert into deliveries (channel_id, alert_id, alert_type, alert_state, payload, status, attempts,"
        " next_attempt_at, last_status_code, last_error, delivered_at)"
        " select %s, 'alert-' || g, 'process_down', case when g %% 2 = 0 then 'resolved' else 'firing' end, '{}',"
        " case when g = %s then 'pending' else 'delivered' end, g,"
        " case when g = %s then '2026-05-24T18:41:00.5Z'::timestamptz end,"
        " case when g = %s then 503 else 200 end, case when g = %s then 'HTTP 503' end,"
        " case when g <> %s then now() end"
        " from generate_series(1, %s) g order by g",
        (channel_id, n, n, n, n, n, n))


async def test_deliveries_newest_first_paginated(client, database_url, user):
    channel = await create(client, user, type="slack", name="s", url=SLACK_URL)
    insert_deliveries(database_url, channel["id"], 5)
    r = await client.get(f"/channels/{channel['id']}/deliveries?limit=2", headers=user.headers)
    assert r.status_code == 200, r.text
    page = r.json()
    assert [d["alert_id"] for d in page["deliveries"]] == ["alert-5", "alert-4"]
    newest = page["deliveries"][0]
    assert newest | {"id": 0, "created_at": ""} == {
        "id": 0, "alert_id": "alert-5", "alert_type": "process_down", "alert_state": "firing", "status": "pending",
        "attempts": 5, "last_status_code": 503, "last_error": "HTTP 503", "next_attempt_at": "2026-05-24T18:41:00.5Z",
        "created_at": "", "delivered_at": None, "reminder": 0}
    assert page["deliveries"][1]["delivered_at"].endswith("Z")
    seen = [d["alert_id"] for d in page["deliveries"]]
    while page["next_cursor"]:
        page = (await client.get(f"/channels/{channel['id']}/deliveries",
                                 params={"limit": 2, "cursor": page["next_cursor"]}, headers=user.headers)).json()
        seen += [d["alert_id"] for d in page["deliveries"]]
    assert seen == [f"alert-{i}" for i in range(5, 0, -1)]
    assert set(issues(await client.get(f"/channels/{channel['id']}/deliveries?cursor=nope",
                                       headers=user.headers))) == {"cursor"}
    assert set(issues(await client.get(f"/channels/{channel['id']}/deliveries?limit=201",
                                       headers=user.headers))) == {"limit"}


# --- test sends ---------------------------------------------------------------


async def test_test_send_reaches_a_real_receiver_signed(private_client, user, receiver, caplog):
    caplog.set_level(logging.DEBUG)
    channel = await create(private_client, user, type="webhook", name="local", url=receiver.url)
    r = await private_client.post(f"/channels/{channel['id']}/test", headers=user.headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"test": {"ok": 1, "status_code": 200, "error": None}}
    [(headers, body)] = receiver.requests
    # Standard Webhooks: the reference library verifies the signature with the secret shown at creation.
    event = Webhook(channel["secret"]).verify(body, {k: headers[k] for k in
                                                      ("webhook-id", "webhook-timestamp", "webhook-signature")})
    # (the body's shape is the notifier's: tests/integration/notifier)
    assert isinstance(event, dict) and headers["webhook-id"].startswith(f"test-{channel['id']}-")
    assert channel["secret"] not in caplog.text and receiver.url not in caplog.text
    # Tests are not deliveries.
    assert (await private_client.get(f"/channels/{channel['id']}/deliveries",
                                     headers=user.headers)).json()["deliveries"] == []


async def test_test_send_reports_the_receivers_failure(private_client, user, receiver):
    receiver.status = 500
    channel = await create(private_client, user, type="slack", name="local", url=receiver.url)
    r = await private_client.post(f"/channels/{channel['id']}/test", headers=user.headers)
    assert r.json() == {"test": {"ok": 0, "status_code": 500, "error": "HTTP 500"}}
    assert len(receiver.requests) == 1


async def test_test_send_to_a_closed_port_is_an_error_not_a_500(private_client, user):
    channel = await create(private_client, user, type="discord", name="closed", url=closed_port_url("http") + "/x")
    r = await private_client.post(f"/channels/{channel['id']}/test", headers=user.headers)
    assert r.status_code == 200
    outcome = r.json()["test"]
    assert outcome["ok"] == 0 and outcome["status_code"] is None and outcome["error"]


async def test_email_test_without_smtp_says_so(client, user):
    channel = await create(client, user, type="email", name="mail", to=["ops@example.com"])
    r = await client.post(f"/channels/{channel['id']}/test", headers=user.headers)
    assert r.status_code == 200 and r.json()["test"]["ok"] == 0
    assert "SMTP" in r.json()["test"]["error"]


# --- the key ------------------------------------------------------------------


async def test_missing_key_answers_503_and_existing_reads_still_work(client, user, monkeypatch):
    channel = await create(client, user, type="slack", name="s", url=SLACK_URL)
    monkeypatch.delenv(crypto.SECRETS_KEY_ENV)
    r = await client.post("/channels", json={"type": "slack", "name": "s", "url": SLACK_URL}, headers=user.headers)
    assert r.status_code == 503 and r.json()["error"] == "secrets_unavailable"
    assert "PROCWATCH_SECRETS_KEY" in r.json()["message"]
    r = await client.post(f"/channels/{channel['id']}/test", headers=user.headers)
    assert r.status_code == 503 and r.json()["error"] == "secrets_unavailable"
    assert (await client.get(f"/channels/{channel['id']}", headers=user.headers)).status_code == 200


async def test_openapi_documents_channels(client):
    doc = (await client.get("/openapi.json")).json()
    assert {"/channels", "/channels/{channel_id}", "/channels/{channel_id}/deliveries",
            "/channels/{channel_id}/test"} <= set(doc["paths"])
    schemas = doc["components"]["schemas"]
    assert {"ChannelCreate", "ChannelUpdate"} <= set(schemas)
    assert "server_offline" in schemas["ChannelCreate"]["properties"]["alert_types"]["anyOf"][0]["items"]["enum"]
    assert "422" not in doc["paths"]["/channels"]["post"]["responses"]


async def test_channel_repeat_every_s(client, user):
    """Reminders: null (off, the default) or 60 s to 7 days."""
    body = {"type": "email", "name": "ops", "to": ["ops@example.com"], "repeat_every_s": 3600}
    r = await client.post("/channels", json=body, headers=user.headers)
    assert r.status_code == 201, r.text
    channel = r.json()["channel"]
    assert channel["repeat_every_s"] == 3600
    r = await client.put(f"/channels/{channel['id']}", json={"repeat_every_s": None}, headers=user.headers)
    assert r.status_code == 200 and r.json()["channel"]["repeat_every_s"] is None
    for bad in (10, 3.5, "60", 10**9):
        r = await client.put(f"/channels/{channel['id']}", json={"repeat_every_s": bad}, headers=user.headers)
        assert r.status_code == 400 and r.json()["issues"][0]["field"] == "repeat_every_s", bad
