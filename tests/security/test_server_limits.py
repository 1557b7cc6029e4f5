"""Issue 14, finding 6: a user could create servers without limit. Now each plan has a per-user server
limit (plans.max_servers), answered 402 plan_limit_reached with scope "servers_per_user", and
concurrent creates cannot exceed it."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.api.conftest import api_settings, running_api, sql
from tests.support.factories import make_user

pytestmark = pytest.mark.integration


async def test_a_user_cannot_create_more_servers_than_the_plan_allows(database_url, redis_url, nats_url):
    user = make_user(database_url, "hobby")
    limit = sql(database_url, "select max_servers from plans where name = 'hobby'")[0][0]
    async with running_api(api_settings(database_url, redis_url, nats_url)) as client:
        # As an attacker would: many creates at once, racing each other.
        answers = await asyncio.gather(*(
            client.post("/servers", json={"hostname": f"host-{i}"}, headers=user.headers) for i in range(limit + 5)
        ))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [201] * limit + [402] * 5
    refused = next(r.json() for r in answers if r.status_code == 402)
    assert refused["error"] == "plan_limit_reached" and refused["scope"] == "servers_per_user"
    assert refused["plan"] == "hobby" and refused["limit"] == limit and refused["current_count"] == limit
    assert sql(database_url, "select count(*) from servers where user_id = %s", (user.id,))[0][0] == limit


async def test_the_limit_is_editable_in_the_plans_table(database_url, redis_url, nats_url):
    user = make_user(database_url, "scale")
    sql(database_url, "insert into plans (name, max_processes_per_server, retention_days, max_servers)"
        " values ('tiny-test', 1, 1, 1) on conflict (name) do nothing")
    sql(database_url, "update users set plan = 'tiny-test' where id = %s", (user.id,))
    async with running_api(api_settings(database_url, redis_url, nats_url)) as client:
        assert (await client.post("/servers", json={"hostname": "a"}, headers=user.headers)).status_code == 201
        second = await client.post("/servers", json={"hostname": "b"}, headers=user.headers)
    assert second.status_code == 402 and second.json()["limit"] == 1
