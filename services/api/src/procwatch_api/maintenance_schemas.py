"""OpenAPI models of /maintenance-windows: what maintenance_service enforces.

Like schemas.py, these only document: bodies are parsed by hand (maintenance_service), so every
input error has the project's error shape.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from procwatch_api.channels_service import NAME_MAX, name_problem
from procwatch_api.maintenance_service import (
    MAX_PROCESSES,
    MAX_SERVERS,
    MAX_WINDOWS_PER_USER,
    READ_ONLY_FIELDS,
    WINDOW_FIELDS,
)
from procwatch_api.schemas import Flag, name_pattern
from procwatch_domain.maintenance import MAX_DURATION_S, MIN_DURATION_S, RRULE_MAX

Id = Annotated[int, Field(ge=1, le=2**63 - 1)]
_TIME_DOC = ("ISO 8601 date-time; with an offset (or Z) it is that instant, without one it is wall-clock time"
             " in `timezone`")
_RRULE_DOC = ("RFC 5545 RRULE (FREQ DAILY, WEEKLY, MONTHLY or YEARLY; no DTSTART: starts_at is the first"
              " occurrence), e.g. FREQ=WEEKLY;BYDAY=SU. Null: a one-off window")
_DURATION_DOC = "recurring windows: each occurrence's length in seconds (real time, across DST changes)"
_ENDS_DOC = "one-off windows: the end (after starts_at, at most 366 days later)"
_ZONE_DOC = "IANA time zone of the recurrence's wall clock (default UTC), e.g. Europe/Berlin"
_SERVERS_DOC = "null: not scoped to servers; else the user's server ids (their processes' and their own alerts)"
_PROCESSES_DOC = "null: not scoped to processes; else the user's watched process ids (not with servers)"
NAME_DOC = "no control or invisible characters (spaces are fine)"


def _name_schema(schema: dict[str, Any]) -> None:
    schema["pattern"] = name_pattern(name_problem)


def _request_extra(*, update: bool):
    def extra(schema: dict[str, Any]) -> None:
        properties = schema["properties"]
        for name in sorted(READ_ONLY_FIELDS):
            properties[name] = {"description": "read-only field of the representation: accepted and ignored"}
        if update:
            for prop in properties.values():
                prop.pop("default", None)
            schema["anyOf"] = [{"required": [name]} for name in WINDOW_FIELDS]
        else:
            schema["required"] = ["name", "starts_at"]
            for name in ("ends_at", "rrule", "duration_s"):
                properties[name].pop("default", None)
            schema["oneOf"] = [
                {"required": ["ends_at"], "properties": {"rrule": {"type": "null"}, "duration_s": {"type": "null"}}},
                {"required": ["rrule", "duration_s"], "properties": {"ends_at": {"type": "null"}}},
            ]
        schema["not"] = {"properties": {"servers": {"type": "array"}, "processes": {"type": "array"}},
                         "required": ["servers", "processes"]}

    return extra


class _WindowFields(BaseModel):
    name: str = Field(None, min_length=1, max_length=NAME_MAX, description=NAME_DOC,  # type: ignore[assignment]
                      json_schema_extra=_name_schema)
    starts_at: str = Field(None, description=_TIME_DOC + "; recurring: the first occurrence")  # type: ignore[assignment]
    ends_at: str | None = Field(None, description=_ENDS_DOC + "; " + _TIME_DOC)
    rrule: str | None = Field(None, min_length=1, max_length=RRULE_MAX, description=_RRULE_DOC)
    duration_s: Annotated[int, Field(ge=MIN_DURATION_S, le=MAX_DURATION_S)] | None = Field(
        None, description=_DURATION_DOC)
    timezone: str = Field("UTC", min_length=1, max_length=64, description=_ZONE_DOC)
    servers: list[Id] | None = Field(None, min_length=1, max_length=MAX_SERVERS, description=_SERVERS_DOC)
    processes: list[Id] | None = Field(None, min_length=1, max_length=MAX_PROCESSES, description=_PROCESSES_DOC)


class MaintenanceWindowCreate(_WindowFields):
    """One-off (starts_at + ends_at) or recurring (starts_at + rrule + duration_s)."""

    model_config = ConfigDict(extra="forbid", title="MaintenanceWindowCreate",
                              json_schema_extra=_request_extra(update=False))


class MaintenanceWindowUpdate(_WindowFields):
    """At least one field; absent fields are unchanged. Changing the schedule (times, rrule,
    duration, time zone) cancels an early end."""

    model_config = ConfigDict(extra="forbid", title="MaintenanceWindowUpdate",
                              json_schema_extra=_request_extra(update=True))


class MaintenanceWindow(BaseModel):
    id: int
    name: str
    kind: Literal["one_off", "recurring"]
    starts_at: str = Field(description="UTC; recurring: the first occurrence")
    ends_at: str | None
    rrule: str | None
    duration_s: int | None
    timezone: str
    servers: list[int] | None
    processes: list[int] | None
    active: Flag = Field(description="1: an occurrence is in effect now (alerts in scope are suppressed)")
    current_end_at: str | None = Field(description="when the occurrence in effect ends")
    next_start_at: str | None = Field(description="the next occurrence's start (within about a year)")
    ended_at: str | None = Field(description="set by POST .../end: the occurrence in effect then ended then")
    created_at: str
    updated_at: str


class MaintenanceWindowList(BaseModel):
    maintenance_windows: list[MaintenanceWindow] = Field(
        description=f"oldest first; at most {MAX_WINDOWS_PER_USER} per user")


class MaintenanceWindowOne(BaseModel):
    maintenance_window: MaintenanceWindow


MAINTENANCE_REQUEST_MODELS: tuple[type[BaseModel], ...] = (MaintenanceWindowCreate, MaintenanceWindowUpdate)
