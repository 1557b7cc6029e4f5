"""The restart window's cached runs give the same count as the restart rule over every sample in the
window, however the samples arrive and the window slides; anything it cannot account for is a miss."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from procwatch_api.restart_window import RestartWindows, Run, runs_from_boundaries
from procwatch_domain.restarts import count_restarts

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 28, 0, 0, 0)
PID = 7


def at(i: int) -> datetime:
    return T0 + timedelta(seconds=10 * i)


def boundaries(samples: list[tuple[datetime, int | None]]) -> list[tuple[int | None, datetime, bool, bool]]:
    """What RESTART_RUNS_SQL returns for these samples (time order): each run's first and last sample."""
    rows = []
    for i, (t, v) in enumerate(samples):
        starts = i == 0 or samples[i - 1][1] != v
        ends = i == len(samples) - 1 or samples[i + 1][1] != v
        if starts or ends:
            rows.append((v, t, starts, ends))
    return rows


def expected(samples: list[tuple[datetime, int | None]], since: datetime) -> int:
    return count_restarts(v for t, v in samples if t >= since)


def newest_first(samples: list[tuple[datetime, int | None]], n: int = 100) -> list[tuple[datetime, int | None]]:
    return sorted(samples, reverse=True)[:n]


values = st.one_of(st.none(), st.integers(min_value=100, max_value=104))


@settings(max_examples=300, deadline=None)
@given(
    first=st.lists(values, max_size=60),
    batches=st.lists(st.lists(values, max_size=30), max_size=6),
    slide=st.integers(min_value=0, max_value=15),
)
def test_incremental_runs_count_like_the_rule_over_the_window(first, batches, slide):
    samples = [(at(i), v) for i, v in enumerate(first)]
    since = at(0)
    cache = RestartWindows()
    window = [s for s in samples if s[0] >= since]
    got = cache.store(PID, len(samples), runs_from_boundaries(boundaries(window)), since)
    assert got == expected(samples, since)
    for batch in batches:
        start = len(samples)
        samples += [(at(start + j), v) for j, v in enumerate(batch)]
        since += timedelta(seconds=10 * slide)
        got = cache.count(PID, len(samples), newest_first(samples), since)
        assert got == expected(samples, since)


def test_a_late_sample_older_than_the_cached_runs_is_a_miss():
    samples = [(at(i), 100) for i in range(1, 6)]
    cache = RestartWindows()
    assert cache.store(PID, 5, runs_from_boundaries(boundaries(samples)), at(0)) == 0
    samples.append((at(0), 50))  # arrives late, would make 50 -> 100 a restart
    assert cache.count(PID, 6, newest_first(samples), at(0)) is None
    # The caller recomputes in SQL and stores again.
    fresh = sorted(samples)
    assert cache.store(PID, 6, runs_from_boundaries(boundaries(fresh)), at(0)) == 1


def test_more_new_samples_than_the_newest_list_holds_is_a_miss():
    cache = RestartWindows()
    cache.store(PID, 1, [Run(100, at(0), at(0))], at(0))
    samples = [(at(i), 100) for i in range(0, 150)]
    assert cache.count(PID, 150, newest_first(samples), at(0)) is None


def test_a_counter_that_went_down_is_a_miss_and_unknown_processes_are_misses():
    cache = RestartWindows()
    cache.store(PID, 10, [Run(100, at(0), at(9))], at(0))
    assert cache.count(PID, 9, [], at(0)) is None
    assert cache.count(PID + 1, 10, [], at(0)) is None


def test_a_run_straddling_the_window_start_is_the_first_value():
    cache = RestartWindows()
    # 100 from t0 to t5, then 200: one restart while the window starts at t0 ...
    runs = runs_from_boundaries(boundaries([(at(i), 100) for i in range(6)] + [(at(6), 200)]))
    assert cache.store(PID, 7, runs, at(0)) == 1
    # ... and still one when it starts inside the first run, none once that run is out of it.
    assert cache.count(PID, 7, [], at(3)) == 1
    assert cache.count(PID, 7, [], at(6)) == 0


def test_least_recently_used_entries_go_first():
    cache = RestartWindows(max_entries=2)
    for pid in (1, 2):
        cache.store(pid, 0, [], at(0))
    assert cache.count(1, 0, [], at(0)) == 0  # 1 is now the most recent
    cache.store(3, 0, [], at(0))
    assert cache.count(2, 0, [], at(0)) is None
    assert cache.count(1, 0, [], at(0)) == 0 and cache.count(3, 0, [], at(0)) == 0
