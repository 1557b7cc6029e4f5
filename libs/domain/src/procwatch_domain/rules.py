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
The flap settings (`FLAP_SETTINGS`: alert_after_samples, resolve_after_samples) belong to no
rule: they apply to every stateful rule of a process and are listed with the parameters.
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
    0/1, returned as 0/1), float or int (a number within [minimum, maximum]). A `nullable`
    number may also be null (JSON null, a NULL column): "not set", which the rule reading it
    takes as "off" (e.g. no `max_count`: no upper bound)."""

    name: str
    type: type
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    description: str = ""
    nullable: bool = False

    @property
    def is_flag(self) -> bool:
        return self.type is bool

    @property
    def annotation(self) -> Any:
        """Its Python type as a field of a message or row: `int`, or `int | None` when nullable."""
        return self.type | None if self.nullable else self.type


# (condition is bad now, the measured value, the threshold it was compared with). "Bad" may be
# None: the sample says nothing about this condition (a count of 0 for the count range: that
# is `down`'s), so the rule neither fires nor resolves on it and its flap streak is kept.
Level = tuple[bool | None, float | None, float | None]


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
    # Whether the settings turn the rule on beyond its flag (a rule whose parameters are
    # nullable: on only while one is set). None: the flag alone decides.
    active: Callable[[Any], bool] | None = None

    def enabled(self, config: Any) -> bool:
        """Its flag is on (and its settings make it active): it may fire, and an open alert of a
        rule no longer enabled is resolved (`flag_disabled`)."""
        if not getattr(config, self.flag.name):
            return False
        return self.active is None or self.active(config)

    @property
    def one_shot(self) -> bool:
        return self.level is None


def _flag(condition: str, default: bool) -> Setting:
    return Setting(f"alert_on_{condition}", bool, default, description=f"whether the {condition} rule alerts")


def _percent_threshold(name: str, default: float, what: str) -> Setting:
    return Setting(name, float, default, 0.01, 100.0, f"alert when {what} is strictly above this percent")


def _count_bound(name: str, minimum: int, what: str) -> Setting:
    return Setting(name, int, None, minimum, 100_000, f"alert when the count of running processes is {what}"
                   " (null: no bound); a count of 0 is the down rule's", nullable=True)


def _count_level(config: Any, s: SampleLike) -> Level:
    """Out of [min_count, max_count] (either bound may be null: open). A count of 0 is `down`'s
    condition, not this rule's: it neither fires nor resolves the range (docs/alerts.md)."""
    if s.count == 0:
        return None, 0.0, None
    if config.min_count is not None and s.count < config.min_count:
        return True, float(s.count), float(config.min_count)
    if config.max_count is not None and s.count > config.max_count:
        return True, float(s.count), float(config.max_count)
    return False, float(s.count), None


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
    # count_range: fires when a running count (> 0) is below min_count or above max_count; resolves
    # when it is back within them. On while its flag is on and at least one bound is set.
    Rule("count_range", "process_count_out_of_range", _flag("count_range", True),
         # max_count 0: the process should not run at all (with alert_on_down off).
         (_count_bound("min_count", 1, "below this"), _count_bound("max_count", 0, "above this")),
         level=_count_level,
         active=lambda config: config.min_count is not None or config.max_count is not None),
)

# Flap protection: per process, for every stateful rule of it (not the one-shot restart).
# N = 1 is the behaviour without flap protection: fire / resolve on the first sample.
FLAP_SETTINGS: tuple[Setting, ...] = (
    Setting("alert_after_samples", int, 1, 1, 100,
            "consecutive samples in a condition before its alert fires (1: the first one)"),
    Setting("resolve_after_samples", int, 1, 1, 100,
            "consecutive samples out of a firing condition before its alert resolves (1: the first one)"),
)

# Derived once. The settings go flags first, then parameters, each in rule order, then the
# flap settings (numbers like the parameters, validated and shown the same way): the column
# order of every SQL list and message field order.
FLAG_SETTINGS: tuple[Setting, ...] = tuple(r.flag for r in RULES)
PARAMETER_SETTINGS: tuple[Setting, ...] = tuple(p for r in RULES for p in r.parameters) + FLAP_SETTINGS
SETTINGS: tuple[Setting, ...] = FLAG_SETTINGS + PARAMETER_SETTINGS
SETTING_NAMES: tuple[str, ...] = tuple(s.name for s in SETTINGS)
SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
SETTING_DEFAULTS: dict[str, Any] = {s.name: s.default for s in SETTINGS}
ALERT_TYPES: tuple[str, ...] = tuple(r.alert_type for r in RULES)
RULE_BY_CONDITION: dict[str, Rule] = {r.condition: r for r in RULES}
# The conditions that can be "currently firing", in the order alerted_state lists them.
STATEFUL_CONDITIONS: tuple[str, ...] = tuple(r.condition for r in RULES if not r.one_shot)
# Pairs of settings that must be in order, low <= high, when both are set (validated on every
# create and update against the merged row: procwatch_domain.validation.ordering_problems).
ORDERED_SETTINGS: tuple[tuple[str, str], ...] = (("min_count", "max_count"),)
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
    for p in PARAMETER_SETTINGS:
        if p.is_flag or p.minimum is None or p.maximum is None:
            raise ValueError(f"setting {p.name}: a parameter is a number with minimum and maximum")
        if p.default is None and not p.nullable:
            raise ValueError(f"setting {p.name}: only a nullable setting may default to null")
        if p.default is not None and not p.minimum <= p.default <= p.maximum:
            raise ValueError(f"setting {p.name}: default outside [minimum, maximum]")
    for low, high in ORDERED_SETTINGS:
        if low not in SETTINGS_BY_NAME or high not in SETTINGS_BY_NAME:
            raise ValueError(f"ordered settings {low} <= {high}: not both settings")


_check_registry()
