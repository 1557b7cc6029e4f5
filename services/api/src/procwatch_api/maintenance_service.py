"""The maintenance windows resource (/maintenance-windows). No framework imports.

A window is one-off (`starts_at` .. `ends_at`) or recurring (`rrule` + `duration_s` from
`starts_at`, read as wall-clock time in `timezone`); its scope is the account (no `servers`, no
`processes`), a list of the user's servers, or a list of the user's processes. The math is
procwatch_domain.maintenance; the alerter reads the table (docs/maintenance.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from procwatch_api.channels_service import name_problem, whole_number
from procwatch_api.errors import Conflict, NotFound, PlanLimitReached, ValidationFailed
from procwatch_api.maintenance_repository import MaintenanceRepository
from procwatch_api.service import json_time, parse_id
from procwatch_domain.maintenance import (
    MAX_DURATION_S,
    MIN_DURATION_S,
    WINDOW_COLUMNS,
    Window,
    effective_until,
    next_start,
    occurrence_at,
    rrule_problem,
    strip_rrule,
    window_from_row,
    zone_problem,
)

MAX_WINDOWS_PER_USER = 1000
MAX_SERVERS = 500
MAX_PROCESSES = 1000
MAX_ONE_OFF = timedelta(days=366)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
WINDOW_FIELDS = ("name", "starts_at", "ends_at", "rrule", "duration_s", "timezone", "servers", "processes")
# Fields of the representation a client may echo back: accepted and ignored.
READ_ONLY_FIELDS = frozenset({"id", "kind", "active", "current_end_at", "next_start_at", "ended_at", "created_at",
                              "updated_at"})
# Changing any of these starts the window's schedule afresh (an early end no longer applies).
_TIMING = ("starts_at", "ends_at", "rrule", "duration_s", "timezone")
_NULLABLE = ("ends_at", "rrule", "duration_s", "servers", "processes")


# --- representation -----------------------------------------------------------


def window_of(row: dict[str, Any]) -> Window:
    return window_from_row([row[c] for c in WINDOW_COLUMNS])


def present_window(row: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    window = window_of(row)
    current = occurrence_at(window, now)
    return {
        "id": row["id"],
        "name": row["name"],
        "kind": "recurring" if row["rrule"] is not None else "one_off",
        "starts_at": json_time(row["starts_at"]),
        "ends_at": json_time(row["ends_at"]),
        "rrule": row["rrule"],
        "duration_s": row["duration_s"],
        "timezone": row["timezone"],
        "servers": row["server_ids"],
        "processes": row["process_ids"],
        "active": int(current is not None),
        "current_end_at": json_time(current.end) if current else None,
        "next_start_at": json_time(next_start(window, now)),
        "ended_at": json_time(row["ended_at"]),
        "created_at": json_time(row["created_at"]),
        "updated_at": json_time(row["updated_at"]),
    }


# --- input --------------------------------------------------------------------


@dataclass
class WindowInput:
    fields: dict[str, Any]
    issues: list[dict[str, str]]

    def problem(self, field: str, message: str) -> None:
        self.issues.append({"field": field, "message": message})


def _time(value: Any) -> datetime | str:
    """An ISO 8601 time (naive: wall-clock in the window's time zone, resolved later), or why not."""
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        return "must be an ISO 8601 date-time (e.g. 2026-05-01T02:30:00Z, or without offset: in `timezone`)"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return "must be an ISO 8601 date-time (e.g. 2026-05-01T02:30:00Z, or without offset: in `timezone`)"
    probe = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    if not EARLIEST <= probe < LATEST:
        return "must be between 2000 and 2100"
    return parsed


def _ids(value: Any, field: str, limit: int, into: WindowInput) -> None:
    ids = [whole_number(v, 1, 2**63 - 1) for v in value] if isinstance(value, list) else []
    if value is None:
        into.fields[field] = None
    elif not 1 <= len(ids) <= limit or None in ids:
        into.problem(field, f"must be null or a list of 1-{limit} ids")
    else:
        into.fields[field] = sorted(set(ids))


def parse_window_fields(body: dict[str, Any], *, for_update: bool) -> WindowInput:
    """The clean values of the fields present in `body` and every problem found."""
    into = WindowInput({}, [])
    for field, value in body.items():
        if value is None and field in _NULLABLE:
            into.fields[field] = None
        elif field == "name":
            problem = name_problem(value)
            into.problem("name", problem) if problem else into.fields.__setitem__("name", value)
        elif field in ("starts_at", "ends_at"):
            parsed = _time(value)
            into.problem(field, parsed) if isinstance(parsed, str) else into.fields.__setitem__(field, parsed)
        elif field == "rrule":
            problem = rrule_problem(value)
            into.problem("rrule", problem) if problem else into.fields.__setitem__("rrule", strip_rrule(value.strip()))
        elif field == "duration_s":
            seconds = whole_number(value, MIN_DURATION_S, MAX_DURATION_S)
            if seconds is None:
                into.problem(field, f"must be whole seconds {MIN_DURATION_S}-{MAX_DURATION_S}")
            else:
                into.fields[field] = seconds
        elif field == "timezone":
            problem = zone_problem(value)
            into.problem(field, problem) if problem else into.fields.__setitem__(field, value)
        elif field == "servers":
            _ids(value, field, MAX_SERVERS, into)
        elif field == "processes":
            _ids(value, field, MAX_PROCESSES, into)
        elif field not in READ_ONLY_FIELDS:
            into.problem(str(field)[:100], "unknown field")
    if not for_update:
        for required in ("name", "starts_at"):
            if required not in body:
                into.problem(required, "is required")
    elif not into.issues and not into.fields:
        into.problem("body", "no updatable fields provided; updatable: " + ", ".join(WINDOW_FIELDS))
    return into


def _aware(value: datetime, zone: str) -> datetime:
    # A wall-clock time that does not exist or exists twice: RFC 5545's reading (fold=0), as for occurrences.
    return value if value.tzinfo is not None else value.replace(tzinfo=ZoneInfo(zone), fold=0)


def _columns(into: WindowInput, current: dict[str, Any] | None) -> dict[str, Any]:
    """The window as stored after applying the clean fields to `current` (None: a create), or
    ValidationFailed for the rules between fields."""
    f = into.fields
    base = current or {"ends_at": None, "rrule": None, "duration_s": None, "timezone": "UTC", "server_ids": None,
                       "process_ids": None, "ended_at": None}
    zone = f.get("timezone", base["timezone"])
    cols: dict[str, Any] = {
        "timezone": zone,
        "starts_at": _aware(f["starts_at"], zone) if "starts_at" in f else base.get("starts_at"),
        "ends_at": (_aware(f["ends_at"], zone) if f["ends_at"] is not None else None) if "ends_at" in f
        else base["ends_at"],
        "rrule": f.get("rrule", base["rrule"]),
        "duration_s": f.get("duration_s", base["duration_s"]),
        "server_ids": f.get("servers", base["server_ids"]),
        "process_ids": f.get("processes", base["process_ids"]),
        "ended_at": None if any(k in f for k in _TIMING) else base["ended_at"],
    }
    if "name" in f:
        cols["name"] = f["name"]
    if cols["rrule"] is not None:
        if cols["duration_s"] is None:
            into.problem("duration_s", "is required with rrule (a recurring window)")
        if cols["ends_at"] is not None:
            into.problem("ends_at", "not a field of a recurring window (it takes duration_s)")
    else:
        if cols["ends_at"] is None:
            into.problem("ends_at", "is required without rrule (a one-off window)")
        elif cols["starts_at"] is not None and not timedelta(0) < cols["ends_at"] - cols["starts_at"] <= MAX_ONE_OFF:
            into.problem("ends_at", f"must be after starts_at, by at most {MAX_ONE_OFF.days} days")
        if cols["duration_s"] is not None:
            into.problem("duration_s", "not a field of a one-off window (it takes ends_at)")
    if cols["server_ids"] is not None and cols["process_ids"] is not None:
        into.problem("processes", "a window's scope is the account, a list of servers or a list of processes,"
                                  " not both lists")
    if into.issues:
        raise ValidationFailed(into.issues)
    window = Window(id=0, user_id=0, starts_at=cols["starts_at"], ends_at=cols["ends_at"], rrule=cols["rrule"],
                    duration_s=cols["duration_s"], timezone=zone, ended_at=cols["ended_at"])
    cols["effective_until"] = effective_until(window)
    return cols


async def _check_scope(repo: MaintenanceRepository, user_id: int, cols: dict[str, Any], into: WindowInput) -> None:
    """Another user's server or process answers like one that does not exist."""
    for field, what, column, owned in (("servers", "server", "server_ids", repo.owned_server_ids),
                                       ("processes", "process", "process_ids", repo.owned_process_ids)):
        wanted = cols.get(column)
        if wanted:
            mine = await owned(user_id, wanted)
            missing = [i for i in wanted if i not in mine]
            if missing:
                into.problem(field, f"{what} {missing[0]} not found")
    if into.issues:
        raise ValidationFailed(into.issues)


# --- use cases --------------------------------------------------------------------


async def list_windows(repo: MaintenanceRepository, user_id: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {"maintenance_windows": [present_window(r, now) for r in await repo.list_windows(user_id)]}


async def create_window(repo: MaintenanceRepository, user_id: int, body: dict[str, Any]) -> dict[str, Any]:
    into = parse_window_fields(body, for_update=False)
    if into.issues:
        raise ValidationFailed(into.issues)
    cols = _columns(into, None)
    await _check_scope(repo, user_id, cols, into)
    count = await repo.lock_user_window_count(user_id)
    if count >= MAX_WINDOWS_PER_USER:
        raise PlanLimitReached(plan="any", limit=MAX_WINDOWS_PER_USER, current_count=count, scope="windows_per_user")
    return {"maintenance_window": present_window(await repo.insert_window(user_id, cols))}


async def _owned(repo: MaintenanceRepository, user_id: int, raw_id: str, *, lock: bool = False) -> dict[str, Any]:
    window_id = parse_id(raw_id)
    row = await repo.get_window(user_id, window_id, lock=lock) if window_id is not None else None
    if row is None:
        raise NotFound("maintenance window not found")
    return row


async def get_window(repo: MaintenanceRepository, user_id: int, raw_id: str) -> dict[str, Any]:
    return {"maintenance_window": present_window(await _owned(repo, user_id, raw_id))}


async def update_window(repo: MaintenanceRepository, user_id: int, raw_id: str,
                        body: dict[str, Any]) -> dict[str, Any]:
    current = await _owned(repo, user_id, raw_id, lock=True)
    into = parse_window_fields(body, for_update=True)
    if into.issues:
        raise ValidationFailed(into.issues)
    cols = _columns(into, current)
    await _check_scope(repo, user_id, cols, into)
    row = await repo.update_window(user_id, current["id"], cols)
    if row is None:
        raise NotFound("maintenance window not found")
    return {"maintenance_window": present_window(row)}


async def delete_window(repo: MaintenanceRepository, user_id: int, raw_id: str) -> dict[str, Any]:
    window_id = parse_id(raw_id)
    if window_id is None or not await repo.delete_window(user_id, window_id):
        raise NotFound("maintenance window not found")
    return {"ok": True}


async def end_window(repo: MaintenanceRepository, user_id: int, raw_id: str) -> dict[str, Any]:
    """End the occurrence in effect now (a recurring window's later occurrences still happen)."""
    current = await _owned(repo, user_id, raw_id, lock=True)
    now = datetime.now(UTC)
    window = window_of(current)
    if occurrence_at(window, now) is None:
        raise Conflict("window_not_active", "no occurrence of this maintenance window is in effect")
    ended = replace(window, ended_at=now)
    row = await repo.update_window(user_id, current["id"], {"ended_at": now, "effective_until": effective_until(ended)})
    if row is None:
        raise NotFound("maintenance window not found")
    return {"maintenance_window": present_window(row, now)}
