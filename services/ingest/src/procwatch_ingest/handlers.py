"""Broker entrypoints: pull a batch, own its transaction, then publish, ack, dead-letter.

Order per batch (docs/ingest.md): screen -> one transaction (authenticate, map,
insert, move last_*) -> commit -> publish SampleRecorded events and await their
JetStream acks -> ack the agent messages -> dead-letter and ack rejected ones.
A database failure naks the whole batch with a growing delay; nothing is acked
before its rows are committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime


import psycopg
from nats.aio.msg import Msg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from procwatch_contracts import subjects
from procwatch_contracts.messages import WatchListReply
from procwatch_messaging import acks
from procwatch_messaging.acks import retry_delay
from procwatch_messaging.publish import AckedPublisher
from procwatch_runtime import metrics
from procwatch_ingest import inbound
from procwatch_ingest.inbound import Rejected
from procwatch_ingest.repository import IngestRepository
from procwatch_ingest.service import Incoming, IngestService, LockOrder, LockTurn

log = logging.getLogger("procwatch.ingest")

_SAMPLES_INSERTED, _SAMPLES_DUPLICATE, _SAMPLES_DROPPED = (
    metrics.INGEST_SAMPLES.labels(outcome) for outcome in metrics.INGEST_SAMPLE_OUTCOMES)

TRANSIENT_DB_ERRORS = (psycopg.OperationalError, psycopg.errors.SerializationFailure,
                       psycopg.errors.DeadlockDetected, psycopg.errors.ForeignKeyViolation, PoolTimeout, OSError)


# One attempt of an in-place publish retry (SampleBatchHandler._publish_in_turn).
PUBLISH_ATTEMPT_S = 2.0


class SampleBatchHandler:
    def __init__(
        self,
        service: IngestService,
        pool: AsyncConnectionPool,
        publisher: Callable[[], AckedPublisher],
        *,
        retry_base_s: float = 0.5,
        retry_max_s: float = 10.0,
        publish_timeout_s: float = 10.0,
        publish_retry_s: float = 0.0,
    ):
        self.service = service
        self.stats = service.stats
        self.pool = pool
        # () -> the current AckedPublisher (the worker may reconnect); a seam for fault tests.
        self.publisher = publisher
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.publish_timeout_s = publish_timeout_s
        self.publish_retry_s = publish_retry_s
        self.draining = False
        # Batches may overlap (parse/COPY of one while another commits), but commit + publish
        # happen one batch at a time, so events leave in commit order.
        self._commit_publish = asyncio.Lock()
        # ... and take their row locks in the order they were pulled (service.LockOrder: why).
        self._lock_order = LockOrder()

    async def handle(self, batch: list[Msg]) -> None:
        if not batch:
            return
        if self.draining:
            # Shutting down: hand the batch straight back to another replica.
            await self._nak(batch, delay=0)
            return
        try:
            await self._handle(batch)
        except Exception:
            log.exception("batch failed unexpectedly; redelivering", extra={"batch_size": len(batch)})
            await self._nak(batch)

    async def _handle(self, batch: list[Msg]) -> None:
        # Taken before the first await: batches get their turns in the order they were pulled.
        lock_turn = self._lock_order.turn()
        try:
            await self._handle_in_turn(batch, lock_turn)
        finally:
            lock_turn.release()

    async def _handle_in_turn(self, batch: list[Msg], lock_turn: LockTurn) -> None:
        stats = self.stats
        stats.batches += 1
        stats.messages += len(batch)
        t0 = time.perf_counter()
        checked = self.service.screen([Incoming(m.subject, m.headers, m.data) for m in batch])
        # A batch of first deliveries skips the replay-safe insert (two round trips).
        may_be_replay = any((m.metadata.num_delivered or 1) > 1 for m in batch)
        t1 = time.perf_counter()
        stats.phase_s["screen"] += t1 - t0
        ordered = False
        try:
            try:
                async with self.pool.connection() as conn:
                    async with conn.transaction():
                        repo = IngestRepository(conn)
                        plan = await self.service.prepare(repo, checked, [_broker_time(m) for m in batch])
                        result = await self.service.store(repo, plan, may_be_replay=may_be_replay,
                                                          lock_turn=lock_turn)
                        t2 = time.perf_counter()
                        await self._commit_publish.acquire()  # leaving the block commits
                        ordered = True
                        t3 = time.perf_counter()
                stats.phase_s["db_work"] += t2 - t1
                stats.phase_s["wait_turn"] += t3 - t2
                stats.phase_s["commit"] += time.perf_counter() - t3
            except TRANSIENT_DB_ERRORS as err:
                stats.batches_retried += 1
                metrics.INGEST_BATCHES_RETRIED.inc()
                log.warning("database unavailable; batch will be redelivered",
                            extra={"batch_size": len(batch), "error": type(err).__name__})
                await self._nak(batch)
                return
            except psycopg.errors.UniqueViolation:
                # A first delivery holding a sample stored already (an agent re-sent a tick after
                # JetStream's duplicate window): redelivered now, it takes the replay-safe insert.
                stats.batches_retried += 1
                metrics.INGEST_BATCHES_RETRIED.inc()
                log.info("batch holds samples stored before; redelivering it as a replay",
                         extra={"batch_size": len(batch)})
                await self._nak(batch, delay=0)
                return

            t4 = time.perf_counter()
            try:
                publisher = await self._publish_in_turn([(e.subject, e.payload, {"Nats-Msg-Id": e.msg_id})
                                                         for e in result.events])
                stats.phase_s["publish"] += time.perf_counter() - t4
            except Exception as err:
                # Committed but not announced: the redelivery finds the rows and re-publishes
                # the same events with the same ids (JetStream drops any copy it already has).
                stats.batches_retried += 1
                metrics.INGEST_BATCHES_RETRIED.inc()
                log.warning("publishing sample events failed; batch will be redelivered",
                            extra={"batch_size": len(batch), "error": type(err).__name__})
                await self._nak(batch)
                return
        finally:
            if ordered:
                self._commit_publish.release()
        self.service.last_seen_committed(result.last_seen)
        stats.events_published += len(result.events)
        stats.samples_inserted += result.inserted
        stats.samples_duplicate += result.duplicates
        stats.samples_dropped += result.dropped
        stats.messages_stored += len(plan.messages)
        _SAMPLES_INSERTED.inc(result.inserted)
        _SAMPLES_DUPLICATE.inc(result.duplicates)
        _SAMPLES_DROPPED.inc(result.dropped)
        metrics.INGEST_MESSAGES_STORED.inc(len(plan.messages))
        metrics.INGEST_EVENTS_PUBLISHED.inc(len(result.events))

        rejected = plan.rejected
        t5 = time.perf_counter()
        for i, msg in enumerate(batch):
            if i not in rejected:
                await msg.ack()
        stats.phase_s["ack"] += time.perf_counter() - t5
        if rejected:
            await self._dead_letter(publisher, [(batch[i], reason) for i, reason in sorted(rejected.items())])

    async def _publish_in_turn(self, items: list[tuple[str, bytes, dict[str, str]]]) -> AckedPublisher:
        """Publish a committed batch's events, in its commit-publish turn. A failure is retried in place
        for up to `publish_retry_s` while the next batch waits for the turn, so a server's events keep
        their commit order (e.g. while a cluster elects a new stream leader); a redelivered batch would
        come back after newer ones, and its samples reach the alerter late (stored, never evaluated).
        Past that, or when draining, the error goes up (the batch is redelivered)."""
        deadline = time.monotonic() + self.publish_retry_s
        # A publish sent to a leader that just died is never acked: re-sending (same ids, JetStream
        # drops copies it has) beats waiting the whole timeout for it.
        attempt_timeout_s = min(self.publish_timeout_s, PUBLISH_ATTEMPT_S) if self.publish_retry_s else None
        delay = 0.1
        while True:
            publisher = self.publisher()  # the current connection's (it may have been replaced)
            try:
                await self._publish_all(publisher, items, attempt_timeout_s)
                return publisher
            except Exception as err:
                if self.draining or time.monotonic() + delay > deadline:
                    raise
                log.info("publishing sample events failed; retrying in place",
                         extra={"events": len(items), "error": type(err).__name__, "retry_in_s": delay})
                await asyncio.sleep(delay)
                delay = min(1.0, 2 * delay)

    async def _publish_all(self, publisher: AckedPublisher, items: list[tuple[str, bytes, dict[str, str]]],
                           timeout_s: float | None = None) -> None:
        if not items:
            return
        futures = [await publisher.publish_async(subject, payload, headers=headers) for subject, payload, headers in items]
        await asyncio.wait_for(asyncio.gather(*futures), timeout_s or self.publish_timeout_s)

    async def _dead_letter(self, publisher: AckedPublisher, items: list[tuple[Msg, Rejected]]) -> None:
        out = []
        for msg, reason in items:
            server_id = subjects.server_id_from_subject(msg.subject)
            self.stats.deadlettered[reason.code] += 1
            log.warning("agent message dead-lettered",
                        extra={"server_id": server_id, "reason": reason.code, "detail": reason.text,
                               "subject": msg.subject})
            headers = acks.dead_letter_headers(msg, reason.header)
            original_id = (msg.headers or {}).get(inbound.MSG_ID_HEADER)
            if original_id:
                headers[subjects.ORIGINAL_MSG_ID_HEADER] = original_id[:200]
            # The Authorization header is deliberately not copied: the key never leaves ingest.
            out.append((subjects.DEADLETTER_AGENT_SAMPLES, msg.data, headers))
        try:
            await self._publish_all(publisher, out)
        except Exception as err:
            log.warning("dead-letter publish failed; will retry", extra={"error": type(err).__name__})
            await self._nak([m for m, _ in items])
            return
        for msg, reason in items:
            metrics.DEADLETTERS.labels(subjects.DEADLETTER_AGENT_SAMPLES, metrics.deadletter_reason(reason.code)).inc()
            await msg.ack()

    async def _nak(self, batch: list[Msg], delay: float | None = None) -> None:
        """Hand the batch back: after `delay`, else after the retry backoff of each message."""
        await acks.nak(batch, delay if delay is not None else (
            lambda msg: retry_delay(acks.num_delivered(msg), self.retry_base_s, self.retry_max_s)))


def _broker_time(msg: Msg) -> datetime | None:
    """When JetStream stored the message (its metadata), the liveness clock; None if unknown."""
    try:
        return msg.metadata.timestamp
    except Exception:  # not a JetStream message (tests feeding core NATS messages)
        return None


class WatchListHandler:
    def __init__(self, service: IngestService, pool: AsyncConnectionPool, interval_seconds: float):
        self.service = service
        self.pool = pool
        self.interval_seconds = interval_seconds

    async def handle(self, subject: str, headers: dict[str, str] | None) -> WatchListReply:
        server_id = subjects.server_id_from_subject(subject) or 0
        key = inbound.bearer_key(headers)
        if key is None or server_id == 0:
            return self._error(server_id, "unauthorized")
        try:
            async with self.pool.connection() as conn:
                async with conn.transaction():
                    repo = IngestRepository(conn)
                    server = await self.service.authenticate(repo, server_id, key)
                    if isinstance(server, Rejected):
                        log.warning("watch-list request refused", extra={"server_id": server_id,
                                                                         "reason": server.code})
                        return self._error(server_id, "unauthorized")
                    names = await self.service.watch_list(repo, server_id)
        except TRANSIENT_DB_ERRORS as err:
            log.warning("watch-list request failed", extra={"server_id": server_id, "error": type(err).__name__})
            return self._error(server_id, "unavailable")
        return WatchListReply(server_id=server_id, process_names=names, interval_seconds=self.interval_seconds)

    def _error(self, server_id: int, code: str) -> WatchListReply:
        return WatchListReply(server_id=server_id, process_names=[], interval_seconds=self.interval_seconds,
                              error=code)

