"""Ingest stamps a server's liveness (issue 15): last_seen_at on the broker's clock, whatever the
agent's clock says, for a sample or the empty-list heartbeat, never for a refused message."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from tests.integration.ingest.conftest import eventually, now_utc, publish_sample, query, reading
from tests.support.factories import make_process, make_server, make_user

pytestmark = pytest.mark.integration


def liveness(database_url, server) -> tuple:
    return query(database_url, "select last_seen_at, offline_deadline_at, offline_after_s from servers where id = %s",
                 (server.id,))[0]


@pytest.mark.parametrize("agent_clock_s", [-7200, 0, 240], ids=["agent-2h-behind", "agent-in-sync", "agent-4min-ahead"])
async def test_a_heartbeat_stamps_broker_time_not_the_agents_clock(ingest, nc, database_url, agent_clock_s):
    server = make_server(database_url, make_user(database_url))
    assert liveness(database_url, server)[0] is None
    before = datetime.now(UTC)
    await publish_sample(nc, server, now_utc(agent_clock_s), [])  # the empty-list heartbeat
    await eventually(lambda: liveness(database_url, server)[0] is not None)
    seen, deadline, after_s = liveness(database_url, server)
    # The broker stored it while this test ran (the agent's sampled_at is hours or minutes off).
    assert before - timedelta(seconds=1) <= seen <= datetime.now(UTC) + timedelta(seconds=1)
    assert deadline == seen + timedelta(seconds=after_s)


async def test_a_sample_stamps_and_a_later_message_moves_it_forward(ingest, nc, database_url):
    server = make_server(database_url, make_user(database_url))
    make_process(database_url, server, "nginx")
    await publish_sample(nc, server, now_utc(-20), [reading("nginx")])
    await eventually(lambda: liveness(database_url, server)[0] is not None)
    first = liveness(database_url, server)[0]
    await asyncio.sleep(1.1)  # more than ingest's step (last_seen_step_s, 1 s)
    # An older tick sent late (an agent re-sending) is still a sign of life: broker time moves on.
    await publish_sample(nc, server, now_utc(-40), [reading("nginx")])
    await eventually(lambda: liveness(database_url, server)[0] >= first + timedelta(seconds=1))


async def test_a_refused_message_is_no_sign_of_life(ingest, nc, database_url):
    server = make_server(database_url, make_user(database_url))
    await publish_sample(nc, server, now_utc(), [], key="pwa_wrong-key")
    other = make_server(database_url, make_user(database_url))
    await publish_sample(nc, other, now_utc(), [])  # published after: once stored, the refused one was handled
    await eventually(lambda: liveness(database_url, other)[0] is not None)
    assert liveness(database_url, server)[0] is None
