"""API under load: req/s and p50/p99 of the list and get routes on a fleet-sized database.

    uv run python -m bench api [--runs 3] [--quick] [--workers 1,2]

Seeds a fresh database with 1,000 servers x 10 watched processes and >= 5 million
samples (generated in SQL by `generate_series`; one process with 2,000,000 samples,
one with 1,000, ~300 for every other; sample g is taken g x 10 s ago, into the daily
partitions of the longest plan retention, 90 days, created first as in production, and
the default partition beyond), runs the API as a real `procwatch api`
subprocess (uvicorn, uvloop, httptools) and drives it from another process: `wrk` (C, one
thread, bench/api_wrk.lua) when it is on PATH, else bench/loadgen.py (Python, so it takes
CPU the API needs on a small machine); 32 keep-alive connections, closed loop, fixed
duration. Each scenario's result names its `generator`.

Scenarios (each measured after a warm-up):
- `healthz`   GET /healthz: the HTTP stack alone, the same-run reference;
- `list`      GET /servers/<random of 1,000>/processes;
- `get_1k`    GET /servers/<id>/processes/<the 1,000-sample process>;
- `get_2m`    GET /servers/<id>/processes/<the 2,000,000-sample process>.

Rate limiting stays on (counted locally, flushed to Redis; see ratelimit.py) with a limit high enough
never to answer 429.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import psycopg

from bench.common import Servers, create_database, latency_summary, loadavg_1m, service, wait_until
from bench.loadgen import LoadResult, run_in_subprocess
from procwatch.embedded import free_port
from procwatch_db import accounts, partitions
from procwatch_db.urls import libpq_url

SERVERS = 1_000
PROCESSES_PER_SERVER = 10
BIG_SAMPLES = 2_000_000
SMALL_SAMPLES = 1_000
OTHER_SAMPLES = 300  # x 9,998 processes: 2,999,400; + 2,001,000 = 5,000,400 samples
INTERVAL_S = 10  # the agent's default tick
RESTART_EVERY = 360  # samples: oldest_start_unix increases once an hour -> 24 restarts a day


@dataclass
class Seeded:
    url: str
    token: str
    server_ids: list[int]
    big: tuple[int, int]  # (server id, process id)
    small: tuple[int, int]
    big_samples: int
    small_samples: int
    samples: int
    seconds: float


def seed(server_url: str, *, servers: int = SERVERS, big: int = BIG_SAMPLES, small: int = SMALL_SAMPLES,
         other: int = OTHER_SAMPLES) -> Seeded:
    t0 = time.perf_counter()
    url = create_database(server_url, "procwatch_bench_api")
    with psycopg.connect(libpq_url(url)) as conn:
        user_id = accounts.create_user(conn, f"bench-{uuid.uuid4().hex[:8]}@example.test", "scale")
        token = accounts.create_api_token(conn, user_id, "bench")
        conn.execute(
            "insert into servers (user_id, hostname, agent_key_hash, last_agent_version)"
            " select %s, 'api-' || lpad(g::text, 5, '0'), md5(g::text) || md5(g::text), '2.4.1'"
            " from generate_series(1, %s) g", (user_id, servers))
        conn.execute(
            "insert into watched_processes (server_id, user_id, process_name, alert_on_cpu, cpu_threshold_pct)"
            " select s.id, s.user_id, 'proc-' || j, j %% 2 = 0, 80 from servers s, generate_series(0, %s) j"
            " order by s.id, j", (PROCESSES_PER_SERVER - 1,))
        pids = conn.execute("select id, server_id from watched_processes order by id").fetchall()
        (big_pid, big_sid), (small_pid, small_sid) = pids[0], pids[1]
        conn.commit()
        # The daily partitions a fleet on the longest plan retention keeps (90 days back, 7 ahead), as in
        # production: the get route's cost depends on how many partitions the statement can touch.
        partitions.ensure_partitions(conn, datetime.now(UTC).date(), back_days=partitions.max_retention_days(conn))
        conn.commit()
        # Bulk load: no per-row FK trigger (the ids come from the table just written).
        conn.execute("set session_replication_role = replica")
        conn.execute("set maintenance_work_mem = '256MB'")
        # Sample g (0 = newest) is taken g*10 s before `now`; oldest_start_unix steps up every hour.
        insert = (
            "insert into process_samples (watched_process_id, count, cpu_pct, memory_pct, oldest_start_unix,"
            " recorded_at)"
            " select p.id, 2, 1.5 + (g %% 7), 0.5 + (g %% 5), 1700000000 - (g / {every}) * 3600,"
            "  date_trunc('second', now()) - g * interval '{interval} second'"
            " from watched_processes p, generate_series(0, %(n)s - 1) g where {where}"
        )
        consts = {"every": RESTART_EVERY, "interval": INTERVAL_S}
        conn.execute(insert.format(where="p.id = %(pid)s", **consts), {"n": big, "pid": big_pid})
        conn.execute(insert.format(where="p.id = %(pid)s", **consts), {"n": small, "pid": small_pid})
        conn.execute(insert.format(where="p.id <> all(%(pids)s)", **consts), {"n": other, "pids": [big_pid, small_pid]})
        conn.execute(
            "update watched_processes w set samples_total = c.n, last_count = 2, last_cpu_pct = 1.5,"
            " last_memory_pct = 0.5, last_oldest_start_unix = 1700000000, last_sample_at = date_trunc('second', now())"
            " from (select watched_process_id, count(*) n from process_samples group by 1) c"
            " where c.watched_process_id = w.id")
        conn.commit()
        conn.autocommit = True
        conn.execute("vacuum analyze")
        (samples,) = conn.execute("select sum(samples_total)::bigint from watched_processes").fetchone()
        server_ids = [r[0] for r in conn.execute("select id from servers order by id").fetchall()]
    return Seeded(url=url, token=token, server_ids=server_ids, big=(big_sid, big_pid), small=(small_sid, small_pid),
                  big_samples=big, small_samples=small,
                  samples=samples, seconds=time.perf_counter() - t0)


def explain(url: str, process_id: int) -> dict[str, str]:
    """EXPLAIN (ANALYZE, BUFFERS) of the get route's statement and of its restart-window query, run on a
    session set up like the API's read pool (generic plans), each after a few warm-up executions."""
    from procwatch_api.repository import GET_PROCESS_SQL, RESTART_RUNS_SQL

    since = (datetime.now(UTC) - timedelta(hours=24)).replace(tzinfo=None)
    out = {}
    with psycopg.connect(libpq_url(url), options="-c TimeZone=UTC -c plan_cache_mode=force_generic_plan",
                         prepare_threshold=0) as conn:
        (token_hash, server_id) = conn.execute(
            "select t.token_hash, p.server_id from watched_processes p join api_tokens t on t.user_id = p.user_id"
            " where p.id = %s limit 1", (process_id,)).fetchone()
        queries = {
            "get_process (auth + owner + process + newest 100)":
                (GET_PROCESS_SQL, {"h": token_hash, "sid": server_id, "pid": process_id, "n": 100, "since": since}),
            "restart_runs_24h (only when the restart window is not cached)":
                (RESTART_RUNS_SQL, {"pid": process_id, "since": since}),
        }
        for name, (sql, params) in queries.items():
            for _ in range(3):
                conn.execute(sql, params).fetchall()
            rows = conn.execute("explain (analyze, buffers, costs off, timing off) " + sql, params).fetchall()
            out[name] = "\n".join(r[0] for r in rows)
    return out


def _check_get(body: bytes, expected_total: int) -> None:
    doc = orjson.loads(body)
    assert len(doc["samples"]) == 100, len(doc["samples"])
    assert doc["samples_total"] == expected_total, (doc["samples_total"], expected_total)
    assert doc["recent_restarts"] >= 1, doc["recent_restarts"]


WRK_SCRIPT = Path(__file__).resolve().parent / "api_wrk.lua"


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rate: float
    latency_ms: dict[str, float]
    errors: dict[str, int]


def run_wrk(host: str, port: int, paths: list[str], headers: dict[str, str], *, concurrency: int, seconds: float,
            warmup: float) -> WrkResult:
    """`wrk` for `warmup` s (discarded), then for `seconds` s; latencies from its HdrHistogram (µs)."""
    with tempfile.NamedTemporaryFile("w", suffix=".paths", delete=False) as f:
        f.write("\n".join(paths) + "\n")
    try:
        cmd = ["wrk", "-t", "1", "-c", str(concurrency), "--timeout", "10s", "-s", str(WRK_SCRIPT)]
        for k, v in headers.items():
            cmd += ["-H", f"{k}: {v}"]
        env = {**os.environ, "PROCWATCH_WRK_PATHS": f.name}
        out = {}
        for phase, secs in (("warmup", warmup), ("measure", seconds)):
            done = subprocess.run([*cmd, "-d", f"{max(1, round(secs))}s", f"http://{host}:{port}/"],
                                  capture_output=True, env=env, timeout=secs + 60)
            if done.returncode != 0:
                raise RuntimeError(f"wrk failed: {done.stderr.decode()[-2000:]}")
            line = next(ln for ln in done.stdout.decode().splitlines() if ln.startswith("PROCWATCH_WRK "))
            out[phase] = json.loads(line.split(" ", 1)[1])
    finally:
        os.unlink(f.name)
    m = out["measure"]
    secs = m["duration_us"] / 1e6
    return WrkResult(
        requests=m["requests"], seconds=secs, rate=m["requests"] / secs,
        latency_ms={"n": m["requests"], **{f"{k}_ms": m[f"{k}_us"] / 1000 for k in ("p50", "p95", "p99", "max")}},
        errors=m["errors"],
    )


def _fetch(port: int, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def load_generator() -> str:
    return "wrk" if shutil.which("wrk") else "bench/loadgen.py"


def run_api(servers: Servers, seeded: Seeded, nats_url: str, *, workers: int, seconds: float, warmup: float,
            concurrency: int = 32, wrap: list[str] | None = None, only: list[str] | None = None) -> dict:
    """Start `procwatch api` with `workers` processes and run every scenario once."""
    port = free_port()
    env = {
        "DATABASE_URL": seeded.url, "REDIS_URL": servers.redis(), "NATS_URL": nats_url,
        "PROCWATCH_API_PORT": str(port), "PROCWATCH_API_WORKERS": str(workers),
        "PROCWATCH_API_RATE_LIMIT_PER_MINUTE": str(10**9), "PROCWATCH_API_LOG_LEVEL": "WARNING",
        "LOG_LEVEL": "WARNING",
    }
    headers = {"Authorization": f"Bearer {seeded.token}"}
    big_sid, big_pid = seeded.big
    small_sid, small_pid = seeded.small
    ids = seeded.server_ids
    scenarios = {
        "healthz": ["/healthz"],
        "list": [f"/servers/{ids[(i * 7919) % len(ids)]}/processes" for i in range(len(ids))],
        "get_1k": [f"/servers/{small_sid}/processes/{small_pid}"],
        "get_2m": [f"/servers/{big_sid}/processes/{big_pid}"],
    }
    out: dict = {"workers": workers}
    log = servers.tmp / f"api-{workers}-{port}.log"
    if only:
        scenarios = {k: v for k, v in scenarios.items() if k in only}
    with service(["api"], env, log, wrap=wrap, stop_signal=signal.SIGINT if wrap else None):
        wait_until(lambda: _ready(port), 60, "procwatch api")
        generator = load_generator()
        for name, paths in scenarios.items():
            hdrs = headers if name != "healthz" else {}
            load_before = loadavg_1m()
            if generator == "wrk":
                res = run_wrk("127.0.0.1", port, paths, hdrs, concurrency=concurrency, seconds=seconds,
                              warmup=warmup)
                if any(res.errors.values()) or not res.requests:
                    raise RuntimeError(f"{name}: wrk errors {res.errors} (status = non-2xx/3xx); see {log}")
                summary = res.latency_ms
                status, body = _fetch(port, paths[0], hdrs)
                if status != 200:
                    raise RuntimeError(f"{name}: {paths[0]} answered {status}; see {log}")
            else:
                res = run_in_subprocess("127.0.0.1", port, paths, hdrs,
                                        concurrency=concurrency, seconds=seconds, warmup=warmup)
                _check_loadgen(name, res, log)
                summary = latency_summary(res.latencies_s)
                body = res.sample_bodies[0]
            if name == "get_1k":
                _check_get(body, seeded.small_samples)
            elif name == "get_2m":
                _check_get(body, seeded.big_samples)
            out[name] = {"rate": res.rate, **summary, "load_1m": load_before, "generator": generator}
    return out


def _check_loadgen(name: str, res: LoadResult, log: Path) -> None:
    bad = {s: n for s, n in res.statuses.items() if s != 200}
    if bad or res.errors or not res.requests:
        raise RuntimeError(f"{name}: non-200 answers {bad}, {res.errors} broken connections; see {log}")


def _ready(port: int) -> bool:
    import http.client

    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        conn.request("GET", "/readyz")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False
