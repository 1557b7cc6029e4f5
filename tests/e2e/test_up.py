"""`procwatch up` as a new user runs it: real embedded servers, real child services."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from procwatch.embedded import free_port

pytestmark = pytest.mark.e2e


def _start_up(data_dir: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "NATS_URL")}
    return subprocess.Popen(
        [sys.executable, "-m", "procwatch.cli", "up", "--data-dir", str(data_dir), "--api-port", str(port),
         "--no-agent"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )


def _read_until(proc: subprocess.Popen, pattern: str, timeout: float = 120) -> str:
    """Lines of output until one matches `pattern` (or the deadline passes)."""
    seen = []
    deadline = time.monotonic() + timeout
    os.set_blocking(proc.stdout.fileno(), False)
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            seen.append(line)
            if re.search(pattern, line):
                return "".join(seen)
        elif proc.poll() is not None:
            break
        else:
            time.sleep(0.05)
    raise AssertionError(f"no line matched {pattern!r}; output:\n{''.join(seen)}")


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=60)


def test_up_serves_the_api_with_a_demo_token_and_reuses_its_data(server_tmp_path):
    data_dir, port = server_tmp_path / "pw", free_port()
    proc = _start_up(data_dir, port)
    try:
        out = _read_until(proc, r"Ctrl-C stops everything")
        stack = json.loads((data_dir / "stack.json").read_text())
        assert {"api_url", "nats_url", "database_url", "redis_url"} <= set(stack)
        # Its URLs carry the servers' generated passwords: the file is its owner's alone (docs/security.md).
        assert (data_dir / "stack.json").stat().st_mode & 0o777 == 0o600
        assert data_dir.stat().st_mode & 0o077 in (0, 0o011)  # 0700 (0711 when PostgreSQL runs as its own user)
        for key, user in (("database_url", "postgres:"), ("redis_url", ":"), ("nats_url", "services:")):
            assert f"//{user}" in stack[key] and "@" in stack[key], key
        assert stack["api_url"] == f"http://127.0.0.1:{port}"
        curl = re.search(r"curl -H 'Authorization: Bearer (\S+)' (\S+)", out)
        assert curl, out
        token, url = curl.groups()
        resp = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert resp.status_code == 200, resp.text
        demo = {"postgres", "nats-server", "redis-server"}
        assert {p["process_name"] for p in resp.json()["processes"]} == demo
        assert {p["status"] for p in resp.json()["processes"]} == {"pending"}  # no agent runs here
        server_id = resp.json()["server"]["id"]
        created = httpx.post(
            f"{stack['api_url']}/servers/{server_id}/processes",
            json={"process_name": "nginx"}, headers={"Authorization": f"Bearer {token}"}, timeout=10,
        )
        assert created.status_code == 201, created.text
        # every service is running under `up`
        children = subprocess.run(["pgrep", "-f", "procwatch.cli (api|ingest|alerter)"], capture_output=True, text=True)
        assert len(children.stdout.split()) >= 3, children.stdout
        # ... and every worker serves Prometheus metrics on its own health port (stack.json names them).
        assert set(stack["metrics"]) == {"api", "ingest", "alerter", "notifier"}
        for service, metrics_url in stack["metrics"].items():
            scraped = httpx.get(metrics_url, timeout=10)
            assert scraped.status_code == 200 and "procwatch_" in scraped.text, service
    finally:
        assert _stop(proc) == 0

    # Everything stopped: nothing listens on the API port any more.
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)

    # A second `up` on the same directory keeps the data and creates no new demo user.
    proc = _start_up(data_dir, port)
    try:
        out = _read_until(proc, r"Ctrl-C stops everything")
        assert "its token was printed on the first run" in out
        listed = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert {p["process_name"] for p in listed.json()["processes"]} == demo | {"nginx"}
    finally:
        assert _stop(proc) == 0


def test_up_runs_the_agent_and_prints_a_one_time_dashboard_link(server_tmp_path):
    data_dir, port = server_tmp_path / "pw", free_port()
    env_overrides = {"PROCWATCH_INGEST_INTERVAL_SECONDS": "1"}  # a short tick keeps the test quick
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "NATS_URL")}
    proc = subprocess.Popen(  # no flag: the agent runs by default
        [sys.executable, "-m", "procwatch.cli", "up", "--data-dir", str(data_dir), "--api-port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**env, **env_overrides},
    )
    try:
        out = _read_until(proc, r"Ctrl-C stops everything")
        token, url = re.search(r"curl -H 'Authorization: Bearer (\S+)' (\S+)", out).groups()
        assert f"dashboard:    http://127.0.0.1:{port}/ui" in out
        link = re.search(r"sign in once: (\S+)", out).group(1)
        with httpx.Client(timeout=10, follow_redirects=True) as browser:
            signed_in = browser.get(link)  # follows the redirect to the fleet page
            assert signed_in.status_code == 200 and "Fleet" in signed_in.text, signed_in.text[:500]
        assert httpx.get(link, timeout=10, follow_redirects=False).status_code == 401  # one use
        deadline = time.monotonic() + 30
        while True:
            body = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
            postgres = next(p for p in body["processes"] if p["process_name"] == "postgres")
            if postgres["status"] == "up":
                break
            assert time.monotonic() < deadline, body
            time.sleep(0.2)
        # The embedded PostgreSQL runs several backend processes, all named postgres.
        assert postgres["last_count"] >= 2
        assert body["server"]["last_agent_version"]
        assert {p["process_name"] for p in body["processes"]} == {"postgres", "nats-server", "redis-server"}
        # The agent came in as itself (agent-<id> + its key, checked by the auth callout responder).
        assert "agent admitted" in (data_dir / "nats-auth.log").read_text()
    finally:
        assert _stop(proc) == 0


def test_signals_during_the_stop_do_not_interrupt_it(server_tmp_path):
    # Ctrl-C pressed twice, or a supervisor's SIGTERM after the Ctrl-C: the clean stop runs to its end.
    data_dir, port = server_tmp_path / "pw", free_port()
    proc = _start_up(data_dir, port)
    try:
        _read_until(proc, r"Ctrl-C stops everything")
        ports = json.loads((data_dir / "stack.json").read_text())["ports"]
        proc.send_signal(signal.SIGINT)
        _read_until(proc, r"stopping", timeout=30)
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        rest = proc.stdout.read() or ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in rest, rest
    assert "stopped" in rest, rest
    for name, server_port in ports.items():  # every embedded server is down
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{server_port}/", timeout=1)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)


def test_up_delivers_an_alert_by_email_into_its_mail_dir(tmp_path):
    """A new user's first alert: an email channel, an alert on ALERTS, a .eml in DIR/mail/."""
    import asyncio
    from datetime import UTC, datetime

    import nats

    from procwatch_contracts import subjects
    from procwatch_contracts.messages import AlertEvent, AlertProcess, AlertServer

    data_dir, port = tmp_path / "pw", free_port()
    proc = _start_up(data_dir, port)
    try:
        out = _read_until(proc, r"Ctrl-C stops everything")
        stack = json.loads((data_dir / "stack.json").read_text())
        assert stack["smtp_url"].startswith("smtp://127.0.0.1:")
        token, url = re.search(r"curl -H 'Authorization: Bearer (\S+)' (\S+)", out).groups()
        headers = {"Authorization": f"Bearer {token}"}
        listed = httpx.get(url, headers=headers, timeout=10).json()
        created = httpx.post(f"{stack['api_url']}/channels", headers=headers, timeout=10,
                             json={"type": "email", "name": "me", "to": ["me@example.test"]})
        assert created.status_code == 201, created.text
        user_id = json.loads((data_dir / "demo.json").read_text())["user_id"]
        server = listed["server"]
        event = AlertEvent(id=f"alert-e2e-{time.time_ns()}", type="process_down", state="firing",
                           occurred_at=datetime.now(UTC), user_id=user_id,
                           server=AlertServer(id=server["id"], hostname=server["hostname"]),
                           process=AlertProcess(id=1, process_name="postgres"), value=0.0)

        async def publish():
            nc = await nats.connect(stack["nats_url"])
            try:
                await nc.jetstream().publish(subjects.alerts(server["id"], 1), event.model_dump_json().encode(),
                                             headers={"Nats-Msg-Id": event.id})
            finally:
                await nc.close()

        asyncio.run(publish())
        deadline = time.monotonic() + 60
        while not list((data_dir / "mail").glob("*.eml")):
            assert time.monotonic() < deadline, (data_dir / "notifier.log").read_text()[-3000:]
            time.sleep(0.2)
        mail = next((data_dir / "mail").glob("*.eml")).read_text()
        assert "To: me@example.test" in mail and "postgres is down on" in mail and server["hostname"] in mail
    finally:
        assert _stop(proc) == 0
