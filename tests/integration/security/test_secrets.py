"""Secrets: stored only as hashes, never logged, and an agent key only speaks for its own server."""

from __future__ import annotations

import contextlib
import logging
import uuid

import nats
import psycopg
import pytest
from procwatch_contracts import subjects
from procwatch_db import accounts
from procwatch_db.urls import libpq_url
from procwatch_domain.secrets import hash_secret
from psycopg import sql

from tests.integration.ingest.conftest import eventually, now_utc, query, reading, sample_body, stream_messages

pytestmark = pytest.mark.integration

TEXTUAL = ("text", "character varying", "character", "json", "jsonb", "bytea")


def database_text_containing(database_url: str, needles: list[str]) -> list[tuple[str, str]]:
    """(table, column) of every textual value in the database (every table, every row) holding a needle."""
    hits = []
    with psycopg.connect(libpq_url(database_url)) as conn:
        columns = conn.execute(
            "select table_name, column_name, data_type from information_schema.columns"
            " where table_schema = 'public' and data_type = any(%s)", (list(TEXTUAL),)).fetchall()
        assert {t for t, _, _ in columns} >= {"api_tokens", "servers", "outbox_events"}, columns
        for table, column, data_type in columns:
            as_text = (sql.SQL("encode({}, 'escape')") if data_type == "bytea" else sql.SQL("{}::text")).format(
                sql.Identifier(column))
            for needle in needles:
                found = conn.execute(
                    sql.SQL("select 1 from {} where position(%s in {}) > 0 limit 1").format(
                        sql.Identifier(table), as_text), (needle,)).fetchone()
                if found:
                    hits.append((table, column))
    return hits


class Capture(logging.Handler):
    """Every record, rendered with all of its attributes (message, args, `extra=` fields, exception)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = repr(record.__dict__)
        with contextlib.suppress(Exception):
            text += record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.texts.append(text)


@pytest.fixture
def captured_logs():
    root = logging.getLogger()
    handler, level = Capture(), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def test_tokens_and_agent_keys_are_stored_hashed_and_never_logged(
        client, ingest, database_url, nats_url, captured_logs):
    # A user and token the way `procwatch admin` makes them; a second token that gets revoked.
    with psycopg.connect(libpq_url(database_url)) as conn:
        user_id = accounts.create_user(conn, f"sec-{uuid.uuid4().hex[:8]}@example.test", "pro")
        token = accounts.create_api_token(conn, user_id, "secrets-test")
        revoked = accounts.create_api_token(conn, user_id, "to-revoke")
        assert accounts.revoke_api_token(conn, revoked)
    auth = {"Authorization": f"Bearer {token}"}
    forged_token = "pwt_" + uuid.uuid4().hex + "forged"
    forged_key = "pwa_" + uuid.uuid4().hex + "forged"

    # Servers through the API: the agent key is shown once, in the 201 body.
    keys, server_ids = [], []
    for host in ("sec-a", "sec-b"):
        r = await client.post("/servers", json={"hostname": host}, headers=auth)
        assert r.status_code == 201, r.text
        keys.append(r.json()["server"]["agent_key"])
        server_ids.append(r.json()["server"]["id"])
        r = await client.post(f"/servers/{server_ids[-1]}/processes", json={"process_name": "nginx"}, headers=auth)
        assert r.status_code == 201, r.text
    assert (await client.get("/servers", headers=auth)).status_code == 200
    for bad in (forged_token, revoked):
        assert (await client.get("/servers", headers={"Authorization": f"Bearer {bad}"})).status_code == 401
    r = await client.get(f"/servers/{server_ids[0]}", headers=auth)
    assert r.status_code == 200 and keys[0] not in r.text  # never shown again

    # The agent keys in use on the broker: a good sample, a watch-list request, and refused ones.
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        at = now_utc(-2)
        await js.publish(subjects.agent_samples(server_ids[0]), sample_body(server_ids[0], at, [reading("nginx")]),
                         headers={"Authorization": f"Bearer {keys[0]}", "Nats-Msg-Id": uuid.uuid4().hex})
        bad_ids = [uuid.uuid4().hex, uuid.uuid4().hex]
        await js.publish(subjects.agent_samples(server_ids[0]), sample_body(server_ids[0], at, [reading("nginx")]),
                         headers={"Authorization": f"Bearer {forged_key}", "Nats-Msg-Id": bad_ids[0]})
        await js.publish(subjects.agent_samples(server_ids[1]), sample_body(server_ids[1], at, [reading("nginx")]),
                         headers={"Authorization": f"Bearer {keys[0]}", "Nats-Msg-Id": bad_ids[1]})
        reply = await nc.request(subjects.agent_config(server_ids[0]), b'{"v": 1}', timeout=5,
                                 headers={"Authorization": f"Bearer {keys[0]}"})
        assert b"nginx" in reply.data
        await nc.request(subjects.agent_config(server_ids[1]), b'{"v": 1}', timeout=5,
                         headers={"Authorization": f"Bearer {forged_key}"})
        await eventually(lambda: query(database_url, "select samples_total from watched_processes"
                                       " where server_id = %s", (server_ids[0],)) == [(1,)])
        dead = await stream_messages(nc, subjects.DEADLETTER_STREAM, subjects.DEADLETTER_AGENT_SAMPLES, 2)
        ours = [m for m in dead if m.headers.get("Procwatch-Original-Msg-Id") in bad_ids]
        assert len(ours) == 2
        events = await stream_messages(nc, subjects.PROCESS_EVENTS_STREAM, subjects.processes_changed(server_ids[0]),
                                       1)
        broker_texts = [repr(m.headers) + m.data.decode("utf-8", "replace") for m in [*ours, *events]]
    finally:
        await nc.close()

    secrets = {"api token": token, "revoked token": revoked, "forged token": forged_token,
               "agent key a": keys[0], "agent key b": keys[1], "forged agent key": forged_key}
    # Stored only as hashes.
    assert database_text_containing(database_url, list(secrets.values())) == []
    with psycopg.connect(libpq_url(database_url)) as conn:
        assert conn.execute("select count(*) from api_tokens where token_hash = %s",
                            (hash_secret(token),)).fetchone() == (1,)
        assert conn.execute("select count(*) from servers where agent_key_hash = any(%s)",
                            ([hash_secret(k) for k in keys],)).fetchone() == (2,)
    # Never logged, never forwarded on the broker.
    assert len(captured_logs.texts) > 5, "the capture saw no logs: the check would prove nothing"
    for name, value in secrets.items():
        leaked = [t for t in captured_logs.texts if value in t]
        assert not leaked, f"{name} appears in the logs: {leaked[:2]}"
        assert not [t for t in broker_texts if value in t], f"{name} was forwarded on the broker"


async def test_an_agent_key_cannot_write_samples_for_another_server(client, ingest, database_url, nats_url):
    from tests.support.factories import make_process, make_server, make_user

    user = make_user(database_url)
    a, b = make_server(database_url, user), make_server(database_url, user)
    pid_a, pid_b = make_process(database_url, a, "nginx"), make_process(database_url, b, "nginx")
    at = now_utc(-3)
    cases = {
        # B's subject and body, A's key.
        "unauthorized": (subjects.agent_samples(b.id), sample_body(b.id, at, [reading("nginx")])),
        # A's subject and key, B's server in the body.
        "server_mismatch": (subjects.agent_samples(a.id), sample_body(b.id, at, [reading("nginx")])),
    }
    ids = {}
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for code, (subject, body) in cases.items():
            ids[code] = f"cross-{code}-{uuid.uuid4().hex[:8]}"
            await js.publish(subject, body, headers={"Authorization": f"Bearer {a.agent_key}",
                                                     "Nats-Msg-Id": ids[code]})
        # A's own sample still lands (the key is fine for its own server).
        await js.publish(subjects.agent_samples(a.id), sample_body(a.id, at, [reading("nginx")]),
                         headers={"Authorization": f"Bearer {a.agent_key}", "Nats-Msg-Id": uuid.uuid4().hex})
        await eventually(lambda: query(database_url, "select samples_total from watched_processes where id = %s",
                                       (pid_a,)) == [(1,)])
        dead = await stream_messages(nc, subjects.DEADLETTER_STREAM, subjects.DEADLETTER_AGENT_SAMPLES, 2)
    finally:
        await nc.close()
    by_id = {m.headers.get("Procwatch-Original-Msg-Id"): m for m in dead}
    for code, msg_id in ids.items():
        assert msg_id in by_id, f"{code} was not dead-lettered"
        assert by_id[msg_id].headers[subjects.REASON_HEADER].split(":", 1)[0] == code
    assert query(database_url, "select count(*) from process_samples where watched_process_id = %s", (pid_b,)) == [(0,)]
    assert query(database_url, "select samples_total, last_sample_at from watched_processes where id = %s",
                 (pid_b,)) == [(0, None)]
