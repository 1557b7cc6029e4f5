"""The computed `status` of a watched process and the `alerted_state` encoding."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Literal

from procwatch_domain.rules import STATEFUL_CONDITIONS

Status = Literal["paused", "pending", "down", "alerting", "up"]

# The conditions that can be "currently firing", in the order alerted_state lists them
# (the stateful rules of procwatch_domain.rules).
ALERT_CONDITIONS: tuple[str, ...] = STATEFUL_CONDITIONS


def process_status(
    *, enabled: bool, last_sample_at: datetime | None, last_count: int | None, alerted_state: str | None
) -> Status:
    """Precedence: paused > pending > down > alerting > up (docs/decisions.md, "Status").

    A count of 0 is `down` whatever else fires; any other firing condition, an out-of-range
    running count (`count_range`) included, is `alerting` (docs/alerts.md, "Count ranges")."""
    if not enabled:
        return "paused"
    if last_sample_at is None:
        return "pending"
    if last_count == 0:
        return "down"
    if alerted_state:
        return "alerting"
    return "up"


def format_alerted_state(firing: Iterable[str]) -> str | None:
    """`{"memory", "cpu"}` -> `"cpu,memory"`; nothing firing -> None."""
    firing = set(firing)
    unknown = firing - set(ALERT_CONDITIONS)
    if unknown:
        raise ValueError(f"unknown alert conditions: {sorted(unknown)}")
    ordered = [c for c in ALERT_CONDITIONS if c in firing]
    return ",".join(ordered) or None


def parse_alerted_state(value: str | None) -> frozenset[str]:
    return frozenset(part for part in (value or "").split(",") if part)
