"""When to try a failed delivery again (pure).

Attempt 1 goes out at once; after a failure the next attempt waits, in turn,
5 s, 30 s, 2 min, 10 min, 30 min, 1 h, then 1 h again and again, each +-10 % (jitter:
the deliveries an outage failed together do not all come back in the same second).
A delivery still failing 24 h after it was created is given up (`dead`).
A 429 or 503 with `Retry-After` waits what the receiver asked (at least the schedule's delay
when the header asks for less, at most one hour).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from email.utils import parsedate_to_datetime

DEFAULT_DELAYS_S: tuple[float, ...] = (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0)
GIVE_UP_AFTER_S = 24 * 3600.0
JITTER = 0.1
MAX_RETRY_AFTER_S = 3600.0


def retry_delay(attempts: int, *, delays: Sequence[float] = DEFAULT_DELAYS_S, jitter: float = JITTER,
                retry_after_s: float | None = None, rng: random.Random | None = None) -> float:
    """Seconds to wait after the `attempts`-th attempt failed (attempts >= 1)."""
    base = delays[min(max(attempts, 1), len(delays)) - 1]
    delay = base * (1.0 + (rng or random).uniform(-jitter, jitter))
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, MAX_RETRY_AFTER_S))
    return max(0.0, delay)


def next_attempt_in(attempts: int, age_s: float, *, delays: Sequence[float] = DEFAULT_DELAYS_S,
                    give_up_after_s: float = GIVE_UP_AFTER_S, jitter: float = JITTER,
                    retry_after_s: float | None = None, rng: random.Random | None = None) -> float | None:
    """After a failed attempt: seconds until the next one, or None to give up (the next attempt
    would come later than `give_up_after_s` after the delivery was created, `age_s` ago)."""
    delay = retry_delay(attempts, delays=delays, jitter=jitter, retry_after_s=retry_after_s, rng=rng)
    if age_s + delay > give_up_after_s:
        return None
    return delay


def parse_retry_after(value: str | None, now_unix: float) -> float | None:
    """Seconds from a `Retry-After` header: delta-seconds or an HTTP date; None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now_unix)
