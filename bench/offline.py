"""Offline detection at fleet size, for the runner (`uv run python -m bench offline`).

100,000 servers with offline_after_s = 30; the heartbeats of all of them are written the way ingest
writes them (last_seen_at and offline_deadline_at moved to now, a tenth of the fleet each second,
so each server is seen every 10 s like an agent at the default push interval), straight in SQL:
100,000 agents would be a load bench of ingest, not of this job. Then a share of them stops. The job
under test is the real one: a `procwatch alerter` subprocess (with a `procwatch ingest` beside it,
idle: the job reads its durable consumer to know the pipeline is caught up).

Measured: fire time - deadline per silenced server (the alert event's arrival on a core NATS
subscription to `alerts.*.server` minus its occurred_at, which is the deadline; same host, same clock), every silenced server fired
once and nobody else; and the job's database cost per run: EXPLAIN (ANALYZE, BUFFERS) of its two
reads as the alerter runs them (procwatch_alerter.repository), with the fleet in place.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import nats
import psycopg

from bench.common import Servers, create_database, drop_database, latency_summary, loadavg_1m, service, \
    wait_for_consumer
from procwatch_alerter.repository import DUE_SERVERS_SQL, OFFLINE_ALERTS_OVER_SQL
from procwatch_contracts import subjects
from procwatch_contracts.messages import AlertEvent
from procwatch_db.urls import libpq_url
from procwatch_domain.liveness import SERVER_OFFLINE


@dataclass
class OfflineOptions:
    servers: int = 100_000
    silenced_every: int = 97  # every 97th server stops (≈ 1 %; prime: spread over every heartbeat slice)
    offline_after_s: int = 30
    heartbeat_slices: int = 10  # one slice of the fleet per second: each server every 10 s
    warmup_s: float = 35.0  # the job's first full offline_after_s window (liveness gate) plus a margin
    fire_timeout_s: float = 60.0


def seed(url: str, opts: OfflineOptions) -> tuple[int, int]:
    """The fleet, seen just now; returns (first id, last id)."""
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        (user_id,) = conn.execute("insert into users (email, plan) values ('bench-offline@example.test', 'scale')"
                                  " returning id").fetchone()
        conn.execute(
            "insert into servers (user_id, hostname, agent_key_hash, offline_after_s, last_seen_at,"
            " offline_deadline_at) select %s, 'bench-' || g, repeat('0', 64), %s, now(),"
            " now() + make_interval(secs => %s) from generate_series(1, %s) g",
            (user_id, opts.offline_after_s, opts.offline_after_s, opts.servers))
        conn.execute("analyze servers")
        return conn.execute("select min(id), max(id) from servers").fetchone()


def heartbeat(conn: psycopg.Connection, slice_no: int, opts: OfflineOptions, silencing: bool) -> None:
    """What ingest writes for the servers seen this second (one slice of the fleet)."""
    conn.execute(
        "update servers set last_seen_at = now(), offline_deadline_at = now() + make_interval(secs => offline_after_s)"
        " where id %% %s = %s and (not %s or id %% %s <> 0)",
        (opts.heartbeat_slices, slice_no, silencing, opts.silenced_every))


def explain(url: str, judgeable_s: float) -> dict[str, str]:
    """EXPLAIN (ANALYZE, BUFFERS) of the job's two reads, with the alerter's parameters."""
    params = {"judgeable": judgeable_s, "lag": 0.0, "type": SERVER_OFFLINE, "n": 1000}
    out = {}
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        for name, sql in (("due servers", DUE_SERVERS_SQL), ("open alerts that are over", OFFLINE_ALERTS_OVER_SQL)):
            rows = conn.execute("explain (analyze, buffers) " + sql, params).fetchall()
            out[name] = "\n".join(r[0] for r in rows)
    return out


def plan_cost(plan: str) -> tuple[float, int]:
    """(execution time in ms, shared buffers hit + read) of an EXPLAIN ANALYZE text."""
    ms = float(re.search(r"Execution Time: ([0-9.]+) ms", plan).group(1))
    top = re.search(r"Buffers: shared ([^\n]+)", plan)
    buffers = sum(int(n) for n in re.findall(r"(?:hit|read)=(\d+)", top.group(1))) if top else 0
    return ms, buffers


def run_once(servers: Servers, opts: OfflineOptions) -> dict:
    with servers.nats() as nats_url:
        url = create_database(servers.database_url, "procwatch_bench_offline")
        try:
            return asyncio.run(_measure(servers, url, nats_url, opts))
        finally:
            drop_database(url)


async def _measure(servers: Servers, url: str, nats_url: str, opts: OfflineOptions) -> dict:
    first_id, last_id = seed(url, opts)
    silenced = {i for i in range(first_id, last_id + 1) if i % opts.silenced_every == 0}
    env = {"DATABASE_URL": url, "NATS_URL": nats_url, "LOG_LEVEL": "WARNING",
           "PROCWATCH_INGEST_RETENTION_ENABLED": "false"}
    tag = f"{time.monotonic_ns()}"
    conn = psycopg.connect(libpq_url(url), autocommit=True)
    nc = await nats.connect(nats_url)
    try:
        with service(["ingest"], env, servers.tmp / f"offline-ingest-{tag}.log"), \
                service(["alerter"], env, servers.tmp / f"offline-alerter-{tag}.log"):
            await wait_for_consumer(nats_url, subjects.AGENT_SAMPLES_STREAM, "procwatch-ingest")
            await wait_for_consumer(nats_url, subjects.SAMPLE_EVENTS_STREAM, "alerter")
            fired: dict[int, float] = {}  # server id -> fire time - deadline (s)
            extra = 0

            async def on_alert(msg) -> None:  # a core subscription: the arrival time is the message's
                nonlocal extra
                arrived = datetime.now(UTC)
                event = AlertEvent.model_validate_json(msg.data)
                if event.state != "firing" or event.server.id not in silenced or event.server.id in fired:
                    extra += 1
                else:
                    fired[event.server.id] = (arrived - event.occurred_at).total_seconds()

            sub = await nc.subscribe(f"alerts.*.{subjects.SERVER_ALERTS_TOKEN}", cb=on_alert)
            slice_no = 0
            started = time.monotonic()
            silencing_at = started + opts.warmup_s
            plans: dict[str, str] = {}
            load = None
            while True:
                now = time.monotonic()
                silencing = now >= silencing_at
                if silencing and load is None:
                    load = loadavg_1m()
                # Steady state, every server seen and nobody due yet: what a run costs at rest.
                if not plans and now >= silencing_at + 5:
                    plans = await asyncio.to_thread(explain, url, now - started)
                await asyncio.to_thread(heartbeat, conn, slice_no % opts.heartbeat_slices, opts, silencing)
                slice_no += 1
                if len(fired) == len(silenced) or (
                        silencing and time.monotonic() - silencing_at > opts.offline_after_s + opts.fire_timeout_s):
                    break
                await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - now)))
            await sub.unsubscribe()
    finally:
        conn.close()
        await nc.close()
    due_ms, due_buffers = plan_cost(plans["due servers"])
    over_ms, over_buffers = plan_cost(plans["open alerts that are over"])
    return {
        "servers": opts.servers, "silenced": len(silenced), "fired": len(fired), "extra": extra,
        "latency": latency_summary(list(fired.values())) if fired else None,
        "due_ms": due_ms, "due_buffers": due_buffers, "over_ms": over_ms, "over_buffers": over_buffers,
        "plans": plans, "load_1m": load or loadavg_1m(),
    }
