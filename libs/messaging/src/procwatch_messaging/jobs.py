"""Periodic jobs of a worker: an async function run every `every_s` seconds (with jitter).

    job = PeriodicJob("offline-servers", detect_offline, every_s=15, database_url=url)   # one replica at a time
    job = PeriodicJob("ingest-stats", log_stats, every_s=60)                               # every replica
    job.start(); ...; await job.stop()

- Schedule: the first run comes after a random part of one period (replicas started
  together spread out), then `every_s` after the end of the previous run, +- `jitter`
  (a fraction of `every_s`). A run never overlaps the previous one of the same job.
- One runner at a time across replicas (`database_url` given): each run first takes
  `pg_try_advisory_lock(key)` on a connection of its own, opened for the run and closed after
  it (which releases the lock). A replica that does not get the lock skips this turn.
  Why an advisory lock and not a lease row: no table or migration, no expiry to tune, no
  clock to trust, and PostgreSQL releases the lock by itself when the holder's session ends
  (a crashed or partitioned replica never blocks the job past its TCP timeout). The price: one
  connection per running job, outside the worker's pool (a pooled connection would go back to
  the pool still holding the session lock), and it needs session-level connections (not a
  PgBouncer in transaction mode). The key is derived from the job name (`advisory_lock_key`).
- A run that raises is logged with the job's name and the run's duration; the job carries on
  at the next turn (a failing job never kills the worker). `stop()` waits for the run in
  progress (at most `drain_timeout_s`, then cancels it) and schedules no more.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import suppress

import psycopg

from procwatch_db.urls import libpq_url
from procwatch_runtime import metrics

log = logging.getLogger("procwatch.messaging.jobs")

Job = Callable[[], Awaitable[object]]


def advisory_lock_key(name: str) -> int:
    """A stable signed 64-bit key for `pg_try_advisory_lock`, from the job's name."""
    digest = hashlib.blake2b(f"procwatch-job:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def first_delay(every_s: float, rng: random.Random) -> float:
    """Before the first run: a random part of one period, so replicas started together spread out."""
    return rng.uniform(0.0, every_s)


def next_delay(every_s: float, jitter: float, rng: random.Random) -> float:
    """Between the end of a run and the start of the next: every_s +- jitter * every_s, never < 0."""
    return max(0.0, every_s * (1.0 + rng.uniform(-jitter, jitter)))


def delays(every_s: float, jitter: float, rng: random.Random) -> Iterator[float]:
    """The whole schedule: the first delay, then one per following run."""
    yield first_delay(every_s, rng)
    while True:
        yield next_delay(every_s, jitter, rng)


class PeriodicJob:
    def __init__(self, name: str, fn: Job, *, every_s: float, jitter: float = 0.1,
                 database_url: str | None = None, drain_timeout_s: float = 30.0,
                 rng: random.Random | None = None) -> None:
        if every_s <= 0 or not 0 <= jitter < 1:
            raise ValueError("every_s must be > 0 and 0 <= jitter < 1")
        self.name = name
        self.every_s = every_s
        self.jitter = jitter
        self.drain_timeout_s = drain_timeout_s
        self.lock_key = advisory_lock_key(name) if database_url else None
        self._fn = fn
        self._conninfo = libpq_url(database_url) if database_url else None
        self._rng = rng or random.Random()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._run: asyncio.Task | None = None
        # Counters (read by tests and the final log line).
        self.runs = 0
        self.failures = 0
        self.skipped_locked = 0
        # The same, for Prometheus (procwatch_runtime.metrics): runs by outcome, duration, last success.
        self._ran_metric, self._skipped_metric, self._failed_metric = (
            metrics.JOB_RUNS.labels(name, outcome) for outcome in metrics.JOB_OUTCOMES)

    @property
    def exclusive(self) -> bool:
        """Whether one replica at a time runs it (advisory lock)."""
        return self.lock_key is not None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._loop(), name=f"job-{self.name}")

    async def stop(self) -> None:
        """Schedule no more runs; let the run in progress finish (<= drain_timeout_s, then cancel)."""
        self._stopping.set()
        if self._task is None:
            return
        if self._run is not None and not self._run.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._run), self.drain_timeout_s)
            except (TimeoutError, Exception):
                log.warning("job run did not finish before shutdown; cancelled", extra={"job": self.name})
                self._run.cancel()
        self._task.cancel()
        with suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _loop(self) -> None:
        for delay in delays(self.every_s, self.jitter, self._rng):
            with suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return
            # Its own task: stop() can wait for it without cancelling it.
            self._run = asyncio.create_task(self.run_once(), name=f"job-{self.name}-run")
            await asyncio.shield(self._run)

    async def run_once(self) -> bool:
        """One turn: take the lock if the job is exclusive, run, log. Returns whether it ran."""
        started = time.monotonic()
        try:
            if self._conninfo is None:
                await self._fn()
            else:
                async with await psycopg.AsyncConnection.connect(
                        self._conninfo, autocommit=True, connect_timeout=5,
                        application_name=f"procwatch-job:{self.name}"[:63]) as conn:
                    cur = await conn.execute("select pg_try_advisory_lock(%s)", (self.lock_key,))
                    (got,) = await cur.fetchone()
                    if not got:
                        self.skipped_locked += 1
                        self._skipped_metric.inc()
                        log.debug("job skipped: another replica runs it", extra={"job": self.name})
                        return False
                    # Closing the connection releases the lock, also when the job raises.
                    await self._fn()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failures += 1
            self._failed_metric.inc()
            log.warning("job failed", exc_info=True, extra={
                "job": self.name, "error": type(exc).__name__,
                "duration_s": round(time.monotonic() - started, 3), "failures": self.failures})
            return False
        self.runs += 1
        self._ran_metric.inc()
        metrics.JOB_DURATION.labels(self.name).observe(time.monotonic() - started)
        metrics.JOB_LAST_SUCCESS.labels(self.name).set_to_current_time()
        log.debug("job ran", extra={"job": self.name, "duration_s": round(time.monotonic() - started, 3),
                                    "runs": self.runs})
        return True
