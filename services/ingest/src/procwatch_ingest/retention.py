"""Sample retention and partition upkeep: a background task of the ingest app (docs/retention.md).

Every `PROCWATCH_INGEST_RETENTION_INTERVAL_S` one replica (whichever gets the
PostgreSQL advisory lock; the others skip the pass) runs one pass on its own
autocommit connection, in a worker thread so the event loop keeps serving batches:

1. partitions for today - 1 .. today + PARTITIONS_AHEAD_DAYS exist (rows of those
   days already in the default partition are moved into the new partition);
2. day partitions older than the longest plan retention are dropped, their rows
   subtracted from `samples_total` in the same transaction;
3. rows older than the owner's plan retention are deleted in transactions of at
   most RETENTION_BATCH_ROWS rows, `samples_total` decremented by exactly the
   deleted counts in the same transaction.

All SQL lives in `procwatch_db.partitions`; this module only schedules it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import psycopg

from procwatch_db import partitions
from procwatch_db.urls import libpq_url

log = logging.getLogger("procwatch.ingest.retention")

# pg_try_advisory_lock key: one retention pass at a time across all replicas.
RETENTION_LOCK_KEY = 727275


@dataclass(frozen=True)
class RetentionConfig:
    interval_s: float = 300.0
    partitions_ahead_days: int = 7
    batch_rows: int = 5000
    processes_per_transaction: int = 200
    lock_timeout_ms: int = 1000


def run_retention_pass(database_url: str, now: datetime | None = None, config: RetentionConfig = RetentionConfig(),
                       stop: threading.Event | None = None) -> partitions.StepResult | None:
    """One pass (blocking). Returns None when another replica holds the retention lock."""
    now = now or datetime.now(timezone.utc)
    stop = stop or threading.Event()
    with psycopg.connect(libpq_url(database_url), autocommit=True, application_name="procwatch-retention") as conn:
        conn.execute("set time zone 'UTC'")
        (got,) = conn.execute("select pg_try_advisory_lock(%s)", (RETENTION_LOCK_KEY,)).fetchone()
        if not got:
            log.debug("retention pass skipped: another replica holds the lock")
            return None
        try:
            result = partitions.StepResult()
            partitions.ensure_partitions(conn, partitions.utc_day(now), back_days=1,
                                         ahead_days=config.partitions_ahead_days,
                                         lock_timeout_ms=config.lock_timeout_ms, result=result)
            if not stop.is_set():
                partitions.drop_expired_partitions(conn, now, lock_timeout_ms=config.lock_timeout_ms, result=result)
            if not stop.is_set():
                partitions.delete_expired_samples(
                    conn, now, max_rows=config.batch_rows,
                    processes_per_transaction=config.processes_per_transaction,
                    lock_timeout_ms=config.lock_timeout_ms, result=result, should_continue=lambda: not stop.is_set(),
                )
            return result
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (RETENTION_LOCK_KEY,))


class RetentionTask:
    """Runs `run_retention_pass` now and then every `interval_s` until stopped."""

    def __init__(self, database_url: str, config: RetentionConfig):
        self.database_url = database_url
        self.config = config
        self._stop = threading.Event()
        self._task: asyncio.Task | None = None
        self.passes = 0
        self.last_result: partitions.StepResult | None = None

    def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.create_task(self._loop(), name="procwatch-retention")

    async def stop(self) -> None:
        """Stop after the transaction in progress (a pass checks between transactions)."""
        self._stop.set()
        if self._task is not None:
            # Let a pass in progress finish its transaction (it checks the flag between
            # them); cancelling would only abandon the worker thread mid-pass.
            try:
                await asyncio.wait_for(self._task, timeout=30)
            except (TimeoutError, asyncio.CancelledError):
                pass
            self._task = None

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake within 0.1 s of stop()."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set() and (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(0.1, left))

    async def _loop(self) -> None:
        # Not at once: a replica that restarts often still runs passes, and short-lived
        # instances (tests, one-off runs) never touch data.
        await self._sleep(min(self.config.interval_s, 60.0))
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                result = await asyncio.to_thread(run_retention_pass, self.database_url, None, self.config, self._stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be down: try again next interval
                log.warning("retention pass failed", extra={"error": type(exc).__name__, "detail": str(exc)[:200]})
            else:
                self.passes += 1
                if result is not None:
                    self.last_result = result
                    log.info("retention pass", extra={
                        "partitions_created": len(result.created), "rows_moved_from_default": result.moved_from_default,
                        "partitions_dropped": len(result.dropped), "rows_dropped": result.rows_dropped,
                        "rows_deleted": result.rows_deleted, "transactions": result.transactions,
                        "busy_steps": len(result.busy), "duration_s": round(time.monotonic() - started, 3),
                    })
                    for step in result.busy:
                        log.warning("retention step postponed (lock busy)", extra={"step": step})
            await self._sleep(self.config.interval_s)
