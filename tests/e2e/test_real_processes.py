"""Proof on real processes: `procwatch up`, the real agent, real process deaths, real alert events.

A uniquely named copy of `sleep` is watched through the API while the real
agent (1-second interval) reports it through `procwatch up`'s broker; the test
reads status from the API and alert events from the ALERTS stream.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import nats
import pytest

from procwatch.embedded import free_port
from procwatch_contracts import subjects
from tests.e2e.test_up import _read_until, _start_up, _stop

pytestmark = pytest.mark.e2e

DEADLINE_S = 30.0


class RealProcesses:
    """Copies of a binary under a unique name (<= 15 chars, the kernel's comm limit)."""

    def __init__(self, tmp: Path, binary: str, prefix: str):
        self.name = f"{prefix}{uuid.uuid4().hex[:8]}"
        self.path = tmp / self.name
        shutil.copy(shutil.which(binary), self.path)
        self.procs: list[subprocess.Popen] = []

    def start(self, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen([str(self.path), *args], stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen) -> None:
        proc.kill()
        proc.wait()
        self.procs.remove(proc)

    def kill_all(self) -> None:
        for proc in list(self.procs):
            self.kill(proc)


class Api:
    def __init__(self, base: str, token: str):
        self.client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=10)

    def create_server(self, hostname: str) -> dict:
        created = self.client.post("/servers", json={"hostname": hostname})
        assert created.status_code == 201, created.text
        return created.json()["server"]

    def process(self, server_id: int, process_id: int) -> dict:
        resp = self.client.get(f"/servers/{server_id}/processes/{process_id}")
        assert resp.status_code == 200, resp.text
        return resp.json()["process"]

    def wait_for(self, server_id: int, process_id: int, predicate, what: str) -> dict:
        deadline = time.monotonic() + DEADLINE_S
        last = None
        while time.monotonic() < deadline:
            last = self.process(server_id, process_id)
            if predicate(last):
                return last
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; last: {last}")


class AlertReader:
    """Every alert event of one server, read from the ALERTS stream."""

    def __init__(self, nats_url: str, server_id: int):
        self.nats_url, self.server_id = nats_url, server_id
        self.events: list[dict] = []
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self._connect())

    async def _connect(self) -> None:
        self.nc = await nats.connect(self.nats_url)
        js = self.nc.jetstream()
        # Durable: an ephemeral consumer is deleted after a few idle seconds.
        self.sub = await js.pull_subscribe(
            f"alerts.{self.server_id}.>", durable=f"e2e-{uuid.uuid4().hex[:8]}", stream=subjects.ALERTS_STREAM
        )

    async def _drain(self) -> None:
        try:
            msgs = await self.sub.fetch(100, timeout=0.5)
        except asyncio.TimeoutError:  # nats-py raises its own and the builtin one
            return
        for msg in msgs:
            self.events.append(json.loads(msg.data))
            await msg.ack()

    def wait_for(self, process_id: int, type_: str, state: str) -> dict:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            for event in self.events:
                if event["process"]["id"] == process_id and event["type"] == type_ and event["state"] == state:
                    return event
            self.loop.run_until_complete(self._drain())
        raise AssertionError(f"no {type_} {state} event for process {process_id}; saw {self.events}")

    def close(self) -> None:
        self.loop.run_until_complete(self.nc.close())
        self.loop.close()


@pytest.fixture
def stack(server_tmp_path):
    data_dir, port = server_tmp_path / "pw", free_port()
    proc = _start_up(data_dir, port)
    try:
        out = _read_until(proc, r"Ctrl-C stops everything")
        token = re.search(r"Bearer (\S+)'", out).group(1)
        urls = json.loads((data_dir / "stack.json").read_text())
        yield urls, token
    finally:
        assert _stop(proc) == 0


@pytest.fixture
def agent_for(stack, tmp_path):
    urls, _ = stack
    started: list[subprocess.Popen] = []

    def start(server_id: int, agent_key: str, *args: str) -> None:
        env = dict(os.environ, NATS_URL=urls["nats_url"], PROCWATCH_AGENT_SERVER_ID=str(server_id),
                   PROCWATCH_AGENT_KEY=agent_key)
        log = open(tmp_path / "agent.log", "ab")
        command = [sys.executable, "-m", "procwatch.cli", "agent", *(args or ("--interval", "1"))]
        started.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))

    yield start
    for proc in started:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


def test_a_real_process_dies_restarts_and_runs_hot_and_alerts_come_out(stack, agent_for, tmp_path):
    urls, token = stack
    api = Api(urls["api_url"], token)
    server = api.create_server("e2e-host")
    sid = server["id"]

    sleeper = RealProcesses(tmp_path, "sleep", "pwsl")
    busy = RealProcesses(tmp_path, "sh", "pwcpu")
    watched = api.client.post(f"/servers/{sid}/processes", json={
        "process_name": sleeper.name, "alert_on_down": True, "alert_on_restart": True})
    assert watched.status_code == 201, watched.text
    pid = watched.json()["process"]["id"]
    hot = api.client.post(f"/servers/{sid}/processes", json={
        "process_name": busy.name, "alert_on_down": False, "alert_on_cpu": True, "cpu_threshold_pct": 5})
    assert hot.status_code == 201, hot.text
    hot_id = hot.json()["process"]["id"]

    alerts = AlertReader(urls["nats_url"], sid)
    agent_for(sid, server["agent_key"])
    try:
        first = sleeper.start("3600")
        api.wait_for(sid, pid, lambda p: p["status"] == "up" and p["last_count"] == 1, "up with count 1")

        sleeper.start("3600")
        api.wait_for(sid, pid, lambda p: p["last_count"] == 2, "count 2")

        sleeper.kill_all()
        api.wait_for(sid, pid, lambda p: p["status"] == "down" and p["last_count"] == 0, "down")
        down = alerts.wait_for(pid, "process_down", "firing")
        assert down["server"] == {"id": sid, "hostname": "e2e-host"}
        assert down["process"]["process_name"] == sleeper.name

        old = sleeper.start("3600")
        api.wait_for(sid, pid, lambda p: p["status"] == "up", "up again")
        alerts.wait_for(pid, "process_down", "resolved")

        # A restart without a gap: the new instance starts (a second later) before the
        # old one goes, so consecutive samples show the oldest start time increasing.
        time.sleep(1.1)  # oldest_start_unix has one-second resolution
        sleeper.start("3600")
        api.wait_for(sid, pid, lambda p: p["last_count"] == 2, "both instances seen")
        sleeper.kill(old)
        alerts.wait_for(pid, "process_restarted", "firing")

        busy.start("-c", "while :; do :; done")
        event = alerts.wait_for(hot_id, "process_cpu_high", "firing")
        assert event["value"] > 5 and event["threshold"] == 5
    finally:
        sleeper.kill_all()
        busy.kill_all()
        alerts.close()


def test_a_death_alerts_at_once_and_a_respawn_resolves_long_before_the_next_tick(stack, agent_for, tmp_path):
    """Agent interval 60 s: the kill is reported out of cadence (pidfd), and a new instance started
    once the alert is out (a supervisor's restart) is found by a respawn recheck, not the next tick."""
    urls, token = stack
    api = Api(urls["api_url"], token)
    server = api.create_server("e2e-exits")
    sid = server["id"]
    sleeper = RealProcesses(tmp_path, "sleep", "pwex")
    watched = api.client.post(f"/servers/{sid}/processes", json={"process_name": sleeper.name, "alert_on_down": True})
    assert watched.status_code == 201, watched.text
    pid = watched.json()["process"]["id"]

    alerts = AlertReader(urls["nats_url"], sid)
    first = sleeper.start("3600")
    # --name: the first tick (before the watch list arrives) already reports it.
    agent_for(sid, server["agent_key"], "--interval", "60", "--name", sleeper.name)
    try:
        api.wait_for(sid, pid, lambda p: p["status"] == "up" and p["last_count"] == 1, "up with count 1")
        killed_at = time.monotonic()
        sleeper.kill(first)
        alerts.wait_for(pid, "process_down", "firing")
        assert time.monotonic() - killed_at < 10  # no tick involved: the next one is a minute away
        sleeper.start("3600")  # the supervisor restarts it
        alerts.wait_for(pid, "process_down", "resolved")
        assert time.monotonic() - killed_at < 40  # a recheck (1, 3, 7, 15, 31 s after the death) found it
        api.wait_for(sid, pid, lambda p: p["status"] == "up" and p["last_count"] == 1, "up again")
    finally:
        sleeper.kill_all()
        alerts.close()
