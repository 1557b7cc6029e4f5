"""The notifier in-process against the session's real NATS and PostgreSQL, a real HTTP
receiver (tests/support/receiver.py) and a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import pytest

from procwatch_contracts import subjects
from procwatch_contracts.messages import AlertEvent, AlertProcess, AlertServer
from procwatch_db.urls import libpq_url
from procwatch_domain import crypto
from procwatch_notifier.app import NotifierApp
from procwatch_notifier.settings import NotifierSettings
from tests.support.factories import TestServer, TestUser, make_server, make_user
from tests.support.receiver import Receiver

os.environ.setdefault(crypto.SECRETS_KEY_ENV, crypto.new_key())

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
_n = itertools.count(1)


@dataclass(frozen=True)
class TestChannel:
    id: int
    type: str
    secret: str | None
    path: str | None


def insert_channel(database_url: str, user_id: int, type_: str, target: str, *, secret: str | None = None,
                   fmt: str = "standard", alert_types: list[str] | None = None,
                   server_ids: list[int] | None = None, send_resolved: bool = True) -> int:
    """A channel row as the API writes it (target and secret encrypted)."""
    with psycopg.connect(libpq_url(database_url)) as conn:
        (channel_id,) = conn.execute(
            "insert into channels (user_id, type, name, format, target_encrypted, target_hint, secret_encrypted,"
            " alert_types, server_ids, send_resolved) values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) returning id",
            (user_id, type_, f"{type_}-{uuid.uuid4().hex[:6]}", fmt, crypto.encrypt(target), target[:20] + "***",
             crypto.encrypt(secret) if secret else None, alert_types, server_ids, send_resolved)).fetchone()
    return channel_id


def alert_event(server: TestServer, *, type_: str = "process_down", state: str = "firing", process_id: int = 1,
                process_name: str = "nginx", at: datetime | None = None, value: float | None = 0.0,
                threshold: float | None = None) -> AlertEvent:
    at = at or T0 + timedelta(seconds=next(_n))
    return AlertEvent(
        id=f"alert-{process_id}-{type_}-{state}-{at.strftime('%Y%m%dT%H%M%S.%fZ')}-{uuid.uuid4().hex[:6]}",
        type=type_, state=state, occurred_at=at, user_id=server.user_id,
        server=AlertServer(id=server.id, hostname=server.hostname),
        process=AlertProcess(id=process_id, process_name=process_name), value=value, threshold=threshold)


@dataclass
class NotifyWorld:
    database_url: str
    nats_url: str
    js: object
    user: TestUser
    server: TestServer
    receiver: Receiver
    app: NotifierApp | None = None
    apps: list[NotifierApp] = field(default_factory=list)

    def settings(self, **overrides) -> NotifierSettings:
        values = dict(
            database_url=self.database_url, nats_url=self.nats_url,
            durable=f"notifier-test-{uuid.uuid4().hex[:8]}",
            subject=f"alerts.{self.server.id}.*",  # only this test's server: tests share the stream
            allow_private_targets=True, fetch_timeout_s=0.5, poll_interval_s=0.2,
            retry_delays_s=[0.3, 0.6, 1.0], request_timeout_s=3.0,
        )
        values.update(overrides)
        return NotifierSettings(**values)

    async def start(self, **overrides) -> NotifierApp:
        app = NotifierApp(self.settings(**overrides))
        await app.start()
        self.app = app
        self.apps.append(app)
        return app

    def webhook(self, path: str = "/hook", **kw) -> TestChannel:
        secret = crypto.new_webhook_secret()
        cid = insert_channel(self.database_url, self.user.id, "webhook", self.receiver.url(path), secret=secret, **kw)
        return TestChannel(cid, "webhook", secret, path)

    def chat(self, type_: str, path: str, **kw) -> TestChannel:
        cid = insert_channel(self.database_url, self.user.id, type_, self.receiver.url(path), **kw)
        return TestChannel(cid, type_, None, path)

    def event(self, **kw) -> AlertEvent:
        return alert_event(self.server, **kw)

    async def publish(self, *events: AlertEvent, msg_id: str | None = None) -> None:
        for event in events:
            subject = subjects.alerts(event.server.id, event.process.id if event.process else 0)
            await self.js.publish(subject, event.model_dump_json().encode(),
                                  headers={"Nats-Msg-Id": msg_id or event.id})

    def sql(self, query: str, *params) -> list[tuple]:
        with psycopg.connect(libpq_url(self.database_url)) as conn:
            return conn.execute(query, params).fetchall()

    def deliveries(self, channel_id: int) -> list[dict]:
        with psycopg.connect(libpq_url(self.database_url)) as conn:
            cur = conn.execute("select * from deliveries where channel_id = %s order by id", (channel_id,))
            names = [d.name for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    async def until(self, predicate, timeout: float = 15.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.05)


def body_of(received) -> dict:
    return orjson.loads(received.body)


@pytest.fixture
async def notify_world(database_url, nats_url, js):
    user = make_user(database_url)
    server = make_server(database_url, user)
    receiver = Receiver()
    await receiver.start()
    world = NotifyWorld(database_url, nats_url, js, user, server, receiver)
    yield world
    for app in world.apps:
        await app.stop()
    await receiver.stop()
