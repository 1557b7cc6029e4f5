"""The alerter in-process against the session's real NATS and PostgreSQL, plus helpers to
publish sample / lifecycle events and read alert events back from the ALERTS stream."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import nats
import psycopg
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from procwatch_alerter.app import AlerterApp
from procwatch_alerter.settings import AlerterSettings
from procwatch_contracts import subjects
from procwatch_contracts.messages import AlertEvent, ProcessAlertConfig, ProcessChanged, RecordedSample, SampleRecorded
from procwatch_db.urls import libpq_url
from procwatch_domain.rules import SETTING_NAMES
from tests.support.factories import TestServer, make_process, make_server, make_user

T0 = datetime(2026, 5, 24, 18, 0, tzinfo=UTC)
_sample_ids = itertools.count(1)
_event_ids = itertools.count(1)


def alerter_settings(database_url: str, nats_url: str, server_id: int, durable: str | None = None,
                     **overrides) -> AlerterSettings:
    values = dict(
        database_url=database_url,
        nats_url=nats_url,
        durable=durable or f"alerter-test-{uuid.uuid4().hex[:8]}",
        # Only this test's server: tests share the session's streams.
        sample_subject=subjects.samples_recorded(server_id),
        process_subject=subjects.processes_changed(server_id),
        deliver_policy="all",
        fetch_timeout_s=0.5,
        relay_poll_interval_s=0.2,
        max_backoff_s=0.5,
        # The offline job scans every server of the shared database: on only where a test asks
        # (tests/integration/alerter/test_offline.py).
        offline_detection=False,
    )
    values.update(overrides)
    return AlerterSettings(**values)


@dataclass
class Proc:
    """A watched process and the state a test needs to keep publishing its samples."""

    id: int
    name: str
    server: TestServer
    config: ProcessAlertConfig
    previous: RecordedSample | None = None
    published: list[RecordedSample] = field(default_factory=list)


@dataclass
class World:
    database_url: str
    nats_url: str
    js: object
    server: TestServer
    alerter: AlerterApp | None = None
    sub: object = None
    received: list = field(default_factory=list)

    # --- setup ---------------------------------------------------------------
    def process(self, name: str = "nginx", **cols) -> Proc:
        pid = make_process(self.database_url, self.server, name, **cols)
        row = self.row(pid)
        config = ProcessAlertConfig(**{name: row[name] for name in SETTING_NAMES})
        return Proc(pid, name, self.server, config)

    async def start_alerter(self, durable: str | None = None, **overrides) -> AlerterApp:
        self.alerter = AlerterApp(alerter_settings(self.database_url, self.nats_url, self.server.id, durable,
                                                   **overrides))
        await self.alerter.start()
        return self.alerter

    async def stop_alerter(self) -> None:
        if self.alerter is not None:
            await self.alerter.stop()
            self.alerter = None

    # --- publishing ----------------------------------------------------------
    def sample(self, proc: Proc, minute: float, *, count=2, cpu=5.0, mem=5.0, start=1_000, is_latest=True) -> RecordedSample:
        """A committed sample at T0 + minute, chained to the previous one built for `proc`."""
        prev = proc.previous
        sample = RecordedSample(
            sample_id=next(_sample_ids), watched_process_id=proc.id, process_name=proc.name,
            count=count, cpu_pct=float(cpu if count else 0.0), memory_pct=float(mem if count else 0.0),
            oldest_start_unix=start if count else None, recorded_at=T0 + timedelta(minutes=minute),
            previous_count=prev.count if prev else None,
            previous_oldest_start_unix=prev.oldest_start_unix if prev else None,
            previous_recorded_at=prev.recorded_at if prev else None,
            is_latest=is_latest, config=proc.config,
        )
        if is_latest:
            proc.previous = sample
        return sample

    def event(self, *samples: RecordedSample) -> SampleRecorded:
        return SampleRecorded(
            server_id=self.server.id, hostname=self.server.hostname, user_id=self.server.user_id,
            agent_version="2.4.1", sampled_at=samples[0].recorded_at, samples=list(samples),
        )

    async def publish(self, event: SampleRecorded, msg_id: str | None = None) -> None:
        await self.js.publish(
            subjects.samples_recorded(self.server.id), event.model_dump_json().encode(),
            headers={"Nats-Msg-Id": msg_id or f"test-{uuid.uuid4().hex}"},
        )

    async def send(self, proc: Proc, minute: float, **kw) -> RecordedSample:
        sample = self.sample(proc, minute, **kw)
        await self.publish(self.event(sample))
        return sample

    async def changed(self, proc: Proc, change: str, *, alerted_state: str | None = None,
                      hostname: str | None = None) -> None:
        row = self.row(proc.id) if change != "deleted" else None
        event = ProcessChanged(
            event_id=next(_event_ids) + 10_000_000 * (self.server.id % 1000), change=change,
            server_id=self.server.id, user_id=self.server.user_id, process_id=proc.id, process_name=proc.name,
            enabled=bool(row["enabled"]) if row else False, config=proc.config,
            alerted_state=alerted_state if row is None else row["alerted_state"],
            hostname=hostname, occurred_at=datetime.now(UTC),
        )
        await self.js.publish(subjects.processes_changed(self.server.id), event.model_dump_json().encode())

    # --- reading -------------------------------------------------------------
    async def alerts(self, n: int, timeout: float = 10.0) -> list[tuple[AlertEvent, dict]]:
        """The next `n` alert events of this server (polling ALERTS with a deadline)."""
        if self.sub is None:
            self.sub = await self.js.pull_subscribe(
                f"alerts.{self.server.id}.*", stream=subjects.ALERTS_STREAM,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, inactive_threshold=60),
            )
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"only {len(out)} of {n} alert events arrived: {[a.type + '/' + a.state for a, _ in out]}"
            try:
                msgs = await self.sub.fetch(n - len(out), timeout=min(remaining, 1.0))
            except (nats.errors.TimeoutError, asyncio.TimeoutError):
                continue
            for m in msgs:
                await m.ack()
                out.append((AlertEvent.model_validate_json(m.data), dict(m.headers or {})))
        self.received.extend(out)
        return out

    async def kinds(self, n: int) -> list[tuple[str, str]]:
        return [(a.type, a.state) for a, _ in await self.alerts(n)]

    # --- database ------------------------------------------------------------
    def row(self, process_id: int) -> dict | None:
        with psycopg.connect(libpq_url(self.database_url)) as conn:
            cur = conn.execute("select * from watched_processes where id = %s", (process_id,))
            row = cur.fetchone()
            return dict(zip([c.name for c in cur.description], row)) if row else None

    def history(self, process_id: int) -> list[dict]:
        with psycopg.connect(libpq_url(self.database_url)) as conn:
            cur = conn.execute("select * from alerts where watched_process_id = %s order by id", (process_id,))
            return [dict(zip([c.name for c in cur.description], r)) for r in cur.fetchall()]

    def sql(self, query: str, *params):
        with psycopg.connect(libpq_url(self.database_url)) as conn:
            return conn.execute(query, params).fetchall()


@pytest.fixture
async def world(database_url, nats_url, js):
    user = make_user(database_url)
    server = make_server(database_url, user)
    w = World(database_url, nats_url, js, server)
    yield w
    await w.stop_alerter()
    if w.sub is not None:
        await w.sub.unsubscribe()
