"""The alert rules (procwatch_domain.alerts) as pure functions: every transition, then properties."""

from __future__ import annotations

from dataclasses import field, make_dataclass, replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from procwatch_domain.alerts import (
    NO_STREAKS,
    SampleView,
    Transition,
    alert_id,
    apply_transitions,
    evaluate_sample,
    evaluate_transition,
    format_streaks,
    parse_streaks,
    resolve_all,
    resolve_for_change,
    streaks_after_change,
)
from procwatch_domain.rules import SETTINGS

pytestmark = pytest.mark.unit


# A process's alert settings: every setting of the registry with its default (down on, the
# rest off, cpu 50 %, memory 25 %); a test overrides what it needs, e.g. Cfg(alert_on_cpu=True).
Cfg = make_dataclass("Cfg", [(x.name, x.type, field(default=x.default)) for x in SETTINGS], frozen=True)


ALL_ON = Cfg(alert_on_down=True, alert_on_restart=True, alert_on_cpu=True, alert_on_memory=True)
NONE = frozenset()
UP = SampleView(count=2, cpu_pct=10.0, memory_pct=5.0, oldest_start_unix=1000)


def s(count=2, cpu=10.0, mem=5.0, start=1000):
    return SampleView(count=count, cpu_pct=cpu, memory_pct=mem, oldest_start_unix=start if count else None)


T = Transition


@pytest.mark.parametrize(
    ("firing", "config", "previous", "sample", "expected"),
    [
        # --- down
        pytest.param(NONE, Cfg(), UP, s(count=0), [T("down", "firing", 0.0)], id="down fires on count 0"),
        pytest.param(NONE, Cfg(), None, s(count=0), [T("down", "firing", 0.0)], id="down fires on first sample"),
        pytest.param(frozenset({"down"}), Cfg(), s(count=0), s(count=0), [], id="down stays firing, no repeat"),
        pytest.param(frozenset({"down"}), Cfg(), s(count=0), s(count=1), [T("down", "resolved", 1.0, reason="recovered")],
                     id="down resolves on count>0"),
        pytest.param(NONE, Cfg(alert_on_down=False), UP, s(count=0), [], id="down flag off never fires"),
        pytest.param(frozenset({"down"}), Cfg(alert_on_down=False), s(count=0), s(count=0),
                     [T("down", "resolved", 0.0, reason="flag_disabled")], id="down flag off resolves open"),
        pytest.param(NONE, Cfg(), UP, UP, [], id="healthy sample: nothing"),
        # --- cpu
        pytest.param(NONE, Cfg(alert_on_cpu=True), UP, s(cpu=50.01), [T("cpu", "firing", 50.01, 50.0)],
                     id="cpu strictly above fires"),
        pytest.param(NONE, Cfg(alert_on_cpu=True), UP, s(cpu=50.0), [], id="cpu at threshold does not fire"),
        pytest.param(frozenset({"cpu"}), Cfg(alert_on_cpu=True), UP, s(cpu=90.0), [], id="cpu still hot: no repeat"),
        pytest.param(frozenset({"cpu"}), Cfg(alert_on_cpu=True), UP, s(cpu=50.0),
                     [T("cpu", "resolved", 50.0, 50.0, "recovered")], id="cpu at threshold resolves"),
        pytest.param(NONE, Cfg(alert_on_cpu=False), UP, s(cpu=99.0), [], id="cpu flag off never fires"),
        pytest.param(frozenset({"cpu"}), Cfg(alert_on_cpu=False), UP, s(cpu=99.0),
                     [T("cpu", "resolved", 99.0, 50.0, "flag_disabled")], id="cpu flag off resolves open"),
        # --- memory
        pytest.param(NONE, Cfg(alert_on_memory=True), UP, s(mem=25.5), [T("memory", "firing", 25.5, 25.0)],
                     id="memory strictly above fires"),
        pytest.param(NONE, Cfg(alert_on_memory=True), UP, s(mem=25.0), [], id="memory at threshold does not fire"),
        pytest.param(frozenset({"memory"}), Cfg(alert_on_memory=True), UP, s(mem=3.0),
                     [T("memory", "resolved", 3.0, 25.0, "recovered")], id="memory below resolves"),
        pytest.param(frozenset({"memory"}), Cfg(alert_on_memory=False), UP, s(mem=30.0),
                     [T("memory", "resolved", 30.0, 25.0, "flag_disabled")], id="memory flag off resolves open"),
        # --- restart
        pytest.param(NONE, Cfg(alert_on_restart=True), s(start=1000), s(start=1001), [T("restart", "firing")],
                     id="restart fires when oldest start increases"),
        pytest.param(NONE, Cfg(alert_on_restart=False), s(start=1000), s(start=1001), [], id="restart flag off"),
        pytest.param(NONE, Cfg(alert_on_restart=True), s(start=1000), s(start=1000), [], id="same start: no restart"),
        pytest.param(NONE, Cfg(alert_on_restart=True), s(start=1000), s(start=999), [], id="older start: no restart"),
        pytest.param(NONE, Cfg(alert_on_restart=True), None, s(start=1000), [], id="first sample: no restart"),
        pytest.param(NONE, Cfg(alert_on_down=False, alert_on_restart=True), s(count=0), s(start=5000), [],
                     id="coming back from down is not a restart"),
        # --- several at once, in order down, restart, cpu, memory
        pytest.param(frozenset({"down"}), ALL_ON, s(count=0), s(count=1, cpu=80.0, mem=30.0, start=7),
                     [T("down", "resolved", 1.0, reason="recovered"), T("cpu", "firing", 80.0, 50.0),
                      T("memory", "firing", 30.0, 25.0)], id="back up and hot"),
        pytest.param(frozenset({"cpu", "memory"}), ALL_ON, UP, s(count=0, cpu=0.0, mem=0.0),
                     [T("down", "firing", 0.0), T("cpu", "resolved", 0.0, 50.0, "recovered"),
                      T("memory", "resolved", 0.0, 25.0, "recovered")], id="hot then down"),
        pytest.param(frozenset({"cpu"}), ALL_ON, s(start=10), s(cpu=70.0, start=20), [T("restart", "firing")],
                     id="restart while cpu firing"),
    ],
)
def test_transition_table(firing, config, previous, sample, expected):
    assert evaluate_transition(firing, config, previous, sample) == expected


def test_resolve_all_in_alerted_state_order():
    assert resolve_all({"memory", "down", "cpu"}, "paused") == [
        T("down", "resolved", reason="paused"), T("cpu", "resolved", reason="paused"),
        T("memory", "resolved", reason="paused"),
    ]
    assert resolve_all(set(), "deleted") == []


@pytest.mark.parametrize(
    ("firing", "deleted", "enabled", "config", "expected"),
    [
        ({"cpu", "down"}, True, True, ALL_ON, [T("down", "resolved", reason="deleted"), T("cpu", "resolved", reason="deleted")]),
        ({"memory"}, False, False, ALL_ON, [T("memory", "resolved", reason="paused")]),
        ({"cpu", "memory"}, False, True, replace(ALL_ON, alert_on_cpu=False), [T("cpu", "resolved", reason="flag_disabled")]),
        ({"cpu", "memory"}, False, True, ALL_ON, []),
        (set(), True, False, ALL_ON, []),
    ],
)
def test_resolve_for_change(firing, deleted, enabled, config, expected):
    assert resolve_for_change(firing, deleted=deleted, enabled=enabled, config=config) == expected


def test_apply_transitions_ignores_one_shot_restart():
    after = apply_transitions(frozenset({"down"}), [T("down", "resolved"), T("restart", "firing"), T("cpu", "firing")])
    assert after == frozenset({"cpu"})


def test_alert_id_is_deterministic_and_distinguishes_every_part():
    at = datetime(2026, 5, 24, 18, 41, tzinfo=UTC)
    same_instant = at.astimezone(timezone(timedelta(hours=2)))
    assert alert_id(18, "process_down", "firing", at) == alert_id(18, "process_down", "firing", same_instant)
    ids = {
        alert_id(18, "process_down", "firing", at),
        alert_id(19, "process_down", "firing", at),
        alert_id(18, "process_cpu_high", "firing", at),
        alert_id(18, "process_down", "resolved", at),
        alert_id(18, "process_down", "firing", at + timedelta(microseconds=1)),
    }
    assert len(ids) == 5
    with pytest.raises(ValueError):
        alert_id(1, "process_down", "firing", datetime(2026, 1, 1))


# --- properties over random sample sequences -------------------------------------------

samples = st.builds(
    lambda count, cpu, mem, start: SampleView(count, cpu if count else 0.0, mem if count else 0.0, start if count else None),
    count=st.integers(0, 3),
    cpu=st.sampled_from([0.0, 10.0, 49.99, 50.0, 50.01, 90.0, 250.0]),
    mem=st.sampled_from([0.0, 24.99, 25.0, 25.01, 80.0]),
    start=st.integers(1000, 1006),
)
configs = st.builds(
    Cfg, alert_on_down=st.booleans(), alert_on_restart=st.booleans(), alert_on_cpu=st.booleans(),
    alert_on_memory=st.booleans(), cpu_threshold_pct=st.just(50.0), memory_threshold_pct=st.just(25.0),
)
# Each step: a sample evaluated with the config in force (flags change between samples).
steps = st.lists(st.tuples(samples, configs | st.just(ALL_ON)), min_size=1, max_size=40)


def _run(sequence):
    firing: frozenset[str] = frozenset()
    previous = None
    log: list[list[Transition]] = []
    for sample, config in sequence:
        transitions = evaluate_transition(firing, config, previous, sample)
        firing = apply_transitions(firing, transitions)
        log.append(transitions)
        previous = sample
    return log, firing


@settings(max_examples=300, deadline=None)
@given(steps)
def test_never_two_firing_without_a_resolved_between(sequence):
    log, _ = _run(sequence)
    for condition in ("down", "cpu", "memory"):
        states = [t.state for ts in log for t in ts if t.condition == condition]
        assert all(a != b for a, b in zip(states, states[1:])), states
        assert not states or states[0] == "firing"
    for ts in log:  # at most one transition per condition per sample
        conditions = [t.condition for t in ts]
        assert len(conditions) == len(set(conditions))


@settings(max_examples=300, deadline=None)
@given(steps)
def test_restart_fires_exactly_when_oldest_start_increases_and_flag_on(sequence):
    log, _ = _run(sequence)
    for i, ((sample, config), ts) in enumerate(zip(sequence, log)):
        fired = any(t.condition == "restart" for t in ts)
        prev = sequence[i - 1][0].oldest_start_unix if i else None
        increased = prev is not None and sample.oldest_start_unix is not None and sample.oldest_start_unix > prev
        assert fired == (increased and config.alert_on_restart)
        assert all(t.state == "firing" for t in ts if t.condition == "restart")


@settings(max_examples=300, deadline=None)
@given(steps)
def test_firing_state_always_matches_the_last_sample_and_flags(sequence):
    firing: frozenset[str] = frozenset()
    previous = None
    for sample, config in sequence:
        firing = apply_transitions(firing, evaluate_transition(firing, config, previous, sample))
        previous = sample
        assert ("down" in firing) == (config.alert_on_down and sample.count == 0)
        assert ("cpu" in firing) == (config.alert_on_cpu and sample.cpu_pct > config.cpu_threshold_pct)
        assert ("memory" in firing) == (config.alert_on_memory and sample.memory_pct > config.memory_threshold_pct)


# --- count range (process_count_out_of_range) ------------------------------------------

RANGE = Cfg(min_count=2, max_count=4)


@pytest.mark.parametrize(
    ("firing", "config", "sample", "expected"),
    [
        pytest.param(NONE, RANGE, s(count=1), [T("count_range", "firing", 1.0, 2.0)], id="below min: threshold min"),
        pytest.param(NONE, RANGE, s(count=5), [T("count_range", "firing", 5.0, 4.0)], id="above max: threshold max"),
        pytest.param(NONE, RANGE, s(count=2), [], id="at min: in range"),
        pytest.param(NONE, RANGE, s(count=4), [], id="at max: in range"),
        pytest.param(NONE, Cfg(min_count=3), s(count=500), [], id="no max: open above"),
        pytest.param(NONE, Cfg(max_count=3), s(count=1), [], id="no min: open below"),
        pytest.param(NONE, Cfg(max_count=0, alert_on_down=False), s(count=1),
                     [T("count_range", "firing", 1.0, 0.0)], id="max 0: must not run"),
        pytest.param(NONE, Cfg(), s(count=1000), [], id="no bounds: off"),
        pytest.param(NONE, replace(RANGE, alert_on_count_range=False), s(count=9), [], id="flag off never fires"),
        pytest.param(frozenset({"count_range"}), RANGE, s(count=3),
                     [T("count_range", "resolved", 3.0, None, "recovered")], id="back in range resolves"),
        pytest.param(frozenset({"count_range"}), RANGE, s(count=6), [], id="still out of range: no repeat"),
        # count 0 is down's: the range neither fires (no double alert) nor resolves (still short).
        pytest.param(NONE, RANGE, s(count=0), [T("down", "firing", 0.0)], id="count 0 is down, not the range"),
        pytest.param(frozenset({"count_range"}), RANGE, s(count=0), [T("down", "firing", 0.0)],
                     id="count 0 keeps the range firing"),
        pytest.param(frozenset({"count_range"}), replace(RANGE, alert_on_count_range=False), s(count=0),
                     [T("down", "firing", 0.0), T("count_range", "resolved", 0.0, None, "flag_disabled")],
                     id="flag off resolves even at count 0"),
        pytest.param(frozenset({"count_range"}), Cfg(), s(count=9),
                     [T("count_range", "resolved", 9.0, None, "flag_disabled")], id="bounds cleared resolves"),
    ],
)
def test_count_range_transitions(firing, config, sample, expected):
    assert evaluate_transition(firing, config, UP, sample) == expected


def test_count_range_is_turned_off_by_its_flag_or_by_clearing_both_bounds():
    firing = {"count_range"}
    assert resolve_for_change(firing, deleted=False, enabled=True, config=RANGE) == []
    assert resolve_for_change(firing, deleted=False, enabled=True, config=Cfg(max_count=4)) == []
    assert resolve_for_change(firing, deleted=False, enabled=True, config=Cfg()) == [
        T("count_range", "resolved", reason="flag_disabled")]
    assert resolve_for_change(firing, deleted=False, enabled=True, config=replace(RANGE, alert_on_count_range=False)
                              ) == [T("count_range", "resolved", reason="flag_disabled")]


# --- flap protection (alert_after_samples / resolve_after_samples) ---------------------


def _feed(config, sample_list, firing=NONE, streaks=NO_STREAKS):
    """Evaluate the samples in order; returns per sample its transitions, and the final state."""
    log = []
    for sample in sample_list:
        transitions, streaks = evaluate_sample(firing, streaks, config, None, sample)
        firing = apply_transitions(firing, transitions)
        log.append(transitions)
    return log, firing, streaks


HOT, COOL = s(cpu=90.0), s(cpu=10.0)
CPU = Cfg(alert_on_cpu=True)


def test_n_consecutive_samples_fire_on_the_nth():
    log, firing, streaks = _feed(replace(CPU, alert_after_samples=3), [HOT, HOT, HOT, HOT])
    assert log == [[], [], [T("cpu", "firing", 90.0, 50.0)], []]
    assert firing == {"cpu"} and streaks == {}


def test_an_interrupted_run_starts_again():
    config = replace(CPU, alert_after_samples=3)
    log, firing, streaks = _feed(config, [HOT, HOT, COOL, HOT, HOT])
    assert log == [[]] * 5 and firing == NONE and streaks == {"cpu": 2}
    log, firing, _ = _feed(config, [HOT], firing, streaks)
    assert log == [[T("cpu", "firing", 90.0, 50.0)]]


def test_resolve_hysteresis():
    config = replace(CPU, resolve_after_samples=3)
    log, firing, streaks = _feed(config, [HOT, COOL, COOL, HOT, COOL, COOL, COOL])
    assert log[0] == [T("cpu", "firing", 90.0, 50.0)]  # alert_after_samples 1: at once
    assert log[1:6] == [[]] * 5, "an interrupted good run does not resolve"
    assert log[6] == [T("cpu", "resolved", 10.0, 50.0, "recovered")]
    assert firing == NONE and streaks == {}


def test_a_rule_turned_off_resolves_at_once_whatever_resolve_after_samples():
    config = replace(CPU, resolve_after_samples=5, alert_on_cpu=False)
    log, firing, streaks = _feed(config, [HOT], frozenset({"cpu"}), {"cpu": 2})
    assert log == [[T("cpu", "resolved", 90.0, 50.0, "flag_disabled")]] and firing == NONE and streaks == {}


def test_flap_applies_to_every_stateful_rule_of_the_process_not_to_restarts():
    config = Cfg(alert_on_cpu=True, alert_on_restart=True, min_count=2, alert_after_samples=2)
    first, second = s(count=0), s(count=1, cpu=90.0, start=2000)
    transitions, streaks = evaluate_sample(NONE, NO_STREAKS, config, None, first)
    assert transitions == [] and streaks == {"down": 1}
    transitions, streaks = evaluate_sample(NONE, streaks, config, s(start=1000), second)
    assert transitions == [T("restart", "firing")], "the one-shot restart fires on its sample"
    assert streaks == {"cpu": 1, "count_range": 1}, "down's run ended; cpu and the range started theirs"


def test_count_0_keeps_the_range_streak():
    config = replace(RANGE, alert_after_samples=2)
    log, firing, streaks = _feed(config, [s(count=1), s(count=0), s(count=1)])
    assert log[0] == [] and log[2] == [T("count_range", "firing", 1.0, 2.0)]
    assert "count_range" in firing


def test_default_of_1_is_the_behaviour_without_flap_protection():
    """With the defaults no streak is ever kept and the streaks object comes back unchanged."""
    for sample in (s(count=0), UP, s(cpu=99.0, mem=99.0, count=9)):
        for firing in (NONE, frozenset({"down", "cpu", "memory", "count_range"})):
            transitions, streaks = evaluate_sample(firing, NO_STREAKS, replace(ALL_ON, min_count=2, max_count=3),
                                                   UP, sample)
            assert streaks is NO_STREAKS
            assert transitions == evaluate_transition(firing, replace(ALL_ON, min_count=2, max_count=3), UP, sample)


def test_streaks_are_encoded_in_alerted_state_order():
    assert format_streaks({"cpu": 2, "down": 1}) == "down:1,cpu:2"
    assert format_streaks({}) is None and format_streaks({"cpu": 0}) is None
    assert parse_streaks("down:1,cpu:2") == {"down": 1, "cpu": 2}
    assert parse_streaks(None) == {} and parse_streaks("gone:3,cpu:x,memory:4") == {"memory": 4}


def test_a_pause_clears_the_streaks_and_a_rule_turned_off_loses_its_own():
    streaks = {"cpu": 2, "down": 1}
    assert streaks_after_change(streaks, enabled=False, config=ALL_ON) == {}
    assert streaks_after_change(streaks, enabled=True, config=replace(ALL_ON, alert_on_cpu=False)) == {"down": 1}


flap_configs = st.builds(
    Cfg, alert_on_down=st.booleans(), alert_on_cpu=st.booleans(), alert_on_memory=st.booleans(),
    min_count=st.sampled_from([None, 1, 2]), max_count=st.sampled_from([None, 2, 3]),
    alert_after_samples=st.integers(1, 4), resolve_after_samples=st.integers(1, 4),
)
BAD = {
    "down": lambda c, x: x.count == 0,
    "cpu": lambda c, x: x.cpu_pct > c.cpu_threshold_pct,
    "memory": lambda c, x: x.memory_pct > c.memory_threshold_pct,
}


@settings(max_examples=300, deadline=None)
@given(flap_configs, st.lists(samples, min_size=1, max_size=40))
def test_with_flap_a_transition_needs_its_full_run(config, sample_list):
    """Under one config: events alternate, every firing ends N consecutive bad samples and
    every recovery M consecutive good ones (down, cpu, memory)."""
    log, _, _ = _feed(config, sample_list)
    for condition, bad in BAD.items():
        states = [t.state for ts in log for t in ts if t.condition == condition]
        assert all(a != b for a, b in zip(states, states[1:])) and (not states or states[0] == "firing")
        for i, ts in enumerate(log):
            for t in (t for t in ts if t.condition == condition):
                n = config.alert_after_samples if t.state == "firing" else config.resolve_after_samples
                run = sample_list[max(0, i - n + 1):i + 1]
                assert len(run) == n and all(bad(config, x) == (t.state == "firing") for x in run)
