"""When to send an out-of-cadence sample after watched PIDs exit (pure: the clock is passed in).

A death is news and goes out at once, whatever the plan's interval, but the agent
never floods:

- **Coalescing.** The first exit opens a window of `coalesce_s`; every exit
  within it joins the same message (a supervisor stopping a process group, a
  crash taking down all workers: one message, not one per PID).
- **Cap.** At most `max_per_minute` out-of-cadence messages in any 60-second
  window (sliding). Past the cap, pending names wait until the oldest send
  leaves the window — or until the next regular tick, which reports every name
  anyway and clears them (`covered_by_tick`). `max_per_minute` 0 turns
  out-of-cadence samples off.
- **Respawn rechecks.** After an out-of-cadence send, its names are scanned
  again `recheck_s` later, then after 2×, 4×, 8×, 16× that delay
  (`RECHECKS` in all: 1, 2, 4, 8, 16 s by default; the ticks take over after).
  The first recheck that finds a count changed since the send (a supervisor
  started the process again) makes it news too — same coalescing and cap — and
  ends the series; its send starts a new one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import NamedTuple

WINDOW_S = 60.0
RECHECKS = 5


class _Recheck(NamedTuple):
    at: float
    names: tuple[str, ...]
    counts: tuple[int, ...]  # as sent
    number: int  # 1 for the first recheck after a send


class UrgentSamples:
    def __init__(self, coalesce_s: float, max_per_minute: int, recheck_s: float = 0.0) -> None:
        self.coalesce_s = coalesce_s
        self.max_per_minute = max_per_minute
        self.recheck_s = recheck_s
        self._pending: dict[str, None] = {}  # names, in the order their exits were seen
        self._opened_at: float | None = None
        self._sent: deque[float] = deque()
        self._recheck: _Recheck | None = None
        self.sent_total = 0

    @property
    def pending(self) -> tuple[str, ...]:
        return tuple(self._pending)

    def note_exit(self, names: Iterable[str], now: float) -> None:
        if self.max_per_minute <= 0:
            return
        if not self._pending:
            self._opened_at = now
        self._pending.update(dict.fromkeys(names))

    def due_at(self, now: float) -> float | None:
        """When the pending names may be sent (None: nothing pending)."""
        if not self._pending or self._opened_at is None:
            return None
        self._expire(now)
        at = self._opened_at + self.coalesce_s
        if len(self._sent) >= self.max_per_minute:
            at = max(at, self._sent[0] + WINDOW_S)
        return at

    def take(self, now: float) -> tuple[str, ...]:
        """The names to send now (empty: nothing is due); counts the send against the cap."""
        at = self.due_at(now)
        if at is None or now < at:
            return ()
        names = tuple(self._pending)
        self._pending.clear()
        self._opened_at = None
        self._sent.append(now)
        self.sent_total += 1
        return names

    def covered_by_tick(self) -> None:
        """A regular tick reported every name: nothing pending is news any more."""
        self._pending.clear()
        self._opened_at = None

    def sent(self, names: tuple[str, ...], counts: tuple[int, ...], now: float) -> None:
        """An out-of-cadence sample went out with these counts: look again `recheck_s` later."""
        if self.recheck_s > 0 and names:
            self._recheck = _Recheck(now + self.recheck_s, names, counts, 1)

    def recheck_at(self) -> float | None:
        return self._recheck.at if self._recheck is not None else None

    def recheck_due(self, now: float) -> tuple[str, ...]:
        if self._recheck is None or now < self._recheck.at:
            return ()
        return self._recheck.names

    def recheck_done(self, counts: tuple[int, ...], now: float) -> None:
        """The recheck's counts, in `recheck_due`'s order: the names whose count changed become news."""
        r = self._recheck
        if r is None:
            return
        changed = [n for n, b, c in zip(r.names, r.counts, counts, strict=True) if b != c]
        if changed:
            self._recheck = None
            self.note_exit(changed, now)
        elif r.number < RECHECKS:
            self._recheck = r._replace(at=now + self.recheck_s * 2 ** r.number, number=r.number + 1)
        else:
            self._recheck = None

    def _expire(self, now: float) -> None:
        while self._sent and self._sent[0] <= now - WINDOW_S:
            self._sent.popleft()
