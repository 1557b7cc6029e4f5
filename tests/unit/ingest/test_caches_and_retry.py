from __future__ import annotations

import pytest

from procwatch_ingest.caches import TtlCache
from procwatch_ingest.handlers import retry_delay
from procwatch_ingest.service import event_msg_id

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_entries_expire_after_their_ttl():
    clock = Clock()
    cache: TtlCache[int, str] = TtlCache(10, clock)
    cache.put(1, "a")
    cache.put(2, None, ttl_s=2)  # negative entries may live shorter
    assert cache.get(1) == "a" and 2 in cache and cache.missing([1, 2, 3]) == {3}
    clock.t += 2
    assert 2 not in cache and cache.get(1) == "a"
    clock.t += 8
    assert cache.get(1) is None and cache.missing([1]) == {1}


def test_cache_size_is_bounded():
    cache: TtlCache[int, int] = TtlCache(10, Clock(), max_entries=3)
    for i in range(10):
        cache.put(i, i)
    assert len(cache) <= 3 and cache.get(9) == 9


def test_retry_delay_grows_and_is_capped():
    assert [retry_delay(n, 0.5, 10) for n in (1, 2, 3, 4, 5, 6, 100)] == [0.5, 1, 2, 4, 8, 10, 10]


def test_event_msg_id_is_deterministic_per_server_and_tick():
    from datetime import UTC, datetime, timedelta, timezone

    t = datetime(2026, 5, 24, 18, 41, tzinfo=UTC)
    same = t.astimezone(timezone(timedelta(hours=2)))
    assert event_msg_id(12, t) == event_msg_id(12, same) == "sr-12-2026-05-24T18:41:00Z"
    assert event_msg_id(13, t) != event_msg_id(12, t)
