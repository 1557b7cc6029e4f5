"""Findings 1-3 (issue 14): another local user attacks the embedded servers `procwatch up` runs.

Each test plays the attacker: a second client on the same machine that knows the port (any local
user can list listening sockets) but not the generated passwords (files of mode 0600)."""

from __future__ import annotations

import asyncio
import stat
import time

import nats
import psycopg
import pytest
import redis
from nats.js.api import ConsumerConfig

from procwatch.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedRedis
from procwatch_contracts import subjects
from procwatch_ingest.auth_callout import NatsAuthSettings, serve
from procwatch_messaging.streams import ensure_streams
from tests.support.factories import make_server, make_user
from tests.support.servers import server_tmp_dir

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def own_servers():
    """Servers of this module's own, started exactly as `procwatch up` starts them (outside pytest's
    basetemp, for the reason tests/support/servers.py's `server_tmp_path` gives)."""
    with server_tmp_dir() as root:
        servers = [EmbeddedPostgres(root / "postgres"), EmbeddedRedis(root / "redis"), EmbeddedNats(root / "nats")]
        for server in servers:
            server.start()
        yield dict(zip(("postgres", "redis", "nats"), servers, strict=True))
        for server in reversed(servers):
            server.stop()


def test_postgres_refuses_a_local_client_without_the_password(own_servers):
    pg = own_servers["postgres"]
    for conninfo in (
        f"host=127.0.0.1 port={pg.port} user=postgres dbname=postgres",  # TCP, no password
        f"host=127.0.0.1 port={pg.port} user=postgres dbname=postgres password=postgres",
        f"host={pg.data_dir.resolve()} port={pg.port} user=postgres dbname=postgres",  # the Unix socket
    ):
        with pytest.raises(psycopg.OperationalError) as excinfo, psycopg.connect(conninfo, connect_timeout=5) as conn:
            conn.execute("copy (select 1) to program 'true'")  # what an attacker would run next
        assert "password" in str(excinfo.value).lower(), conninfo
    # The services' URL (with the generated password) works, and the password rests in a 0600 file.
    with psycopg.connect(pg.url, connect_timeout=5) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    assert stat.S_IMODE(pg.secret_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(pg.data_dir.stat().st_mode) == 0o700  # the socket's directory


def test_redis_refuses_a_client_without_the_password(own_servers):
    r = own_servers["redis"]
    anonymous = redis.Redis(host="127.0.0.1", port=r.port, socket_timeout=5)
    with pytest.raises(redis.AuthenticationError):
        anonymous.get("anything")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=r.port, password="guess", socket_timeout=5).ping()
    assert redis.Redis.from_url(r.url, socket_timeout=5).ping()
    assert stat.S_IMODE(r.secret_file.stat().st_mode) == 0o600
    assert r.password not in " ".join(r.command())  # never on a command line other users can read


async def _refused(url: str) -> str:
    with pytest.raises(nats.errors.Error) as excinfo:
        await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=5)
    return str(excinfo.value).lower()


async def test_nats_refuses_anonymous_clients_forged_events_and_alert_readers(own_servers):
    server = own_servers["nats"]
    svc = await nats.connect(server.url)
    try:
        await ensure_streams(svc.jetstream())
        # Anonymous: no connection at all, so no forged `samples.recorded.<id>`, no fake ALERTS
        # event and no consumer on ALERTS reading every tenant's alerts.
        assert "authorization violation" in await _refused(f"nats://127.0.0.1:{server.port}")
        assert "authorization violation" in await _refused(f"nats://services:guess@127.0.0.1:{server.port}")
        # Only the services' messages reached the streams.
        for stream in (subjects.SAMPLE_EVENTS_STREAM, subjects.ALERTS_STREAM):
            assert (await svc.jetstream().stream_info(stream)).state.messages == 0
    finally:
        await svc.close()


async def _violation(errors: list[str], text: str, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any("permissions violation" in e.lower() and text.lower() in e.lower() for e in errors):
            return True
        await asyncio.sleep(0.02)
    return False


async def test_an_agent_gets_in_with_its_own_key_and_only_its_own_subjects(own_servers, database_url):
    """The auth callout responder admits `agent-<id>` with that server's key, with deploy/'s per-agent
    permissions: a key cannot forge another server's samples, events or alerts, nor read streams."""
    server = own_servers["nats"]
    user = make_user(database_url)
    mine, other = make_server(database_url, user), make_server(database_url, user)
    stop = asyncio.Event()
    responder = asyncio.create_task(serve(NatsAuthSettings(
        database_url=database_url, nats_url=server.url, issuer_seed=server.issuer_seed), stop))
    svc = await nats.connect(server.url)
    errors: list[str] = []

    async def on_error(exc):
        errors.append(str(exc))

    try:
        await ensure_streams(svc.jetstream())
        await svc.jetstream().add_consumer(subjects.AGENT_SAMPLES_STREAM, ConsumerConfig(
            durable_name="stands-in-for-ingest", filter_subject=subjects.AGENT_SAMPLES_SUBJECTS))
        agent_url = server.agent_url(mine.id, mine.agent_key)
        deadline = time.monotonic() + 20  # the responder subscribes in the background
        while True:
            try:
                agent = await nats.connect(agent_url, allow_reconnect=False, max_reconnect_attempts=0,
                                           connect_timeout=5, error_cb=on_error, inbox_prefix=f"_INBOX.agent.{mine.id}")
                break
            except nats.errors.Error:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        try:
            ack = await agent.jetstream().publish(subjects.agent_samples(mine.id), b"{}", timeout=5)
            assert ack.stream == subjects.AGENT_SAMPLES_STREAM
            for forbidden in (subjects.agent_samples(other.id), subjects.samples_recorded(other.id),
                              subjects.alerts(other.id, 1), "$JS.API.STREAM.NAMES",
                              f"$JS.API.CONSUMER.CREATE.{subjects.ALERTS_STREAM}"):
                await agent.publish(forbidden, b"{}")
                await agent.flush()
                assert await _violation(errors, f'Publish to "{forbidden}"'), forbidden
            await agent.subscribe(subjects.ALERTS_SUBJECTS)
            await agent.flush()
            assert await _violation(errors, f'Subscription to "{subjects.ALERTS_SUBJECTS}"')
        finally:
            await agent.close()
        # A wrong key, another server's key, or a made-up user: refused.
        for url in (server.agent_url(mine.id, "pwa_wrong"), server.agent_url(mine.id, other.agent_key),
                    server.agent_url(10**12, mine.agent_key), f"nats://admin:{mine.agent_key}@127.0.0.1:{server.port}"):
            assert "authorization violation" in await _refused(url)
    finally:
        stop.set()
        await responder
        await svc.close()


def test_a_data_directory_made_before_passwords_is_locked_down_on_its_next_start(server_tmp_path):
    """`up` on a data directory an older version initialised with `--auth=trust`."""
    import shutil
    import subprocess

    from procwatch.embedded import PG_SYSTEM_USER, _make_traversable

    pg = EmbeddedPostgres(server_tmp_path / "postgres")
    pg.data_dir.mkdir()
    as_root = pg.popen_kwargs()
    if as_root:
        _make_traversable(pg.data_dir)
        shutil.chown(pg.data_dir, PG_SYSTEM_USER, PG_SYSTEM_USER)
    subprocess.run([str(pg.bin_dir / "initdb"), "-D", str(pg.data_dir), "--auth=trust", "-U", "postgres",
                    "--locale=C"], check=True, capture_output=True, **as_root)
    pg.start()
    try:
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(f"host=127.0.0.1 port={pg.port} user=postgres dbname=postgres", connect_timeout=5)
        with psycopg.connect(pg.url, connect_timeout=5) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        pg.stop()
