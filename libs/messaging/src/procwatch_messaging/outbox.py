"""The transactional-outbox relay: rows of `outbox_events` -> JetStream, in id order.

Writers insert a row into `outbox_events` in the same transaction as the change
the event describes (`INSERT_OUTBOX_ROW_SQL`), commit, then hand the rows over.
The relay publishes unpublished rows in id order, awaiting each JetStream ack,
and marks them `published_at`. A crash between commit and publish only delays
the event: the row stays unpublished and the next pass (woken, at start, or the
poll every `poll_interval` seconds) sends it. A crash between publish and marking
re-sends it with the same `Nats-Msg-Id`, which JetStream's duplicate window
drops. Rows are claimed with `FOR UPDATE SKIP LOCKED`, so N replicas running a
relay each publish a disjoint set.

Fast path: a writer that commits inside `relay.ordered()` then calls
`publish_committed(rows)`, which publishes those rows at once (no database read)
and marks them. It does so only while the relay knows of no older unpublished row
(its last pass drained the table and no fast publish failed since); otherwise, and
when a publish fails, it wakes the relay, whose pass keeps id order. The outbox
stays the safety net: what the fast path did not publish and mark, a pass does.
`ordered()` holds the relay's lock across the commit and the publish, so two
writers' events (and a pass) go out in commit order.

    relay = OutboxRelay(database_url, js)   # js: a JetStreamContext, or a function returning the current one
    task = asyncio.create_task(relay.run())
    ...
    async with relay.ordered():
        ...  # commit the transaction that wrote outbox rows (ids from `returning id`)
        await relay.publish_committed(rows)   # [(id, subject, msg_id, payload)]
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import psycopg

from procwatch_db.urls import libpq_url

if TYPE_CHECKING:
    from nats.js import JetStreamContext

log = logging.getLogger("procwatch.outbox")

MSG_ID_HEADER = "Nats-Msg-Id"
MAX_BACKOFF_S = 30.0
MARK_PUBLISHED_SQL = "update outbox_events set published_at = now() where id = any(%s)"

INSERT_OUTBOX_ROW_SQL = "insert into outbox_events (subject, msg_id, payload) values (%s, %s, %s) returning id"

# A committed row: (id, subject, msg_id or None, payload JSON).
OutboxRecord = tuple[int, str, "str | None", str]


def outbox_msg_id(row_id: int, msg_id: str | None = None) -> str:
    """The `Nats-Msg-Id` a row is published with: its own msg_id, else `outbox-<id>`."""
    return msg_id if msg_id else f"outbox-{row_id}"


class OutboxRelay:
    def __init__(
        self,
        database_url: str,
        js: JetStreamContext | Callable[[], JetStreamContext],
        *,
        poll_interval: float = 1.0,
        batch_size: int = 500,
        publish_timeout: float = 5.0,
    ) -> None:
        self._conninfo = libpq_url(database_url)
        # A function when the relay is built before its worker connects (procwatch_messaging.worker).
        self._js = js
        self._poll_interval = poll_interval
        self._batch_size = batch_size
        self._publish_timeout = publish_timeout
        self._wakeup = asyncio.Event()
        self._conn: psycopg.AsyncConnection | None = None
        self._lock = asyncio.Lock()
        # True once a pass found nothing left behind and no fast publish failed since:
        # only then may publish_committed() send rows itself without breaking id order.
        self._drained = False

    def _jetstream(self) -> JetStreamContext:
        return self._js() if callable(self._js) else self._js

    def wake(self) -> None:
        """Publish soon: call right after a commit that wrote outbox rows."""
        self._wakeup.set()

    @asynccontextmanager
    async def ordered(self) -> AsyncIterator[None]:
        """Hold around the commit of outbox rows and their `publish_committed`: no other
        writer's rows, and no pass, are published in between (events leave in commit order)."""
        async with self._lock:
            yield

    async def publish_committed(self, rows: Sequence[OutboxRecord]) -> int:
        """Publish rows the caller just committed, in order, and mark them; inside `ordered()`.

        Never raises: rows not published (an older row may be pending, or the broker
        failed) are left to a pass, which this wakes. Returns how many went out."""
        if not rows:
            return 0
        if not self._lock.locked():
            raise RuntimeError("publish_committed() must run inside ordered()")
        if not self._drained:
            self.wake()
            return 0
        published, failure = await self._publish_rows(rows)
        if failure is not None:
            self._drained = False
            self.wake()
            log.warning("outbox publish failed; the relay retries",
                        extra={"error": type(failure).__name__, "unpublished": len(rows) - len(published)})
        if published:
            try:
                conn = await self._connection()
                async with conn.transaction():
                    await conn.execute(MARK_PUBLISHED_SQL, (published,))
            except Exception as exc:  # the next pass re-sends them; the duplicate window drops them
                self._drained = False
                self.wake()
                if self._conn is not None and (self._conn.closed or self._conn.broken):
                    self._conn = None
                log.warning("marking outbox rows failed", extra={"error": type(exc).__name__})
        return len(published)

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await psycopg.AsyncConnection.connect(self._conninfo, connect_timeout=5)
        return self._conn

    async def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            await self._conn.close()
        self._conn = None

    async def publish_pending(self) -> int:
        """One pass: publish every unpublished row in id order; returns how many were published.

        Stops at the first failed publish (so order is kept), marks what went out
        and re-raises; the rest stays for the next pass.
        """
        total = 0
        async with self._lock:
            try:
                while True:
                    published, claimed = await self._publish_batch()
                    total += published
                    if claimed < self._batch_size:
                        self._drained = True
                        return total
            except Exception:
                self._drained = False
                if self._conn is not None and (self._conn.closed or self._conn.broken):
                    self._conn = None
                raise

    async def _publish_batch(self) -> tuple[int, int]:
        conn = await self._connection()
        async with conn.transaction():
            cur = await conn.execute(
                "select id, subject, msg_id, payload from outbox_events"
                " where published_at is null order by id limit %s for update skip locked",
                (self._batch_size,),
            )
            rows = await cur.fetchall()
            published, failure = await self._publish_rows(rows)
            if published:
                await conn.execute(MARK_PUBLISHED_SQL, (published,))
        if published:
            log.debug("outbox rows published", extra={"count": len(published), "last_id": published[-1]})
        if failure is not None:
            raise failure
        return len(published), len(rows)

    async def _publish_rows(self, rows: Sequence[OutboxRecord]) -> tuple[list[int], BaseException | None]:
        """Publish in order, awaiting each ack; stop at the first failure (so order is kept).
        Returns the ids published and the failure, if any."""
        published: list[int] = []
        for row_id, subject, msg_id, payload in rows:
            try:
                await self._jetstream().publish(
                    subject,
                    payload.encode("utf-8"),
                    timeout=self._publish_timeout,
                    headers={MSG_ID_HEADER: outbox_msg_id(row_id, msg_id)},
                )
            except Exception as exc:  # broker down / timeout: keep order, retry later
                return published, exc
            published.append(row_id)
        return published, None

    async def run(self) -> None:
        """Publish until cancelled: at once (what a previous run left), then on wake() or every
        poll_interval; back off on errors, never die."""
        backoff = 0.0
        try:
            while True:
                backoff = await self._pass(backoff)
                await self._wait_for_work()
        finally:
            await self.close()

    async def _wait_for_work(self) -> None:
        # asyncio.timeout, not asyncio.wait_for: on Python 3.11 wait_for can swallow a
        # cancellation that arrives just as the event is set, and run() would never end.
        try:
            async with asyncio.timeout(self._poll_interval):
                await self._wakeup.wait()
        except TimeoutError:
            pass
        self._wakeup.clear()

    async def _pass(self, backoff: float) -> float:
        """One publish pass; returns the next backoff (0 after a success)."""
        try:
            await self.publish_pending()
            return 0.0
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            backoff = min(MAX_BACKOFF_S, max(0.5, backoff * 2))
            log.warning(
                "outbox publish failed; retrying",
                extra={"error": type(exc).__name__, "detail": str(exc)[:200], "retry_in_s": backoff},
            )
            await asyncio.sleep(backoff)
            return backoff
