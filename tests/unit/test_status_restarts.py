"""procwatch_domain.status and procwatch_domain.restarts as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from procwatch_domain.restarts import count_restarts, is_restart
from procwatch_domain.status import format_alerted_state, parse_alerted_state, process_status

pytestmark = pytest.mark.unit

NOW = datetime(2026, 5, 24, 18, 41, tzinfo=UTC)


@pytest.mark.parametrize(
    ("enabled", "last_sample_at", "last_count", "alerted_state", "status"),
    [
        (False, None, None, None, "paused"),
        (False, NOW, 0, "down", "paused"),  # paused beats everything
        (True, None, None, None, "pending"),
        (True, None, 0, "down", "pending"),  # no sample yet beats down/alerting
        (True, NOW, 0, None, "down"),
        (True, NOW, 0, "down,cpu", "down"),  # down beats alerting
        (True, NOW, 3, "cpu", "alerting"),
        (True, NOW, 3, "cpu,memory", "alerting"),
        (True, NOW, 3, None, "up"),
        (True, NOW, 3, "", "up"),
    ],
)
def test_status_precedence(enabled, last_sample_at, last_count, alerted_state, status):
    assert process_status(enabled=enabled, last_sample_at=last_sample_at, last_count=last_count,
                          alerted_state=alerted_state) == status


@pytest.mark.parametrize(
    ("firing", "text"),
    [(set(), None), ({"cpu"}, "cpu"), ({"memory", "cpu"}, "cpu,memory"), ({"memory", "down", "cpu"}, "down,cpu,memory")],
)
def test_alerted_state_is_ordered_and_round_trips(firing, text):
    assert format_alerted_state(firing) == text
    assert parse_alerted_state(text) == frozenset(firing)


def test_unknown_alert_condition_is_refused():
    with pytest.raises(ValueError):
        format_alerted_state({"disk"})


@pytest.mark.parametrize(
    ("previous", "current", "restart"),
    [(100, 200, True), (200, 100, False), (100, 100, False), (None, 100, False), (100, None, False), (None, None, False)],
)
def test_is_restart_only_when_the_oldest_start_increases(previous, current, restart):
    assert is_restart(previous, current) is restart


@pytest.mark.parametrize(
    ("starts", "restarts"),
    [
        ([], 0),
        ([100], 0),
        ([100, 100, 100], 0),
        ([100, 200], 1),
        ([100, 200, 300], 2),
        ([100, 200, 200, 300], 2),
        ([300, 200], 0),  # a worker with an older start took over: not a restart
        ([100, None, 200], 0),  # down then up: a down episode, not a restart
        ([None, 100, 200], 1),
        ([100, 200, None, None, 300, 400], 2),
    ],
)
def test_count_restarts_over_consecutive_samples(starts, restarts):
    assert count_restarts(starts) == restarts
    assert count_restarts(iter(starts)) == restarts  # any iterable, consumed once
