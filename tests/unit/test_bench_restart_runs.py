"""The API sends only changes of oldest_start_unix to the restart rule (repository.RESTART_RUNS_SQL keeps,
in SQL, the first and last sample of each run of equal values). Dropping repeats must never change the count."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from procwatch_domain.restarts import count_restarts

pytestmark = pytest.mark.unit


def drop_repeats(values: list[int | None]) -> list[int | None]:
    """What the SQL keeps: the first sample, then every one distinct from its predecessor."""
    return [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]


@given(st.lists(st.one_of(st.none(), st.integers(min_value=1_600_000_000, max_value=1_600_000_010)), max_size=200))
def test_dropping_repeats_keeps_the_restart_count(values):
    assert count_restarts(drop_repeats(values)) == count_restarts(values)


def test_a_day_of_ticks_with_hourly_restarts_shrinks_to_its_changes():
    day = [1_700_000_000 + (i // 360) * 3600 for i in range(8640)]
    assert count_restarts(day) == 23
    assert len(drop_repeats(day)) == 24
    assert count_restarts(drop_repeats(day)) == 23
