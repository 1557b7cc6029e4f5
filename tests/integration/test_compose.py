"""docker-compose.yml: its shape (always), `docker compose config` (when the compose
plugin is installed), and the whole stack end to end (when a Docker engine answers)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
SERVICES_PASSWORD = os.environ.get("PROCWATCH_NATS_SERVICES_PASSWORD", "procwatch-dev-services")


def compose_plugin_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    out = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
    return out.returncode == 0


def docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.mark.unit
def test_compose_declares_the_production_like_stack(compose):
    services = {name: svc for name, svc in compose["services"].items() if "profiles" not in svc}
    assert set(services) == {"nats", "postgres", "redis", "migrate", "api", "ingest", "alerter", "notifier"}

    nats = services["nats"]
    assert nats["image"].startswith("nats:")
    assert "-js" in nats["command"] and "/etc/nats/nats.conf" in nats["command"]
    assert "./deploy/nats:/etc/nats:ro" in nats["volumes"] and "nats-data:/data" in nats["volumes"]
    assert "/healthz" in " ".join(nats["healthcheck"]["test"])
    assert services["postgres"]["image"] == "postgres:16"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["redis"]["image"].startswith("redis:") and services["redis"]["healthcheck"]
    assert set(compose["volumes"]) == {"nats-data", "postgres-data", "prometheus-data", "grafana-data"}

    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    api = services["api"]
    assert api["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert api["depends_on"]["nats"]["condition"] == "service_healthy"
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "${PROCWATCH_BIND_ADDRESS:-127.0.0.1}:8000:8000" in api["ports"] and "/healthz" in " ".join(api["healthcheck"]["test"])
    for name in ("api", "ingest", "alerter", "notifier"):
        svc = services[name]
        assert svc["restart"] == "unless-stopped"
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
        assert svc["command"][0] == name
        env = svc["environment"]
        assert {"DATABASE_URL", "REDIS_URL", "NATS_URL"} <= set(env)
        assert env["NATS_URL"].startswith("nats://services:") and env["NATS_URL"].endswith("@nats:4222")
        assert svc["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    # the workers' health port (and /metrics) on the compose network, where Prometheus scrapes it
    for name in ("ingest", "alerter", "notifier"):
        env = services[name]["environment"]
        assert env[f"PROCWATCH_{name.upper()}_HEALTH_PORT"] == "8081"
        assert env[f"PROCWATCH_{name.upper()}_HEALTH_HOST"] == "0.0.0.0"
    # the files the compose file refers to exist
    assert (REPO / "deploy" / "Dockerfile").is_file()
    assert (REPO / "deploy" / "nats" / "nats.conf").is_file() and (REPO / "deploy" / "nats" / "auth.conf").is_file()


@pytest.mark.unit
def test_the_monitoring_profile_runs_prometheus_and_grafana_on_loopback_with_deploy_files(compose):
    monitoring = {name: svc for name, svc in compose["services"].items() if "monitoring" in svc.get("profiles", ())}
    assert set(monitoring) == {"prometheus", "grafana"}
    for svc in monitoring.values():
        assert all(str(port).startswith("127.0.0.1:") for port in svc["ports"]), svc["ports"]
        for volume in svc["volumes"]:
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), source
    assert "./deploy/prometheus:/etc/prometheus:ro" in monitoring["prometheus"]["volumes"]
    # Grafana gets no default admin password: it refuses to start without the operator's.
    assert monitoring["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] is None
    assert "GF_SECURITY_ADMIN_PASSWORD" in " ".join(monitoring["grafana"]["entrypoint"])


@pytest.mark.integration
@pytest.mark.skipif(not compose_plugin_answers(), reason="the `docker compose` plugin is not installed")
def test_docker_compose_config_is_valid():
    # `docker compose config` is client-side: it needs the compose plugin, not an engine.
    # It refuses to render without its secrets (tests/security/test_compose_secrets.py).
    secrets = {"POSTGRES_PASSWORD": "x", "PROCWATCH_NATS_SERVICES_PASSWORD": "x", "REDIS_PASSWORD": "x",
               "PROCWATCH_SECRETS_KEY": "x"}
    out = subprocess.run(["docker", "compose", "-f", str(COMPOSE_FILE), "config", "-q"], capture_output=True,
                         text=True, timeout=60, cwd=REPO, env={**os.environ, **secrets})
    assert out.returncode == 0, out.stderr


@pytest.mark.e2e
@pytest.mark.skipif(not docker_engine_answers(), reason="no Docker engine answers")
def test_compose_stack_end_to_end(tmp_path):
    import httpx
    from testcontainers.compose import DockerCompose

    from procwatch_agent.runner import Agent
    from procwatch_agent.settings import AgentSettings
    from tests.integration.agent.procs import program_copy, spawn, stop, unique_name

    stack = DockerCompose(context=str(REPO), compose_file_name="docker-compose.yml", build=True, wait=False)
    with stack:
        api = "http://127.0.0.1:8000"
        stack.wait_for(f"{api}/healthz")
        created = subprocess.run(
            ["docker", "compose", "-f", str(COMPOSE_FILE), "run", "--rm", "-T", "api",
             "admin", "create-user", "--email", f"e2e-{uuid.uuid4().hex[:8]}@example.com", "--json"],
            capture_output=True, text=True, timeout=300, cwd=REPO, check=True)
        token = json.loads(created.stdout.strip().splitlines()[-1])["token"]
        headers = {"Authorization": f"Bearer {token}"}
        name = unique_name()
        proc = spawn(program_copy(tmp_path, name), "300")
        try:
            with httpx.Client(base_url=api, headers=headers, timeout=10) as http:
                server = http.post("/servers", json={"hostname": "e2e-host"}).raise_for_status().json()["server"]
                process = http.post(f"/servers/{server['id']}/processes",
                                    json={"process_name": name}).raise_for_status().json()["process"]

                async def one_tick() -> None:
                    agent = Agent(AgentSettings(nats_url=f"nats://services:{SERVICES_PASSWORD}@127.0.0.1:4222",
                                                server_id=server["id"], key=server["agent_key"]))
                    agent.start_connecting()
                    try:
                        assert await agent.wait_connected(30)
                        await agent.tick()
                        assert agent.names == [name]  # the watch list came from ingest
                        assert agent.publisher.published == 1
                    finally:
                        await agent.close()

                asyncio.run(one_tick())
                deadline = time.monotonic() + 60
                detail = {}
                while time.monotonic() < deadline:
                    detail = http.get(f"/servers/{server['id']}/processes/{process['id']}").json()
                    if detail.get("process", {}).get("last_count") == 1:
                        break
                    time.sleep(0.5)
                assert detail["process"]["last_count"] == 1 and detail["process"]["status"] == "up", detail
                assert detail["samples_total"] == 1
        finally:
            stop(proc)
