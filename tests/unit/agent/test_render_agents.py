"""deploy/nats/render_agents.py: the agent list in, the NATS users block out."""

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

SCRIPT = Path(__file__).resolve().parents[3] / "deploy" / "nats" / "render_agents.py"
HASH = "$2b$04$" + "a" * 53


@pytest.fixture(scope="module")
def ra():
    spec = importlib.util.spec_from_file_location("render_agents", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_agent_permissions_name_only_its_own_subjects(ra):
    assert ra.agent_permissions(12) == {
        "publish": ["agent.samples.12", "agent.config.12"],
        "subscribe": ["_INBOX.agent.12.>", "processes.changed.12"],
    }


def test_parse_json_and_csv(ra):
    assert ra.parse_agents(f'[{{"server_id": 3, "password_hash": "{HASH}"}}]') == [(3, HASH)]
    assert ra.parse_agents(f"server_id,password_hash\n# comment\n4,{HASH}\n5, {HASH}\n") == [(4, HASH), (5, HASH)]
    assert ra.parse_agents("") == []


@pytest.mark.parametrize("text", [f"0,{HASH}", "3,plaintext", f"3,{HASH}\n3,{HASH}", f"x,{HASH}"])
def test_parse_rejects_bad_rows(ra, text):
    with pytest.raises(ValueError):
        ra.parse_agents(text)


def test_render_quotes_hashes_and_references_the_services_password(ra):
    out = ra.render([(7, HASH), (2, HASH)])
    assert "password: $PROCWATCH_NATS_SERVICES_PASSWORD}" in out
    assert f'{{user: "agent-2", password: "{HASH}"' in out
    assert out.index('"agent-2"') < out.index('"agent-7"')
    assert 'publish: {allow: ["agent.samples.7", "agent.config.7"]}' in out
    with_hash = ra.render([], services_password_hash=HASH)
    assert f'{{user: "services", password: "{HASH}"}}' in with_hash
    with pytest.raises(ValueError):
        ra.render([], services_password_hash="plain")


def test_bcrypt_hash_is_accepted_by_the_parser(ra):
    hashed = ra.bcrypt_hash("s3cret", cost=4)
    assert ra.parse_agents(f"9,{hashed}") == [(9, hashed)]
