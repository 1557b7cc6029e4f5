"""Broker outages: the agent keeps sampling into its bounded buffer and delivers
the buffered ticks oldest first when the broker returns. Uses its own NATS
server (procwatch.embedded) so stopping it disturbs no other test."""

from __future__ import annotations

import time

import nats
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from procwatch.embedded import EmbeddedNats
from procwatch_agent.runner import Agent
from procwatch_agent.settings import AgentSettings
from procwatch_contracts import subjects
from procwatch_contracts.messages import AgentSample
from procwatch_messaging.streams import ensure_streams

pytestmark = pytest.mark.integration

SERVER_ID = 77


READER = "test-reader"  # stands in for ingest's durable: AGENT_SAMPLES keeps messages only for a consumer


@pytest.fixture
async def own_nats(tmp_path):
    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    nc = await nats.connect(server.url)
    await ensure_streams(nc.jetstream())
    await nc.jetstream().add_consumer(subjects.AGENT_SAMPLES_STREAM, ConsumerConfig(
        durable_name=READER, deliver_policy=DeliverPolicy.ALL, filter_subject=subjects.AGENT_SAMPLES_SUBJECTS))
    await nc.close()
    yield server
    server.stop()


async def stream_samples(url: str, server_id: int) -> list[tuple[str, AgentSample]]:
    nc = await nats.connect(url)
    try:
        psub = await nc.jetstream().pull_subscribe_bind(READER, stream=subjects.AGENT_SAMPLES_STREAM)
        try:
            msgs = await psub.fetch(100, timeout=2)
        except nats.errors.TimeoutError:
            msgs = []
        return [(m.headers["Nats-Msg-Id"], AgentSample.model_validate_json(m.data)) for m in msgs
                if m.subject == subjects.agent_samples(server_id)]
    finally:
        await nc.close()


async def wait_until(predicate, timeout: float = 15.0) -> bool:
    import asyncio

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def restart_on_same_port(server: EmbeddedNats, monkeypatch) -> None:
    """EmbeddedNats moves to a new port when a bind test fails, and the server side of
    the agent's closed connection sits in TIME_WAIT on the old one; nats-server binds
    with SO_REUSEADDR, so skip that over-strict check for this restart."""
    import procwatch.embedded

    monkeypatch.setattr(procwatch.embedded, "port_is_free", lambda port: True)
    server.start()


async def test_outage_buffers_and_flushes_oldest_first(own_nats, monkeypatch):
    url = own_nats.url
    nc = await nats.connect(url)
    await ensure_streams(nc.jetstream())
    await nc.close()

    agent = Agent(AgentSettings(nats_url=url, server_id=SERVER_ID, key="pwa_k", names=["pw-outage"],
                                buffer_ticks=2))
    agent.start_connecting()
    try:
        assert await agent.wait_connected(10)
        before = await agent.tick()
        assert agent.publisher.published == 1

        own_nats.stop()
        assert await wait_until(lambda: not agent.nc.is_connected)
        ticks = []
        for _ in range(3):
            ticks.append(await agent.tick())
            time.sleep(0.002)  # distinct millisecond timestamps
        assert len(agent.publisher.buffer) == 2
        assert agent.publisher.dropped == 1  # the oldest of the three outage ticks
        assert agent.publisher.published == 1

        restart_on_same_port(own_nats, monkeypatch)  # same data directory: the stream survives
        assert own_nats.url == url
        assert await wait_until(lambda: agent.nc.is_connected, timeout=20)
        assert await agent.publisher.flush() == 2
        assert len(agent.publisher.buffer) == 0
    finally:
        await agent.close()

    stored = await stream_samples(url, SERVER_ID)
    assert [s.sampled_at for _, s in stored] == [before.sampled_at, ticks[1].sampled_at, ticks[2].sampled_at]
    assert [mid for mid, _ in stored] == [f"{SERVER_ID}-{int(s.sampled_at.timestamp() * 1000)}"
                                          for s in (before, ticks[1], ticks[2])]


async def test_agent_started_while_broker_is_down_delivers_later(own_nats, monkeypatch):
    url = own_nats.url
    nc = await nats.connect(url)
    await ensure_streams(nc.jetstream())
    await nc.close()
    own_nats.stop()

    agent = Agent(AgentSettings(nats_url=url, server_id=SERVER_ID + 1, key="pwa_k", names=["pw-outage"]))
    agent.start_connecting()
    try:
        first = await agent.tick()  # no broker: neither a watch list nor a publish, but no error
        assert len(agent.publisher.buffer) == 1 and agent.names == ["pw-outage"]
        restart_on_same_port(own_nats, monkeypatch)
        assert await agent.wait_connected(20)
        assert await agent.publisher.flush() == 1
    finally:
        await agent.close()
    stored = await stream_samples(url, SERVER_ID + 1)
    assert [s.sampled_at for _, s in stored] == [first.sampled_at]


async def test_running_agent_flushes_by_itself_when_the_broker_returns(own_nats, monkeypatch):
    import asyncio

    url = own_nats.url
    nc = await nats.connect(url)
    await ensure_streams(nc.jetstream())
    await nc.close()
    server_id = SERVER_ID + 2
    agent = Agent(AgentSettings(nats_url=url, server_id=server_id, key="pwa_k", names=["pw-outage"],
                                interval=0.2))
    run = asyncio.create_task(agent.run())
    try:
        assert await wait_until(lambda: agent.publisher.published >= 1)
        own_nats.stop()
        assert await wait_until(lambda: len(agent.publisher.buffer) >= 3)
        restart_on_same_port(own_nats, monkeypatch)
        # no manual flush: the reconnect wakes the loop, which drains the buffer
        assert await wait_until(lambda: agent.nc.is_connected and len(agent.publisher.buffer) == 0, timeout=20)
    finally:
        agent.stop()
        await asyncio.wait_for(run, 10)
    stored = await stream_samples(url, server_id)
    times = [s.sampled_at for _, s in stored]
    assert len(times) == agent.publisher.published and len(times) >= 4
    assert times == sorted(times) and len(set(times)) == len(times)  # oldest first, each tick once
