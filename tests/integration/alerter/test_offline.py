"""The alerter's offline job (issue 15) against real PostgreSQL and NATS: a silent server fires
`server_offline` once, on `alerts.<server_id>.server`, and resolves when seen again, when its flag
is turned off, or when it is deleted; nobody is judged while ingest's consumer lags.

Liveness is written here the way ingest writes it (last_seen_at, offline_deadline_at), with a small
offline_after_s straight into the column (the API's minimum is 30 s). ingest's durable consumer is
stood in for by a durable on this test server's agent subject that nobody pulls: what is published
there is ingest's backlog. (tests/integration/alerter/test_offline_pipeline.py runs the real ingest.)"""

from __future__ import annotations

import asyncio
import time
import uuid

import nats
import psycopg
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from procwatch_contracts import subjects
from procwatch_db.urls import libpq_url
from procwatch_domain.liveness import server_alert_id

pytestmark = pytest.mark.integration


def execute(database_url: str, sql: str, *params) -> None:
    with psycopg.connect(libpq_url(database_url)) as conn:
        conn.execute(sql, params)


def seen(world, *, ago_s: float, offline_after_s: int) -> None:
    """As ingest stamps it: last seen `ago_s` ago on the database's clock."""
    execute(world.database_url,
            "update servers set offline_after_s = %s, last_seen_at = now() - make_interval(secs => %s),"
            " offline_deadline_at = now() - make_interval(secs => %s) + make_interval(secs => %s) where id = %s",
            offline_after_s, ago_s, ago_s, offline_after_s, world.server.id)


def server_row(world) -> dict:
    return {k: v for k, v in zip(("last_seen_at", "offline_deadline_at", "offline_since"), world.sql(
        "select last_seen_at, offline_deadline_at, offline_since from servers where id = %s", world.server.id)[0])}


def server_history(world) -> list[tuple]:
    return world.sql("select type, state, value, threshold, started_at, resolved_at, resolve_reason, hostname"
                     " from alerts where server_id = %s and watched_process_id is null order by id", world.server.id)


async def ingest_stand_in(js, server_id: int) -> str:
    name = f"ingest-stand-in-{uuid.uuid4().hex[:8]}"
    await js.add_consumer(subjects.AGENT_SAMPLES_STREAM, ConsumerConfig(
        durable_name=name, filter_subject=subjects.agent_samples(server_id), ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.NEW, inactive_threshold=120))
    return name


def offline_on(durable: str, **extra) -> dict:
    return dict(offline_detection=True, ingest_durable=durable, offline_check_every_s=0.2,
                offline_max_lag_s=1.0, **extra)


async def no_more_alerts(world, runs: int = 5) -> None:
    """Let the job run `runs` more times, then check nothing else was published for the server."""
    if world.sub is None:
        await world.alerts(0)  # subscribes (from the stream's start)
    job = world.alerter.offline_job
    target = job.runs + runs
    deadline = time.monotonic() + 20
    while job.runs < target:
        assert time.monotonic() < deadline, "the offline job stopped running"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # the relay publishes right after the commit
    try:
        extra = await world.sub.fetch(1, timeout=0.5)
    except (nats.errors.TimeoutError, asyncio.TimeoutError):
        extra = []
    assert extra == [], [m.data for m in extra]


async def test_silent_server_fires_once_and_resolves_when_seen_again(world, js):
    durable = await ingest_stand_in(js, world.server.id)
    seen(world, ago_s=1, offline_after_s=2)
    await world.start_alerter(**offline_on(durable))

    (firing, headers), = await world.alerts(1, timeout=15)
    row = server_row(world)
    deadline = row["last_seen_at"] + (row["offline_deadline_at"] - row["last_seen_at"])
    assert (firing.type, firing.state, firing.process, firing.reason) == ("server_offline", "firing", None, None)
    assert (firing.server.id, firing.server.hostname, firing.user_id) == (world.server.id, world.server.hostname,
                                                                          world.server.user_id)
    assert firing.occurred_at == deadline == row["offline_deadline_at"]
    assert firing.id == headers["Nats-Msg-Id"] == server_alert_id(world.server.id, "server_offline", "firing",
                                                                  deadline)
    assert firing.threshold == 2 and firing.value >= 2
    assert row["offline_since"] == row["last_seen_at"]
    assert [h[:2] + h[3:5] for h in server_history(world)] == [("server_offline", "firing", 2.0, deadline)]
    await no_more_alerts(world)  # still silent: fired once

    execute(world.database_url, "update servers set last_seen_at = now(), offline_deadline_at = now() + interval"
                                " '1 hour' where id = %s", world.server.id)
    (resolved, headers), = await world.alerts(1)
    back = server_row(world)["last_seen_at"]
    assert (resolved.type, resolved.state, resolved.reason, resolved.process) == ("server_offline", "resolved",
                                                                                   "recovered", None)
    assert resolved.occurred_at == back
    assert resolved.id == headers["Nats-Msg-Id"] == server_alert_id(world.server.id, "server_offline", "resolved",
                                                                    back)
    assert server_row(world)["offline_since"] is None
    assert [(h[1], h[5], h[6]) for h in server_history(world)] == [("resolved", back, "recovered")]
    await no_more_alerts(world)


async def test_flag_off_resolves_and_deleting_the_server_resolves_naming_it(world, js):
    durable = await ingest_stand_in(js, world.server.id)
    seen(world, ago_s=3, offline_after_s=1)
    await world.start_alerter(**offline_on(durable))
    assert await world.kinds(1) == [("server_offline", "firing")]

    execute(world.database_url, "update servers set alert_on_offline = false where id = %s", world.server.id)
    (resolved, _), = await world.alerts(1)
    assert (resolved.state, resolved.reason) == ("resolved", "flag_disabled")
    # Back on during the same silence: no second alert for it.
    execute(world.database_url, "update servers set alert_on_offline = true where id = %s", world.server.id)
    await no_more_alerts(world)

    # A new silence fires again; deleting the server resolves it, with the hostname it had.
    seen(world, ago_s=3, offline_after_s=1)
    assert await world.kinds(1) == [("server_offline", "firing")]
    execute(world.database_url, "delete from servers where id = %s", world.server.id)
    (gone, _), = await world.alerts(1)
    assert (gone.state, gone.reason, gone.server.hostname) == ("resolved", "deleted", world.server.hostname)
    assert [(h[1], h[6]) for h in server_history(world)] == [("resolved", "flag_disabled"), ("resolved", "deleted")]


async def test_nobody_is_judged_while_ingest_lags_and_only_after_a_full_window_once_caught_up(world, js):
    durable = await ingest_stand_in(js, world.server.id)
    # Ingest's backlog: a message of this server that nobody has taken, older than the lag bound.
    await js.publish(subjects.agent_samples(world.server.id), b"{}", headers={"Nats-Msg-Id": uuid.uuid4().hex})
    await asyncio.sleep(1.5)
    await js.publish(subjects.agent_samples(world.server.id), b"{}", headers={"Nats-Msg-Id": uuid.uuid4().hex})
    seen(world, ago_s=10, offline_after_s=2)  # long past its deadline
    await world.start_alerter(**offline_on(durable))
    detector = world.alerter.offline
    while detector.gated_runs < 5:
        await asyncio.sleep(0.05)
    assert server_row(world)["offline_since"] is None
    assert not detector.last_state.backlog == 0
    await no_more_alerts(world, runs=1)

    # Ingest catches up (takes and acks its backlog): judged after offline_after_s of that.
    sub = await js.pull_subscribe_bind(durable, subjects.AGENT_SAMPLES_STREAM)
    for m in await sub.fetch(2, timeout=5):
        await m.ack()
    caught_up_at = time.monotonic()
    (firing, _), = await world.alerts(1, timeout=15)
    assert firing.type == "server_offline"
    assert time.monotonic() - caught_up_at >= 2 - 0.3  # the window, less one check interval of jitter


async def test_an_offline_servers_processes_keep_their_state_and_are_judged_on_the_first_sample_back(world, js):
    durable = await ingest_stand_in(js, world.server.id)
    proc = world.process("nginx")
    await world.start_alerter(**offline_on(durable))
    await world.send(proc, 0, count=2)  # up
    seen(world, ago_s=3, offline_after_s=1)
    assert await world.kinds(1) == [("server_offline", "firing")]
    # Offline: missing data is not a process being down.
    assert world.row(proc.id)["alerted_state"] is None
    await no_more_alerts(world)

    # Back: the first sample shows the process died meanwhile.
    execute(world.database_url, "update servers set last_seen_at = now(), offline_deadline_at = now() + interval"
                                " '1 hour' where id = %s", world.server.id)
    await world.send(proc, 10, count=0)
    assert sorted(await world.kinds(2)) == [("process_down", "firing"), ("server_offline", "resolved")]
    assert world.row(proc.id)["alerted_state"] == "down"
