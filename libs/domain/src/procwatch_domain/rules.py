"""The alert rules, each defined once: its condition, its event type, the per-process
settings it reads, and the pure function that decides when it fires and resolves.

Everything else about a rule is derived from `RULES` at import time:

- the settings' columns (`procwatch_db.tables`) and the SQL column lists of the
  alerter, ingest and API repositories (`SETTING_NAMES`);
- the message shapes that carry the settings (`procwatch_contracts.messages.ProcessAlertConfig`
  and its msgspec mirror in `procwatch_contracts.fast`) and `AlertEvent.type`;
- the API's validation (`procwatch_domain.validation`), defaults and OpenAPI models;
- the rule evaluation (`procwatch_domain.alerts`) and the `alerted_state` encoding
  (`procwatch_domain.status`).

A rule is either *stateful* (`level` set: it fires when the level turns bad and stays
firing, listed in `alerted_state`, until a sample is good again or its flag is turned
off) or *one-shot* (`fires_between` set: it fires on what happened between the previous
and this sample, and never stays firing). Adding a rule: docs/alerts.md, "Adding a rule".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from procwatch_domain.restarts import is_restart


class SampleLike(Protocol):
    """The fields of a sample a rule may read (`procwatch_domain.alerts.SampleView`)."""

    count: int
    cpu_pct: float
    memory_pct: float
    oldest_start_unix: int | None


@dataclass(frozen=True)
class Setting:
    """One per-process setting: a column of watched_processes, a field of the API's process
    representation and of `ProcessAlertConfig`. `type` is bool (a flag: JSON true/false or
    0/1, returned as 0/1), float or int (a number within [minimum, maximum])."""

    name: str
    type: type
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    description: str = ""

    @property
    def is_flag(self) -> bool:
        return self.type is bool


# (condition is bad now, the measured value, the threshold it was compared with)
Level = tuple[bool, float | None, float | None]


@dataclass(frozen=True)
class Rule:
    condition: str  # its name in alerted_state, e.g. "cpu"
    alert_type: str  # AlertEvent.type and alerts.type, e.g. "process_cpu_high"
    flag: Setting  # alert_on_<condition>: the rule fires only while it is on
    parameters: tuple[Setting, ...] = ()
    # Stateful rules: (config, sample) -> Level.
    level: Callable[[Any, SampleLike], Level] | None = None
    # One-shot rules: (previous sample, sample) -> fires.
    fires_between: Callable[[SampleLike, SampleLike], bool] | None = None

    @property
    def one_shot(self) -> bool:
        return self.level is None


def _flag(condition: str, default: bool) -> Setting:
    return Setting(f"alert_on_{condition}", bool, default, description=f"whether the {condition} rule alerts")


def _percent_threshold(name: str, default: float, what: str) -> Setting:
    return Setting(name, float, default, 0.01, 100.0, f"alert when {what} is strictly above this percent")


RULES: tuple[Rule, ...] = (
    # down: fires on a sample with count 0; resolves on the first sample with count > 0.
    Rule("down", "process_down", _flag("down", True),
         level=lambda config, s: (s.count == 0, float(s.count), None)),
    # restart: one-shot, when oldest_start_unix increased between the previous and this sample.
    Rule("restart", "process_restarted", _flag("restart", False),
         fires_between=lambda previous, s: is_restart(previous.oldest_start_unix, s.oldest_start_unix)),
    # cpu / memory: fire when strictly above the threshold; resolve at or below it.
    Rule("cpu", "process_cpu_high", _flag("cpu", False),
         (_percent_threshold("cpu_threshold_pct", 50.0, "cpu_pct"),),
         level=lambda config, s: (s.cpu_pct > config.cpu_threshold_pct, s.cpu_pct, config.cpu_threshold_pct)),
    Rule("memory", "process_memory_high", _flag("memory", False),
         (_percent_threshold("memory_threshold_pct", 25.0, "memory_pct"),),
         level=lambda config, s: (s.memory_pct > config.memory_threshold_pct, s.memory_pct,
                                  config.memory_threshold_pct)),
)

# Derived once. The settings go flags first, then parameters, each in rule order: the
# column order of every SQL list and message field order.
FLAG_SETTINGS: tuple[Setting, ...] = tuple(r.flag for r in RULES)
PARAMETER_SETTINGS: tuple[Setting, ...] = tuple(p for r in RULES for p in r.parameters)
SETTINGS: tuple[Setting, ...] = FLAG_SETTINGS + PARAMETER_SETTINGS
SETTING_NAMES: tuple[str, ...] = tuple(s.name for s in SETTINGS)
SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
SETTING_DEFAULTS: dict[str, Any] = {s.name: s.default for s in SETTINGS}
ALERT_TYPES: tuple[str, ...] = tuple(r.alert_type for r in RULES)
RULE_BY_CONDITION: dict[str, Rule] = {r.condition: r for r in RULES}
# The conditions that can be "currently firing", in the order alerted_state lists them.
STATEFUL_CONDITIONS: tuple[str, ...] = tuple(r.condition for r in RULES if not r.one_shot)
# The flags of the rules that read the previous sample.
ONE_SHOT_FLAGS: tuple[str, ...] = tuple(r.flag.name for r in RULES if r.one_shot)


def setting_columns_sql(prefix: str = "") -> str:
    """The settings' columns for a SELECT list, in `SETTINGS` order (e.g. prefix "wp.")."""
    return ", ".join(prefix + name for name in SETTING_NAMES)


def _check_registry() -> None:
    names = [s.name for s in SETTINGS]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate setting names in RULES: {names}")
    for rule in RULES:
        if (rule.level is None) == (rule.fires_between is None):
            raise ValueError(f"rule {rule.condition}: set exactly one of level / fires_between")
        if rule.flag.name != f"alert_on_{rule.condition}" or not rule.flag.is_flag:
            raise ValueError(f"rule {rule.condition}: its flag must be the bool alert_on_{rule.condition}")
        for p in rule.parameters:
            if p.is_flag or p.minimum is None or p.maximum is None:
                raise ValueError(f"setting {p.name}: a parameter is a number with minimum and maximum")
            if not p.minimum <= p.default <= p.maximum:
                raise ValueError(f"setting {p.name}: default outside [minimum, maximum]")


_check_registry()
