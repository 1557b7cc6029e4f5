"""Session-wide fixtures: real servers (see tests/support/servers.py) and a fresh database."""

from __future__ import annotations

import os
from contextlib import ExitStack

import pytest

from tests.support.servers import ResolvedServers, create_fresh_database, server_tmp_dir, start_servers


@pytest.fixture(scope="session")
def servers() -> ResolvedServers:
    with ExitStack() as stack:
        yield start_servers(stack)


@pytest.fixture(scope="session")
def database_url(servers: ResolvedServers) -> str:
    return create_fresh_database(servers.postgres_url)


@pytest.fixture(scope="session")
def redis_url(servers: ResolvedServers) -> str:
    return servers.redis_url


@pytest.fixture(scope="session")
def nats_url(servers: ResolvedServers) -> str:
    return servers.nats_url


@pytest.fixture(scope="session")
def nats_cluster():
    """A 3-node NATS cluster of this session's own (started on first use; tests/support/cluster.py)."""
    from tests.support.cluster import running_nats_cluster

    with running_nats_cluster(3) as cluster:
        yield cluster


@pytest.fixture
def server_tmp_path():
    """`tmp_path` for tests that start an embedded PostgreSQL (see `server_tmp_dir`)."""
    with server_tmp_dir() as path:
        yield path


@pytest.fixture(scope="session")
async def js(nats_url):
    """JetStream on the session's NATS, with the streams declared (services declare them in the
    background when they start: a test never races that)."""
    import nats

    from procwatch_messaging.streams import ensure_streams

    nc = await nats.connect(nats_url)
    jetstream = nc.jetstream()
    await ensure_streams(jetstream)
    yield jetstream
    await nc.close()
