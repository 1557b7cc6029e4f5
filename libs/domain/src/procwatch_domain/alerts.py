"""The alert rules' evaluation: one alert per state transition, never one per sample.

Pure functions, no I/O. The alerter feeds them what is currently firing for a
process (its `alerted_state`), the process's alert settings, the previous and the
new sample, and writes down what they return. The rules themselves (down, restart,
cpu, memory: when each fires and resolves, and the settings it reads) are defined
once in `procwatch_domain.rules`.

A flag that is off never fires, and an open alert whose flag was turned off is
resolved with reason `flag_disabled`. Pausing or deleting a process resolves
everything open (`resolve_all` with `paused` / `deleted`).

Flap protection (`alert_after_samples`, `resolve_after_samples`, per process, for
every stateful rule): a condition fires on the N-th consecutive bad sample and
resolves on the M-th consecutive good one. The run so far is the condition's
*streak*: the number of consecutive samples that disagree with its current state
(bad while not firing, good while firing). A sample that agrees ends the run (the
streak goes back to 0); reaching N (or M) makes the transition and starts again
at 0. The streaks are the process's other piece of alert state, kept beside
`alerted_state` (`format_streaks` / `parse_streaks`); with N = M = 1 every streak
stays 0 and the evaluation is exactly the one without flap protection.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from procwatch_domain.rules import RULE_BY_CONDITION, RULES, STATEFUL_CONDITIONS

Condition = str  # a rule's condition (procwatch_domain.rules.RULES)
TransitionState = Literal["firing", "resolved"]

# Resolve reasons.
RECOVERED = "recovered"  # the measured value is back to normal
FLAG_DISABLED = "flag_disabled"  # the alert flag was turned off
PAUSED = "paused"  # the process was paused (enabled = false)
DELETED = "deleted"  # the process was deleted


# What the rules read from a process's settings: any object with an attribute per setting of
# `procwatch_domain.rules.SETTINGS` (contracts.ProcessAlertConfig, the alerter's database row).
AlertConfig = Any


@dataclass(frozen=True)
class SampleView:
    """The fields of a sample the rules look at. Of the previous sample only
    `oldest_start_unix` is used (the restart rule)."""

    count: int
    cpu_pct: float = 0.0
    memory_pct: float = 0.0
    oldest_start_unix: int | None = None


@dataclass(frozen=True)
class Transition:
    condition: Condition
    state: TransitionState
    value: float | None = None
    threshold: float | None = None
    reason: str | None = None

    @property
    def alert_type(self) -> str:
        return RULE_BY_CONDITION[self.condition].alert_type


# condition -> its streak (consecutive samples against its current state); 0s are left out.
Streaks = Mapping[str, int]
NO_STREAKS: Streaks = {}


class Evaluation(NamedTuple):
    transitions: list[Transition]
    # The streaks after the sample: the very `streaks` object given when none changed.
    streaks: Streaks


# Per rule, what the evaluation reads, looked up once (it runs for every sample of the fleet):
# (condition, flag name, level, fires_between, active).
_STEPS = tuple((r.condition, r.flag.name, r.level, r.fires_between, r.active) for r in RULES)


def evaluate_sample(
    firing: frozenset[str], streaks: Streaks, config: AlertConfig, previous: SampleView | None,
    sample: SampleView,
) -> Evaluation:
    """The transitions `sample` causes and the streaks after it, given what is `firing` and the
    `streaks` before it (see the module docstring for flap protection).

    `firing` holds stateful conditions (one-shot ones never stay "firing"). Transitions are
    returned in rule order (procwatch_domain.rules.RULES). A rule no longer enabled
    (`Rule.enabled`) resolves at once (`flag_disabled`), whatever `resolve_after_samples` says.
    """
    out: list[Transition] = []
    after: dict[str, int] | None = None  # copied on the first change: most samples change nothing
    for condition, flag, level, fires_between, active in _STEPS:
        enabled = getattr(config, flag)
        if enabled and active is not None:
            enabled = active(config)
        if level is None:  # one-shot
            if enabled and previous is not None and fires_between(previous, sample):  # type: ignore[misc]
                out.append(Transition(condition, "firing", None, None))
            continue
        if not enabled:  # never fires; resolves what is open; its run is over
            if condition in firing:
                _, value, threshold = level(config, sample)
                out.append(Transition(condition, "resolved", value, threshold, FLAG_DISABLED))
            streak = 0
        else:
            is_bad, value, threshold = level(config, sample)
            if is_bad is None:
                continue  # the sample says nothing about this condition: state and streak kept
            streak = 0
            if condition in firing:
                if not is_bad:
                    streak = streaks.get(condition, 0) + 1
                    if streak >= config.resolve_after_samples:
                        out.append(Transition(condition, "resolved", value, threshold, RECOVERED))
                        streak = 0
            elif is_bad:
                streak = streaks.get(condition, 0) + 1
                if streak >= config.alert_after_samples:
                    out.append(Transition(condition, "firing", value, threshold))
                    streak = 0
        if (streak or streaks) and streak != streaks.get(condition, 0):
            if after is None:
                after = dict(streaks)
            if streak:
                after[condition] = streak
            else:
                del after[condition]
    return Evaluation(out, streaks if after is None else after)


def evaluate_transition(
    firing: frozenset[str], config: AlertConfig, previous: SampleView | None, sample: SampleView
) -> list[Transition]:
    """The transitions `sample` causes, given what is `firing` before it and no streak in
    progress (`evaluate_sample` with no streaks)."""
    return evaluate_sample(firing, NO_STREAKS, config, previous, sample).transitions


def format_streaks(streaks: Streaks) -> str | None:
    """`{"cpu": 2, "down": 1}` -> `"down:1,cpu:2"` (alerted_state order); no streak -> None."""
    parts = [f"{c}:{streaks[c]}" for c in STATEFUL_CONDITIONS if streaks.get(c)]
    return ",".join(parts) or None


def parse_streaks(value: str | None) -> Streaks:
    """The inverse of `format_streaks`; a condition no longer in the registry is dropped."""
    if not value:
        return NO_STREAKS
    out: dict[str, int] = {}
    for part in value.split(","):
        condition, _, n = part.partition(":")
        if condition in RULE_BY_CONDITION and n.isdigit() and int(n) > 0:
            out[condition] = int(n)
    return out


def resolve_all(firing: Iterable[str], reason: str) -> list[Transition]:
    """Resolve every open alert (pause, delete), in alerted_state order."""
    firing = set(firing)
    return [Transition(c, "resolved", reason=reason) for c in STATEFUL_CONDITIONS if c in firing]


def resolve_for_change(firing: Iterable[str], *, deleted: bool, enabled: bool, config: AlertConfig) -> list[Transition]:
    """What a process lifecycle change resolves: everything when it was deleted or
    paused, otherwise the open alerts whose rule is now off (its flag off, or, for the
    count range, both bounds cleared)."""
    if deleted:
        return resolve_all(firing, DELETED)
    if not enabled:
        return resolve_all(firing, PAUSED)
    firing = set(firing)
    return [
        Transition(c, "resolved", reason=FLAG_DISABLED)
        for c in STATEFUL_CONDITIONS
        if c in firing and not RULE_BY_CONDITION[c].enabled(config)
    ]


def streaks_after_change(streaks: Streaks, *, enabled: bool, config: AlertConfig) -> Streaks:
    """The flap streaks a lifecycle change keeps: none once paused (a run does not span a pause),
    otherwise those of the rules still enabled (a rule turned off starts from nothing again)."""
    if not enabled:
        return NO_STREAKS
    return {c: n for c, n in streaks.items() if RULE_BY_CONDITION[c].enabled(config)}


def apply_transitions(firing: frozenset[str], transitions: Iterable[Transition]) -> frozenset[str]:
    """What is firing after `transitions` (restarts are one-shot and never stay firing)."""
    state = set(firing)
    for t in transitions:
        if RULE_BY_CONDITION[t.condition].one_shot:
            continue
        if t.state == "firing":
            state.add(t.condition)
        else:
            state.discard(t.condition)
    return frozenset(state)


def alert_stamp(at: datetime) -> str:
    """The time part of an alert id, e.g. 20260524T184100.000000Z."""
    if at.tzinfo is None:
        raise ValueError("alert time must be timezone-aware")
    return at.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def alert_id(process_id: int, alert_type: str, state: str, at: datetime) -> str:
    """The deterministic id (and `Nats-Msg-Id`) of an alert event: derived from
    (process, type, state, sample time), so a redelivered sample yields the same id."""
    return f"alert-{process_id}-{alert_type}-{state}-{alert_stamp(at)}"
