"""Small in-process TTL caches (pure; the clock is injected so tests need no sleeps).

Each replica keeps its own copy: entries are short-lived, so a change made
through the API is seen by every replica within the TTL (docs/ingest.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_MISSING = object()


class TtlCache(Generic[K, V]):
    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic, max_entries: int = 100_000):
        self.ttl_s = ttl_s
        self._clock = clock
        self._max = max_entries
        self._data: dict[K, tuple[float, V]] = {}

    def get(self, key: K, default=None):
        hit = self._data.get(key, _MISSING)
        if hit is _MISSING:
            return default
        expires, value = hit  # type: ignore[misc]
        if expires <= self._clock():
            del self._data[key]
            return default
        return value

    def __contains__(self, key: K) -> bool:
        return self.get(key, _MISSING) is not _MISSING

    def put(self, key: K, value: V, ttl_s: float | None = None) -> None:
        if len(self._data) >= self._max:
            self._evict_expired()
            if len(self._data) >= self._max:
                self._data.clear()
        self._data[key] = (self._clock() + (self.ttl_s if ttl_s is None else ttl_s), value)

    def missing(self, keys: Iterable[K]) -> set[K]:
        return {k for k in keys if k not in self}

    def __len__(self) -> int:
        """Entries held, expired ones included until they are looked up or evicted."""
        return len(self._data)

    def invalidate(self, key: K) -> None:
        self._data.pop(key, None)

    def _evict_expired(self) -> None:
        now = self._clock()
        for key in [k for k, (exp, _) in self._data.items() if exp <= now]:
            del self._data[key]
