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

PROCESS_NAME_MAX = 100
THRESHOLD_MIN = 0.01
THRESHOLD_MAX = 100.0
SHELL_METACHARACTERS = frozenset(";&$`\\\"'<>(){}|")

BOOLEAN_FIELDS = ("enabled", "alert_on_down", "alert_on_restart", "alert_on_cpu", "alert_on_memory")
THRESHOLD_FIELDS = ("cpu_threshold_pct", "memory_threshold_pct")
UPDATABLE_FIELDS = ("process_name", *BOOLEAN_FIELDS, *THRESHOLD_FIELDS)

CREATE_DEFAULTS: dict[str, Any] = {
    "enabled": True,
    "alert_on_down": True,
    "alert_on_restart": False,
    "alert_on_cpu": False,
    "alert_on_memory": False,
    "cpu_threshold_pct": 50.0,
    "memory_threshold_pct": 25.0,
}

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


def _threshold(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    if not math.isfinite(value) or not THRESHOLD_MIN <= value <= THRESHOLD_MAX:
        return None
    return value


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
        elif field in THRESHOLD_FIELDS:
            number = _threshold(value)
            if number is None:
                issues.append(Issue(field, f"must be a number from {THRESHOLD_MIN} to {THRESHOLD_MAX:g}"))
            else:
                clean[field] = number
        elif field not in READ_ONLY_FIELDS:
            issues.append(Issue(str(field)[:100], "unknown field"))

    if not for_update and "process_name" not in body:
        issues.append(Issue("process_name", "is required"))
    if for_update and not issues and not clean:
        issues.append(Issue("body", "no updatable fields provided; updatable: " + ", ".join(UPDATABLE_FIELDS)))
    if issues:
        raise ProcessValidationError(issues)
    if not for_update:
        clean = {**CREATE_DEFAULTS, **clean}
    return clean
