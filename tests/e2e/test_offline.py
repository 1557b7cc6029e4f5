"""Issue 15 as a user sees it: under `procwatch up --with-agent`, the agent is killed (kill -9) and
`server_offline` appears on ALERTS within offline_after_s + 2 s; started again, the alert resolves.

`up` restarts a child that exits, so the agent killed here is a copy started by the test with the
exact environment `up` gave its own agent (read from /proc: server id, key, broker URL and whatever
credentials `up` hands it); `up`'s own agent is frozen (SIGSTOP: silent, and never seen to exit)
for the duration, and thawed before `up` stops."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import nats
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from procwatch.embedded import free_port
from procwatch_contracts import subjects
from procwatch_contracts.messages import AlertEvent
from tests.e2e.test_up import _read_until, _stop

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

OFFLINE_AFTER_S = 30  # the default and the API's minimum


def _agent_of(up: subprocess.Popen) -> int:
    """The pid of `up`'s agent child."""
    found = subprocess.run(["pgrep", "-P", str(up.pid), "-f", "procwatch.cli agent"], capture_output=True, text=True)
    pids = [int(p) for p in found.stdout.split()]
    assert len(pids) == 1, found
    return pids[0]


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


async def _next_server_event(sub, server_id: int, timeout: float) -> tuple[AlertEvent, float]:
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            msgs = await sub.fetch(1, timeout=min(remaining, 1.0))
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            continue
        for m in msgs:
            await m.ack()
            event = AlertEvent.model_validate_json(m.data)
            if event.server.id == server_id:
                return event, time.monotonic()
    raise AssertionError(f"no server-level alert for server {server_id} within {timeout} s")


async def test_killed_agent_goes_offline_and_comes_back(tmp_path):
    data_dir, port = tmp_path / "pw", free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "NATS_URL")}
    up = subprocess.Popen(
        [sys.executable, "-m", "procwatch.cli", "up", "--data-dir", str(data_dir), "--api-port", str(port),
         "--with-agent"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**env, "PROCWATCH_INGEST_INTERVAL_SECONDS": "1"},  # a short tick: seen within a second
    )
    frozen: int | None = None
    agent: subprocess.Popen | None = None
    nc = None
    try:
        out = _read_until(up, r"Ctrl-C stops everything")
        token, url = re.search(r"curl -H 'Authorization: Bearer (\S+)' (\S+)", out).groups()
        headers = {"Authorization": f"Bearer {token}"}
        stack = json.loads((data_dir / "stack.json").read_text())
        server_url = url.rsplit("/processes", 1)[0]

        def server() -> dict:
            return httpx.get(server_url, headers=headers, timeout=10).json()["server"]

        deadline = time.monotonic() + 60
        while server()["status"] != "online":
            assert time.monotonic() < deadline, server()
            await asyncio.sleep(0.2)
        shown = server()
        server_id = shown["id"]
        assert shown["offline_after_s"] == OFFLINE_AFTER_S and shown["alert_on_offline"] == 1

        # Our own copy of the agent, `up`'s frozen.
        up_agent = _agent_of(up)
        agent_env = _environ(up_agent)
        assert agent_env["PROCWATCH_AGENT_SERVER_ID"] == str(server_id)
        os.kill(up_agent, signal.SIGSTOP)
        frozen = up_agent

        def start_agent() -> subprocess.Popen:
            return subprocess.Popen([sys.executable, "-m", "procwatch.cli", "agent"], env=agent_env,
                                    stdout=open(tmp_path / "agent.log", "ab"), stderr=subprocess.STDOUT)  # noqa: SIM115

        agent = start_agent()
        nc = await nats.connect(stack["nats_url"])
        sub = await nc.jetstream().pull_subscribe(
            subjects.server_alerts(server_id), stream=subjects.ALERTS_STREAM,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW, inactive_threshold=300))
        # Our agent's first messages are stamped (last_seen_at moves past the frozen agent's).
        before = server()["last_seen_at"]
        deadline = time.monotonic() + 30
        while server()["last_seen_at"] == before:
            assert time.monotonic() < deadline, "the test's agent is not seen"
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)  # a few more ticks

        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        killed_at = time.monotonic()
        firing, fired_at = await _next_server_event(sub, server_id, OFFLINE_AFTER_S + 10)
        assert (firing.type, firing.state, firing.process) == ("server_offline", "firing", None)
        assert fired_at - killed_at <= OFFLINE_AFTER_S + 2, fired_at - killed_at
        assert firing.threshold == OFFLINE_AFTER_S
        assert server()["status"] == "offline"
        history = httpx.get(f"{server_url}/alerts", headers=headers, timeout=10).json()["alerts"]
        assert [(a["type"], a["state"]) for a in history] == [("server_offline", "firing")]

        agent = start_agent()
        resolved, _ = await _next_server_event(sub, server_id, 30)
        assert (resolved.type, resolved.state, resolved.reason) == ("server_offline", "resolved", "recovered")
        assert server()["status"] == "online"
        history = httpx.get(f"{server_url}/alerts", headers=headers, timeout=10).json()["alerts"]
        assert [(a["state"], a["resolve_reason"]) for a in history] == [("resolved", "recovered")]
    finally:
        if nc is not None:
            await nc.close()
        if agent is not None and agent.poll() is None:
            agent.kill()
            agent.wait(10)
        if frozen is not None:
            os.kill(frozen, signal.SIGCONT)
        assert _stop(up) == 0
