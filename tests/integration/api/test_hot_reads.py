"""The list and get routes read through repository.Reads (one statement with the token check) and
keep each process's restart window in memory: the answers stay exact as samples arrive."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from redis import asyncio as aioredis

from procwatch_api.ratelimit import RateLimiter
from procwatch_api.repository import GET_PROCESS_SQL
from procwatch_db import partitions
from procwatch_db.urls import libpq_url
from procwatch_api.errors import RateLimited
from procwatch_domain.secrets import hash_secret
from tests.integration.api.conftest import api_settings, closed_port_url, insert_samples, running_api, sql, utc
from tests.support.factories import make_process

pytestmark = pytest.mark.integration


async def restarts(client, user, server, pid) -> int:
    r = await client.get(f"/servers/{server.id}/processes/{pid}", headers=user.headers)
    assert r.status_code == 200, r.text
    return r.json()["recent_restarts"]


async def test_recent_restarts_stay_exact_as_samples_arrive_in_order_and_late(client, database_url, user, server):
    pid = make_process(database_url, server, "worker")
    insert_samples(database_url, pid, [(utc(60 - i), 1, 1000) for i in range(10)])
    assert await restarts(client, user, server, pid) == 0  # computed in SQL, then kept
    insert_samples(database_url, pid, [(utc(49), 1, 1000), (utc(48), 1, 2000)])
    assert await restarts(client, user, server, pid) == 1  # brought up to date from the newest samples
    insert_samples(database_url, pid, [(utc(47), 0, None), (utc(46), 1, 3000)])
    assert await restarts(client, user, server, pid) == 1  # down and up is not a restart
    # A late sample, older than everything cached: 500 -> 1000 is a restart the cache cannot see.
    insert_samples(database_url, pid, [(utc(61), 1, 500)])
    assert await restarts(client, user, server, pid) == 2
    # More new samples than the get route reads (100), with one restart among them.
    insert_samples(database_url, pid, [(utc(45 - i * 0.1), 1, 3000 if i < 120 else 4000) for i in range(150)])
    assert await restarts(client, user, server, pid) == 3


async def test_samples_older_than_a_day_do_not_count(client, database_url, user, server):
    pid = make_process(database_url, server, "old")
    insert_samples(database_url, pid, [(utc(60 * 30), 1, 10), (utc(60 * 29), 1, 20), (utc(60 * 23), 1, 30),
                                       (utc(5), 1, 40)])
    assert await restarts(client, user, server, pid) == 1  # 30 -> 40; 10 -> 20 -> 30 starts before the window
    assert await restarts(client, user, server, pid) == 1


async def test_a_token_revoked_is_401_on_the_get_route_right_away(client, database_url, user, server):
    pid = make_process(database_url, server, "nginx")
    assert (await client.get(f"/servers/{server.id}/processes/{pid}", headers=user.headers)).status_code == 200
    sql(database_url, "update api_tokens set revoked_at = now() where token_hash = %s", (hash_secret(user.token),))
    r = await client.get(f"/servers/{server.id}/processes/{pid}", headers=user.headers)
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"


async def test_postgres_down_is_a_fast_503_on_the_hot_routes(redis_url, nats_url):
    settings = api_settings(closed_port_url("postgresql"), redis_url, nats_url)
    async with running_api(settings) as c:
        for path in ("/servers/1/processes", "/servers/1/processes/1"):
            started = time.monotonic()
            r = await c.get(path, headers={"Authorization": "Bearer pwt_whatever"})
            assert r.status_code == 503 and r.json()["error"] == "service_unavailable", r.text
            assert time.monotonic() - started < 2.5


async def test_two_api_processes_share_a_tokens_limit_with_a_bounded_overshoot(redis_url):
    """Two limiters (two API processes) on one Redis, requests alternating faster than the flush interval:
    the token gets at least its limit and at most half a limit more (the other process's unflushed part)."""
    token_hash = hash_secret(f"pwt_{time.time_ns()}")
    limit = 20
    redis_a, redis_b = aioredis.Redis.from_url(redis_url), aioredis.Redis.from_url(redis_url)
    try:
        a = RateLimiter(redis_a, limit, flush_interval_s=60)
        b = RateLimiter(redis_b, limit, flush_interval_s=60)
        admitted = 0
        for i in range(4 * limit):
            try:
                await (a if i % 2 else b).check(token_hash)
                admitted += 1
            except RateLimited as exc:
                assert exc.status == 429 and exc.extra["limit"] == limit
    finally:
        await redis_a.aclose()
        await redis_b.aclose()
    assert limit <= admitted <= limit + limit // 2, admitted


async def test_one_process_is_exact_and_counts_reach_redis(redis_url):
    token_hash = hash_secret(f"pwt_{time.time_ns()}")
    redis = aioredis.Redis.from_url(redis_url)
    try:
        limiter = RateLimiter(redis, 10, flush_interval_s=60)
        outcomes = []
        for _ in range(15):
            try:
                await limiter.check(token_hash)
                outcomes.append(200)
            except RateLimited:
                outcomes.append(429)
        keys = await redis.keys(f"procwatch:ratelimit:{token_hash}:*")
        counted = 0
        for key in keys:
            counted += int(await redis.get(key))
    finally:
        await redis.aclose()
    # A minute boundary may fall inside the loop: then the new window admits again.
    assert outcomes[:10] == [200] * 10 and 429 in outcomes
    assert counted >= 10 - outcomes[10:].count(200)


async def test_concurrent_requests_during_a_flush_are_counted(redis_url):
    token_hash = hash_secret(f"pwt_{time.time_ns()}")
    redis = aioredis.Redis.from_url(redis_url)
    try:
        limiter = RateLimiter(redis, 50, flush_interval_s=60)

        async def one() -> int:
            try:
                await limiter.check(token_hash)
                return 200
            except RateLimited:
                return 429

        codes = await asyncio.gather(*(one() for _ in range(80)))
    finally:
        await redis.aclose()
    assert codes.count(200) == 50 or (codes.count(200) > 50 and codes.count(429) > 0), codes


async def test_the_newest_samples_come_newest_first_across_day_partitions(client, database_url, user, server):
    """The get statement aggregates the sorted subquery into arrays: the order must survive the merge of
    several daily partitions (and the default one), whatever order the rows were written in."""
    pid = make_process(database_url, server, "spread")
    minutes_ago = [m * 17.3 for m in range(160)]  # ~46 h: today, yesterday and the day before (UTC days)
    shuffled = sorted(minutes_ago, key=lambda m: (m * 7919) % 160)
    insert_samples(database_url, pid, [(utc(m), 1, int(m * 100)) for m in shuffled])
    r = await client.get(f"/servers/{server.id}/processes/{pid}", headers=user.headers)
    assert r.status_code == 200, r.text
    samples = r.json()["samples"]
    assert [s["oldest_start_unix"] for s in samples] == [int(m * 100) for m in minutes_ago[:100]]
    times = [s["recorded_at"] for s in samples]
    assert times == sorted(times, reverse=True) and len(set(times)) == 100


async def test_samples_older_than_the_restart_window_are_still_the_newest_shown(client, database_url, user, server):
    """The get statement looks among the last 24 h first; a process quiet since then still shows its newest
    samples (read across every partition), and one with enough recent samples is not read twice."""
    pid = make_process(database_url, server, "quiet")
    insert_samples(database_url, pid, [(utc(60 * 24 * d), 1, d) for d in (5, 3, 2)] + [(utc(1), 1, 0)])
    r = await client.get(f"/servers/{server.id}/processes/{pid}", headers=user.headers)
    assert r.status_code == 200, r.text
    assert [s["oldest_start_unix"] for s in r.json()["samples"]] == [0, 2, 3, 5]
    assert r.json()["samples_total"] == 4


def test_the_get_statement_opens_only_the_partitions_of_the_window(database_url):
    """With 90 days of daily partitions (the longest plan retention), the generic plan of the get statement
    prunes the days before `since` when the executor starts: it scans today's and yesterday's partitions,
    plus the days ahead and the default one, not all ~100."""
    with psycopg.connect(libpq_url(database_url), autocommit=True,
                         options="-c TimeZone=UTC -c plan_cache_mode=force_generic_plan") as conn:
        today = datetime.now(UTC).date()
        partitions.ensure_partitions(conn, today, back_days=90)
        since = (datetime.now(UTC) - timedelta(hours=24)).replace(tzinfo=None)
        params = {"h": "x", "sid": 1, "pid": 1, "n": 100, "since": since}
        conn.execute(GET_PROCESS_SQL, params, prepare=True)
        plan = conn.execute("explain (format json) " + GET_PROCESS_SQL, params, prepare=True).fetchone()[0][0]["Plan"]
        scanned = {node["Relation Name"] for node in _nodes(plan) if node.get("Relation Name", "").startswith("process_samples")}
    yesterday = partitions.partition_name(today - timedelta(days=1))
    assert partitions.partition_name(today) in scanned and yesterday in scanned
    assert partitions.partition_name(today - timedelta(days=3)) not in scanned
    assert len(scanned) <= 11, sorted(scanned)


def _nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)
