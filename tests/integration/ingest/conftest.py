"""The ingest service running in the test's event loop, and helpers to talk to it over NATS."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import nats
import orjson
import psycopg
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from procwatch_contracts import subjects
from procwatch_db.urls import libpq_url
from procwatch_ingest.app import IngestApp
from procwatch_ingest.settings import IngestSettings


def ingest_settings(database_url: str, nats_url: str, **overrides) -> IngestSettings:
    values = dict(
        database_url=database_url,
        nats_url=nats_url,
        durable=f"test-ingest-{uuid.uuid4().hex[:8]}",
        watchlist_queue=f"test-ingest-{uuid.uuid4().hex[:8]}",
        deliver_policy="new",
        batch_timeout_ms=20,
        retry_base_s=0.1,
        retry_max_s=0.5,
        pool_timeout_s=1.0,
        process_cache_ttl_s=0.5,
    )
    values.update(overrides)
    return IngestSettings(**values)


@pytest.fixture(scope="module")
async def ingest(database_url, nats_url):
    app = IngestApp(ingest_settings(database_url, nats_url))
    await app.start()
    yield app
    await app.stop()


@pytest.fixture(scope="module")
async def nc(nats_url):
    client = await nats.connect(nats_url)
    yield client
    await client.drain()


def sample_body(server_id: int, sampled_at: datetime, processes: list[dict], agent_version: str = "2.4.1") -> bytes:
    return orjson.dumps({
        "v": 1, "server_id": server_id, "agent_version": agent_version,
        "sampled_at": sampled_at.astimezone(UTC).isoformat().replace("+00:00", "Z"), "processes": processes,
    })


def reading(name: str, count: int = 1, cpu: float = 1.0, mem: float = 1.0, oldest: int | None = 1716566400) -> dict:
    return {"process_name": name, "count": count, "cpu_pct": cpu, "memory_pct": mem, "oldest_start_unix": oldest}


async def publish(nc, server, data: bytes, *, key: str | None = "__server__", msg_id: str | None = None,
                  subject: str | None = None) -> None:
    headers = {"Nats-Msg-Id": msg_id or uuid.uuid4().hex}
    key = server.agent_key if key == "__server__" else key
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    await nc.jetstream().publish(subject or subjects.agent_samples(server.id), data, headers=headers)


async def publish_sample(nc, server, sampled_at: datetime, processes: list[dict], agent_version: str = "2.4.1",
                         **kw) -> None:
    await publish(nc, server, sample_body(server.id, sampled_at, processes, agent_version), **kw)


async def eventually(check: Callable[[], Awaitable | object], timeout: float = 10.0, interval: float = 0.05):
    """Poll `check` until it returns a truthy value (awaited if needed) or the deadline passes."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


def query(database_url: str, sql: str, params=()) -> list[tuple]:
    with psycopg.connect(libpq_url(database_url)) as conn:
        return conn.execute(sql, params).fetchall()


async def stream_messages(nc, stream: str, subject: str, min_count: int, timeout: float = 10.0) -> list:
    """Every message on `subject` in `stream` (from the start), waiting until at least `min_count` arrived."""
    js = nc.jetstream()
    sub = await js.pull_subscribe(subject, stream=stream,
                                  config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, inactive_threshold=30))
    got: list = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                msgs = await sub.fetch(100, timeout=0.2)
            except (nats.errors.TimeoutError, TimeoutError):
                msgs = []
            for m in msgs:
                await m.ack()
            got += msgs
            if len(got) >= min_count and not msgs:
                break
    finally:
        await sub.unsubscribe()
    return got


def now_utc(offset_s: float = 0) -> datetime:
    return (datetime.now(UTC) + timedelta(seconds=offset_s)).replace(microsecond=0)
