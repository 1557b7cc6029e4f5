"""Finding 7 (issue 14): docker-compose.yml fell back to well-known passwords and published its
ports on every interface. Read without Docker: the file is parsed, and its variables interpolated
the way compose does (`${VAR:?message}` refuses, `${VAR:-default}` defaults)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
SECRETS = ("POSTGRES_PASSWORD", "PROCWATCH_NATS_SERVICES_PASSWORD", "REDIS_PASSWORD", "PROCWATCH_SECRETS_KEY")
VARIABLE = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?:(?P<op>:\?|:-|\?|-)(?P<arg>[^}]*))?\}")


class MissingVariable(Exception):
    pass


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation for the forms this file uses (`$$` is a literal `$`)."""

    def one(m: re.Match) -> str:
        name, op, arg = m.group("name"), m.group("op"), m.group("arg")
        value = env.get(name)
        if op in (":?", "?") and not value:
            raise MissingVariable(f"{name}: {arg}")
        if op in (":-", "-") and not value:
            return arg
        return value or ""

    return VARIABLE.sub(one, text.replace("$$", "\0")).replace("\0", "$")


def rendered(env: dict[str, str]) -> dict:
    return yaml.safe_load(interpolate(COMPOSE_FILE.read_text(), env))


def test_no_password_has_a_default():
    text = COMPOSE_FILE.read_text()
    for m in VARIABLE.finditer(text):
        if "PASSWORD" in m.group("name"):
            assert m.group("op") == ":?", m.group(0)
    assert "procwatch-dev" not in text


@pytest.mark.parametrize("missing", SECRETS)
def test_compose_refuses_to_start_without_each_secret(missing):
    env = {name: "s3cret" for name in SECRETS if name != missing}
    with pytest.raises(MissingVariable, match=missing):
        rendered(env)


def test_every_secret_reaches_its_server_and_the_services():
    env = {name: f"{name.lower()}-value" for name in SECRETS}
    services = rendered(env)["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == env["POSTGRES_PASSWORD"]
    assert services["nats"]["environment"]["PROCWATCH_NATS_SERVICES_PASSWORD"] == env["PROCWATCH_NATS_SERVICES_PASSWORD"]
    redis = services["redis"]
    assert "--requirepass" in " ".join(redis["command"])
    assert redis["environment"]["REDIS_PASSWORD"] == env["REDIS_PASSWORD"]
    for name in ("api", "ingest", "alerter", "migrate"):
        urls = services[name]["environment"]
        assert f":{env['POSTGRES_PASSWORD']}@postgres:" in urls["DATABASE_URL"]
        assert f":{env['REDIS_PASSWORD']}@redis:" in urls["REDIS_URL"]
        assert f"services:{env['PROCWATCH_NATS_SERVICES_PASSWORD']}@nats:" in urls["NATS_URL"]


def _published(services: dict) -> list[str]:
    return [str(port) for svc in services.values() for port in svc.get("ports", [])]


def test_ports_are_published_on_loopback_unless_told_otherwise():
    env = {name: "s3cret" for name in SECRETS}
    ports = _published(rendered(env)["services"])
    assert ports and all(p.startswith("127.0.0.1:") for p in ports), ports
    opened_services = rendered({**env, "PROCWATCH_BIND_ADDRESS": "0.0.0.0"})["services"]
    opened = _published({n: svc for n, svc in opened_services.items() if "profiles" not in svc})
    assert all(p.startswith("0.0.0.0:") for p in opened), opened
    # Prometheus and Grafana (profile `monitoring`) stay on loopback whatever the bind address.
    monitoring = _published({n: svc for n, svc in opened_services.items() if "profiles" in svc})
    assert monitoring and all(p.startswith("127.0.0.1:") for p in monitoring), monitoring
    # PostgreSQL and Redis are never published: only the compose network reaches them.
    services = rendered(env)["services"]
    assert "ports" not in services["postgres"] and "ports" not in services["redis"]
