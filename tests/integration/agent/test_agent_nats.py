"""The agent against the real NATS broker of the test session.

A stub watch-list responder (a real nats-py subscription on `agent.config.<id>`)
stands in for ingest; samples are read back from the AGENT_SAMPLES stream.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time

import nats
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from procwatch_agent.runner import Agent
from procwatch_agent.settings import AgentSettings
from procwatch_contracts import subjects
from procwatch_contracts.messages import AgentSample, WatchListReply, WatchListRequest
from procwatch_messaging.streams import ensure_streams
from tests.integration.agent.procs import program_copy, spawn, stop, unique_name

pytestmark = pytest.mark.integration

KEY = "pwa_test-agent-key"


def new_server_id() -> int:
    return random.randint(10**9, 2 * 10**9)


class WatchListStub:
    """Answers watch-list requests for one server like ingest would."""

    def __init__(self, nc, server_id: int, names: list[str], interval: float = 60.0) -> None:
        self.nc, self.server_id, self.names, self.interval = nc, server_id, names, interval
        self.requests: list[tuple[dict, WatchListRequest]] = []
        self.sub = None

    async def start(self) -> WatchListStub:
        async def handler(msg):
            self.requests.append((dict(msg.headers or {}), WatchListRequest.model_validate_json(msg.data)))
            if (msg.headers or {}).get("Authorization") != f"Bearer {KEY}":
                reply = WatchListReply(server_id=self.server_id, process_names=[], interval_seconds=0,
                                       error="unauthorized")
            else:
                reply = WatchListReply(server_id=self.server_id, process_names=list(self.names),
                                       interval_seconds=self.interval)
            await msg.respond(reply.model_dump_json().encode())

        self.sub = await self.nc.subscribe(subjects.agent_config(self.server_id), cb=handler)
        await self.nc.flush()
        return self

    async def stop(self) -> None:
        await self.sub.unsubscribe()


class SampleReader:
    """An ephemeral JetStream consumer on one server's samples."""

    def __init__(self, js, server_id: int) -> None:
        self.js, self.server_id, self.psub = js, server_id, None

    async def start(self) -> SampleReader:
        self.psub = await self.js.pull_subscribe(
            subjects.agent_samples(self.server_id), stream=subjects.AGENT_SAMPLES_STREAM,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        )
        return self

    async def next(self, n: int = 1, timeout: float = 10.0) -> list:
        got: list = []
        deadline = time.monotonic() + timeout
        while len(got) < n and time.monotonic() < deadline:
            try:
                msgs = await self.psub.fetch(n - len(got), timeout=max(deadline - time.monotonic(), 0.1))
            except nats.errors.TimeoutError:
                break
            for m in msgs:
                await m.ack()
            got.extend(msgs)
        assert len(got) == n, f"expected {n} samples, got {len(got)}"
        return got


@pytest.fixture
async def nc(nats_url):
    conn = await nats.connect(nats_url)
    await ensure_streams(conn.jetstream())
    yield conn
    await conn.drain()


def settings(nats_url: str, server_id: int, **kw) -> AgentSettings:
    return AgentSettings(nats_url=nats_url, server_id=server_id, key=KEY, **kw)


def reading(sample: AgentSample, name: str):
    return next(p for p in sample.processes if p.process_name == name)


async def test_tick_reports_real_processes_through_the_stream(nc, nats_url, tmp_path):
    server_id = new_server_id()
    name = unique_name()
    exe = program_copy(tmp_path, name)
    stub = await WatchListStub(nc, server_id, [name, "pw-not-running"], interval=42).start()
    reader = await SampleReader(nc.jetstream(), server_id).start()
    agent = Agent(settings(nats_url, server_id))
    agent.start_connecting()
    procs = [spawn(exe, "60")]
    try:
        assert await agent.wait_connected(10)

        await agent.tick()
        [msg] = await reader.next()
        sample = AgentSample.model_validate_json(msg.data)
        assert msg.headers["Authorization"] == f"Bearer {KEY}"
        assert msg.headers["Nats-Msg-Id"] == f"{server_id}-{int(sample.sampled_at.timestamp() * 1000)}"
        assert msg.subject == subjects.agent_samples(server_id)
        assert sample.server_id == server_id and sample.v == 1
        assert sample.sampled_at.utcoffset().total_seconds() == 0
        assert '"sampled_at":"' in msg.data.decode() and 'Z"' in msg.data.decode()
        assert [p.process_name for p in sample.processes] == [name, "pw-not-running"]
        first = reading(sample, name)
        assert first.count == 1 and first.memory_pct > 0 and first.oldest_start_unix is not None
        missing = reading(sample, "pw-not-running")
        assert (missing.count, missing.cpu_pct, missing.memory_pct, missing.oldest_start_unix) == (0, 0, 0, None)
        # the watch-list request carried the key, and the reply's interval applies
        headers, request = stub.requests[-1]
        assert headers["Authorization"] == f"Bearer {KEY}" and request.agent_version
        assert agent.interval == 42

        procs.append(spawn(exe, "60"))
        await agent.tick()
        [msg] = await reader.next()
        assert reading(AgentSample.model_validate_json(msg.data), name).count == 2

        stop(*procs)
        await agent.tick()
        [msg] = await reader.next()
        gone = reading(AgentSample.model_validate_json(msg.data), name)
        assert (gone.count, gone.cpu_pct, gone.memory_pct, gone.oldest_start_unix) == (0, 0, 0, None)

        # The responder goes away: the last known list stays in force.
        await stub.stop()
        sample = await agent.tick()
        assert [p.process_name for p in sample.processes] == [name, "pw-not-running"]
        await reader.next()
    finally:
        stop(*procs)
        await agent.close()


async def test_process_changed_event_refreshes_the_list_at_once(nc, nats_url):
    server_id = new_server_id()
    stub = await WatchListStub(nc, server_id, ["pw-first"], interval=3600).start()
    agent = Agent(settings(nats_url, server_id))
    run = asyncio.create_task(agent.run())
    try:
        deadline = time.monotonic() + 10
        while agent.names != ["pw-first"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert agent.names == ["pw-first"] and agent.interval == 3600

        stub.names = ["pw-first", "pw-second"]
        await nc.publish(subjects.processes_changed(server_id), b'{"v":1}')
        deadline = time.monotonic() + 10
        while agent.names != ["pw-first", "pw-second"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert agent.names == ["pw-first", "pw-second"]  # long before the next 1-hour tick
    finally:
        agent.stop()
        await asyncio.wait_for(run, 10)
        await stub.stop()


async def test_refused_watch_list_keeps_names_from_flags(nc, nats_url):
    server_id = new_server_id()
    stub = await WatchListStub(nc, server_id, ["pw-from-server"]).start()
    agent = Agent(AgentSettings(nats_url=nats_url, server_id=server_id, key="pwa_wrong", names=["pw-flag"]))
    agent.start_connecting()
    try:
        assert await agent.wait_connected(10)
        assert not await agent.refresh_watch_list()
        assert agent.names == ["pw-flag"] and stub.requests
    finally:
        await agent.close()
        await stub.stop()


def run_cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("PROCWATCH_AGENT_")}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "procwatch.cli", "agent", *args], capture_output=True,
                          text=True, timeout=60, env=env)


def test_once_prints_a_valid_sample_for_named_processes(tmp_path):
    name = unique_name()
    proc = spawn(program_copy(tmp_path, name), "60")
    try:
        out = run_cli("--once", "--server-id", "5", "--name", name, "--name", "pw-not-running")
    finally:
        stop(proc)
    assert out.returncode == 0, out.stderr
    sample = AgentSample.model_validate_json(out.stdout.strip())
    assert sample.server_id == 5
    assert reading(sample, name).count == 1
    assert reading(sample, "pw-not-running").count == 0
    assert json.loads(out.stdout)["sampled_at"].endswith("Z")


async def test_once_uses_the_watch_list_from_the_broker(nc, nats_url, tmp_path):
    server_id = new_server_id()
    name = unique_name()
    proc = spawn(program_copy(tmp_path, name), "60")
    stub = await WatchListStub(nc, server_id, [name]).start()
    try:
        out = await asyncio.to_thread(run_cli, "--once", env_extra={
            "NATS_URL": nats_url, "PROCWATCH_AGENT_SERVER_ID": str(server_id), "PROCWATCH_AGENT_KEY": KEY})
    finally:
        stop(proc)
        await stub.stop()
    assert out.returncode == 0, out.stderr
    assert KEY not in out.stderr
    sample = AgentSample.model_validate_json(out.stdout.strip())
    assert [(p.process_name, p.count) for p in sample.processes] == [(name, 1)]


def test_missing_server_id_is_a_usage_error():
    out = run_cli("--once", "--name", "x")
    assert out.returncode == 2 and "server id" in out.stderr
