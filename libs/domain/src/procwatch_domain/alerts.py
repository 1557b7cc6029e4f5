"""The alert rules: one alert per state transition, never one per sample.

Pure functions, no I/O. The alerter feeds them what is currently firing for a
process (its `alerted_state`), the process's alert settings, the previous and the
new sample, and writes down what they return.

    down     fires when a sample has count 0 (alert_on_down); resolves on the
             first sample with count > 0.
    cpu      fires when cpu_pct is strictly above cpu_threshold_pct
             (alert_on_cpu); resolves when it is at or below it.
    memory   the same with memory_pct / memory_threshold_pct / alert_on_memory.
    restart  one-shot: fires when oldest_start_unix increased between the
             previous and this sample (`procwatch_domain.restarts.is_restart`)
             and alert_on_restart is on. It never resolves.

A flag that is off never fires, and an open alert whose flag was turned off is
resolved with reason `flag_disabled`. Pausing or deleting a process resolves
everything open (`resolve_all` with `paused` / `deleted`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

from procwatch_domain.restarts import is_restart
from procwatch_domain.status import ALERT_CONDITIONS

Condition = Literal["down", "cpu", "memory", "restart"]
TransitionState = Literal["firing", "resolved"]

# condition -> AlertEvent.type
ALERT_TYPES: dict[str, str] = {
    "down": "process_down",
    "restart": "process_restarted",
    "cpu": "process_cpu_high",
    "memory": "process_memory_high",
}
CONDITION_OF_TYPE: dict[str, str] = {v: k for k, v in ALERT_TYPES.items()}

# Resolve reasons.
RECOVERED = "recovered"  # the measured value is back to normal
FLAG_DISABLED = "flag_disabled"  # the alert flag was turned off
PAUSED = "paused"  # the process was paused (enabled = false)
DELETED = "deleted"  # the process was deleted
RESOLVE_REASONS = (RECOVERED, FLAG_DISABLED, PAUSED, DELETED)


class AlertConfig(Protocol):
    """What the rules read from a process's settings (e.g. contracts.ProcessAlertConfig)."""

    alert_on_down: bool
    alert_on_restart: bool
    alert_on_cpu: bool
    alert_on_memory: bool
    cpu_threshold_pct: float
    memory_threshold_pct: float


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
        return ALERT_TYPES[self.condition]


def _flag(config: AlertConfig, condition: str) -> bool:
    return bool(getattr(config, f"alert_on_{condition}"))


def _level(condition: str, config: AlertConfig, sample: SampleView) -> tuple[bool, float, float | None]:
    """(is the condition true for this sample, the measured value, the threshold)."""
    if condition == "down":
        return sample.count == 0, float(sample.count), None
    if condition == "cpu":
        return sample.cpu_pct > config.cpu_threshold_pct, sample.cpu_pct, config.cpu_threshold_pct
    return sample.memory_pct > config.memory_threshold_pct, sample.memory_pct, config.memory_threshold_pct


def evaluate_transition(
    firing: frozenset[str], config: AlertConfig, previous: SampleView | None, sample: SampleView
) -> list[Transition]:
    """The transitions `sample` causes, given what is `firing` before it.

    `firing` holds conditions among `down`, `cpu`, `memory` (restart is one-shot
    and never "firing"). Returned in the order down, restart, cpu, memory.
    """
    out: list[Transition] = []
    for condition in ALERT_CONDITIONS:
        is_bad, value, threshold = _level(condition, config, sample)
        enabled = _flag(config, condition)
        if condition in firing:
            if not enabled:
                out.append(Transition(condition, "resolved", value, threshold, FLAG_DISABLED))  # type: ignore[arg-type]
            elif not is_bad:
                out.append(Transition(condition, "resolved", value, threshold, RECOVERED))  # type: ignore[arg-type]
        elif enabled and is_bad:
            out.append(Transition(condition, "firing", value, threshold))  # type: ignore[arg-type]
        if condition == "down" and config.alert_on_restart and previous is not None:
            if is_restart(previous.oldest_start_unix, sample.oldest_start_unix):
                out.append(Transition("restart", "firing", None, None))
    return out


def resolve_all(firing: Iterable[str], reason: str) -> list[Transition]:
    """Resolve every open alert (pause, delete), in alerted_state order."""
    firing = set(firing)
    return [Transition(c, "resolved", reason=reason) for c in ALERT_CONDITIONS if c in firing]  # type: ignore[arg-type]


def resolve_for_change(firing: Iterable[str], *, deleted: bool, enabled: bool, config: AlertConfig) -> list[Transition]:
    """What a process lifecycle change resolves: everything when it was deleted or
    paused, otherwise the open alerts whose flag is now off."""
    if deleted:
        return resolve_all(firing, DELETED)
    if not enabled:
        return resolve_all(firing, PAUSED)
    firing = set(firing)
    return [
        Transition(c, "resolved", reason=FLAG_DISABLED)  # type: ignore[arg-type]
        for c in ALERT_CONDITIONS
        if c in firing and not _flag(config, c)
    ]


def apply_transitions(firing: frozenset[str], transitions: Iterable[Transition]) -> frozenset[str]:
    """What is firing after `transitions` (restarts are one-shot and never stay firing)."""
    state = set(firing)
    for t in transitions:
        if t.condition == "restart":
            continue
        if t.state == "firing":
            state.add(t.condition)
        else:
            state.discard(t.condition)
    return frozenset(state)


def alert_id(process_id: int, alert_type: str, state: str, at: datetime) -> str:
    """The deterministic id (and `Nats-Msg-Id`) of an alert event: derived from
    (process, type, state, sample time), so a redelivered sample yields the same id."""
    if at.tzinfo is None:
        raise ValueError("alert time must be timezone-aware")
    stamp = at.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"alert-{process_id}-{alert_type}-{state}-{stamp}"
