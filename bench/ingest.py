"""Ingest throughput: committed samples/s of the real service vs. the raw PostgreSQL ceiling.

    uv run python -m bench ingest [--runs 3] [--quick]

With the servers of bench.common (embedded unless *_URL are set), a fresh migrated
database per run with M servers x K watched processes, then:

1. runs the real ingest service as a subprocess (`procwatch ingest`, its own
   core) and publishes a sustained load through the real broker from this
   process: one AgentSample per server per tick (K readings each), with
   `Authorization` and `Nats-Msg-Id` headers, keeping a bounded backlog ahead of
   the service. Committed samples/s = rows counted in process_samples over the
   measurement window (after a warm-up).
2. in the same database, the raw ceiling: COPY (binary) of the same number of
   rows in transactions of the same size, each followed by the batched update of
   the last_* fields and samples_total of the processes touched, with no service
   in between.

Returns both figures and their ratio. A benchmark, not a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import nats
import orjson
import psycopg

from bench.common import Servers, create_database, drop_database, loadavg_1m, service, wait_for_consumer
from procwatch_contracts import subjects
from procwatch_db.tables import SAMPLE_ID_BLOCK
from procwatch_db.urls import libpq_url
from procwatch_domain.secrets import hash_secret, new_agent_key


def create_fleet(url: str, m: int, k: int) -> list[tuple[int, str, list[str]]]:
    """M servers with K enabled processes each: [(server id, agent key, names)]."""
    fleet = []
    with psycopg.connect(libpq_url(url)) as conn:
        (user_id,) = conn.execute(
            "insert into users (email, plan) values (%s, 'scale') returning id", (f"bench-{uuid.uuid4().hex}@x",)
        ).fetchone()
        for i in range(m):
            key = new_agent_key()
            (sid,) = conn.execute(
                "insert into servers (user_id, hostname, agent_key_hash) values (%s, %s, %s) returning id",
                (user_id, f"bench-{i:05d}", hash_secret(key)),
            ).fetchone()
            names = [f"proc-{j:03d}" for j in range(k)]
            with conn.cursor() as cur:
                cur.executemany(
                    "insert into watched_processes (server_id, user_id, process_name) values (%s, %s, %s)",
                    [(sid, user_id, n) for n in names],
                )
            fleet.append((sid, key, names))
    return fleet


async def publish_load(nats_url: str, url: str, fleet, seconds: float, warmup: float, max_backlog: int,
                       start_at: datetime) -> dict:
    nc = await nats.connect(nats_url.split(","))
    bodies_head = {sid: orjson.dumps({"v": 1, "server_id": sid, "agent_version": "bench-1"})[:-1] for sid, _, _ in fleet}
    headers = {sid: {"Authorization": f"Bearer {key}"} for sid, key, _ in fleet}
    readings = {sid: orjson.dumps([{"process_name": n, "count": 2, "cpu_pct": 3.5, "memory_pct": 1.25,
                                    "oldest_start_unix": 1716566400} for n in names]) for sid, _, names in fleet}
    published = 0
    tick = 0
    samples_per_msg = len(fleet[0][2])
    t0 = time.monotonic()
    window: dict = {}
    conn = await psycopg.AsyncConnection.connect(libpq_url(url), autocommit=True)

    async def rows() -> int:
        # samples_total is maintained in the same transaction as the rows (and is what the
        # API reports); summing it avoids a count(*) scan stealing PostgreSQL's CPU.
        return (await (await conn.execute("select coalesce(sum(samples_total), 0)::bigint from watched_processes")).fetchone())[0]

    base_rows = await rows()
    last_check = 0.0
    committed = base_rows
    while True:
        now = time.monotonic() - t0
        if now >= warmup and "start" not in window:
            window["start"] = (time.monotonic(), await rows())
        if now >= warmup + seconds:
            window["end"] = (time.monotonic(), await rows())
            break
        # Keep a bounded backlog ahead of the service: sustained, not a one-off dump.
        if time.monotonic() - last_check > 0.05:
            committed = await rows()
            last_check = time.monotonic()
        if (published * samples_per_msg) - (committed - base_rows) > max_backlog * samples_per_msg:
            await asyncio.sleep(0.005)
            continue
        at = (start_at + timedelta(seconds=tick)).isoformat().replace("+00:00", "Z").encode()
        # Plain core-NATS publishes, which the stream stores like any other (agents on their own
        # machines would use their own CPU): awaiting and parsing a JetStream PubAck per message
        # cost this process, on the cores the service and PostgreSQL need, more than the rest of
        # it. Nothing is lost unseen: the load is counted by committed rows, and the backlog check
        # above stops publishing while commits fall behind. One flush (a round trip) per tick.
        for sid, _, _ in fleet:
            body = bodies_head[sid] + b',"sampled_at":"' + at + b'","processes":' + readings[sid] + b"}"
            h = dict(headers[sid])
            h["Nats-Msg-Id"] = f"{sid}-{tick}"
            await nc.publish(subjects.agent_samples(sid), body, headers=h)
        await nc.flush()
        published += len(fleet)
        tick += 1
    await nc.drain()
    await conn.close()
    (ts, rs), (te, re_) = window["start"], window["end"]
    return {"rate": (re_ - rs) / (te - ts), "published_msgs": published, "ticks": tick,
            "rows_in_window": re_ - rs, "window_s": te - ts}


def raw_ceiling(url: str, fleet, total_rows: int, rows_per_txn: int, start_at: datetime) -> dict:
    """COPY the same number of rows + the batched last-field update, no service in between.

    Done the fastest way we know, the way the service does it: ids taken in blocks of
    SAMPLE_ID_BLOCK (one nextval per block), binary COPY of the rows with their ids,
    then the per-process values by binary COPY into a temp table and one UPDATE from it.
    """
    pids: list[int]
    with psycopg.connect(libpq_url(url)) as conn:
        pids = [r[0] for r in conn.execute("select id from watched_processes order by id").fetchall()]
    per_tick = len(pids)
    rows_written = 0
    tick = 0
    t0 = time.perf_counter()
    with psycopg.connect(libpq_url(url)) as conn:
        conn.execute("create temp table ceiling_last (id bigint, t timestamptz, n int) on commit delete rows")
        conn.commit()  # else every batch below would be a savepoint of this one transaction
        while rows_written < total_rows:
            n = 0
            touched: dict[int, datetime] = {}
            ticks = max(1, min(rows_per_txn, total_rows - rows_written) // per_tick)
            with conn.transaction():
                with conn.cursor() as cur:
                    cur.execute("select nextval('process_samples_id_seq') from generate_series(1, %s)",
                                (-(-ticks * per_tick // SAMPLE_ID_BLOCK),))
                    ids = [i for (first,) in cur.fetchall() for i in range(first, first + SAMPLE_ID_BLOCK)]
                    with cur.copy("copy process_samples (id, watched_process_id, count, cpu_pct, memory_pct,"
                                  " oldest_start_unix, recorded_at) from stdin (format binary)") as copy:
                        copy.set_types(["int8", "int8", "int4", "float8", "float8", "int8", "timestamptz"])
                        for _ in range(ticks):
                            at = start_at + timedelta(seconds=tick)
                            for pid in pids:
                                copy.write_row((ids[n], pid, 2, 3.5, 1.25, 1716566400, at))
                                touched[pid] = at
                                n += 1
                            tick += 1
                    with cur.copy("copy ceiling_last (id, t, n) from stdin (format binary)") as copy:
                        copy.set_types(["int8", "timestamptz", "int4"])
                        for pid in sorted(touched):
                            copy.write_row((pid, touched[pid], ticks))
                    cur.execute(
                        "update watched_processes w set last_count = 2, last_cpu_pct = 3.5, last_memory_pct = 1.25,"
                        " last_oldest_start_unix = 1716566400, last_sample_at = u.t,"
                        " samples_total = w.samples_total + u.n, updated_at = now()"
                        " from ceiling_last u where w.id = u.id"
                    )
            rows_written += n
    elapsed = time.perf_counter() - t0
    return {"rate": rows_written / elapsed, "rows": rows_written, "seconds": elapsed}


@dataclass
class IngestOptions:
    servers: int = 100
    processes: int = 20
    seconds: float = 20.0
    warmup: float = 5.0
    batch_size: int = 500
    batch_timeout_ms: int = 50
    max_backlog: int = 3000  # messages published ahead of commits
    py_spy: str | None = None  # profile the ingest subprocess with py-spy (raw collapsed stacks)
    replicas: int = 1  # `procwatch ingest` processes sharing the durable consumer
    nats_nodes: int = 1  # 3: an embedded 3-node NATS cluster, every stream at R3 (bench/cluster.py)


def run_once(servers: Servers, opts: IngestOptions) -> dict:
    """One measurement: the service's committed samples/s, then the raw ceiling on the same database."""
    with servers.nats(opts.nats_nodes) as nats_url:
        url = create_database(servers.database_url, "procwatch_bench_ingest")
        try:
            fleet = create_fleet(url, opts.servers, opts.processes)
            durable = f"bench-{uuid.uuid4().hex[:8]}"
            env = {"DATABASE_URL": url, "NATS_URL": nats_url, "PROCWATCH_INGEST_DURABLE": durable,
                   "PROCWATCH_INGEST_DELIVER_POLICY": "new", "PROCWATCH_INGEST_BATCH_SIZE": str(opts.batch_size),
                   "PROCWATCH_INGEST_BATCH_TIMEOUT_MS": str(opts.batch_timeout_ms),
                   "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
                   "PROCWATCH_NATS_REPLICAS": str(min(3, opts.nats_nodes))}
            args = ["ingest"]
            stop = signal.SIGTERM
            if opts.py_spy:
                stop = signal.SIGINT
            with contextlib.ExitStack() as replicas:
                for i in range(opts.replicas):
                    log = servers.tmp / f"ingest-{durable}-{i}.log"
                    wrap = _py_spy(opts.py_spy) if i == 0 else None
                    replicas.enter_context(service(args, env, log, stop_signal=stop, wrap=wrap))
                asyncio.run(wait_for_consumer(nats_url, subjects.AGENT_SAMPLES_STREAM, durable))
                start_at = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=12)
                load_avg = loadavg_1m()
                load = asyncio.run(publish_load(nats_url, url, fleet, opts.seconds, opts.warmup, opts.max_backlog,
                                                start_at))
            with psycopg.connect(libpq_url(url)) as conn:
                (rows_now,) = conn.execute("select count(*) from process_samples").fetchone()
                (total_now,) = conn.execute("select sum(samples_total) from watched_processes").fetchone()
            if rows_now != total_now:  # the counter must match the rows exactly
                raise RuntimeError(f"samples_total {total_now} != rows {rows_now}")
            rows_per_txn = opts.batch_size * opts.processes
            ceiling = raw_ceiling(url, fleet, load["rows_in_window"], rows_per_txn,
                                  start_at + timedelta(seconds=load["ticks"] + 10))
        finally:
            drop_database(url)
    return {"service_rate": load["rate"], "ceiling_rate": ceiling["rate"], "ratio": load["rate"] / ceiling["rate"],
            "rows_in_window": load["rows_in_window"], "window_s": load["window_s"], "load_1m": load_avg}


def _py_spy(out: str | None):
    if not out:
        return None
    spy = shutil.which("py-spy") or "py-spy"
    return [spy, "record", "--format", "raw", "-r", "200", "-o", out, "--"]
