from datetime import date, datetime, timedelta, timezone

import pytest

from procwatch_db import partitions as p

pytestmark = pytest.mark.unit


def test_names_round_trip_and_other_tables_are_not_partitions():
    assert p.partition_name(date(2026, 3, 9)) == "process_samples_p20260309"
    assert p.partition_day("process_samples_p20260309") == date(2026, 3, 9)
    assert p.partition_day("process_samples_p20261399") is None
    assert p.partition_day("process_samples") is None and p.partition_day("process_samples_default") is None
    assert p.is_partition_name("process_samples_default") and p.is_partition_name("process_samples_p20260101")
    assert not p.is_partition_name("process_samples") and not p.is_partition_name("watched_processes")


def test_alembic_hook_hides_only_the_partitions():
    assert p.include_name("process_samples_p20260101", "table", {}) is False
    assert p.include_name("process_samples_default", "table", {}) is False
    assert p.include_name("process_samples", "table", {}) is True
    assert p.include_name("process_samples_p20260101", "index", {}) is True  # only tables are filtered


def test_days_are_utc_days():
    assert p.day_start(date(2026, 5, 24)) == datetime(2026, 5, 24, tzinfo=timezone.utc)
    late_evening_west = datetime(2026, 5, 24, 22, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert p.utc_day(late_evening_west) == date(2026, 5, 25)
    with pytest.raises(ValueError):
        p.utc_day(datetime(2026, 5, 24))


def test_days_to_ensure_span_yesterday_to_n_days_ahead():
    days = p.days_to_ensure(date(2026, 12, 30), back_days=1, ahead_days=3)
    assert days == [date(2026, 12, 29), date(2026, 12, 30), date(2026, 12, 31), date(2027, 1, 1), date(2027, 1, 2)]


def test_only_days_wholly_older_than_the_longest_retention_are_dropped():
    now = datetime(2026, 5, 24, 12, 0, tzinfo=timezone.utc)  # cutoff for 90 days: 2026-02-23 12:00
    days = [date(2026, 2, 21), date(2026, 2, 22), date(2026, 2, 23), date(2026, 2, 24), date(2026, 5, 24)]
    # 2026-02-22 ends at 02-23 00:00 <= cutoff: dropped; 02-23 still holds kept rows (after 12:00).
    assert p.days_to_drop(days, now, 90) == [date(2026, 2, 21), date(2026, 2, 22)]
    assert p.days_to_drop(days, datetime(2026, 2, 24, 0, 0, tzinfo=timezone.utc), 1) == [
        date(2026, 2, 21), date(2026, 2, 22)]
