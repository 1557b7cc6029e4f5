"""Per-token rate limiting in Redis: a fixed one-minute window keyed by the token hash.

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


class RateLimiter:
    def __init__(self, redis: Redis, per_minute: int, *, retry_after_s: float = 2.0) -> None:
        self._redis = redis
        self._limit = per_minute
        self._retry_after_s = retry_after_s
        self._skip_until = 0.0
        self._last_warning = -math.inf
        self._failures_since_warning = 0

    async def check(self, token_hash: str) -> None:
        """Count one request for this token; RateLimited when over the window's limit."""
        if self._limit <= 0 or time.monotonic() < self._skip_until:
            return
        now = time.time()
        window = int(now // WINDOW_S)
        key = f"procwatch:ratelimit:{token_hash}:{window}"
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, WINDOW_S * 2)
            count, _ = await pipe.execute()
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self._failed(exc)
            return
        if count > self._limit:
            retry_after = max(1, math.ceil((window + 1) * WINDOW_S - now))
            raise RateLimited(limit=self._limit, retry_after=retry_after)

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
