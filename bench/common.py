"""What every benchmark shares: embedded servers, fresh databases, machine facts, percentiles.

One definition each: the bench scripts import these, never copy them. Pure helpers
(percentile, median, summarize) are unit-tested in tests/unit/test_bench_*.py.
"""

from __future__ import annotations

import asyncio
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

    nc = await nats.connect(nats_url)
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
    def nats(self):
        """A NATS server for one benchmark run: NATS_URL if set, else a fresh embedded one
        (fresh streams: no backlog of an earlier run leaks into the next)."""
        if os.environ.get("NATS_URL"):
            yield os.environ["NATS_URL"]
            return
        from procwatch.embedded import EmbeddedNats

        self._nats_count += 1
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

    nc = await nats.connect(nats_url)
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
