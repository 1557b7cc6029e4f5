"""What every benchmark shares: embedded servers, fresh databases, machine facts, percentiles.

One definition each: the bench scripts import these, never copy them. Pure helpers
(percentile, median, summarize) are unit-tested in tests/unit/test_bench_*.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit

# --- pure maths (unit-tested) -------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Linear-interpolated percentile (numpy's default / Excel PERCENTILE.INC), p in [0, 100]."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= p <= 100:
        raise ValueError(f"p={p} outside [0, 100]")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * p / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def median(values: list[float]) -> float:
    if not values:
        raise ValueError("median of no values")
    return statistics.median(values)


def latency_summary(seconds: list[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds of a list of latencies in seconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms),
    }


# --- machine and versions -------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_facts() -> dict[str, str]:
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = os.getloadavg()
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model(),
        "ram": f"{mem_gib:.1f} GiB",
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "load_average": f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
    }


def loadavg_1m() -> float:
    return os.getloadavg()[0]


PACKAGES = ("faststream", "nats-py", "fastapi", "uvicorn", "sqlalchemy", "psycopg", "pydantic", "orjson",
            "uvloop", "httptools", "httpx", "redis")


def versions(database_url: str | None = None, nats_url: str | None = None) -> dict[str, str]:
    out = {"python": platform.python_version()}
    if database_url:
        import psycopg

        from procwatch_db.urls import libpq_url

        with psycopg.connect(libpq_url(database_url)) as conn:
            out["postgresql"] = conn.execute("show server_version").fetchone()[0]
    if nats_url:
        out["nats-server"] = asyncio.run(_nats_version(nats_url))
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


async def _nats_version(nats_url: str) -> str:
    import nats

    nc = await nats.connect(nats_url.split(","))
    try:
        return nc._server_info.get("version", "unknown")  # the INFO the server sent on connect
    finally:
        await nc.close()


# --- servers ---------------------------------------------------------------------


@dataclass
class Servers:
    """URLs of PostgreSQL / NATS / Redis: the *_URL environment variables, else embedded ones."""

    tmp: Path
    database_url: str
    redis_url: str | None = None
    _started: list = field(default_factory=list)
    _nats_count: int = 0

    @contextmanager
    def nats(self, nodes: int = 1):
        """A NATS server for one benchmark run: NATS_URL if set, else a fresh embedded one
        (fresh streams: no backlog of an earlier run leaks into the next); `nodes` 3: an embedded
        3-node cluster (its URL lists the nodes), ready for R3 streams."""
        if os.environ.get("NATS_URL") and nodes == 1:
            yield os.environ["NATS_URL"]
            return
        from procwatch.embedded import EmbeddedNats, EmbeddedNatsCluster

        self._nats_count += 1
        if nodes > 1:
            server = EmbeddedNatsCluster(self.tmp / f"nats-{self._nats_count}", nodes)
            url = server.start()
        else:
            server = EmbeddedNats(self.tmp / f"nats-{self._nats_count}")
            url = server.start()
        try:
            yield url
        finally:
            server.stop()
            shutil.rmtree(self.tmp / f"nats-{self._nats_count}", ignore_errors=True)

    def redis(self) -> str:
        if self.redis_url is None:
            if os.environ.get("REDIS_URL"):
                self.redis_url = os.environ["REDIS_URL"]
            else:
                from procwatch.embedded import EmbeddedRedis

                server = EmbeddedRedis(self.tmp / "redis")
                self.redis_url = server.start()
                self._started.append(server)
        return self.redis_url


@contextmanager
def servers():
    """Start embedded PostgreSQL (unless DATABASE_URL is set); NATS and Redis on demand."""
    tmp = Path(tempfile.mkdtemp(prefix="procwatch-bench-"))
    started = []
    try:
        if os.environ.get("DATABASE_URL"):
            database_url = os.environ["DATABASE_URL"]
        else:
            from procwatch.embedded import EmbeddedPostgres

            pg = EmbeddedPostgres(tmp / "pg")
            database_url = pg.start()
            started.append(pg)
        s = Servers(tmp=tmp, database_url=database_url)
        try:
            yield s
        finally:
            for server in reversed(s._started):
                server.stop()
    finally:
        for server in reversed(started):
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def create_database(server_url: str, prefix: str = "procwatch_bench") -> str:
    """A fresh, migrated database on the server of `server_url`; returns its URL."""
    import psycopg

    from procwatch_db.migrate import upgrade
    from procwatch_db.urls import libpq_url

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(libpq_url(server_url), autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    url = urlsplit(libpq_url(server_url))._replace(path=f"/{name}").geturl()
    upgrade(url)
    return url


@contextmanager
def fresh_database(server_url: str, prefix: str):
    """`create_database` for the length of a `with` block, dropped after."""
    url = create_database(server_url, prefix)
    try:
        yield url
    finally:
        drop_database(url)


def drop_database(url: str) -> None:
    import psycopg

    from procwatch_db.urls import libpq_url

    parts = urlsplit(libpq_url(url))
    name = parts.path.lstrip("/")
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


def procwatch_command(*args: str) -> list[str]:
    """`procwatch <args>` with this interpreter (no reliance on PATH)."""
    return [sys.executable, "-m", "procwatch.cli", *args]


@contextmanager
def service(args: list[str], env: dict[str, str], log_path: Path, *, stop_signal=None, wrap: list[str] | None = None):
    """A `procwatch <svc>` subprocess with its output in `log_path`, stopped on exit.

    `wrap` prefixes the command (e.g. `py-spy record ... --`)."""
    import signal

    with open(log_path, "wb") as log:
        proc = subprocess.Popen([*(wrap or []), *procwatch_command(*args)], env={**os.environ, **env}, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(stop_signal or signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready within {timeout}s")


async def wait_for_consumer(nats_url: str, stream: str, durable: str, timeout: float = 60) -> None:
    import nats

    nc = await nats.connect(nats_url.split(","))
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                await nc.jetstream().consumer_info(stream, durable)
                return
            except Exception:
                await asyncio.sleep(0.1)
        raise TimeoutError(f"consumer {stream}/{durable} not created within {timeout}s")
    finally:
        await nc.drain()


# --- webhooks: the notifier and a receiver that verifies what it sends -------------------


def secrets_key() -> str:
    """The PROCWATCH_SECRETS_KEY the bench encrypts channel secrets with (set in this process's
    environment too: procwatch_domain.crypto reads it there)."""
    from procwatch_domain import crypto

    key = os.environ.get(crypto.SECRETS_KEY_ENV) or crypto.new_key()
    os.environ[crypto.SECRETS_KEY_ENV] = key
    return key


def notifier_env(database_url: str, nats_url: str) -> dict[str, str]:
    """The environment of a `procwatch notifier` subprocess that may post to 127.0.0.1."""
    from procwatch_domain import crypto

    return {"DATABASE_URL": database_url, "NATS_URL": nats_url, "LOG_LEVEL": "WARNING",
            "PROCWATCH_NOTIFIER_LOG_LEVEL": "WARNING", crypto.SECRETS_KEY_ENV: secrets_key(),
            "PROCWATCH_NOTIFIER_ALLOW_PRIVATE_TARGETS": "1"}


def insert_webhook_channel(conn, user_id: int, name: str, url: str, secret: str,
                           server_ids: list[int] | None = None) -> None:
    """A webhook channel row as the channels API stores it (target and secret encrypted; the
    alerts of `server_ids`, or of all the user's servers when None)."""
    from procwatch_domain import crypto

    secrets_key()
    conn.execute("insert into channels (user_id, type, name, target_encrypted, target_hint,"
                 " secret_encrypted, server_ids) values (%s, 'webhook', %s, %s, %s, %s, %s)",
                 (user_id, name, crypto.encrypt(url), "http://127.0.0.1/***", crypto.encrypt(secret), server_ids))


@dataclass
class WebhookArrivals:
    arrivals: dict[str, float]  # webhook-id -> wall-clock arrival of its first verified delivery
    bad: int  # deliveries whose signature did not verify
    repeats: int  # verified deliveries of an id already received


class WebhookReceiver:
    """A real HTTP receiver in its own process on 127.0.0.1:`port`. It verifies each webhook's
    signature with the `standardwebhooks` package, as a receiver would, and notes when each
    webhook-id first arrived. Requests to `hang_path` are accepted and never answered.

        with WebhookReceiver(port, secret, tmp) as receiver:
            ...  # receiver.received: verified webhooks so far
        receiver.result  # WebhookArrivals
    """

    def __init__(self, port: int, secret: str, tmp: Path, hang_path: str | None = None) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.port = port
        self._ready, self._stop = ctx.Event(), ctx.Event()
        self._received = ctx.Value("i", 0)
        self._out_path = tmp / f"webhook-receiver-{time.monotonic_ns()}.json"
        self._process = ctx.Process(target=_receive_webhooks, daemon=True, args=(
            port, secret, hang_path, self._ready, self._stop, self._received, str(self._out_path)))
        self.result: WebhookArrivals | None = None

    @property
    def received(self) -> int:
        return self._received.value

    def __enter__(self) -> WebhookReceiver:
        self._process.start()
        if not self._ready.wait(30):
            self._process.terminate()
            raise RuntimeError("the webhook receiver did not start")
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._process.join(30)
        if self._process.is_alive():
            self._process.terminate()
        if self._out_path.exists():
            self.result = WebhookArrivals(**json.loads(self._out_path.read_text()))


def _receive_webhooks(port: int, secret: str, hang_path: str | None, ready, stop, received, out_path: str) -> None:
    """WebhookReceiver's process."""
    import uvicorn
    from standardwebhooks.webhooks import Webhook

    verifier = Webhook(secret)
    arrivals: dict[str, float] = {}
    counts = {"bad": 0, "repeats": 0}

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        at = time.time()
        if scope["path"] == hang_path:
            try:
                await asyncio.Event().wait()  # never answers
            except asyncio.CancelledError:  # the receiver stops
                return
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        try:
            verifier.verify(body, headers)
            msg_id = headers["webhook-id"]
            if msg_id in arrivals:
                counts["repeats"] += 1
            else:
                arrivals[msg_id] = at
                received.value += 1
        except Exception:
            counts["bad"] += 1
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def main():
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                               access_log=False, lifespan="off", interface="asgi3",
                                               timeout_graceful_shutdown=1))
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.02)
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.1)
        Path(out_path).write_text(json.dumps({"arrivals": arrivals, **counts}))
        server.should_exit = server.force_exit = True
        await task

    asyncio.run(main())
