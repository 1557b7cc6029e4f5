import pytest

from procwatch_agent.app import build_parser, load_settings

pytestmark = pytest.mark.unit


def test_env_is_enough(monkeypatch):
    monkeypatch.setenv("NATS_URL", "nats://broker:4222")
    monkeypatch.setenv("PROCWATCH_AGENT_SERVER_ID", "12")
    monkeypatch.setenv("PROCWATCH_AGENT_KEY", "pwa_secret")
    s = load_settings(build_parser().parse_args([]))
    assert (s.nats_url, s.server_id, s.key.get_secret_value()) == ("nats://broker:4222", 12, "pwa_secret")
    assert s.interval is None and s.buffer_ticks == 360
    assert "pwa_secret" not in repr(s)


def test_flags_override_env(monkeypatch):
    monkeypatch.setenv("PROCWATCH_AGENT_SERVER_ID", "12")
    monkeypatch.setenv("PROCWATCH_AGENT_KEY", "pwa_env")
    args = build_parser().parse_args(["--server-id", "7", "--agent-key", "pwa_flag", "--interval", "0.5",
                                      "--buffer-ticks", "5", "--name", "nginx", "--name", "sshd",
                                      "--nats-url", "nats://x:1"])
    s = load_settings(args)
    assert (s.server_id, s.key.get_secret_value(), s.interval, s.buffer_ticks) == (7, "pwa_flag", 0.5, 5)
    assert s.names == ["nginx", "sshd"] and s.nats_url == "nats://x:1"


def test_invalid_buffer_rejected(monkeypatch):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        load_settings(build_parser().parse_args(["--server-id", "1", "--buffer-ticks", "0"]))


@pytest.mark.parametrize(
    ("argv", "head", "agent_args"),
    [
        (["agent", "--once", "--server-id", "3"], ["agent"], ["--once", "--server-id", "3"]),
        (["--log-level", "DEBUG", "agent", "--name", "x"], ["--log-level", "DEBUG", "agent"], ["--name", "x"]),
        (["--log-level=DEBUG", "agent"], ["--log-level=DEBUG", "agent"], []),
        (["admin", "create-user", "--email", "agent"], ["admin", "create-user", "--email", "agent"], None),
    ],
)
def test_cli_hands_every_argument_after_agent_to_the_agent(argv, head, agent_args):
    from procwatch.cli import _split_agent_args

    assert _split_agent_args(argv) == (head, agent_args)


def test_nats_url_password_is_masked_for_logs():
    from procwatch_agent.runner import _redact

    assert _redact("nats://agent-12:s3cret@broker:4222") == "nats://agent-12:***@broker:4222"
    assert _redact("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"


def test_procwatch_agent_does_not_load_the_other_commands_dependencies():
    """The agent runs on every monitored server: `procwatch agent` keeps psycopg & co. out of it."""
    import subprocess
    import sys

    code = ("import sys, procwatch.cli as cli\n"
            "cli._run_agent = lambda args: print(args, 'psycopg' in sys.modules, 'sqlalchemy' in sys.modules) or 0\n"
            "sys.exit(cli.main(['--log-level', 'WARNING', 'agent', '--once']))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['--once'] False False"
