"""Liveness end to end in-process: real ingest stamping heartbeats, the alerter's offline job
judging them (issue 15). The watcher's own outage pages nobody; a dead agent pages once."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import nats
import orjson
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from procwatch_alerter.app import AlerterApp
from procwatch_contracts import subjects
from procwatch_contracts.messages import AlertEvent
from procwatch_ingest.app import IngestApp
from tests.integration.alerter.conftest import alerter_settings
from tests.integration.alerter.test_offline import execute
from tests.integration.ingest.conftest import ingest_settings
from tests.support.factories import make_server, make_user

pytestmark = pytest.mark.integration

OFFLINE_AFTER_S = 3
BEAT_S = 0.5


class Agent:
    """Publishes the empty-list heartbeat of one server every BEAT_S while running."""

    def __init__(self, js, server) -> None:
        self.js, self.server = js, server
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None

    async def _run(self) -> None:
        while True:
            body = orjson.dumps({"v": 1, "server_id": self.server.id, "agent_version": "test",
                                 "sampled_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                                 "processes": []})
            await self.js.publish(subjects.agent_samples(self.server.id), body, headers={
                "Authorization": f"Bearer {self.server.agent_key}", "Nats-Msg-Id": uuid.uuid4().hex})
            await asyncio.sleep(BEAT_S)


async def offline_events(sub, server_ids: set[int], wait_s: float) -> list[AlertEvent]:
    """Every server-level event of `server_ids` that arrives within `wait_s`."""
    out = []
    deadline = time.monotonic() + wait_s
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            msgs = await sub.fetch(10, timeout=min(remaining, 0.5))
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            continue
        for m in msgs:
            await m.ack()
            event = AlertEvent.model_validate_json(m.data)
            if event.server.id in server_ids:
                out.append(event)
    return out


async def until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


async def test_ingest_outage_pages_nobody_and_a_dead_agent_pages_once(database_url, nats_url, js):
    user = make_user(database_url)
    alive, dying = make_server(database_url, user), make_server(database_url, user)
    for server in (alive, dying):  # below the API's minimum: a test setting
        execute(database_url, "update servers set offline_after_s = %s where id = %s", OFFLINE_AFTER_S, server.id)
    ids = {alive.id, dying.id}
    sub = await js.pull_subscribe(f"alerts.*.{subjects.SERVER_ALERTS_TOKEN}", stream=subjects.ALERTS_STREAM,
                                  config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW, inactive_threshold=120))
    isettings = ingest_settings(database_url, nats_url, last_seen_step_s=0.2, retention_enabled=False)
    ingest = IngestApp(isettings)
    await ingest.start()
    alerter = AlerterApp(alerter_settings(
        database_url, nats_url, alive.id, offline_detection=True, ingest_durable=isettings.durable,
        offline_check_every_s=0.2, offline_max_lag_s=1.0))
    await alerter.start()
    agents = {alive.id: Agent(js, alive), dying.id: Agent(js, dying)}
    for agent in agents.values():
        agent.start()

    def last_seen(server) -> datetime | None:
        from tests.integration.ingest.conftest import query
        return query(database_url, "select last_seen_at from servers where id = %s", (server.id,))[0][0]

    try:
        await until(lambda: last_seen(alive) and last_seen(dying), 15, "heartbeats stamped")

        # The watcher's own outage: ingest stopped for 3 x offline_after_s while agents keep sending.
        await ingest.stop()
        stopped_at = time.monotonic()
        await until(lambda: alerter.offline.gated_runs > 0, 10, "the job noticed ingest is behind")
        await asyncio.sleep(3 * OFFLINE_AFTER_S - (time.monotonic() - stopped_at))
        ingest = IngestApp(isettings)  # same durable: takes over the backlog
        await ingest.start()
        # Caught up, and a whole offline_after_s judged after it (twice, to be sure): nobody offline.
        assert await offline_events(sub, ids, 3 * OFFLINE_AFTER_S) == []
        assert alerter.offline.fired == 0

        # A dead agent: exactly one server_offline, for its server only; resolved when it is back.
        await agents[dying.id].stop()
        events = await offline_events(sub, ids, OFFLINE_AFTER_S + 4)
        assert [(e.server.id, e.type, e.state) for e in events] == [(dying.id, "server_offline", "firing")]
        assert events[0].threshold == OFFLINE_AFTER_S
        agents[dying.id].start()
        events = await offline_events(sub, ids, 4)
        assert [(e.server.id, e.state, e.reason) for e in events] == [(dying.id, "resolved", "recovered")]
    finally:
        for agent in agents.values():
            await agent.stop()
        await alerter.stop()
        await ingest.stop()
        await sub.unsubscribe()
