"""`recent_restarts` without re-reading a day of samples on every GET.

The restart rule (procwatch_domain.restarts) only needs the *runs* of equal
consecutive `oldest_start_unix` values in the 24-hour window: a day of 10 s
ticks is 8,640 samples but a few dozen runs. Reading and windowing the 8,640
rows on every request would make the get route's cost
grow with the process's sample rate and history.

So each API process keeps, per watched process, the runs it last computed and
the `samples_total` they reflect, and brings them up to date from the newest
100 samples the get route reads anyway. The counter decides whether that is
exact: ingest (and retention) change `samples_total` in the same transaction as
the rows, so when the counter grew by exactly the number of samples newer than
the cached runs, those are all the changes; anything else (a late sample older
than the runs, retention, a counter edited by hand, more than 100 new samples)
makes the caller recompute the runs in SQL. As the window slides, runs that end
before it are dropped; a run that straddles the window's start still holds the
value of the window's first sample, so the count stays exact.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from procwatch_domain.restarts import count_restarts


@dataclass
class Run:
    """Consecutive samples with the same oldest_start_unix (None included)."""

    value: int | None
    first_at: datetime
    last_at: datetime


@dataclass
class _Entry:
    samples_total: int
    # Every sample with recorded_at in [window start when computed, covered_until] is in `runs`.
    covered_until: datetime
    runs: list[Run]


def runs_from_boundaries(rows: Iterable[tuple[int | None, datetime, bool, bool]]) -> list[Run]:
    """Runs from the (value, recorded_at, starts_run, ends_run) rows of the SQL (time order)."""
    runs: list[Run] = []
    for value, at, starts, ends in rows:
        if starts:
            runs.append(Run(value, at, at))
        if ends:
            runs[-1].last_at = at
    return runs


def restarts_in(runs: Sequence[Run], since: datetime) -> int:
    return count_restarts(run.value for run in runs if run.last_at >= since)


class RestartWindows:
    """Per-process runs of the restart window, bounded in number (least recently used go first)."""

    def __init__(self, max_entries: int = 50_000) -> None:
        self._max = max_entries
        self._entries: OrderedDict[int, _Entry] = OrderedDict()

    def count(self, process_id: int, samples_total: int, newest: Sequence[tuple[datetime, int | None]],
              since: datetime) -> int | None:
        """Restarts since `since`, or None when the cached runs cannot be brought up to date exactly.

        `newest`: (recorded_at, oldest_start_unix) of the process's newest samples, newest first.
        """
        entry = self._entries.get(process_id)
        if entry is None:
            return None
        fresh = [s for s in newest if s[0] > entry.covered_until]
        if len(fresh) != samples_total - entry.samples_total:
            del self._entries[process_id]
            return None
        runs = entry.runs
        for at, value in reversed(fresh):
            if runs and runs[-1].value == value:
                runs[-1].last_at = at
            else:
                runs.append(Run(value, at, at))
        if fresh:
            entry.covered_until = fresh[0][0]
        entry.samples_total = samples_total
        while runs and runs[0].last_at < since:
            del runs[0]
        self._entries.move_to_end(process_id)
        return restarts_in(runs, since)

    def store(self, process_id: int, samples_total: int, runs: list[Run], since: datetime) -> int:
        """Keep the runs computed in SQL for the window starting at `since`; returns their restart count."""
        # The SQL read every sample at or after `since` (timestamps have microsecond resolution).
        covered = runs[-1].last_at if runs else since - timedelta(microseconds=1)
        self._entries[process_id] = _Entry(samples_total, covered, runs)
        self._entries.move_to_end(process_id)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return restarts_in(runs, since)
