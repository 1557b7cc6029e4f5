"""The 3-node NATS cluster (issue 20): streams at R3, ingest partitioned by server on it.

The cluster is the session's own (`nats_cluster`, tests/support/cluster.py); PostgreSQL is the
session's. Two in-process ingest replicas read the two partitions of AGENT_SAMPLES; each holds its
own servers only, and every server's samples are committed (and their events published) in order.
"""

from __future__ import annotations

import uuid
from collections import Counter

import nats
import pytest

from procwatch.embedded import NATS_ROUTE_USER
from procwatch_contracts import subjects
from procwatch_contracts.messages import SampleRecorded
from procwatch_ingest.app import IngestApp
from procwatch_messaging.streams import StreamLimits, ensure_streams, stream_configs
from tests.integration.ingest.conftest import (
    eventually, ingest_settings, now_utc, publish_sample, query, reading, stream_messages,
)
from tests.support.factories import make_process, make_server, make_user

pytestmark = pytest.mark.integration

CLUSTER_LIMITS = StreamLimits(replicas=3, ingest_partitions=2, alerter_partitions=2)


@pytest.fixture
async def cluster_nc(nats_cluster):
    nc = await nats.connect(nats_cluster.url.split(","))
    await ensure_streams(nc.jetstream(), CLUSTER_LIMITS)
    yield nc
    await nc.drain()


async def test_every_stream_is_r3_with_a_leader_and_two_current_replicas(cluster_nc, nats_cluster):
    js = cluster_nc.jetstream()
    node_names = {node.name for node in nats_cluster.nodes}
    for config in stream_configs(CLUSTER_LIMITS):
        info = await js.stream_info(config.name)
        assert info.config.num_replicas == 3, config.name
        assert info.cluster is not None and info.cluster.leader in node_names, config.name
        peers = {r.name for r in await _replicas_when_current(js, config.name)}
        assert peers | {info.cluster.leader} == node_names, config.name
    partitioned = (await js.stream_info(subjects.AGENT_SAMPLES_STREAM)).config.subject_transform
    assert partitioned.dest == "agent.samples.{{partition(2,1)}}.{{wildcard(1)}}"


async def _replicas_when_current(js, stream: str):
    async def current():
        replicas = (await js.stream_info(stream)).cluster.replicas or []
        return replicas if len(replicas) == 2 and all(r.current for r in replicas) else None

    return await eventually(current, timeout=20)


def test_routes_require_the_route_password(nats_cluster):
    config = nats_cluster.nodes[0].render_config()
    assert f'authorization {{ user: "{NATS_ROUTE_USER}", password: ' in config
    assert all(f"nats-route://{NATS_ROUTE_USER}:" in line for line in config.splitlines() if "nats-route" in line)


async def test_stored_subject_partition_matches_partition_of(cluster_nc):
    """subjects.partition_of computes what the server's partition(2,1) mapping does."""
    js = cluster_nc.jetstream()
    name = f"PART_{uuid.uuid4().hex[:6].upper()}"
    src = f"{name.lower()}.*"
    await js.add_stream(name=name, subjects=[src], num_replicas=3,
                        subject_transform={"src": src, "dest": subjects.partition_transform(src, 7)})
    try:
        for server_id in range(1, 60):
            ack = await js.publish(f"{name.lower()}.{server_id}", b"x")
            msg = await js.get_msg(name, seq=ack.seq)
            assert msg.subject == f"{name.lower()}.{subjects.partition_of(server_id, 7)}.{server_id}"
    finally:
        await js.delete_stream(name)


async def test_partitioned_ingest_keeps_each_server_on_one_replica_in_order(cluster_nc, nats_cluster, database_url):
    user = make_user(database_url)
    by_partition: dict[int, tuple] = {}
    while len(by_partition) < 2:  # one server in each partition
        server = make_server(database_url, user)
        pid = make_process(database_url, server, "web")
        by_partition.setdefault(subjects.partition_of(server.id, 2), (server, pid))
    base = f"test-ingest-{uuid.uuid4().hex[:8]}"
    apps = [IngestApp(ingest_settings(database_url, nats_cluster.url, durable=base, partition=k, ingest_partitions=2,
                                      alerter_partitions=2, nats_replicas=3)) for k in (0, 1)]
    for app in apps:
        await app.start()
    try:
        n = 30
        times = [now_utc(-300 + 5 * i) for i in range(n)]
        for i, at in enumerate(times):
            for server, _ in by_partition.values():
                await publish_sample(cluster_nc, server, at, [reading("web", count=1 + i % 3)])

        def stored():
            totals = [query(database_url, "select samples_total from watched_processes where id = %s", (pid,))[0][0]
                      for _, pid in by_partition.values()]
            return totals == [n, n]

        await eventually(stored, timeout=30)
        # Each replica handled its own partition's server only, every message once.
        assert [app.stats.snapshot()["messages"] for app in apps] == [n, n]
        for k, (server, pid) in by_partition.items():
            rows = query(database_url, "select recorded_at from process_samples where watched_process_id = %s"
                                       " order by recorded_at", (pid,))
            assert [r[0] for r in rows] == times
            assert query(database_url, "select last_sample_at, last_count from watched_processes where id = %s",
                         (pid,)) == [(times[-1], 1 + (n - 1) % 3)]
            # Its events, on its alerter partition, in commit order = sample order, never a late one.
            events = await stream_messages(cluster_nc, subjects.SAMPLE_EVENTS_STREAM,
                                           subjects.partition_filter(subjects.SAMPLE_EVENTS_SUBJECTS, k), n)
            mine = [m for m in events if m.subject.endswith(f".{server.id}")]
            assert {m.subject for m in mine} == {f"samples.recorded.{k}.{server.id}"}
            parsed = [SampleRecorded.model_validate_json(m.data) for m in mine]
            assert [e.sampled_at for e in parsed] == times
            assert all(s.is_latest for e in parsed for s in e.samples)
        js = cluster_nc.jetstream()
        for k in (0, 1):
            info = await js.consumer_info(subjects.AGENT_SAMPLES_STREAM, f"{base}-{k}")
            assert info.config.filter_subject == f"agent.samples.{k}.*"
            assert (info.num_pending, info.num_ack_pending) == (0, 0)
        assert Counter(m.subject.split(".")[2] for m in await stream_messages(
            cluster_nc, subjects.SAMPLE_EVENTS_STREAM, subjects.SAMPLE_EVENTS_SUBJECTS.replace("*", ">"), 2 * n)
            if m.subject.rsplit(".", 1)[1] in {str(s.id) for s, _ in by_partition.values()}) == {"0": n, "1": n}
    finally:
        for app in apps:
            await app.stop()


async def test_partitioning_changes_in_place_once_the_consumers_caught_up(cluster_nc):
    js = cluster_nc.jetstream()

    async def transform():
        t = (await js.stream_info(subjects.AGENT_SAMPLES_STREAM)).config.subject_transform
        return t.dest if t is not None else None

    await ensure_streams(js, StreamLimits(replicas=3))  # one partition again: nothing waits now
    assert await transform() is None
    durable = f"migrate-{uuid.uuid4().hex[:8]}"
    sub = await js.pull_subscribe(subjects.AGENT_SAMPLES_SUBJECTS, durable=durable,
                                  stream=subjects.AGENT_SAMPLES_STREAM)
    try:
        await js.publish(subjects.agent_samples(42), b"old layout")
        await ensure_streams(js, CLUSTER_LIMITS)
        assert await transform() is None  # a message waits in the old layout: kept for its consumer
        (msg,) = await sub.fetch(1, timeout=5)
        assert msg.subject == "agent.samples.42"
        await msg.ack_sync()
        await ensure_streams(js, CLUSTER_LIMITS)
        assert await transform() == "agent.samples.{{partition(2,1)}}.{{wildcard(1)}}"
        assert (await js.stream_info(subjects.AGENT_SAMPLES_STREAM)).config.num_replicas == 3
    finally:
        await sub.unsubscribe()
        await js.delete_consumer(subjects.AGENT_SAMPLES_STREAM, durable)
