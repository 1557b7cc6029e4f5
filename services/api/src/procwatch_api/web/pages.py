"""What the dashboard's pages show, as pure functions (no framework imports, no I/O).

The business rules stay where they are: statuses come from procwatch_domain.status, process
validation from the API's service layer (which the routes call with the dict built here), the
alert settings' names, defaults and bounds from procwatch_domain.rules.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from procwatch_domain.rules import FLAG_SETTINGS, PARAMETER_SETTINGS, Setting
from procwatch_domain.status import process_status

# The fleet page's per-server counts, in this order.
FLEET_STATUSES = ("down", "alerting", "up")
# The most points a chart asks for, whatever the range (one bucket per pixel column, about).
CHART_POINTS = 600


class FormField(NamedTuple):
    """One alert setting of the process form: its input name, label, kind and bounds."""

    name: str
    label: str
    kind: str  # "checkbox" | "number"
    default: Any
    minimum: float | None
    maximum: float | None
    nullable: bool = False  # an empty input means null (e.g. no count bound), not "keep the default"


def _label(setting: Setting) -> str:
    if setting.type is bool:
        return "Alert when " + setting.name.removeprefix("alert_on_").replace("_", " ")
    return setting.name.replace("_pct", " %").replace("_", " ").capitalize()


PROCESS_FORM_FIELDS: tuple[FormField, ...] = (
    *(FormField(s.name, _label(s), "checkbox", s.default, None, None) for s in FLAG_SETTINGS),
    *(FormField(s.name, _label(s), "number", s.default, s.minimum, s.maximum, s.nullable) for s in PARAMETER_SETTINGS),
)


def process_body(form: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body a process form stands for (create and edit send every field: an unticked
    box is false). Numbers that do not parse are passed on as text, so the service's validation
    answers with the API's own message for them."""
    body: dict[str, Any] = {"process_name": str(form.get("process_name", "")).strip(),
                            "enabled": form.get("enabled") is not None}
    for field in PROCESS_FORM_FIELDS:
        if field.kind == "checkbox":
            body[field.name] = form.get(field.name) is not None
            continue
        raw = str(form.get(field.name, "")).strip()
        if raw == "":
            if field.nullable:
                body[field.name] = None  # an emptied bound is cleared
            continue
        try:
            value = float(raw)
        except ValueError:
            body[field.name] = raw
        else:
            body[field.name] = value if math.isfinite(value) else raw
    return body


def issues_by_field(issues: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """validation_failed's issues as {field: message}, for the messages shown beside each input."""
    found: dict[str, str] = {}
    for issue in issues:
        found.setdefault(issue.get("field", ""), issue.get("message", ""))
    return found


def status_of(row: Mapping[str, Any]) -> str:
    return process_status(enabled=row["enabled"], last_sample_at=row["last_sample_at"],
                          last_count=row["last_count"], alerted_state=row["alerted_state"])


def fleet_counts(processes: Iterable[Mapping[str, Any]]) -> dict[int, dict[str, int]]:
    """{server_id: {"down": n, "alerting": n, "up": n}} over the given process rows."""
    counts: dict[int, Counter] = {}
    for row in processes:
        counts.setdefault(row["server_id"], Counter())[status_of(row)] += 1
    return {server_id: {s: c[s] for s in FLEET_STATUSES} for server_id, c in counts.items()}


def when(value: datetime | str | None) -> str:
    """A timestamp of the API's representations (service.json_time: naive UTC or ISO text) for a
    page: to the second, in UTC, or a dash."""
    if value is None:
        return "—"
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


class ChartRange(NamedTuple):
    start: datetime
    end: datetime
    step_s: int


def chart_range(start: datetime | None, end: datetime | None, created_at: datetime,
                now: datetime | None = None) -> ChartRange:
    """The asked range clipped to [created_at, now] (the whole retained history when not asked),
    with the bucket width that keeps it to at most CHART_POINTS points."""
    now = now or datetime.now(UTC)
    end = min(end or now, now)
    start = max(start or created_at, created_at)
    if start >= end:
        start = end - timedelta(minutes=1)
    seconds = (end - start).total_seconds()
    return ChartRange(start, end, max(1, math.ceil(seconds / CHART_POINTS)))


def parse_time(raw: str | None) -> datetime | None:
    """A chart bound: Unix seconds (what the chart's zoom sends), or None when absent or invalid."""
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    if not math.isfinite(value) or not 0 <= value < 2**33:
        return None
    return datetime.fromtimestamp(value, UTC)


def chart_series(buckets: Iterable[Any]) -> dict[str, list]:
    """uPlot's columns (time in Unix seconds, CPU %, memory %, count) and the restart markers: a
    bucket where the oldest start time of the process's instances went up (inside it, or since
    the bucket before) holds a restart, as the restart rule reads consecutive samples."""
    series: dict[str, list] = {"t": [], "cpu": [], "memory": [], "count": [], "restarts": []}
    previous_max: int | None = None
    for b in buckets:
        at = b.at.timestamp()
        series["t"].append(at)
        series["cpu"].append(round(b.cpu_pct, 2))
        series["memory"].append(round(b.memory_pct, 2))
        series["count"].append(b.count_min)
        low, high = b.oldest_start_min, b.oldest_start_max
        if low is not None and ((previous_max is not None and high > previous_max) or high > low):
            series["restarts"].append(at)
        if high is not None:
            previous_max = high
    return series
