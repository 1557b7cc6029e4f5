"""Maintenance window math (procwatch_domain.maintenance): occurrences across DST and time zones,
scope, early end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from procwatch_domain.maintenance import (
    Window,
    WindowIndex,
    active_windows,
    covers,
    finished,
    next_end,
    occurrence_at,
    occurrences,
    rrule_problem,
    zone_problem,
)

pytestmark = pytest.mark.unit

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def daily(tz: str, first_local: datetime, duration_s: int = 3600, **kw) -> Window:
    zone = ZoneInfo(tz)
    return Window(id=1, user_id=7, starts_at=first_local.replace(tzinfo=zone), ends_at=None,
                  rrule="FREQ=DAILY", duration_s=duration_s, timezone=tz, **kw)


def one_off(start: datetime, end: datetime, **kw) -> Window:
    return Window(id=2, user_id=7, starts_at=start, ends_at=end, rrule=None, duration_s=None, timezone="UTC", **kw)


def test_daily_berlin_0230_keeps_local_time_across_the_march_switch():
    w = daily("Europe/Berlin", datetime(2026, 3, 20, 2, 30))
    spans = occurrences(w, utc(2026, 3, 27), utc(2026, 3, 31))
    starts = [s.start for s in spans]
    # Winter (UTC+1): 01:30 UTC. 29 March: 02:30 does not exist -> read with the offset before the gap
    # (RFC 5545): 01:30 UTC = 03:30 CEST. Summer (UTC+2): 00:30 UTC.
    assert starts == [utc(2026, 3, 27, 1, 30), utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 30),
                      utc(2026, 3, 30, 0, 30)]
    assert all(s.end - s.start == timedelta(hours=1) for s in spans)
    assert starts[-1].astimezone(BERLIN).hour == 2 and starts[-2].astimezone(BERLIN).hour == 3


def test_daily_berlin_0230_on_the_october_switch_is_the_first_instance():
    w = daily("Europe/Berlin", datetime(2026, 10, 20, 2, 30), duration_s=1800)
    spans = occurrences(w, utc(2026, 10, 24), utc(2026, 10, 27))
    # 25 October: 02:30 exists twice (CEST then CET): the first one, 00:30 UTC.
    assert [s.start for s in spans] == [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    assert covers(w, 1, None, utc(2026, 10, 25, 0, 45))
    assert not covers(w, 1, None, utc(2026, 10, 25, 1, 45))  # the second 02:45 local: not covered


def test_duration_is_real_time_across_a_switch():
    # 01:00 local for 3 h on the March switch night: 3 real hours, ending 05:00 CEST.
    w = daily("Europe/Berlin", datetime(2026, 3, 28, 1, 0), duration_s=3 * 3600)
    span = occurrence_at(w, utc(2026, 3, 29, 2, 0))
    assert span is not None and span.end.astimezone(BERLIN) == datetime(2026, 3, 29, 5, 0, tzinfo=BERLIN)


def test_new_york_weekly_sunday_window_follows_its_zone():
    w = Window(id=3, user_id=7, starts_at=datetime(2026, 3, 1, 1, 0, tzinfo=NEW_YORK), ends_at=None,
               rrule="RRULE:FREQ=WEEKLY;BYDAY=SU", duration_s=4 * 3600, timezone="America/New_York")
    # US switch 8 March 2026: before, EST (UTC-5); after, EDT (UTC-4).
    assert occurrence_at(w, utc(2026, 3, 1, 6, 30)).start == utc(2026, 3, 1, 6, 0)
    # The switch day itself: 01:00 is still EST; the 4 h last 4 real hours (to 06:00 EDT).
    switch_day = occurrence_at(w, utc(2026, 3, 8, 6, 30))
    assert switch_day.start == utc(2026, 3, 8, 6, 0) and switch_day.end == utc(2026, 3, 8, 10, 0)
    assert occurrence_at(w, utc(2026, 3, 15, 5, 30)).start == utc(2026, 3, 15, 5, 0)  # 01:00 EDT
    assert occurrence_at(w, utc(2026, 3, 16, 5, 30)) is None  # Monday


def test_the_same_rule_in_two_zones_is_two_different_instants():
    berlin = daily("Europe/Berlin", datetime(2026, 6, 1, 2, 30))
    new_york = daily("America/New_York", datetime(2026, 6, 1, 2, 30))
    at = utc(2026, 6, 10, 0, 45)  # 02:45 in Berlin, 20:45 the day before in New York
    assert covers(berlin, 1, 2, at) and not covers(new_york, 1, 2, at)
    assert active_windows([berlin, new_york], utc(2026, 6, 10, 6, 45)) == [new_york]


def test_one_off_start_inclusive_end_exclusive_and_next_end():
    w = one_off(utc(2026, 5, 1, 10), utc(2026, 5, 1, 12))
    assert not covers(w, 1, 1, utc(2026, 5, 1, 9, 59))
    assert covers(w, 1, 1, utc(2026, 5, 1, 10))
    assert not covers(w, 1, 1, utc(2026, 5, 1, 12))
    assert next_end(w, utc(2026, 5, 1, 11)) == utc(2026, 5, 1, 12)
    assert next_end(w, utc(2026, 5, 1, 13)) is None
    assert finished(w, utc(2026, 5, 1, 12)) and not finished(w, utc(2026, 5, 1, 11))


def test_ended_early_cuts_the_current_occurrence_only():
    w = daily("UTC", datetime(2026, 5, 1, 10, 0), duration_s=7200, ended_at=utc(2026, 5, 3, 10, 30))
    assert covers(w, 1, 1, utc(2026, 5, 3, 10, 15))
    assert not covers(w, 1, 1, utc(2026, 5, 3, 11))
    assert next_end(w, utc(2026, 5, 3, 10, 15)) == utc(2026, 5, 3, 10, 30)
    assert covers(w, 1, 1, utc(2026, 5, 4, 11))  # the next day's occurrence is whole
    one = one_off(utc(2026, 5, 1, 10), utc(2026, 5, 1, 12), ended_at=utc(2026, 5, 1, 11))
    assert not covers(one, 1, 1, utc(2026, 5, 1, 11, 30)) and finished(one, utc(2026, 5, 1, 11))


def test_scope_account_servers_processes():
    at = utc(2026, 5, 1, 11)
    account = one_off(utc(2026, 5, 1, 10), utc(2026, 5, 1, 12))
    servers = one_off(utc(2026, 5, 1, 10), utc(2026, 5, 1, 12), server_ids=frozenset({5}))
    processes = one_off(utc(2026, 5, 1, 10), utc(2026, 5, 1, 12), process_ids=frozenset({50}))
    assert covers(account, 9, 90, at) and covers(account, 9, None, at)
    assert covers(servers, 5, 51, at) and covers(servers, 5, None, at) and not covers(servers, 6, 60, at)
    assert covers(processes, 5, 50, at) and not covers(processes, 5, 51, at) and not covers(processes, 5, None, at)


def test_count_limited_rule_finishes():
    w = Window(id=4, user_id=7, starts_at=utc(2026, 5, 1, 10), ends_at=None, rrule="FREQ=DAILY;COUNT=2",
               duration_s=3600, timezone="UTC")
    assert covers(w, 1, 1, utc(2026, 5, 2, 10, 30)) and not covers(w, 1, 1, utc(2026, 5, 3, 10, 30))
    assert not finished(w, utc(2026, 5, 2, 9)) and finished(w, utc(2026, 5, 2, 11))


def test_index_answers_per_user():
    mine = one_off(utc(2026, 5, 1, 10), utc(2026, 5, 1, 12))
    index = WindowIndex([mine])
    assert index.suppressed(7, 1, 1, utc(2026, 5, 1, 11))
    assert not index.suppressed(8, 1, 1, utc(2026, 5, 1, 11))
    assert not index.suppressed(7, 1, 1, utc(2026, 5, 1, 13))
    assert len(index) == 1


@pytest.mark.parametrize("text", ["FREQ=DAILY", "RRULE:FREQ=WEEKLY;BYDAY=SA,SU", "FREQ=MONTHLY;BYMONTHDAY=1",
                                  "FREQ=DAILY;UNTIL=20270101T000000"])
def test_rrule_accepted(text):
    assert rrule_problem(text) is None


@pytest.mark.parametrize("text", ["", "FREQ=HOURLY", "FREQ=MINUTELY", "nonsense", "DTSTART:20260101T000000\nRRULE:FREQ=DAILY",
                                  "FREQ=DAILY;BYDAY=XX", 5, "FREQ=DAILY;" + "X" * 600])
def test_rrule_refused(text):
    assert rrule_problem(text) is not None


def test_zone_problem():
    assert zone_problem("Europe/Berlin") is None and zone_problem("UTC") is None
    assert zone_problem("Mars/Olympus") is not None and zone_problem(3) is not None and zone_problem("") is not None


def test_effective_until_and_next_start():
    from procwatch_domain.maintenance import effective_until, next_start

    assert effective_until(one_off(utc(2026, 5, 1, 10), utc(2026, 5, 1, 12))) == utc(2026, 5, 1, 12)
    assert effective_until(one_off(utc(2026, 5, 1, 10), utc(2026, 5, 1, 12), ended_at=utc(2026, 5, 1, 11))) \
        == utc(2026, 5, 1, 11)
    assert effective_until(daily("Europe/Berlin", datetime(2026, 3, 20, 2, 30))) is None
    counted = Window(id=4, user_id=7, starts_at=datetime(2026, 3, 28, 2, 30, tzinfo=BERLIN), ends_at=None,
                     rrule="FREQ=DAILY;COUNT=3", duration_s=3600, timezone="Europe/Berlin")
    assert effective_until(counted) == utc(2026, 3, 30, 1, 30)  # 02:30 CEST + 1 h
    assert next_start(counted, utc(2026, 3, 28, 2)) == utc(2026, 3, 29, 1, 30)
    assert next_start(counted, utc(2026, 3, 30, 1)) is None


def test_index_looks_only_at_the_alerts_scope_and_reuses_spans():
    at = utc(2026, 5, 1, 11)
    by_process = one_off(utc(2026, 5, 1, 10), utc(2026, 5, 1, 12), process_ids=frozenset({50}))
    by_server = daily("UTC", datetime(2026, 4, 1, 10, 30), server_ids=frozenset({6}))
    index = WindowIndex([by_process, by_server])
    assert index.suppressing(7, 5, 50, at) is by_process
    assert index.suppressing(7, 6, 60, at) is by_server and index.suppressed(7, 6, None, at)
    assert not index.suppressed(7, 5, 51, at)
    assert not index.suppressed(8, 6, 60, at)  # the windows of another user never apply
    # Far from the first question: the occurrences are computed again around the new time.
    assert index.suppressed(7, 6, 60, utc(2026, 9, 1, 10, 45)) and not index.suppressed(7, 6, 60, utc(2026, 9, 1, 12))
