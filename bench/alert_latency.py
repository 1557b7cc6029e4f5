"""Alert latency under load: agent sample published -> alert event received from ALERTS.

    uv run python -m bench.alert_latency [--alerts 240] [--load-rate 5000] [--probe-interval 0.1]

(`uv run python -m bench alert` runs it as part of the benchmark suite: bench/alert.py.)

Starts embedded PostgreSQL and NATS (procwatch.embedded) in a temporary
directory, migrates, creates accounts, then runs the real services as
subprocesses (`procwatch ingest`, `procwatch alerter`). A load generator (its own
process) publishes agent samples for `--load-servers` servers at `--load-rate`
samples/s in total, none of which alert. Meanwhile a probe publishes, every
`--probe-interval` seconds, an agent sample for a probe process whose CPU
alternately crosses above and back below its threshold, so each probe yields
exactly one alert event (firing, then resolved). For each alert it records the
time from just before the agent-sample publish to the arrival of the alert event
on a NATS subscription to `alerts.<probe server>.*` (the ALERTS stream's subject),
and prints p50/p95/p99/max. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from bench.common import percentile
from procwatch.embedded import EmbeddedNats, EmbeddedPostgres
from procwatch_contracts import subjects
from procwatch_contracts.messages import AgentSample, ProcessReading
from procwatch_db import accounts
from procwatch_db.migrate import upgrade
from procwatch_db.urls import libpq_url
from procwatch_domain.secrets import hash_secret, new_agent_key

CPU_THRESHOLD = 80.0


def create_database(server_url: str) -> str:
    from urllib.parse import urlsplit

    with psycopg.connect(libpq_url(server_url), autocommit=True) as conn:
        conn.execute("create database procwatch_bench")
    url = urlsplit(libpq_url(server_url))._replace(path="/procwatch_bench").geturl()
    upgrade(url)
    return url


def create_fleet(database_url: str, load_servers: int, processes_per_server: int) -> dict:
    """One user (scale plan), load servers with `processes_per_server` each, one probe server."""
    fleet: dict = {"load": [], "probe": None}
    with psycopg.connect(libpq_url(database_url)) as conn:
        user_id = accounts.create_user(conn, f"bench-{uuid.uuid4().hex[:8]}@example.test", "scale")

        def server(hostname: str, names: list[str], **flags) -> dict:
            key = new_agent_key()
            (sid,) = conn.execute(
                "insert into servers (user_id, hostname, agent_key_hash) values (%s, %s, %s) returning id",
                (user_id, hostname, hash_secret(key)),
            ).fetchone()
            with conn.cursor() as cur:
                cur.executemany(
                    "insert into watched_processes (server_id, user_id, process_name, alert_on_cpu,"
                    " cpu_threshold_pct) values (%s, %s, %s, %s, %s)",
                    [(sid, user_id, n, flags.get("alert_on_cpu", False), CPU_THRESHOLD) for n in names],
                )
            return {"id": sid, "key": key, "names": names}

        for i in range(load_servers):
            fleet["load"].append(server(f"load-{i:03d}", [f"svc{j:02d}" for j in range(processes_per_server)]))
        fleet["probe"] = server("probe-01", ["probe"], alert_on_cpu=True)
    return fleet


def add_maintenance_windows(database_url: str, fleet: dict, count: int, covering: int = 10) -> None:
    """`count` maintenance windows in effect now for the fleet's user (docs/maintenance.md): all but
    `covering` scoped to the load servers' processes or servers (never the probe's), half one-off and
    half recurring (daily, in an IANA zone), and `covering` that also cover the probe (account-wide,
    the probe server, the probe process): its alerts are then suppressed, still published, so the
    probe still measures them, and the alerter answers "is it suppressed?" on every transition."""
    now = datetime.now(UTC)
    start, end = now - timedelta(hours=1), now + timedelta(days=2)
    load = fleet["load"]
    with psycopg.connect(libpq_url(database_url)) as conn:
        [(user_id,)] = conn.execute("select user_id from servers where id = %s", (fleet["probe"]["id"],)).fetchall()
        [(probe_process,)] = conn.execute("select id from watched_processes where server_id = %s",
                                          (fleet["probe"]["id"],)).fetchall()
        process_ids = [r[0] for r in conn.execute(
            "select id from watched_processes where server_id = any(%s) order by id", ([s["id"] for s in load],))]
        rows = []
        for i in range(count):
            if i >= count - covering:
                scope = [(None, None), ([fleet["probe"]["id"]], None), (None, [probe_process])][i % 3]
            elif i % 2:
                scope = ([load[i % len(load)]["id"]], None)
            else:
                scope = (None, process_ids[i % len(process_ids): i % len(process_ids) + 5])
            if i % 2:
                rows.append((user_id, f"bench-{i}", start, end, None, None, "UTC", *scope, end))
            else:
                rows.append((user_id, f"bench-{i}", start, None, "FREQ=DAILY", 20 * 3600, "Europe/Berlin", *scope,
                             None))
        with conn.cursor() as cur:
            cur.executemany(
                "insert into maintenance_windows (user_id, name, starts_at, ends_at, rrule, duration_s, timezone,"
                " server_ids, process_ids, effective_until) values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)


# The flap-protection setting (issue 18, part 2: another change adds the column): consecutive
# samples a condition must hold before it fires.
FLAP_COLUMN = "alert_after_samples"


def set_flap_counters(database_url: str, fleet: dict, samples: int = 3) -> bool:
    """Flap counters in play for the load processes (CPU rule on, `FLAP_COLUMN` = `samples`; they never
    reach the threshold): the alerter counts for them on every sample. The probe keeps 1, so each of its
    samples still fires or resolves. A no-op (False) on a schema without the column."""
    with psycopg.connect(libpq_url(database_url)) as conn:
        exists = conn.execute("select 1 from information_schema.columns where table_name = 'watched_processes'"
                              " and column_name = %s", (FLAP_COLUMN,)).fetchone()
        if not exists:
            return False
        conn.execute(f"update watched_processes set alert_on_cpu = true, {FLAP_COLUMN} = %s"  # our constant
                     " where server_id = any(%s)", (samples, [s["id"] for s in fleet["load"]]))
    return True


def agent_message(server: dict, sampled_at: datetime, cpu_of) -> tuple[str, bytes, dict]:
    msg = AgentSample(
        v=1, server_id=server["id"], agent_version="bench", sampled_at=sampled_at,
        processes=[
            ProcessReading(process_name=n, count=2, cpu_pct=cpu_of(n), memory_pct=1.0, oldest_start_unix=1_700_000_000)
            for n in server["names"]
        ],
    )
    headers = {
        "Authorization": f"Bearer {server['key']}",
        "Nats-Msg-Id": f"{server['id']}-{sampled_at.timestamp():.6f}",
    }
    return subjects.agent_samples(server["id"]), msg.model_dump_json().encode(), headers


def load_generator(nats_url: str, servers: list[dict], rate: float, stop, stats_path: str) -> None:
    """Publish `rate` samples/s in total, spread evenly over the load servers; never alerting."""
    import nats

    async def run() -> None:
        nc = await nats.connect(nats_url.split(","))
        per_message = len(servers[0]["names"])
        messages_per_s = rate / per_message
        interval = 1.0 / messages_per_s
        sent = 0
        start = time.monotonic()
        i = 0
        while not stop.is_set():
            server = servers[i % len(servers)]
            subject, payload, headers = agent_message(server, datetime.now(UTC), lambda n: 5.0)
            await nc.publish(subject, payload, headers=headers)
            sent += per_message
            i += 1
            next_at = start + i * interval
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif i % 50 == 0:
                await nc.flush()
        await nc.flush()
        elapsed = time.monotonic() - start
        await nc.close()
        Path(stats_path).write_text(json.dumps({"samples": sent, "seconds": elapsed}))

    asyncio.run(run())


async def probe(
    nats_url: str, server: dict, alerts: int, interval: float, timeout: float, max_seconds: float | None = None
) -> tuple[list[float], list[float], int]:
    """Returns (publish -> alert, SampleRecorded -> alert, lost): the second is the alerter's share.

    Stops early after `max_seconds` (a saturated pipeline would otherwise take alerts x timeout)."""
    import nats

    nc = await nats.connect(nats_url.split(","))
    arrivals: asyncio.Queue = asyncio.Queue()
    recorded_at: dict[str, float] = {}  # sample time -> when ingest's SampleRecorded was seen

    async def on_alert(msg) -> None:
        arrivals.put_nowait((time.perf_counter(), json.loads(msg.data)))

    async def on_recorded(msg) -> None:
        event = json.loads(msg.data)
        recorded_at[event["sampled_at"]] = time.perf_counter()

    await nc.subscribe(f"alerts.{server['id']}.*", cb=on_alert)
    await nc.subscribe(subjects.samples_recorded(server["id"]), cb=on_recorded)
    latencies: list[float] = []
    alerter_share: list[float] = []
    lost = 0
    hot = True
    stop_at = time.monotonic() + max_seconds if max_seconds else None
    for _ in range(alerts):
        if stop_at is not None and time.monotonic() > stop_at:
            break
        cpu = CPU_THRESHOLD + 10 if hot else CPU_THRESHOLD - 10
        subject, payload, headers = agent_message(server, datetime.now(UTC), lambda n: cpu)
        sent_at = time.perf_counter()
        await nc.publish(subject, payload, headers=headers)
        expected = "firing" if hot else "resolved"
        try:
            while True:
                got_at, event = await asyncio.wait_for(arrivals.get(), timeout)
                if event["state"] == expected:
                    latencies.append(got_at - sent_at)
                    seen = recorded_at.get(event["occurred_at"])
                    if seen is not None:
                        alerter_share.append(got_at - seen)
                    break
        except TimeoutError:
            lost += 1
            print(f"no {expected} alert within {timeout}s", file=sys.stderr)
            # Resynchronise: re-send the same direction next time.
            continue
        hot = not hot
        await asyncio.sleep(interval)
    await nc.close()
    return latencies, alerter_share, lost


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alerts", type=int, default=240)
    parser.add_argument("--load-rate", type=float, default=5000.0, help="background samples per second")
    parser.add_argument("--load-servers", type=int, default=100)
    parser.add_argument("--processes-per-server", type=int, default=50)
    parser.add_argument("--probe-interval", type=float, default=0.1)
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load before probing")
    parser.add_argument("--keep", action="store_true", help="keep the data directory (logs)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="procwatch-bench-"))
    pg = EmbeddedPostgres(tmp / "pg")
    nats_server = EmbeddedNats(tmp / "nats")
    children: list[subprocess.Popen] = []
    loadgen: mp.Process | None = None
    try:
        database_url = create_database(pg.start())
        nats_url = nats_server.start()
        fleet = create_fleet(database_url, args.load_servers, args.processes_per_server)
        env = {
            **os.environ, "DATABASE_URL": database_url, "NATS_URL": nats_url,
            "PROCWATCH_INGEST_DELIVER_POLICY": "all", "PROCWATCH_ALERTER_DELIVER_POLICY": "all",
            "PROCWATCH_INGEST_STATS_LOG_INTERVAL_S": "10",
        }
        procwatch = shutil.which("procwatch") or str(Path(sys.executable).parent / "procwatch")
        for name in ("ingest", "alerter"):
            log = open(tmp / f"{name}.log", "wb")
            children.append(subprocess.Popen([procwatch, name], env=env, stdout=log, stderr=subprocess.STDOUT))
        time.sleep(3)  # services connect and declare their consumers (a benchmark, not a test)
        for child in children:
            if child.poll() is not None:
                raise SystemExit(f"a service exited early; see {tmp}")

        stats_path = str(tmp / "load.json")
        ctx = mp.get_context("spawn")
        stop = ctx.Event()
        loadgen = ctx.Process(
            target=load_generator, args=(nats_url, fleet["load"], args.load_rate, stop, stats_path), daemon=True
        )
        if args.load_rate > 0:
            loadgen.start()
        time.sleep(args.warmup)
        started = time.monotonic()
        latencies, alerter_share, lost = asyncio.run(probe(nats_url, fleet["probe"], args.alerts, args.probe_interval, timeout=10.0))
        probe_seconds = time.monotonic() - started
        stop.set()
        if args.load_rate > 0:
            loadgen.join(10)
        load = json.loads(Path(stats_path).read_text()) if Path(stats_path).exists() else None

        ms = [x * 1000 for x in latencies]
        alerter_ms = [x * 1000 for x in alerter_share]
        result = {
            "alerts_measured": len(ms),
            "alerts_lost": lost,
            "p50_ms": round(statistics.median(ms), 1) if ms else None,
            "p95_ms": round(percentile(ms, 95), 1) if ms else None,
            "p99_ms": round(percentile(ms, 99), 1) if ms else None,
            "max_ms": round(max(ms), 1) if ms else None,
            "mean_ms": round(statistics.fmean(ms), 1) if ms else None,
            # From ingest's SampleRecorded event to the alert event: the alerter + outbox relay.
            "alerter_share_p50_ms": round(statistics.median(alerter_ms), 1) if alerter_ms else None,
            "alerter_share_p99_ms": round(percentile(alerter_ms, 99), 1) if alerter_ms else None,
            "probe_seconds": round(probe_seconds, 1),
            "load_target_samples_per_s": args.load_rate,
            "load_achieved_samples_per_s": round(load["samples"] / load["seconds"]) if load else None,
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        }
        print(json.dumps(result, indent=2))
        return 0 if ms and not lost else 1
    finally:
        if loadgen is not None and loadgen.pid is not None and loadgen.is_alive():
            loadgen.terminate()
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
        nats_server.stop()
        pg.stop()
        if args.keep:
            print(f"data and logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
