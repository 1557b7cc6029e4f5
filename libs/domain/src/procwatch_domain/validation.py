"""Validation of watched-process fields: every rule of the seed's table, once.

`validate_process_fields` takes the decoded JSON body of a create or update and
returns the clean values, or raises `ProcessValidationError` listing every
problem found (not just the first), so a client can fix a form in one go.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass
from typing import Any

from procwatch_domain.rules import FLAG_SETTINGS, ORDERED_SETTINGS, PARAMETER_SETTINGS, SETTING_DEFAULTS, Setting

PROCESS_NAME_MAX = 100
SHELL_METACHARACTERS = frozenset(";&$`\\\"'<>(){}|")

# The alert settings come from the rule registry (procwatch_domain.rules): a rule added
# there is validated, defaulted and listed here without a change to this module.
BOOLEAN_FIELDS = ("enabled", *(s.name for s in FLAG_SETTINGS))
NUMBER_SETTINGS: dict[str, Setting] = {s.name: s for s in PARAMETER_SETTINGS}
UPDATABLE_FIELDS = ("process_name", *BOOLEAN_FIELDS, *NUMBER_SETTINGS)

CREATE_DEFAULTS: dict[str, Any] = {"enabled": True, **SETTING_DEFAULTS}

# Fields of the process representation a client may echo back in a PUT; they
# are not settable and are ignored rather than rejected.
READ_ONLY_FIELDS = frozenset(
    {
        "id", "server_id", "user_id", "status", "last_count", "last_cpu_pct", "last_memory_pct",
        "last_sample_at", "alerted_state", "created_at", "updated_at",
    }
)


@dataclass(frozen=True)
class Issue:
    field: str
    message: str


class ProcessValidationError(ValueError):
    def __init__(self, issues: list[Issue]):
        super().__init__("; ".join(f"{i.field}: {i.message}" for i in issues))
        self.issues = issues


def process_name_problem(name: Any) -> str | None:
    """Why `name` is not a valid process name, or None when it is."""
    if not isinstance(name, str):
        return "must be a string"
    if not 1 <= len(name) <= PROCESS_NAME_MAX:
        return f"must be 1-{PROCESS_NAME_MAX} characters"
    for ch in name:
        category = unicodedata.category(ch)
        if ch.isspace() or category in ("Zs", "Zl", "Zp"):
            return "must not contain whitespace"
        if category in ("Cc", "Cf", "Cs", "Co", "Cn"):
            return "must not contain control or invisible characters"
        if ch in SHELL_METACHARACTERS:
            return "must not contain shell metacharacters ; & $ ` \\ \" ' < > ( ) { } |"
    return None


def _boolean(value: Any) -> bool | None:
    # JSON true/false, or the integers 0/1 the API itself returns.
    if isinstance(value, bool):
        return value
    if type(value) is int and value in (0, 1):
        return bool(value)
    return None


# Public: the channels' validation (procwatch_api.channels_service) takes booleans the same way.
parse_boolean = _boolean


_NULL = object()  # a nullable setting's clean null (None already means "not valid" below)


def _number(value: Any, setting: Setting) -> Any:
    """The value as the setting's type (`_NULL` for the null of a nullable setting), or None when
    it is not one within its bounds."""
    if value is None and setting.nullable:
        return _NULL
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if setting.type is int:
        if isinstance(value, float) and not value.is_integer():
            return None
        value = int(value)
    else:
        value = float(value)
        if not math.isfinite(value):
            return None
    if not setting.minimum <= value <= setting.maximum:  # type: ignore[operator]
        return None
    return value


def number_problem(setting: Setting) -> str:
    what = "an integer" if setting.type is int else "a number"
    problem = f"must be {what} from {setting.minimum:g} to {setting.maximum:g}"
    return problem + " or null" if setting.nullable else problem


def ordering_problems(values: dict[str, Any]) -> list[Issue]:
    """The pairs of `procwatch_domain.rules.ORDERED_SETTINGS` both set in `values` and out of
    order (e.g. min_count > max_count), reported on the low one. Checked on the body of a create
    and on the row after an update (a PUT may change one bound of the pair only)."""
    issues = []
    for low, high in ORDERED_SETTINGS:
        if values.get(low) is not None and values.get(high) is not None and values[low] > values[high]:
            issues.append(Issue(low, f"must not be greater than {high} ({values[high]:g})"))
    return issues


def validate_process_fields(body: dict[str, Any], *, for_update: bool) -> dict[str, Any]:
    """Clean values for the fields present in `body`; defaults added on create."""
    issues: list[Issue] = []
    clean: dict[str, Any] = {}

    for field, value in body.items():
        if field == "process_name":
            problem = process_name_problem(value)
            if problem:
                issues.append(Issue(field, problem))
            else:
                clean[field] = value
        elif field in BOOLEAN_FIELDS:
            flag = _boolean(value)
            if flag is None:
                issues.append(Issue(field, "must be a boolean (true/false or 0/1)"))
            else:
                clean[field] = flag
        elif field in NUMBER_SETTINGS:
            setting = NUMBER_SETTINGS[field]
            number = _number(value, setting)
            if number is None:
                issues.append(Issue(field, number_problem(setting)))
            else:
                clean[field] = None if number is _NULL else number
        elif field not in READ_ONLY_FIELDS:
            issues.append(Issue(str(field)[:100], "unknown field"))

    if not for_update and "process_name" not in body:
        issues.append(Issue("process_name", "is required"))
    issues.extend(ordering_problems(clean))
    if for_update and not issues and not clean:
        issues.append(Issue("body", "no updatable fields provided; updatable: " + ", ".join(UPDATABLE_FIELDS)))
    if issues:
        raise ProcessValidationError(issues)
    if not for_update:
        clean = {**CREATE_DEFAULTS, **clean}
    return clean


def setting_problem(setting: Setting, value: Any) -> tuple[Any, str | None]:
    """(the clean value, None), or (None, why not) for a value of any setting (a process's alert
    settings here, a server's liveness settings: procwatch_domain.liveness.SERVER_SETTINGS)."""
    if setting.is_flag:
        flag = _boolean(value)
        return (flag, None) if flag is not None else (None, "must be a boolean (true/false or 0/1)")
    number = _number(value, setting)
    if number is _NULL:
        return None, None
    return (number, None) if number is not None else (None, number_problem(setting))
