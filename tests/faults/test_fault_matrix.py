"""The fault matrix: real faults injected into the whole system under a known load.

Own embedded PostgreSQL, Redis and NATS (under tmp, so killing them disturbs no other test);
200 servers x 5 processes; `procwatch ingest`, `procwatch alerter`, `procwatch notifier` and
`procwatch api` as subprocesses (so kill -9 is real); one webhook channel for the fleet's user,
its receiver a real HTTP server in the test (tests/support/receiver.py) that verifies each
signature (standardwebhooks) and dedupes by webhook-id as a receiver should; a load generator publishing one message per server per tick
(the agent's contract: unique `Nats-Msg-Id` per server and tick, re-sent until JetStream acks it);
an API poller hitting GET list every 100 ms.

The load alternates between *active* phases, with scripted downs, restarts and CPU spikes, and
*quiet* phases (steady values). Each fault is injected in a quiet phase after the pipeline caught
up, and the next active phase starts only once the system recovered: a transition is an alert
only when its sample is the newest one (DESIGN: a late sample never re-triggers), and recovery
from a crash redelivers older messages after newer ones, so this keeps the expected alert set
exact while every sample and every event still crosses every fault.

Liveness (issue 15): every server's offline_after_s is OFFLINE_AFTER_S (a test value, below the
API's minimum). No fault of the watcher itself (ingest stopped for 3 x offline_after_s while the
agents keep sending, kill -9, NATS or PostgreSQL down) may declare a server offline; one agent
falling silent fires exactly one `server_offline` for its server, resolved when it sends again.

After each fault: one line `faults: N injected, samples lost 0, duplicated 0, alerts missing 0, extra 0,
webhooks lost 0, duplicated 0 (re-sent R)`: every alert id on ALERTS reached the receiver (lost),
and no id arrived with two different bodies nor an id that is no alert (duplicated); R counts the
copies sent again after a crash or a failed attempt, which the receiver dropped by webhook-id
(delivery is at least once).
The notifier's faults: kill -9 while a request is in flight (the receiver answers slowly), the
receiver down for PROCWATCH_FAULTS_RECEIVER_DOWN_S (default 60 s here; the issue's scenario is
10 minutes: set 600) while alerts keep coming, and the PostgreSQL outage. The notifier runs with
a short retry schedule (1, 2, 4 s) and a 10 s claim lease, so recovery fits in the suite's time.
At the end: every published sample stored exactly once with its values, samples_total and last_*
fields right, every scripted alert transition on ALERTS exactly once and none extra, no consumer
with anything pending or unacked, and the API never took more than 2 s (200, or 503 fast).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import nats
import orjson
import psycopg
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy
from procwatch_contracts import subjects
from procwatch_contracts.messages import AlertEvent
from procwatch_db import accounts
from procwatch_db.migrate import upgrade
from procwatch_db.urls import libpq_url
from procwatch_domain import crypto
from procwatch_domain.secrets import hash_secret, new_agent_key
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from procwatch.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedRedis, free_port
from tests.faults.conftest import ServiceProcess
from tests.support.receiver import Receiver

pytestmark = [pytest.mark.faults, pytest.mark.timeout(900)]

N_SERVERS = int(os.environ.get("PROCWATCH_FAULTS_SERVERS", "200"))
PROCS = ["p0", "p1", "p2", "p3", "p4"]  # p1: downs, p2: restarts, p3: CPU spikes
CPU_THRESHOLD = 80.0
TICK_S = float(os.environ.get("PROCWATCH_FAULTS_TICK_S", "1.0"))
ACTIVE_TICKS = 9  # scripted positions 2-7, then normal ticks so every episode resolves
START_UNIX = 1_716_566_400
API_HANG_S = 2.0
RECEIVER_DOWN_S = float(os.environ.get("PROCWATCH_FAULTS_RECEIVER_DOWN_S", "60"))
# The receiver answers this late during the active phase before these faults, so the notifier
# still has webhooks to send (and in flight) when the fault hits.
SLOW_RECEIVER_BEFORE = {"PostgreSQL down 10 s": 0.05}
SECRETS_KEY = os.environ.get(crypto.SECRETS_KEY_ENV) or crypto.new_key()
OFFLINE_AFTER_S = int(os.environ.get("PROCWATCH_FAULTS_OFFLINE_AFTER_S", "4"))


# --- the scripted load --------------------------------------------------------------------------


def scripted(server_idx: int, proc: str, pos: int | None, restarts: int) -> tuple[int, float, float, int | None]:
    """(count, cpu, memory, oldest_start) of one process at one tick; pos = place in an active phase."""
    normal = (2, 10.0, 5.0, START_UNIX + (restarts if proc == "p2" else 0))
    if pos is None:
        return normal
    if proc == "p1" and server_idx % 4 == 1 and pos in (2, 3, 4):
        return (0, 0.0, 0.0, None)
    if proc == "p3" and server_idx % 5 == 2 and pos in (6, 7):
        return (2, 95.0, 5.0, normal[3])
    return normal


def expected_alerts(published: list[tuple[int, datetime, list]], fleet: Fleet) -> Counter:
    """The alert events the published sequence must produce: (process_id, type, state, occurred_at)."""
    out: Counter = Counter()
    prev: dict[int, tuple] = {}
    down: set[int] = set()
    hot: set[int] = set()
    for server_idx, at, readings in sorted(published, key=lambda p: (p[1], p[0])):
        for proc, (count, cpu, _mem, oldest) in zip(PROCS, readings, strict=True):
            pid = fleet.pids[server_idx][PROCS.index(proc)]
            if count == 0 and pid not in down:
                down.add(pid)
                out[(pid, "process_down", "firing", at)] += 1
            elif count > 0 and pid in down:
                down.discard(pid)
                out[(pid, "process_down", "resolved", at)] += 1
            if proc == "p2" and pid in prev:
                before = prev[pid][3]
                if before is not None and oldest is not None and oldest > before:
                    out[(pid, "process_restarted", "firing", at)] += 1
            if proc == "p3":
                if cpu > CPU_THRESHOLD and pid not in hot:
                    hot.add(pid)
                    out[(pid, "process_cpu_high", "firing", at)] += 1
                elif cpu <= CPU_THRESHOLD and pid in hot:
                    hot.discard(pid)
                    out[(pid, "process_cpu_high", "resolved", at)] += 1
            prev[pid] = (count, cpu, _mem, oldest)
    return out


@dataclass
class Fleet:
    user_id: int
    token: str
    server_ids: list[int]
    keys: list[str]
    pids: list[list[int]]


def make_fleet(database_url: str) -> Fleet:
    with psycopg.connect(libpq_url(database_url)) as conn:
        user_id = accounts.create_user(conn, f"faults-{uuid.uuid4().hex[:6]}@example.test", "scale")
        token = accounts.create_api_token(conn, user_id, "faults")
        server_ids, keys, pids = [], [], []
        for i in range(N_SERVERS):
            key = new_agent_key()
            (sid,) = conn.execute("insert into servers (user_id, hostname, agent_key_hash) values (%s, %s, %s)"
                                  " returning id", (user_id, f"fault-{i:03d}", hash_secret(key))).fetchone()
            row = []
            for proc in PROCS:
                (pid,) = conn.execute(
                    "insert into watched_processes (server_id, user_id, process_name, alert_on_down,"
                    " alert_on_restart, alert_on_cpu, cpu_threshold_pct, alert_on_memory)"
                    " values (%s, %s, %s, true, %s, %s, %s, false) returning id",
                    (sid, user_id, proc, proc == "p2", proc == "p3", CPU_THRESHOLD)).fetchone()
                row.append(pid)
            conn.execute("update servers set offline_after_s = %s where id = %s", (OFFLINE_AFTER_S, sid))
            server_ids.append(sid)
            keys.append(key)
            pids.append(row)
    return Fleet(user_id, token, server_ids, keys, pids)


def make_webhook_channel(database_url: str, user_id: int, url: str) -> str:
    """A webhook channel for every alert of the fleet's user; returns its signing secret."""
    os.environ[crypto.SECRETS_KEY_ENV] = SECRETS_KEY
    secret = crypto.new_webhook_secret()
    with psycopg.connect(libpq_url(database_url)) as conn:
        conn.execute("insert into channels (user_id, type, name, target_encrypted, target_hint, secret_encrypted)"
                     " values (%s, 'webhook', 'faults', %s, 'http://127.0.0.1/***', %s)",
                     (user_id, crypto.encrypt(url), crypto.encrypt(secret)))
    return secret


@dataclass
class WebhookTally:
    lost: int
    duplicated: int
    resent: int
    bad_signatures: int


def webhook_tally(receiver: Receiver, secret: str, expected_ids: set[str]) -> WebhookTally:
    """What a receiver that dedupes by webhook-id kept, against the alert ids on ALERTS."""
    verifier = Webhook(secret)
    first: dict[str, bytes] = {}
    resent = mismatched = bad = 0
    for r in receiver.received:
        if r.status != 200:
            continue
        try:
            verifier.verify(r.body, r.headers)
        except WebhookVerificationError:
            bad += 1
            continue
        msg_id = r.headers["webhook-id"]
        if msg_id in first:
            resent += 1
            mismatched += first[msg_id] != r.body
        else:
            first[msg_id] = r.body
    lost = len(expected_ids - set(first))
    duplicated = mismatched + len(set(first) - expected_ids)
    return WebhookTally(lost, duplicated, resent, bad)


@dataclass
class LoadGen:
    js: object
    fleet: Fleet
    base: datetime
    tick: int = 0
    active_left: int = 0
    restarts: list[int] = field(default_factory=list)
    published: list[tuple[int, datetime, list]] = field(default_factory=list)
    retries: int = 0
    stopping: bool = False
    # Servers (indices) whose agent is silent: nothing published for them meanwhile.
    silent: set[int] = field(default_factory=set)
    # The server-level alert events the run must produce: (server_id, type, state, reason).
    server_alerts: Counter = field(default_factory=Counter)

    def at(self, tick: int) -> datetime:
        return self.base + timedelta(seconds=10 * tick)

    async def _send(self, server_idx: int, at: datetime, readings: list) -> None:
        sid = self.fleet.server_ids[server_idx]
        body = orjson.dumps({
            "v": 1, "server_id": sid, "agent_version": "faults", "sampled_at": at.isoformat().replace("+00:00", "Z"),
            "processes": [{"process_name": p, "count": c, "cpu_pct": cpu, "memory_pct": mem, "oldest_start_unix": o}
                          for p, (c, cpu, mem, o) in zip(PROCS, readings, strict=True)],
        })
        headers = {"Authorization": f"Bearer {self.fleet.keys[server_idx]}",
                   "Nats-Msg-Id": f"{sid}-{int(at.timestamp())}"}
        while True:  # what an agent does: re-send the same tick (same Nats-Msg-Id) until stored by JetStream
            try:
                await self.js.publish(subjects.agent_samples(sid), body, headers=headers, timeout=2)
                return
            except Exception:
                self.retries += 1
                await asyncio.sleep(0.25)

    async def run(self) -> None:
        while not self.stopping:
            started = time.monotonic()
            pos = ACTIVE_TICKS - self.active_left if self.active_left > 0 else None
            if self.active_left:
                self.active_left -= 1
            if pos is not None and pos == 5:
                for i in range(N_SERVERS):
                    if i % 3 == 0:
                        self.restarts[i] += 1
            at = self.at(self.tick)
            batch = [(i, at, [scripted(i, p, pos, self.restarts[i]) for p in PROCS]) for i in range(N_SERVERS)
                     if i not in self.silent]
            await asyncio.gather(*(self._send(*m) for m in batch))
            self.published += batch
            self.tick += 1
            await asyncio.sleep(max(0.0, TICK_S - (time.monotonic() - started)))

    async def active_phase(self) -> None:
        self.active_left = ACTIVE_TICKS
        while self.active_left > 0:
            await asyncio.sleep(0.05)
        # One more tick so the phase's last tick is published (and recorded).
        target = self.tick + 1
        while self.tick < target:
            await asyncio.sleep(0.05)


@dataclass
class Poller:
    url: str
    headers: dict
    results: list[tuple[float, int, float]] = field(default_factory=list)  # (t, status or 0, seconds)
    stopping: bool = False

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            while not self.stopping:
                t0 = time.monotonic()
                try:
                    status = (await http.get(self.url, headers=self.headers)).status_code
                except httpx.HTTPError:
                    status = 0  # refused: the API process is not listening (never the case here)
                self.results.append((t0, status, time.monotonic() - t0))
                await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))


# --- the system under test ----------------------------------------------------------------------


@dataclass
class System:
    tmp: Path
    pg: EmbeddedPostgres
    redis: EmbeddedRedis
    nats: EmbeddedNats
    database_url: str
    redis_url: str
    nats_url: str
    services: dict[str, ServiceProcess]
    api_port: int

    def query(self, sql: str, params=()) -> list[tuple]:
        with psycopg.connect(libpq_url(self.database_url), connect_timeout=5) as conn:
            return conn.execute(sql, params).fetchall()


def start_system(tmp: Path) -> System:
    pg = EmbeddedPostgres(tmp / "pg" / "data")
    redis = EmbeddedRedis(tmp / "redis" / "data")
    nts = EmbeddedNats(tmp / "nats" / "data")
    database_url, redis_url, nats_url = pg.start(), redis.start(), nts.start()
    upgrade(database_url)
    api_port = free_port()
    common = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "NATS_URL": nats_url, "LOG_LEVEL": "INFO",
              crypto.SECRETS_KEY_ENV: SECRETS_KEY}
    services = {
        "ingest": ServiceProcess("ingest", {**common, "PROCWATCH_INGEST_ACK_WAIT_S": "5",
                                            "PROCWATCH_INGEST_LAST_SEEN_STEP_S": "0",
                                            "PROCWATCH_INGEST_RETENTION_ENABLED": "false",
                                            "PROCWATCH_INGEST_POOL_TIMEOUT_S": "2",
                                            "PROCWATCH_INGEST_RETRY_MAX_S": "2"}, tmp / "ingest.log"),
        "alerter": ServiceProcess("alerter", {**common, "PROCWATCH_ALERTER_ACK_WAIT_S": "5",
                                              "PROCWATCH_ALERTER_FETCH_TIMEOUT_S": "1",
                                              "PROCWATCH_ALERTER_MAX_BACKOFF_S": "2",
                                              "PROCWATCH_ALERTER_RELAY_POLL_INTERVAL_S": "0.5",
                                              # offline_after_s is seconds here: the lag bounds shrink with it.
                                              "PROCWATCH_ALERTER_OFFLINE_CHECK_EVERY_S": "0.5",
                                              "PROCWATCH_ALERTER_OFFLINE_MAX_LAG_S": "1",
                                              "PROCWATCH_ALERTER_OFFLINE_MAX_BACKLOG": str(2 * N_SERVERS)},
                                  tmp / "alerter.log"),
        "notifier": ServiceProcess("notifier", {**common, "PROCWATCH_NOTIFIER_ALLOW_PRIVATE_TARGETS": "1",
                                                "PROCWATCH_NOTIFIER_ACK_WAIT_S": "5",
                                                "PROCWATCH_NOTIFIER_RETRY_DELAYS_S": "[1, 2, 4]",
                                                "PROCWATCH_NOTIFIER_CLAIM_LEASE_S": "10",
                                                "PROCWATCH_NOTIFIER_REQUEST_TIMEOUT_S": "5",
                                                "PROCWATCH_NOTIFIER_POLL_INTERVAL_S": "0.5"},
                                   tmp / "notifier.log"),
        "api": ServiceProcess("api", {**common, "PROCWATCH_API_PORT": str(api_port),
                                      "PROCWATCH_API_RATE_LIMIT_PER_MINUTE": "1000000"}, tmp / "api.log"),
    }
    return System(tmp, pg, redis, nts, database_url, redis_url, nats_url, services, api_port)


async def read_alerts(nc) -> list[tuple[str, AlertEvent]]:
    """Every message on ALERTS: (Nats-Msg-Id, event)."""
    js = nc.jetstream()
    sub = await js.pull_subscribe(subjects.ALERTS_SUBJECTS, stream=subjects.ALERTS_STREAM,
                                  config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, inactive_threshold=30))
    out = []
    try:
        while True:
            try:
                msgs = await sub.fetch(500, timeout=0.5)
            except (nats.errors.TimeoutError, TimeoutError):
                break
            for m in msgs:
                out.append(((m.headers or {}).get("Nats-Msg-Id", ""), AlertEvent.model_validate_json(m.data)))
                await m.ack()
    finally:
        await sub.unsubscribe()
    return out


def alert_key(e: AlertEvent) -> tuple:
    return (e.process.id, e.type, e.state, e.occurred_at.astimezone(UTC))


def server_alert_key(e: AlertEvent) -> tuple:
    """A server-level event: its time is the broker's (not scripted), so it is not part of the key."""
    return (e.server.id, e.type, e.state, e.reason)


async def consumer_state(js, stream: str, durable: str) -> tuple[int, int] | None:
    try:
        info = await js.consumer_info(stream, durable)
    except Exception:
        return None
    return info.num_pending, info.num_ack_pending


async def wait_until(check, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if asyncio.iscoroutine(last):
                last = await last
        except Exception as exc:  # a dependency still restarting
            last = f"{type(exc).__name__}: {exc}"
        if last is True:
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


@dataclass
class Tally:
    lost: int
    duplicated: int
    missing: int
    extra: int
    webhooks: WebhookTally

    def line(self, injected: int) -> str:
        w = self.webhooks
        return (f"faults: {injected} injected, samples lost {self.lost}, duplicated {self.duplicated}, "
                f"alerts missing {self.missing}, extra {self.extra}, "
                f"webhooks lost {w.lost}, duplicated {w.duplicated} (re-sent {w.resent})")


async def tally(system: System, gen: LoadGen, fleet: Fleet, nc, upto: int, receiver: Receiver, secret: str) -> Tally:
    """Compare the DB and ALERTS with everything published in ticks < `upto`."""
    published = [p for p in gen.published if p[1] < gen.at(upto)]
    all_pids = [pid for row in fleet.pids for pid in row]
    rows = system.query("select watched_process_id, recorded_at from process_samples"
                        " where watched_process_id = any(%s) and recorded_at < %s", (all_pids, gen.at(upto)))
    got = Counter(rows)
    want = {(fleet.pids[i][k], at) for i, at, _ in published for k in range(len(PROCS))}
    lost = len(want - set(got))
    duplicated = sum(n - 1 for n in got.values() if n > 1) + len(set(got) - want)
    everything = [e for _, e in await read_alerts(nc)]
    events = [e for e in everything if e.process is not None and e.occurred_at.astimezone(UTC) < gen.at(upto)]
    have = Counter(alert_key(e) for e in events)
    expect = expected_alerts(published, fleet)
    # Server-level ones (server_offline) over the whole run: any not scripted is extra.
    have_servers = Counter(server_alert_key(e) for e in everything if e.process is None)
    missing = sum((expect - have).values()) + sum((gen.server_alerts - have_servers).values())
    extra = sum((have - expect).values()) + sum((have_servers - gen.server_alerts).values())
    webhooks = webhook_tally(receiver, secret, {e.id for e in everything})
    return Tally(lost, duplicated, missing, extra, webhooks)


async def webhooks_caught_up(receiver: Receiver, nc, timeout: float) -> None:
    """Every alert id on ALERTS reached the receiver (with a 200)."""
    async def delivered():
        want = {e.id for _, e in await read_alerts(nc)}
        got = {r.headers.get("webhook-id") for r in receiver.received if r.status == 200}
        return True if want <= got else len(want - got)

    await wait_until(delivered, timeout, "every alert delivered to the webhook receiver", interval=0.5)


async def caught_up(system: System, gen: LoadGen, fleet: Fleet, nc, js, timeout: float, extra_ticks: int = 0) -> int:
    """Wait until everything published so far (plus `extra_ticks` more ticks, so that a restarted
    service is proven to process new work) is stored, evaluated and its alerts are on ALERTS.
    Returns the tick count it covers."""
    target = gen.tick + extra_ticks
    while gen.tick < target and not gen.stopping:
        await asyncio.sleep(0.05)
    upto = gen.tick
    all_pids = [pid for row in fleet.pids for pid in row]
    n_expected = len(PROCS) * sum(1 for p in gen.published if p[1] < gen.at(upto))

    def stored():
        (n,), = system.query("select count(*) from process_samples where watched_process_id = any(%s)"
                             " and recorded_at < %s", (all_pids, gen.at(upto)))
        return True if n >= n_expected else (n, n_expected)

    await wait_until(stored, timeout, "every published sample stored")
    expected = expected_alerts([p for p in gen.published if p[1] < gen.at(upto)], fleet)

    async def alerted():
        state = await consumer_state(js, subjects.SAMPLE_EVENTS_STREAM, "alerter")
        have = Counter(alert_key(e) for _, e in await read_alerts(nc)
                       if e.process is not None and e.occurred_at < gen.at(upto))
        return True if not (expected - have) else (state, sum((expected - have).values()))

    await wait_until(alerted, timeout, "every expected alert on ALERTS", interval=0.5)
    return upto


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    sys_ = start_system(tmp)
    yield sys_
    for svc in sys_.services.values():
        if svc.alive():
            svc.signal(signal.SIGTERM)
    for svc in sys_.services.values():
        svc.stop(15)
    for server in (sys_.nats, sys_.redis, sys_.pg):
        server.stop()


async def test_fault_matrix(system: System, capsys):
    fleet = make_fleet(system.database_url)
    receiver = Receiver()
    await receiver.start()
    secret = make_webhook_channel(system.database_url, fleet.user_id, receiver.url("/hook"))
    for svc in system.services.values():
        svc.start()
    nc = await nats.connect(system.nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.25)
    js = nc.jetstream()
    api = f"http://127.0.0.1:{system.api_port}"
    lines: list[str] = []

    def report(line: str) -> None:
        lines.append(line)
        with capsys.disabled():
            print(line, flush=True)

    async def api_ready():
        async with httpx.AsyncClient(timeout=3) as http:
            r = await http.get(api + "/readyz")
            return r.status_code == 200 or r.status_code

    await wait_until(api_ready, 60, "api ready")
    async def consumers_exist():
        return (await consumer_state(js, subjects.AGENT_SAMPLES_STREAM, "procwatch-ingest") is not None
                and await consumer_state(js, subjects.SAMPLE_EVENTS_STREAM, "alerter") is not None
                and await consumer_state(js, subjects.ALERTS_STREAM, "notifier") is not None)

    await wait_until(consumers_exist, 60, "ingest, alerter and notifier consumers")
    gen = LoadGen(js, fleet, datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3),
                  restarts=[0] * N_SERVERS)
    poller = Poller(f"{api}/servers/{fleet.server_ids[0]}/processes", {"Authorization": f"Bearer {fleet.token}"})
    gen_task = asyncio.create_task(gen.run())
    poll_task = asyncio.create_task(poller.run())
    injected = 0

    async def killed_mid_batch(name: str, stream: str, durable: str) -> bool:
        """kill -9 while the service holds unacked messages (polls for up to 5 s for that moment)."""
        deadline = time.monotonic() + 5
        mid = False
        while time.monotonic() < deadline:
            state = await consumer_state(js, stream, durable)
            if state and state[1] > 0:
                mid = True
                break
            await asyncio.sleep(0.005)
        system.services[name].kill9()
        return mid

    async def restart_nats():
        await asyncio.to_thread(system.nats.stop)
        await asyncio.sleep(2)
        await asyncio.to_thread(system.nats.start)

    async def postgres_outage():
        (pending,), = system.query("select count(*) from deliveries where status = 'pending'")
        # Fast shutdown (SIGINT): every session is cut at once and new ones are refused; a plain
        # SIGTERM ("smart") would keep serving the open sessions until they leave.
        system.pg.proc.send_signal(signal.SIGINT)
        await asyncio.to_thread(system.pg.proc.wait, 30)
        await asyncio.sleep(10)
        await asyncio.to_thread(system.pg.start)
        return f"{pending} webhooks pending"

    async def flush_redis():
        import redis

        redis.Redis.from_url(system.redis_url).flushall()

    async def kill_ingest():
        mid = await killed_mid_batch("ingest", subjects.AGENT_SAMPLES_STREAM, "procwatch-ingest")
        system.services["ingest"].start()
        return "mid-batch" if mid else "between batches"

    async def kill_alerter():
        mid = await killed_mid_batch("alerter", subjects.SAMPLE_EVENTS_STREAM, "alerter")
        system.services["alerter"].start()
        return "mid-batch" if mid else "between batches"

    async def kill_notifier():
        # Deliveries in flight: the receiver answers slowly while an active phase raises alerts.
        receiver.delay_s = 0.3
        phase = asyncio.create_task(gen.active_phase())
        try:
            await wait_until(lambda: receiver.in_flight > 0, 60, "a webhook request in flight", interval=0.005)
            system.services["notifier"].kill9()
        finally:
            receiver.delay_s = 0.0
        system.services["notifier"].start()
        await phase
        return "request in flight"

    async def receiver_down():
        await receiver.stop()
        phase = asyncio.create_task(gen.active_phase())  # alerts keep coming meanwhile
        await asyncio.sleep(RECEIVER_DOWN_S)
        await phase
        await receiver.start()
        return f"{RECEIVER_DOWN_S:g} s, alerts raised meanwhile"

    async def server_events(sid: int) -> list[AlertEvent]:
        return [e for _, e in await read_alerts(nc) if e.process is None and e.server.id == sid]

    async def stop_ingest():
        # The watcher's own outage: agents keep sending for 3 x offline_after_s, nobody is offline after.
        stopped_at = time.monotonic()
        await asyncio.to_thread(system.services["ingest"].stop)  # SIGTERM: drains, then exits
        await asyncio.sleep(max(0.0, 3 * OFFLINE_AFTER_S - (time.monotonic() - stopped_at)))
        system.services["ingest"].start()
        return "agents sending"

    async def silence_agent():
        # One agent stops: exactly one server_offline for its server, resolved when it sends again.
        idx = 1
        sid = fleet.server_ids[idx]
        gen.silent.add(idx)
        silent_at = time.monotonic()

        async def fired():
            return True if [e.state for e in await server_events(sid)] == ["firing"] else "not yet"

        await wait_until(fired, OFFLINE_AFTER_S + 10, f"server_offline of server {sid}")
        fired_after = time.monotonic() - silent_at
        gen.silent.discard(idx)

        async def resolved():
            states = [(e.state, e.reason) for e in await server_events(sid)]
            return True if states == [("firing", None), ("resolved", "recovered")] else states

        await wait_until(resolved, 15, f"server_offline of server {sid} resolved")
        gen.server_alerts.update({(sid, "server_offline", "firing", None): 1,
                                  (sid, "server_offline", "resolved", "recovered"): 1})
        return f"fired {fired_after:.1f} s after its agent fell silent (offline_after_s {OFFLINE_AFTER_S})"

    faults = [
        ("kill -9 ingest", kill_ingest),
        ("kill -9 alerter", kill_alerter),
        ("restart NATS", restart_nats),
        ("PostgreSQL down 10 s", postgres_outage),
        ("flush Redis", flush_redis),
        ("kill -9 notifier", kill_notifier),
        ("webhook receiver down", receiver_down),
        (f"ingest stopped {3 * OFFLINE_AFTER_S} s", stop_ingest),
        ("one agent silent", silence_agent),
    ]
    try:
        for name, inject in faults:
            receiver.delay_s = SLOW_RECEIVER_BEFORE.get(name, 0.0)
            await gen.active_phase()
            await caught_up(system, gen, fleet, nc, js, 120)
            t0 = time.monotonic()
            note = await inject()
            receiver.delay_s = 0.0
            back = time.monotonic()  # the dependency (or the killed service) is back
            injected += 1
            for svc_name, svc in system.services.items():
                assert svc.alive(), f"{svc_name} died after {name}:\n{svc.output()[-3000:]}"
            upto = await caught_up(system, gen, fleet, nc, js, 120, extra_ticks=2)
            await webhooks_caught_up(receiver, nc, 120)
            done = time.monotonic()
            result = await tally(system, gen, fleet, nc, upto, receiver, secret)
            timing = f"fault lasted {back - t0:.1f} s, caught up (2 new ticks included) {done - back:.1f} s later"
            window = [(st, d) for t, st, d in poller.results if t0 - 1 <= t <= done]
            ok, unavailable = sum(1 for st, _ in window if st == 200), sum(1 for st, _ in window if st == 503)
            api_note = (f"api {ok}x200 {unavailable}x503"
                        f" slowest {max((d for _, d in window), default=0):.2f} s")
            report(f"{result.line(injected)}  [{name}{', ' + note if note else ''}; {timing}; {api_note}]")
        await gen.active_phase()
        # The agents stop now: every server would rightly go offline. Not part of the matrix.
        system.query("update servers set alert_on_offline = false where id = any(%s) returning id",
                     (fleet.server_ids,))
        gen.stopping = True
        await gen_task
        upto = await caught_up(system, gen, fleet, nc, js, 120)
        assert upto == gen.tick
        await webhooks_caught_up(receiver, nc, 120)
        poller.stopping = True
        await poll_task

        # --- final assertions -------------------------------------------------------------------
        final = await tally(system, gen, fleet, nc, upto, receiver, secret)
        report(final.line(injected) + "  [final: whole run]")
        assert (final.lost, final.duplicated, final.missing, final.extra) == (0, 0, 0, 0), lines
        assert (final.webhooks.lost, final.webhooks.duplicated, final.webhooks.bad_signatures) == (0, 0, 0), lines
        undelivered = system.query("select status, count(*) from deliveries where status <> 'delivered'"
                                   " group by status")
        assert undelivered == [], undelivered

        all_pids = [pid for row in fleet.pids for pid in row]
        rows = system.query("select watched_process_id, recorded_at, count, cpu_pct, memory_pct, oldest_start_unix"
                            " from process_samples where watched_process_id = any(%s)", (all_pids,))
        want = {(fleet.pids[i][k], at): readings[k] for i, at, readings in gen.published for k in range(len(PROCS))}
        got = {(pid, at): (c, cpu, mem, o) for pid, at, c, cpu, mem, o in rows}
        assert len(rows) == len(want) and got == want, "stored samples differ from the published ones"

        last_at = gen.at(gen.tick - 1)
        state = {r[0]: r[1:] for r in system.query(
            "select id, samples_total, last_count, last_cpu_pct, last_memory_pct, last_sample_at,"
            " last_oldest_start_unix, alerted_state from watched_processes where id = any(%s)", (all_pids,))}
        newest = {(fleet.pids[i][k]): readings[k] for i, at, readings in gen.published if at == last_at
                  for k in range(len(PROCS))}
        sent = Counter(i for i, _, _ in gen.published)  # ticks published per server (a silent one has fewer)
        server_of = {pid: i for i, row in enumerate(fleet.pids) for pid in row}
        for pid, (total, count, cpu, mem, at, oldest, alerted) in state.items():
            assert total == sent[server_of[pid]], (pid, total)
            assert (count, cpu, mem, oldest) == newest[pid] and at == last_at, pid
            assert alerted is None, (pid, alerted)  # every scripted episode resolved

        ids = [msg_id for msg_id, _ in await read_alerts(nc)]
        assert len(ids) == len(set(ids)), "an alert id appears twice on ALERTS"
        assert all(mid == e.id for mid, e in await read_alerts(nc)), "Nats-Msg-Id differs from the alert id"

        for stream, durable in [(subjects.AGENT_SAMPLES_STREAM, "procwatch-ingest"),
                                (subjects.SAMPLE_EVENTS_STREAM, "alerter"),
                                (subjects.ALERTS_STREAM, "notifier")]:
            await wait_until(lambda s=stream, d=durable: _settled(js, s, d), 30, f"{durable} settled")

        statuses = Counter(s for _, s, _ in poller.results)
        slowest = max(d for _, _, d in poller.results)
        report(f"api poller: {len(poller.results)} requests, statuses {dict(statuses)}, slowest {slowest:.2f} s; "
               f"agent re-sends {gen.retries}; {gen.tick} ticks, {len(gen.published)} messages, "
               f"{len(want)} samples, {sum(expected_alerts(gen.published, fleet).values())} alerts")
        assert slowest <= API_HANG_S, f"the API hung for {slowest:.2f} s"
        assert set(statuses) <= {200, 503}, statuses
        assert statuses[200] > len(poller.results) // 2
        for svc_name, svc in system.services.items():
            assert svc.alive(), f"{svc_name} died:\n{svc.output()[-3000:]}"
    finally:
        gen.stopping = True
        poller.stopping = True
        for task in (gen_task, poll_task):
            if not task.done():
                task.cancel()
        await asyncio.gather(gen_task, poll_task, return_exceptions=True)
        await receiver.stop()
        (Path(system.tmp) / "summary.txt").write_text("\n".join(lines) + "\n")
        # Keep the logs of the last run outside pytest's rotating tmp dirs, for post-mortems.
        keep = Path(os.environ.get("PROCWATCH_FAULTS_KEEP_DIR", "/tmp/procwatch-faults-last"))
        shutil.rmtree(keep, ignore_errors=True)
        keep.mkdir(parents=True, exist_ok=True)
        for log_file in [*Path(system.tmp).glob("*.log"), *Path(system.tmp).glob("*/*.log"),
                         Path(system.tmp) / "summary.txt"]:
            shutil.copy(log_file, keep / log_file.name)
        await nc.close()


async def _settled(js, stream: str, durable: str):
    state = await consumer_state(js, stream, durable)
    return True if state == (0, 0) else state
