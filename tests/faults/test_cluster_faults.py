"""Faults on the 3-node NATS cluster (issue 20, part 3): kill -9 the node that leads a stream, under load.

Own embedded PostgreSQL, Redis and a 3-node NATS cluster (procwatch.embedded.EmbeddedNatsCluster) with
every stream at R3, AGENT_SAMPLES partitioned for two ingest processes and SAMPLE_EVENTS /
PROCESS_EVENTS for two alerter processes (all real subprocesses, NATS_URL listing the three nodes).
The fault matrix's fleet and load generator (tests/faults/test_fault_matrix.py) publish one message per
server per tick throughout, re-sending a tick (same Nats-Msg-Id) until JetStream acks it.

Each fault, after the pipeline caught up: find the stream's leader (`stream_info().cluster.leader`) and
kill -9 its node in the middle of an active phase (scripted downs, restarts and CPU spikes cross the
leader election); then, with the node still down, a whole active phase on the two remaining nodes;
then the node restarts and must catch up: it is listed current in every stream's `cluster.replicas`,
with no lag. The faults: the AGENT_SAMPLES leader's
node, then the SAMPLE_EVENTS leader's node (after the first restarted: its data is then needed for a
quorum). After each fault one line in the matrix's form (no notifier here: no webhook figures):
`faults: N injected, samples lost 0, duplicated 0, alerts missing 0, extra 0`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import psycopg
import pytest
from procwatch_contracts import subjects
from procwatch_db.migrate import upgrade
from procwatch_db.urls import libpq_url
from procwatch_messaging.streams import StreamLimits, stream_configs

from procwatch.embedded import EmbeddedNatsCluster, EmbeddedPostgres, EmbeddedRedis
from tests.faults.conftest import ServiceProcess
from tests.faults.test_fault_matrix import (
    N_SERVERS, PROCS, TICK_S, LoadGen, alert_key, consumer_state, expected_alerts, make_fleet, read_alerts, wait_until,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(900)]

PARTITIONS = 2
DURABLES = ([(subjects.AGENT_SAMPLES_STREAM, f"procwatch-ingest-{k}") for k in range(PARTITIONS)]
            + [(subjects.SAMPLE_EVENTS_STREAM, f"alerter-{k}") for k in range(PARTITIONS)])
STREAMS = [c.name for c in stream_configs(StreamLimits())]


@dataclass
class ClusterSystem:
    tmp: Path
    pg: EmbeddedPostgres
    redis: EmbeddedRedis
    nats: EmbeddedNatsCluster
    database_url: str
    services: dict[str, ServiceProcess]

    def query(self, sql: str, params=()) -> list[tuple]:
        with psycopg.connect(libpq_url(self.database_url), connect_timeout=5) as conn:
            return conn.execute(sql, params).fetchall()


def start_cluster_system(tmp: Path) -> ClusterSystem:
    pg = EmbeddedPostgres(tmp / "pg" / "data")
    redis = EmbeddedRedis(tmp / "redis" / "data")
    cluster = EmbeddedNatsCluster(tmp / "nats", 3)
    database_url, redis_url, nats_url = pg.start(), redis.start(), cluster.start()
    upgrade(database_url)
    common = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "NATS_URL": nats_url, "LOG_LEVEL": "INFO",
              "PROCWATCH_NATS_REPLICAS": "3", "PROCWATCH_INGEST_PARTITIONS": str(PARTITIONS),
              "PROCWATCH_ALERTER_PARTITIONS": str(PARTITIONS)}
    services = {}
    for k in range(PARTITIONS):
        services[f"ingest-{k}"] = ServiceProcess("ingest", {
            **common, "PROCWATCH_INGEST_PARTITION": str(k), "PROCWATCH_INGEST_ACK_WAIT_S": "5",
            "PROCWATCH_INGEST_RETENTION_ENABLED": "false", "PROCWATCH_INGEST_RETRY_MAX_S": "2"},
            tmp / f"ingest-{k}.log")
        services[f"alerter-{k}"] = ServiceProcess("alerter", {
            **common, "PROCWATCH_ALERTER_PARTITION": str(k), "PROCWATCH_ALERTER_ACK_WAIT_S": "5",
            "PROCWATCH_ALERTER_MAX_BACKOFF_S": "2", "PROCWATCH_ALERTER_RELAY_POLL_INTERVAL_S": "0.5",
            # The matrix's liveness settings (servers' offline_after_s is seconds, below the API's
            # minimum): no server may go offline while a stream elects a new leader.
            "PROCWATCH_ALERTER_OFFLINE_CHECK_EVERY_S": "0.5", "PROCWATCH_ALERTER_OFFLINE_MAX_LAG_S": "1",
            "PROCWATCH_ALERTER_OFFLINE_MAX_BACKLOG": str(2 * N_SERVERS)}, tmp / f"alerter-{k}.log")
    return ClusterSystem(tmp, pg, redis, cluster, database_url, services)


@pytest.fixture(scope="module")
def cluster_system(tmp_path_factory):
    sys_ = start_cluster_system(tmp_path_factory.mktemp("cluster-faults"))
    yield sys_
    for svc in sys_.services.values():
        svc.stop(15)
    sys_.nats.stop()
    sys_.redis.stop()
    sys_.pg.stop()


@dataclass
class ClusterTally:
    lost: int
    duplicated: int
    missing: int
    extra: int

    def line(self, injected: int) -> str:
        return (f"faults: {injected} injected, samples lost {self.lost}, duplicated {self.duplicated}, "
                f"alerts missing {self.missing}, extra {self.extra}")


async def cluster_tally(system: ClusterSystem, gen: LoadGen, fleet, nc, upto: int) -> ClusterTally:
    published = [p for p in gen.published if p[1] < gen.at(upto)]
    all_pids = [pid for row in fleet.pids for pid in row]
    got = Counter(system.query("select watched_process_id, recorded_at from process_samples"
                               " where watched_process_id = any(%s) and recorded_at < %s", (all_pids, gen.at(upto))))
    want = {(fleet.pids[i][k], at) for i, at, _ in published for k in range(len(PROCS))}
    everything = [e for _, e in await read_alerts(nc)]
    have = Counter(alert_key(e) for e in everything if e.process is not None and e.occurred_at < gen.at(upto))
    expect = expected_alerts(published, fleet)
    return ClusterTally(lost=len(want - set(got)),
                        duplicated=sum(n - 1 for n in got.values() if n > 1) + len(set(got) - want),
                        missing=sum((expect - have).values()),
                        # No agent falls silent here: any server-level alert (server_offline) is extra.
                        extra=sum((have - expect).values()) + sum(1 for e in everything if e.process is None))


async def caught_up(system: ClusterSystem, gen: LoadGen, fleet, nc, timeout: float, extra_ticks: int = 0) -> int:
    target = gen.tick + extra_ticks
    while gen.tick < target:
        await asyncio.sleep(0.05)
    upto = gen.tick
    published = [p for p in gen.published if p[1] < gen.at(upto)]
    all_pids = [pid for row in fleet.pids for pid in row]

    def stored():
        (n,), = system.query("select count(*) from process_samples where watched_process_id = any(%s)"
                             " and recorded_at < %s", (all_pids, gen.at(upto)))
        return True if n >= len(PROCS) * len(published) else (n, len(PROCS) * len(published))

    await wait_until(stored, timeout, "every published sample stored")
    expected = expected_alerts(published, fleet)

    async def alerted():
        have = Counter(alert_key(e) for _, e in await read_alerts(nc)
                       if e.process is not None and e.occurred_at < gen.at(upto))
        return True if not (expected - have) else sum((expected - have).values())

    await wait_until(alerted, timeout, "every expected alert on ALERTS", interval=0.5)
    return upto


async def replica_caught_up(js, node: str) -> bool | dict:
    """`node` is current, without lag, in every stream's replica set (or leads it)."""
    behind = {}
    for stream in STREAMS:
        info = await js.stream_info(stream)
        if info.cluster.leader == node:
            continue
        peer = next((r for r in info.cluster.replicas or [] if r.name == node), None)
        if peer is None or not peer.current or peer.offline or (peer.lag or 0) > 0:
            behind[stream] = peer
    return True if not behind else behind


async def test_kill_the_stream_leaders_node_under_load(cluster_system: ClusterSystem, capsys):
    system = cluster_system
    fleet = make_fleet(system.database_url)
    for svc in system.services.values():
        svc.start()
    nc = await nats.connect(system.nats.url.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.25)
    js = nc.jetstream()
    lines: list[str] = []

    def report(line: str) -> None:
        lines.append(line)
        with capsys.disabled():
            print(line, flush=True)

    async def consumers_exist():
        states = [await consumer_state(js, stream, durable) for stream, durable in DURABLES]
        return True if all(s is not None for s in states) else states

    await wait_until(consumers_exist, 90, "two ingest and two alerter partitions' durables")
    gen = LoadGen(js, fleet, datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3),
                  restarts=[0] * N_SERVERS)
    gen_task = asyncio.create_task(gen.run())
    injected = 0
    try:
        for stream in (subjects.AGENT_SAMPLES_STREAM, subjects.SAMPLE_EVENTS_STREAM):
            await gen.active_phase()
            await caught_up(system, gen, fleet, nc, 120)
            leaders = {s: (await js.stream_info(s)).cluster.leader for s in STREAMS}
            node = system.nats.node_of(leaders[stream])
            led = sorted(s for s, leader in leaders.items() if leader == node.name)
            # The kill lands inside an active phase: scripted transitions cross the leader election.
            # Agents re-send what was not acked; ingest retries its event publishes in place
            # (PROCWATCH_INGEST_PUBLISH_RETRY_S), so each server's events keep their order.
            phase = asyncio.create_task(gen.active_phase())
            await asyncio.sleep(3 * TICK_S)
            t0 = time.monotonic()
            await asyncio.to_thread(node.kill)
            injected += 1
            await phase
            await caught_up(system, gen, fleet, nc, 120, extra_ticks=2)
            recovered_s = time.monotonic() - t0
            # Then a whole active phase on the two remaining nodes.
            await gen.active_phase()
            upto = await caught_up(system, gen, fleet, nc, 120, extra_ticks=2)
            down_s = time.monotonic() - t0
            new_leader = (await js.stream_info(stream)).cluster.leader
            await asyncio.to_thread(node.start)
            t1 = time.monotonic()
            await wait_until(lambda n=node.name: replica_caught_up(js, n), 120, f"{node.name} caught up", interval=0.5)
            back_s = time.monotonic() - t1
            for name, svc in system.services.items():
                assert svc.alive(), f"{name} died after the fault:\n{svc.output()[-3000:]}"
            result = await cluster_tally(system, gen, fleet, nc, upto)
            report(f"{result.line(injected)}  [kill -9 {node.name}, leader of {', '.join(led)}; new {stream} leader "
                   f"{new_leader}; killed mid active phase, caught up {recovered_s:.1f} s after, then an active phase on 2 nodes, "
                   f"caught up {down_s:.1f} s after the kill; restarted, current in every stream {back_s:.1f} s "
                   f"later; agent re-sends so far {gen.retries}]")
            assert new_leader != node.name
        gen.stopping = True
        await gen_task
        upto = await caught_up(system, gen, fleet, nc, 120)
        final = await cluster_tally(system, gen, fleet, nc, upto)
        report(final.line(injected) + f"  [final: whole run, {gen.tick} ticks, {len(gen.published)} messages, "
                                      f"{sum(expected_alerts(gen.published, fleet).values())} alerts]")
        assert (final.lost, final.duplicated, final.missing, final.extra) == (0, 0, 0, 0), lines
        ids = [msg_id for msg_id, _ in await read_alerts(nc)]
        assert len(ids) == len(set(ids)), "an alert id appears twice on ALERTS"
        for stream, durable in DURABLES:
            await wait_until(lambda s=stream, d=durable: _settled(js, s, d), 30, f"{durable} settled")
        # Stored exactly once each, whole run.
        assert system.query("select count(*) from process_samples") == [(len(PROCS) * len(gen.published),)]
    finally:
        gen.stopping = True
        if not gen_task.done():
            gen_task.cancel()
        await asyncio.gather(gen_task, return_exceptions=True)
        (system.tmp / "summary.txt").write_text("\n".join(lines) + "\n")
        keep = Path(os.environ.get("PROCWATCH_FAULTS_KEEP_DIR", "/tmp/procwatch-faults-last")) / "cluster"
        shutil.rmtree(keep, ignore_errors=True)
        keep.mkdir(parents=True, exist_ok=True)
        for log_file in [*system.tmp.glob("*.log"), *system.tmp.glob("*/*.log"), system.tmp / "summary.txt"]:
            shutil.copy(log_file, keep / log_file.name)
        await nc.close()


async def _settled(js, stream: str, durable: str):
    state = await consumer_state(js, stream, durable)
    return True if state == (0, 0) else state
