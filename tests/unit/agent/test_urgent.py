"""Out-of-cadence samples: coalescing, the per-minute cap and the respawn recheck (injected clock)."""

import pytest

from procwatch_agent.urgent import RECHECKS, WINDOW_S, UrgentSamples

pytestmark = pytest.mark.unit


def test_nothing_pending_nothing_due():
    u = UrgentSamples(coalesce_s=0.005, max_per_minute=60)
    assert u.due_at(0.0) is None and u.take(100.0) == ()


def test_exits_within_the_window_go_out_as_one_message():
    u = UrgentSamples(coalesce_s=0.005, max_per_minute=60)
    u.note_exit(("nginx",), 10.000)
    u.note_exit(("nginx", "php-fpm"), 10.003)
    assert u.due_at(10.003) == pytest.approx(10.005)
    assert u.take(10.004) == ()  # still coalescing
    assert u.take(10.005) == ("nginx", "php-fpm")
    assert u.take(10.006) == () and u.pending == ()
    # a later exit opens a new window
    u.note_exit(("redis",), 11.0)
    assert u.take(11.0) == () and u.take(11.005) == ("redis",)
    assert u.sent_total == 2


def test_cap_defers_past_the_limit_until_the_oldest_send_leaves_the_window():
    u = UrgentSamples(coalesce_s=0.0, max_per_minute=3)
    for t in (0.0, 1.0, 2.0):
        u.note_exit(("a",), t)
        assert u.take(t) == ("a",)
    u.note_exit(("a",), 3.0)
    assert u.due_at(3.0) == WINDOW_S  # the first send leaves the 60 s window then
    assert u.take(30.0) == ()
    assert u.take(WINDOW_S) == ("a",)
    # never more than 3 in any 60 s
    u.note_exit(("b",), WINDOW_S + 0.5)
    assert u.take(WINDOW_S + 0.5) == ()
    assert u.due_at(WINDOW_S + 0.5) == 1.0 + WINDOW_S


def test_a_regular_tick_covers_what_is_pending():
    u = UrgentSamples(coalesce_s=0.005, max_per_minute=1)
    u.note_exit(("a",), 0.0)
    assert u.take(0.01) == ("a",)
    u.note_exit(("b",), 1.0)  # capped until 60 s
    u.covered_by_tick()
    assert u.due_at(61.0) is None and u.take(61.0) == ()


def test_zero_per_minute_turns_out_of_cadence_samples_off():
    u = UrgentSamples(coalesce_s=0.0, max_per_minute=0)
    u.note_exit(("a",), 0.0)
    assert u.due_at(0.0) is None and u.take(1000.0) == ()


def test_recheck_reports_names_whose_count_changed():
    u = UrgentSamples(coalesce_s=0.0, max_per_minute=60, recheck_s=1.0)
    u.note_exit(("a", "b"), 0.0)
    assert u.take(0.0) == ("a", "b")
    u.sent(("a", "b"), (0, 2), 0.0)
    assert u.recheck_at() == 1.0 and u.recheck_due(0.5) == ()
    assert u.recheck_due(1.0) == ("a", "b")
    u.recheck_done((1, 2), 1.0)  # `a` came back (a supervisor restarted it), `b` unchanged
    assert u.recheck_at() is None
    assert u.take(1.0) == ("a",)


def test_rechecks_back_off_then_stop_and_send_nothing_without_a_change():
    u = UrgentSamples(coalesce_s=0.0, max_per_minute=60, recheck_s=1.0)
    u.sent(("a",), (0,), 0.0)
    at = []
    while (t := u.recheck_at()) is not None:
        at.append(t)
        assert u.recheck_due(t) == ("a",)
        u.recheck_done((0,), t)
    assert at == [1.0, 3.0, 7.0, 15.0, 31.0]  # 1, 2, 4, 8, 16 s apart
    assert len(at) == RECHECKS and u.due_at(31.0) is None


def test_a_late_respawn_is_found_by_a_later_recheck():
    u = UrgentSamples(coalesce_s=0.0, max_per_minute=60, recheck_s=1.0)
    u.sent(("a",), (0,), 0.0)
    u.recheck_done((0,), 1.0)  # not back yet
    u.recheck_done((1,), 3.0)  # back
    assert u.recheck_at() is None and u.take(3.0) == ("a",)


def test_recheck_off():
    u = UrgentSamples(coalesce_s=0.0, max_per_minute=60, recheck_s=0.0)
    u.sent(("a",), (0,), 0.0)
    assert u.recheck_at() is None


def test_two_samples_in_one_millisecond_get_distinct_times(monkeypatch):
    """The message id is <server>-<sampled_at ms>: a tick and an out-of-cadence sample in the same
    millisecond must not share it (JetStream would drop the second as a duplicate)."""
    from datetime import UTC, datetime, timedelta

    from procwatch_agent import runner
    from procwatch_agent.settings import AgentSettings

    frozen = datetime(2026, 12, 1, 12, 0, 0, 5000, tzinfo=UTC)
    monkeypatch.setattr(runner, "utc_now_ms", lambda: frozen)
    agent = runner.Agent(AgentSettings(server_id=3, key="pwa_k"))
    times = [agent.next_sample_time() for _ in range(3)]
    assert times == [frozen, frozen + timedelta(milliseconds=1), frozen + timedelta(milliseconds=2)]
