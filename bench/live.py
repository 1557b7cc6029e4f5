"""Live updates: commit -> a `sample` event at each of 1,000 connected SSE clients (`python -m bench sse`).

Runs the real `procwatch ingest` and `procwatch api` (one worker) as subprocesses over a fresh
database and NATS. This process (not the API's) opens `clients` raw-socket SSE streams on
GET /events, spread over `users` users (each with one server and one watched process), then, every
`interval` seconds, publishes one agent sample per user with a per-round marker in its CPU value.
Each client's arrival time is taken in the socket's data callback (uvloop), before parsing.

Two latencies per (client, round), from the same clock:
- commit -> client: from the SampleRecorded event's arrival on this process's subscription to
  `samples.recorded.*` (ingest publishes it right after its commit) to the client's receipt of the
  `sample` event: what the issue's target is about;
- publish -> client: from just before the agent sample is published (includes ingest's batch and
  commit): the reference.
A client that never receives a round counts as lost (reported, and as the round timeout in the
percentiles).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
import psycopg

from bench.alert_latency import agent_message
from bench.api_load import _ready
from bench.common import (
    Servers, create_database, drop_database, latency_summary, loadavg_1m, service, wait_for_consumer, wait_until,
)
from procwatch.embedded import free_port
from procwatch_contracts import subjects
from procwatch_db import accounts
from procwatch_db.urls import libpq_url
from procwatch_domain.secrets import hash_secret, new_agent_key

ROUND_TIMEOUT_S = 10.0


@dataclass
class LiveOptions:
    clients: int = 1000
    users: int = 10
    rounds: int = 40
    interval: float = 0.25
    connect_concurrency: int = 50


def run_once(servers: Servers, opts: LiveOptions) -> dict:
    with servers.nats() as nats_url:
        url = create_database(servers.database_url, "procwatch_bench_live")
        try:
            return _measure(servers, url, nats_url, opts)
        finally:
            drop_database(url)


def _fleet(database_url: str, users: int) -> list[dict]:
    """`users` users, each with an API token and one server watching one process."""
    fleet = []
    with psycopg.connect(libpq_url(database_url)) as conn:
        for i in range(users):
            user_id = accounts.create_user(conn, f"live-{uuid.uuid4().hex[:8]}@example.test", "pro")
            token = accounts.create_api_token(conn, user_id, "bench")
            key = new_agent_key()
            (sid,) = conn.execute(
                "insert into servers (user_id, hostname, agent_key_hash) values (%s, %s, %s) returning id",
                (user_id, f"live-{i}", hash_secret(key)),
            ).fetchone()
            conn.execute("insert into watched_processes (server_id, user_id, process_name) values (%s, %s, 'app')",
                         (sid, user_id))
            fleet.append({"id": sid, "key": key, "names": ["app"], "token": token})
    return fleet


def _measure(servers: Servers, url: str, nats_url: str, opts: LiveOptions) -> dict:
    fleet = _fleet(url, opts.users)
    port = free_port()
    env = {
        "DATABASE_URL": url, "NATS_URL": nats_url, "REDIS_URL": servers.redis(), "LOG_LEVEL": "WARNING",
        "PROCWATCH_INGEST_DELIVER_POLICY": "all", "PROCWATCH_API_PORT": str(port),
        "PROCWATCH_API_RATE_LIMIT_PER_MINUTE": str(10**9), "PROCWATCH_API_LOG_LEVEL": "WARNING",
        "PROCWATCH_API_LIVE_MAX_CLIENTS_PER_USER": str(opts.clients),
    }
    tag = f"{time.monotonic_ns()}"
    with service(["ingest"], env, servers.tmp / f"live-ingest-{tag}.log"), \
            service(["api"], env, servers.tmp / f"live-api-{tag}.log"):
        asyncio.run(wait_for_consumer(nats_url, subjects.AGENT_SAMPLES_STREAM, "procwatch-ingest"))
        wait_until(lambda: _ready(port), 60, "procwatch api")
        import uvloop

        return uvloop.run(_drive(nats_url, port, fleet, opts))


class _SseClient(asyncio.Protocol):
    """One stream: records (server_id, marker) -> arrival time of each `sample` event."""

    def __init__(self, arrivals: dict, index: int) -> None:
        self.arrivals, self.index = arrivals, index
        self.buffer = b""
        self.opened = asyncio.get_running_loop().create_future()
        self.closed = False

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        *blocks, self.buffer = (self.buffer + data).split(b"\n\n")
        for block in blocks:
            if b"retry:" in block and not self.opened.done():
                self.opened.set_result(True)
            if b"event: sample" not in block:
                continue
            line = block[block.index(b"data: ") + 6:].split(b"\n", 1)[0]
            event = orjson.loads(line)
            self.arrivals[(self.index, event["server_id"], event["last_cpu_pct"])] = now

    def connection_lost(self, exc) -> None:
        self.closed = True
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("stream closed before it opened"))


async def _drive(nats_url: str, port: int, fleet: list[dict], opts: LiveOptions) -> dict:
    import nats

    loop = asyncio.get_running_loop()
    arrivals: dict[tuple[int, int, float], float] = {}
    committed: dict[tuple[int, float], float] = {}
    published: dict[tuple[int, float], float] = {}
    nc = await nats.connect(nats_url)

    async def on_recorded(msg) -> None:
        now = time.perf_counter()
        event = orjson.loads(msg.data)
        for sample in event["samples"]:
            committed.setdefault((event["server_id"], sample["cpu_pct"]), now)

    await nc.subscribe(subjects.SAMPLE_EVENTS_SUBJECTS, cb=on_recorded)
    owner = {i: fleet[i % len(fleet)] for i in range(opts.clients)}
    gate = asyncio.Semaphore(opts.connect_concurrency)
    transports = []

    async def open_client(i: int) -> None:
        server = owner[i]
        async with gate:
            transport, proto = await loop.create_connection(lambda: _SseClient(arrivals, i), "127.0.0.1", port)
            transport.write(f"GET /events HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {server['token']}\r\n"
                            f"Accept: text/event-stream\r\n\r\n".encode())
            transports.append(transport)
            await asyncio.wait_for(proto.opened, 30)

    t0 = time.perf_counter()
    await asyncio.gather(*(open_client(i) for i in range(opts.clients)))
    connect_s = time.perf_counter() - t0

    async def publish_round(marker: float) -> None:
        for server in fleet:
            subject, payload, headers = agent_message(server, datetime.now(UTC), lambda _: marker)
            published[(server["id"], marker)] = time.perf_counter()
            await nc.publish(subject, payload, headers=headers)
        await nc.flush()

    def complete(marker: float) -> bool:
        return all((i, owner[i]["id"], marker) in arrivals for i in range(opts.clients))

    # Warm-up: until one round reaches every client (the API's subscription is up, caches are warm).
    marker, deadline = 0.5, time.monotonic() + 60
    while not complete(marker):
        if time.monotonic() > deadline:
            raise RuntimeError("warm-up: a round never reached every client")
        marker += 1.0
        await publish_round(marker)
        await asyncio.sleep(1.0)
    load_1m = loadavg_1m()
    markers = [float(r + 1000) for r in range(opts.rounds)]
    for m in markers:
        await publish_round(m)
        await asyncio.sleep(opts.interval)
    end = time.monotonic() + ROUND_TIMEOUT_S
    while not all(complete(m) for m in markers) and time.monotonic() < end:
        await asyncio.sleep(0.1)

    from_commit, from_publish, lost = [], [], 0
    for i in range(opts.clients):
        sid = owner[i]["id"]
        for m in markers:
            at = arrivals.get((i, sid, m))
            if at is None:
                lost += 1
                from_commit.append(ROUND_TIMEOUT_S)
                from_publish.append(ROUND_TIMEOUT_S)
                continue
            from_publish.append(at - published[(sid, m)])
            from_commit.append(at - committed.get((sid, m), published[(sid, m)]))
    closed = sum(1 for t in transports if t.is_closing())
    for t in transports:
        t.close()
    await nc.drain()
    return {
        "commit_to_client": latency_summary(from_commit),
        "publish_to_client": latency_summary(from_publish),
        "clients": opts.clients, "users": opts.users, "rounds": opts.rounds, "lost": lost,
        "closed_streams": closed, "connect_s": connect_s, "load_1m": load_1m,
    }
