"""The alert rules' evaluation: one alert per state transition, never one per sample.

Pure functions, no I/O. The alerter feeds them what is currently firing for a
process (its `alerted_state`), the process's alert settings, the previous and the
new sample, and writes down what they return. The rules themselves (down, restart,
cpu, memory: when each fires and resolves, and the settings it reads) are defined
once in `procwatch_domain.rules`.

A flag that is off never fires, and an open alert whose flag was turned off is
resolved with reason `flag_disabled`. Pausing or deleting a process resolves
everything open (`resolve_all` with `paused` / `deleted`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

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


def evaluate_transition(
    firing: frozenset[str], config: AlertConfig, previous: SampleView | None, sample: SampleView
) -> list[Transition]:
    """The transitions `sample` causes, given what is `firing` before it.

    `firing` holds stateful conditions (one-shot ones never stay "firing").
    Returned in rule order (procwatch_domain.rules.RULES).
    """
    out: list[Transition] = []
    for rule in RULES:
        enabled = getattr(config, rule.flag.name)
        if rule.level is None:  # one-shot
            if enabled and previous is not None and rule.fires_between(previous, sample):  # type: ignore[misc]
                out.append(Transition(rule.condition, "firing", None, None))
            continue
        is_bad, value, threshold = rule.level(config, sample)
        if rule.condition in firing:
            if not enabled:
                out.append(Transition(rule.condition, "resolved", value, threshold, FLAG_DISABLED))
            elif not is_bad:
                out.append(Transition(rule.condition, "resolved", value, threshold, RECOVERED))
        elif enabled and is_bad:
            out.append(Transition(rule.condition, "firing", value, threshold))
    return out


def resolve_all(firing: Iterable[str], reason: str) -> list[Transition]:
    """Resolve every open alert (pause, delete), in alerted_state order."""
    firing = set(firing)
    return [Transition(c, "resolved", reason=reason) for c in STATEFUL_CONDITIONS if c in firing]


def resolve_for_change(firing: Iterable[str], *, deleted: bool, enabled: bool, config: AlertConfig) -> list[Transition]:
    """What a process lifecycle change resolves: everything when it was deleted or
    paused, otherwise the open alerts whose flag is now off."""
    if deleted:
        return resolve_all(firing, DELETED)
    if not enabled:
        return resolve_all(firing, PAUSED)
    firing = set(firing)
    return [
        Transition(c, "resolved", reason=FLAG_DISABLED)
        for c in STATEFUL_CONDITIONS
        if c in firing and not getattr(config, RULE_BY_CONDITION[c].flag.name)
    ]


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
