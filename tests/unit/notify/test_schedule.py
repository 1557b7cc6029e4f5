from __future__ import annotations

import random

import pytest

from procwatch_notify.schedule import DEFAULT_DELAYS_S, next_attempt_in, parse_retry_after, retry_delay

pytestmark = pytest.mark.unit


def test_the_documented_schedule_without_jitter():
    delays = [retry_delay(n, jitter=0) for n in range(1, 10)]
    assert delays == [5, 30, 120, 600, 1800, 3600, 3600, 3600, 3600]


def test_jitter_stays_within_ten_percent():
    rng = random.Random(1)
    for attempts, base in enumerate(DEFAULT_DELAYS_S, start=1):
        for _ in range(50):
            assert base * 0.9 <= retry_delay(attempts, rng=rng) <= base * 1.1


def test_gives_up_after_24_hours():
    assert next_attempt_in(8, 3600 * 20, jitter=0) == 3600
    assert next_attempt_in(30, 3600 * 23.5, jitter=0) is None


def test_whole_schedule_ends_dead_after_about_30_attempts():
    age, attempts = 0.0, 0
    while True:
        attempts += 1
        delay = next_attempt_in(attempts, age, jitter=0)
        if delay is None:
            break
        age += delay
    assert age <= 24 * 3600 and 25 <= attempts <= 30


def test_retry_after_is_honoured_and_capped():
    assert retry_delay(1, jitter=0, retry_after_s=42) == 42
    assert retry_delay(3, jitter=0, retry_after_s=1) == 120  # never sooner than the schedule
    assert retry_delay(1, jitter=0, retry_after_s=10**9) == 3600


def test_parse_retry_after():
    assert parse_retry_after("7", 0) == 7
    assert parse_retry_after(None, 0) is None
    assert parse_retry_after("soon", 0) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412480 - 20) == 20
