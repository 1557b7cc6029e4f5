"""One API app (real PostgreSQL, Redis, NATS) for the whole directory, driven in-process."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from procwatch_api.app import create_app
from procwatch_api.settings import ApiSettings
from procwatch_db.urls import libpq_url
from tests.support.factories import TestServer, TestUser, make_server, make_user


@asynccontextmanager
async def running_api(settings: ApiSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


def api_settings(database_url: str, redis_url: str, nats_url: str, **overrides) -> ApiSettings:
    return ApiSettings(
        database_url=database_url, redis_url=redis_url, nats_url=nats_url,
        **{"rate_limit_per_minute": 1_000_000, "failed_auth_per_minute": 1_000_000, "outbox_poll_interval_s": 0.2,
           **overrides},
    )


@pytest.fixture(scope="package")
async def client(database_url, redis_url, nats_url) -> AsyncIterator[httpx.AsyncClient]:
    async with running_api(api_settings(database_url, redis_url, nats_url)) as c:
        yield c


@pytest.fixture
def user(database_url) -> TestUser:
    return make_user(database_url, "pro")


@pytest.fixture
def server(database_url, user) -> TestServer:
    return make_server(database_url, user, "web-01.prod")


@pytest.fixture
def other_user(database_url) -> TestUser:
    return make_user(database_url, "pro")


def closed_port_url(scheme: str) -> str:
    """A URL on a local port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"{scheme}://127.0.0.1:{port}"


def sql(database_url: str, statement: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(libpq_url(database_url)) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def insert_samples(database_url: str, process_id: int, rows: list[tuple[datetime, int, int | None]]) -> None:
    """Samples (recorded_at, count, oldest_start_unix), bumping the counter and last_* the way ingest does."""
    with psycopg.connect(libpq_url(database_url)) as conn:
        with conn.cursor() as cur:
            cur.executemany(
                "insert into process_samples (watched_process_id, count, cpu_pct, memory_pct, oldest_start_unix,"
                " recorded_at) values (%s, %s, 1.5, 2.5, %s, %s)",
                [(process_id, count, start, at) for at, count, start in rows],
            )
        newest = max(rows, key=lambda r: r[0])
        conn.execute(
            "update watched_processes set samples_total = samples_total + %s, last_count = %s, last_cpu_pct = 1.5,"
            " last_memory_pct = 2.5, last_sample_at = %s, last_oldest_start_unix = %s where id = %s",
            (len(rows), newest[1], newest[0], newest[2], process_id),
        )


async def eventually(check: Callable[[], object], deadline_s: float = 5.0, interval: float = 0.05):
    """Poll `check` until it returns something truthy or the deadline passes; returns the last value."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value or time.monotonic() >= deadline:
            return value
        await asyncio.sleep(interval)


def utc(minutes_ago: float) -> datetime:
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).replace(microsecond=0)
