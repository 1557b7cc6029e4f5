"""Per-token rate limiting: a fixed one-minute window per token hash, shared in Redis.

Counted locally and flushed with INCRBY rather than a Redis round trip per
request: each API process adds its requests to the token's Redis counter at
most every `FLUSH_INTERVAL_S` and decides on (the Redis total at its last flush
+ its requests since). In the second half of a token's budget (`NEAR_LIMIT`)
every request flushes, so the limit is enforced on the shared count, missing
at most what the *other* processes served that token since their last flush
(one interval's worth); with one process it is exact. Over the limit, requests
are answered 429 without asking Redis again.

Redis holds nothing that matters: when it is down or slow the limiter fails
open (requests are served, unlimited), logs one warning per minute at most,
and skips Redis for `retry_after_s` so each request does not wait a timeout.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from procwatch_api.errors import RateLimited

log = logging.getLogger("procwatch.api.ratelimit")

WINDOW_S = 60
WARN_EVERY_S = 60.0


def redis_client(url: str, timeout_s: float) -> Redis:
    # No client-side retries: one short attempt, then fail open.
    return Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
    )


# How stale a process's view of a token's shared count may get (see the module docstring).
FLUSH_INTERVAL_S = 0.25
# Past this fraction of the limit every request flushes: at most the other half of the
# budget in Redis calls per process and window, and only for tokens that use it.
NEAR_LIMIT = 0.5


class _TokenCount:
    __slots__ = ("shared", "pending", "flushed_at", "flushing")

    def __init__(self) -> None:
        self.shared = 0  # the Redis counter as of the last flush (this process's flushed requests included)
        self.pending = 0  # this process's requests not yet added to it
        self.flushed_at = -math.inf
        self.flushing = False


class RateLimiter:
    def __init__(self, redis: Redis, per_minute: int, *, retry_after_s: float = 2.0,
                 flush_interval_s: float = FLUSH_INTERVAL_S) -> None:
        self._redis = redis
        self._limit = per_minute
        self._near = min(per_minute - 1, int(per_minute * NEAR_LIMIT))
        self._retry_after_s = retry_after_s
        self._flush_interval_s = flush_interval_s
        self._skip_until = 0.0
        self._last_warning = -math.inf
        self._failures_since_warning = 0
        self._window = -1
        self._counts: dict[str, _TokenCount] = {}

    async def check(self, token_hash: str, *, subject: str = "this token") -> None:
        """Count one request for this token (or other key); RateLimited, naming `subject`, when over
        the window's limit."""
        if self._limit <= 0 or time.monotonic() < self._skip_until:
            return
        now = time.time()
        window = int(now // WINDOW_S)
        if window != self._window:
            # A new window starts from zero everywhere; unflushed counts of the old one no longer matter.
            self._window = window
            self._counts = {}
        count = self._counts.get(token_hash)
        if count is None:
            count = self._counts[token_hash] = _TokenCount()
        count.pending += 1
        total = count.shared + count.pending
        if total <= self._limit and not count.flushing and (
            total > self._near or time.monotonic() - count.flushed_at >= self._flush_interval_s
        ):
            total = await self._flush(token_hash, count, window)
            if total is None:
                return
        if total > self._limit:
            retry_after = max(1, math.ceil((window + 1) * WINDOW_S - now))
            raise RateLimited(limit=self._limit, retry_after=retry_after, subject=subject)

    async def _flush(self, token_hash: str, count: _TokenCount, window: int) -> int | None:
        """Add the pending requests to the shared counter; the new total, or None when Redis failed."""
        key = f"procwatch:ratelimit:{token_hash}:{window}"
        added, count.pending, count.flushing = count.pending, 0, True
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.incrby(key, added)
            pipe.expire(key, WINDOW_S * 2)
            shared, _ = await pipe.execute()
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            count.pending += added
            self._failed(exc)
            return None
        finally:
            count.flushing = False
            count.flushed_at = time.monotonic()
        count.shared = shared
        # Requests that arrived during the round trip are still pending.
        return shared + count.pending

    def _failed(self, exc: BaseException) -> None:
        self._skip_until = time.monotonic() + self._retry_after_s
        self._failures_since_warning += 1
        if time.monotonic() - self._last_warning >= WARN_EVERY_S:
            log.warning(
                "redis unavailable; rate limiting is off until it answers",
                extra={"error": type(exc).__name__, "failures": self._failures_since_warning},
            )
            self._last_warning = time.monotonic()
            self._failures_since_warning = 0
