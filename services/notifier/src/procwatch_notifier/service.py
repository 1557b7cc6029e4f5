"""The sender: claims due deliveries (repository.claim), sends them channel by channel, settles them.

- Channels are isolated: each claimed channel gets its own task, with at most one request in
  flight; at most `max_concurrent_channels` channels are sent to at once. A hanging endpoint
  holds only its own slot, for at most `request_timeout_s` per attempt.
- Within a channel, deliveries go out one at a time in id (alert) order; after a failure the
  channel waits for the head's retry and nothing behind it overtakes it.
- Chat channels are paced and digest bursts (procwatch_notify.digest); the burst state is
  read with the claim and written back after each message, so replicas share it.
- Delivery is at least once: a delivery is marked delivered after the receiver's 2xx; a crash
  in between sends it again when its claim runs out (same webhook-id: receivers dedupe).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from pydantic import ValidationError

from procwatch_contracts.messages import AlertEvent
from procwatch_domain import crypto
from procwatch_notify.digest import MIN_INTERVAL_S, Pacer
from procwatch_notify.render import CHAT_TYPES, render, render_digest
from procwatch_notify.schedule import next_attempt_in
from procwatch_notify.http import HttpClient
from procwatch_notify.send import ChannelTarget, Outcome, decrypt_target, deliver

from procwatch_runtime import metrics
from procwatch_notifier.repository import Channel, Claimed, NotifierRepository
from procwatch_notifier.settings import NotifierSettings

log = logging.getLogger("procwatch.notifier")

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (psycopg.OperationalError, PoolTimeout, OSError)
# Stop starting attempts this long before a claim's lease runs out (the rest is released).
LEASE_MARGIN_S = 2.0
_DELIVERED, _RETRY, _FAILED, _DEAD, _SKIPPED, _DISABLED = (
    metrics.NOTIFIER_DELIVERIES.labels(outcome) for outcome in metrics.DELIVERY_OUTCOMES)


@dataclass
class SenderStats:
    """Counters (the final log line; read by tests and the bench)."""

    claims: int = 0
    attempts: int = 0
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    dead: int = 0
    skipped: int = 0
    digests: int = 0
    disabled_channels: int = 0


def target_of(channel: Channel) -> ChannelTarget:
    """The channel's decrypted target."""
    return decrypt_target(channel.type, channel.format, channel.target_encrypted, channel.secret_encrypted)


class Sender:
    def __init__(self, settings: NotifierSettings, pool: AsyncConnectionPool,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._pool = pool
        self._send_settings = settings.send_settings()
        self._clock = clock
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._busy: set[int] = set()
        self._tasks: set[asyncio.Task] = set()
        self._targets: dict[int, tuple[datetime, ChannelTarget]] = {}
        # Sent and accepted, marked delivered by the next claim's transaction (one commit for
        # all channels rather than one per delivery). Until then their claim holds the channel.
        self._accepted: list[tuple[int, int | None]] = []
        self._http = HttpClient(settings.allow_private_targets)
        self.stats = SenderStats()

    @property
    def in_flight(self) -> int:
        """Channels being sent to right now."""
        return len(self._busy)

    def wake(self) -> None:
        """New deliveries were committed (or a channel finished): look now."""
        self._wake.set()

    async def run(self) -> None:
        delay = 0.1
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                await self.claim_and_send()
                delay = 0.1
            except TRANSIENT_ERRORS as exc:
                log.warning("claiming deliveries failed; retrying", extra={"error": type(exc).__name__,
                                                                            "retry_in_s": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            except Exception:
                log.exception("claiming deliveries failed")
                await asyncio.sleep(1.0)
                continue
            with suppress(TimeoutError):
                async with asyncio.timeout(self.settings.poll_interval_s):
                    await self._wake.wait()

    async def stop(self) -> None:
        """Claim nothing more; let the requests in flight finish (bounded by their timeout)."""
        self._stopping.set()
        self._wake.set()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.settings.request_timeout_s + 1.0)
        for task in list(self._tasks):
            task.cancel()
        if self._accepted:
            try:
                async with self._pool.connection() as conn:
                    await self._flush_accepted(NotifierRepository(conn))
            except Exception as exc:  # sent again after the lease: at least once
                log.warning("marking deliveries delivered failed at shutdown", extra={"error": type(exc).__name__})
        await self._http.aclose()

    async def claim_and_send(self) -> int:
        """Claim what is due on free channels and start a task per channel. Returns how many deliveries."""
        free = self.settings.max_concurrent_channels - len(self._busy)
        if free <= 0 or self._stopping.is_set():
            return 0
        s = self.settings
        accepted, self._accepted = self._accepted, []
        try:
            async with self._pool.connection() as conn:
                channels, claimed = await NotifierRepository(conn).claim(
                    busy=list(self._busy), max_channels=free, per_channel=s.claim_per_channel,
                    per_chat_channel=s.claim_per_chat_channel, lease_s=s.claim_lease_s, delivered=accepted)
        except BaseException:
            self._accepted[:0] = accepted  # marked by the next claim instead
            raise
        self.stats.delivered += len(accepted)
        _DELIVERED.inc(len(accepted))
        if not claimed:
            return 0
        self.stats.claims += 1
        by_channel: dict[int, list[Claimed]] = {}
        for row in claimed:
            by_channel.setdefault(row.channel_id, []).append(row)
        for channel_id, rows in by_channel.items():
            self._busy.add(channel_id)
            task = asyncio.create_task(self._channel_task(channels[channel_id], rows),
                                       name=f"notifier-channel-{channel_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(claimed)

    async def _channel_task(self, channel: Channel, rows: list[Claimed]) -> None:
        try:
            await self._send_channel(channel, rows)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # What was not settled stays claimed and is sent again once the claim runs out.
            log.warning("sending to a channel failed", exc_info=not isinstance(exc, TRANSIENT_ERRORS),
                        extra={"channel_id": channel.id, "error": type(exc).__name__})
        finally:
            self._busy.discard(channel.id)
            self.wake()

    def _target(self, channel: Channel) -> ChannelTarget:
        cached = self._targets.get(channel.id)
        if cached is not None and cached[0] == channel.updated_at:
            return cached[1]
        target = target_of(channel)
        self._targets[channel.id] = (channel.updated_at, target)
        return target

    def _pacer(self, channel: Channel) -> Pacer | None:
        """A chat channel's burst state as the claim read it (None for webhooks and email)."""
        if channel.type not in CHAT_TYPES:
            return None
        return Pacer.resume(MIN_INTERVAL_S[channel.type], now=self._clock(), since_last_s=channel.since_paced_s,
                            streak=channel.burst_streak)

    async def _record_paced(self, channel: Channel, pacer: Pacer) -> None:
        pacer.record(self._clock())
        try:
            async with self._pool.connection() as conn:
                await NotifierRepository(conn).record_paced(channel.id, pacer.streak)
        except TRANSIENT_ERRORS as exc:  # this task still paces from memory; another replica may send sooner
            log.warning("saving a chat channel's burst state failed",
                        extra={"channel_id": channel.id, "error": type(exc).__name__})

    async def _send_channel(self, channel: Channel, rows: list[Claimed]) -> None:
        if not channel.enabled:
            async with self._pool.connection() as conn:
                await NotifierRepository(conn).settle([r.id for r in rows], "skipped", None, "channel disabled",
                                                      attempted=False)
            self.stats.skipped += len(rows)
            _SKIPPED.inc(len(rows))
            return
        try:
            target = self._target(channel)
        except (crypto.SecretUnreadable, crypto.SecretsKeyError, ValueError) as exc:
            async with self._pool.connection() as conn:
                await self._failed(NotifierRepository(conn), rows[:1], rows[1:], Outcome(ok=False, error=str(exc)))
            return
        deadline = self._clock() + self.settings.claim_lease_s - self.settings.request_timeout_s - LEASE_MARGIN_S
        pending = rows
        pacer = self._pacer(channel)
        while pending:
            if self._clock() > deadline or self._stopping.is_set():
                async with self._pool.connection() as conn:
                    await NotifierRepository(conn).release([r.id for r in pending])
                return
            take = 1
            if pacer is not None:
                turn = pacer.plan(self._clock(), len(pending))
                if turn.wait_s > 0:
                    await asyncio.sleep(turn.wait_s)
                take = turn.take
            group, pending = pending[:take], pending[take:]
            outcome = await self._attempt(channel, target, group)
            if pacer is not None:
                await self._record_paced(channel, pacer)
            if outcome.ok:
                self._accepted += [(r.id, outcome.status_code) for r in group]
                continue
            async with self._pool.connection() as conn:
                repo = NotifierRepository(conn)
                await self._flush_accepted(repo)
                if outcome.gone:
                    await repo.disable_channel(channel.id, outcome.error or "410 Gone from receiver",
                                              [r.id for r in group], outcome.status_code)
                    self.stats.failed += len(group)
                    self.stats.disabled_channels += 1
                    _DISABLED.inc(len(group))
                    log.warning("channel disabled by its receiver", extra={
                        "channel_id": channel.id, "status_code": outcome.status_code})
                    return
                if await self._failed(repo, group, pending, outcome):
                    return

    async def _flush_accepted(self, repo: NotifierRepository) -> None:
        """Mark what was accepted now (before settling a failure behind it, or when stopping)."""
        accepted, self._accepted = self._accepted, []
        try:
            await repo.delivered(accepted)
        except BaseException:
            self._accepted[:0] = accepted
            raise
        self.stats.delivered += len(accepted)
        _DELIVERED.inc(len(accepted))

    async def _attempt(self, channel: Channel, target: ChannelTarget, group: list[Claimed]) -> Outcome:
        try:
            events = [AlertEvent.model_validate_json(r.payload) for r in group]
            if len(events) == 1:
                request = render(channel.type, channel.format, events[0])
                msg_id = group[0].alert_id
            else:
                request = render_digest(channel.type, events)
                msg_id = f"digest-{group[0].alert_id}"
                self.stats.digests += 1
        except (ValidationError, ValueError) as exc:
            return Outcome(ok=False, error=f"cannot render: {type(exc).__name__}", retryable=False)
        self.stats.attempts += 1
        started = time.perf_counter()
        outcome = await deliver(target, request, msg_id, settings=self._send_settings, client=self._http)
        metrics.NOTIFIER_ATTEMPT_DURATION.labels(channel.type, "ok" if outcome.ok else "error").observe(
            time.perf_counter() - started)
        if not outcome.ok:
            log.info("delivery attempt failed", extra={
                "channel_id": channel.id, "alert_id": group[0].alert_id, "attempt": group[0].attempts + 1,
                "status_code": outcome.status_code, "error": outcome.error})
        return outcome

    async def _failed(self, repo: NotifierRepository, group: list[Claimed], rest: list[Claimed],
                      outcome: Outcome) -> bool:
        """Settle a failed attempt of `group`. Returns True when the channel must wait (a retry
        is scheduled for the head; `rest` is released behind it), False to go on with `rest`."""
        ids = [r.id for r in group]
        if not outcome.retryable:
            await repo.settle(ids, "failed", outcome.status_code, outcome.error)
            self.stats.failed += len(ids)
            _FAILED.inc(len(ids))
            return False
        head = group[0]
        s = self.settings
        delay = next_attempt_in(head.attempts + 1, head.age_s, delays=s.retry_delays_s,
                                give_up_after_s=s.give_up_after_s, retry_after_s=outcome.retry_after_s)
        if delay is None:
            await repo.settle(ids, "dead", outcome.status_code, outcome.error)
            self.stats.dead += len(ids)
            _DEAD.inc(len(ids))
            log.warning("delivery given up", extra={"channel_id": head.channel_id, "alert_id": head.alert_id,
                                                    "attempts": head.attempts + 1})
            return False
        await repo.retry(head.id, delay, outcome.status_code, outcome.error)
        await repo.release([r.id for r in group[1:]] + [r.id for r in rest])
        self.stats.retried += 1
        _RETRY.inc()
        return True
